import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { StowageError } from '../errors.js';
import { POINT_ERROR_CODE, type PointFailureReason } from './point.js';
import { redactUrl } from './url.js';

/**
 * Running the `git` CLI for a backup point, isolated from the machine's Git setup and keeping
 * credentials out of argv, files and messages.
 *
 * Credentials flow: the point's username and password go into the environment of the network
 * commands only (STOWAGE_GIT_USERNAME / STOWAGE_GIT_PASSWORD); Git asks GIT_ASKPASS, a script in
 * the point's cache folder that prints those variables and holds no secret itself. A private
 * HOME / XDG_CONFIG_HOME, GIT_CONFIG_NOSYSTEM and an empty `credential.helper` mean no user or
 * system configuration, and no credential helper, sees or stores them.
 */

export const USERNAME_VAR = 'STOWAGE_GIT_USERNAME';
export const PASSWORD_VAR = 'STOWAGE_GIT_PASSWORD';

const ASKPASS_SCRIPT = `#!/bin/sh
# Written by Stowage for a Git backup point: answers Git's credential prompts from the
# environment of the git process that asks. It holds no secret itself.
case "$1" in
  Username*) printf '%s\\n' "$${USERNAME_VAR}" ;;
  *) printf '%s\\n' "$${PASSWORD_VAR}" ;;
esac
`;

/** Variables passed through from Stowage's own environment: proxies and CA bundles only. */
const PASSED_THROUGH = ['PATH', 'TMPDIR', 'http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY', 'no_proxy', 'NO_PROXY', 'SSL_CERT_FILE', 'SSL_CERT_DIR', 'GIT_SSL_CAINFO', 'GIT_SSL_CAPATH'];

/** Arguments put before every command: no credential helper may see or store anything. */
const ISOLATION_ARGS = ['-c', 'credential.helper=', '-c', 'core.autocrlf=false', '-c', 'core.symlinks=true', '-c', 'gc.auto=0'];

export interface GitResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface GitRunnerOptions {
  /** The point's private folder: HOME and the askpass script live here. */
  stateDir: string;
  username: string;
  password: string;
  /** Shown (redacted) in messages. */
  url: string;
  pointName: string;
  timeoutMs: number;
  signal?: AbortSignal;
  /** Sees every command's arguments (which never hold a secret). */
  onCommand?: (args: readonly string[]) => void;
}

export class GitRunner {
  private readonly home: string;
  private readonly askpass: string;

  constructor(private readonly opts: GitRunnerOptions) {
    this.home = path.join(opts.stateDir, 'home');
    this.askpass = path.join(opts.stateDir, 'askpass.sh');
  }

  /** Creates the private HOME and the askpass script (rewritten only when it differs). */
  async prepare(): Promise<void> {
    await fs.promises.mkdir(path.join(this.home, '.config'), { recursive: true, mode: 0o700 });
    let current = '';
    try {
      current = await fs.promises.readFile(this.askpass, 'utf8');
    } catch {
      // first run
    }
    if (current !== ASKPASS_SCRIPT) {
      const tmp = `${this.askpass}.${process.pid}.tmp`;
      await fs.promises.writeFile(tmp, ASKPASS_SCRIPT, { mode: 0o700 });
      await fs.promises.rename(tmp, this.askpass);
    }
    await fs.promises.chmod(this.askpass, 0o700);
  }

  private env(network: boolean, extra: Record<string, string>): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {};
    for (const name of PASSED_THROUGH) if (process.env[name] !== undefined) env[name] = process.env[name];
    env.PATH ??= '/usr/local/bin:/usr/bin:/bin';
    Object.assign(env, {
      HOME: this.home,
      XDG_CONFIG_HOME: path.join(this.home, '.config'),
      GIT_CONFIG_NOSYSTEM: '1',
      GIT_TERMINAL_PROMPT: '0',
      GIT_ASKPASS: this.askpass,
      LC_ALL: 'C',
      LANG: 'C',
      // A stalled transfer (under 1 KiB/s for a minute) fails instead of hanging.
      GIT_HTTP_LOW_SPEED_LIMIT: '1024',
      GIT_HTTP_LOW_SPEED_TIME: '60',
      ...extra,
    });
    if (network) {
      env[USERNAME_VAR] = this.opts.username;
      env[PASSWORD_VAR] = this.opts.password;
    }
    return env;
  }

  /**
   * Runs `git <args>` in `cwd`. `network` commands get the credentials in their environment.
   * Resolves with the exit code; rejects only when git cannot start, times out or is aborted.
   */
  run(args: string[], options: { cwd: string; network?: boolean; env?: Record<string, string>; input?: string }): Promise<GitResult> {
    const full = [...ISOLATION_ARGS, ...args];
    this.opts.onCommand?.(full);
    const { signal } = this.opts;
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(this.failure('aborted', `point "${this.opts.pointName}": the run was cancelled`));
        return;
      }
      // Its own process group, so a timeout or cancel ends git-remote-http too.
      const child = spawn('git', full, { cwd: options.cwd, env: this.env(options.network ?? false, options.env ?? {}), stdio: ['pipe', 'pipe', 'pipe'], detached: true });
      let stdout = '';
      let stderr = '';
      let ended: 'timeout' | 'aborted' | null = null;
      const kill = (why: 'timeout' | 'aborted'): void => {
        ended = why;
        try {
          if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      };
      const timer = setTimeout(() => kill('timeout'), this.opts.timeoutMs);
      const onAbort = (): void => kill('aborted');
      signal?.addEventListener('abort', onAbort, { once: true });
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.stdin.on('error', () => {});
      child.stdin.end(options.input ?? '');
      const done = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      child.on('error', (err) => {
        done();
        reject(this.failure('git', `point "${this.opts.pointName}": cannot run git (${(err as NodeJS.ErrnoException).code ?? err.message}); install Git on this machine`));
      });
      child.on('close', (code) => {
        done();
        if (ended === 'timeout') reject(this.failure('timeout', `point "${this.opts.pointName}": git ${args[0]} did not finish within ${Math.round(this.opts.timeoutMs / 1000)} s talking to ${redactUrl(this.opts.url)}; check the server and the network`));
        else if (ended === 'aborted') reject(this.failure('aborted', `point "${this.opts.pointName}": the run was cancelled`));
        else resolve({ code: code ?? -1, stdout, stderr });
      });
    });
  }

  /** Like `run`, but a non-zero exit is a failure explained by `explain`. */
  async ok(args: string[], options: { cwd: string; network?: boolean; env?: Record<string, string>; input?: string }): Promise<string> {
    const r = await this.run(args, options);
    if (r.code !== 0) throw this.explain(args[0] ?? 'git', r);
    return r.stdout;
  }

  /** Turns git's complaint into a message that says what to check, without any secret. */
  explain(command: string, r: GitResult): StowageError {
    const where = redactUrl(this.opts.url);
    const point = `point "${this.opts.pointName}"`;
    const err = r.stderr;
    if (/Authentication failed|could not read (Username|Password)|returned error: 401|terminal prompts disabled/i.test(err)) {
      return this.failure('auth', `${point}: ${where} refused the credentials; check the point's username and password (or token) and that it may ${command === 'push' ? 'push to' : 'read'} the repository`);
    }
    if (/returned error: 403/i.test(err)) {
      return this.failure('auth', `${point}: ${where} denied access (HTTP 403); check that the account may ${command === 'push' ? 'push to' : 'read'} the repository`);
    }
    if (/repository '.*' not found|returned error: 404|not found: did you run git update-server-info/i.test(err)) {
      return this.failure('not-found', `${point}: there is no repository at ${where}; check the URL (and create the repository on the server: Stowage does not create it)`);
    }
    if (/Could not resolve host|Couldn't resolve host/i.test(err)) {
      return this.failure('unreachable', `${point}: the host of ${where} cannot be resolved; check the URL and this machine's DNS`);
    }
    if (/Failed to connect|Couldn't connect|Connection refused|Connection timed out|Operation timed out|Network is unreachable|No route to host|Empty reply from server|Recv failure|Connection reset/i.test(err)) {
      return this.failure('unreachable', `${point}: cannot reach ${where}; check the URL, that the server is running and that this machine can connect to it (proxy, firewall)`);
    }
    if (/SSL|certificate|TLS/i.test(err)) {
      return this.failure('tls', `${point}: the TLS connection to ${where} failed (${lastLine(this.scrub(err))}); check the server's certificate, or set GIT_SSL_CAINFO for a private CA`);
    }
    if (/\[remote rejected\]|pre-receive hook declined|protected branch/i.test(err + r.stdout)) {
      return this.failure('rejected', `${point}: ${where} refused the push (${lastLine(this.scrub(r.stdout + err))}); check the branch's protection rules and hooks on the server`);
    }
    return this.failure('git', `${point}: git ${command} failed for ${where}: ${lastLine(this.scrub(err || r.stdout)) || `exit code ${r.code}`}`);
  }

  failure(reason: PointFailureReason, message: string): StowageError {
    return new StowageError(POINT_ERROR_CODE, this.scrub(message), { details: { point: this.opts.pointName, reason } });
  }

  /** Removes the password (and any URL userinfo) from text that came from git. */
  scrub(text: string): string {
    let out = text.replace(/(https?:\/\/)[^\s/@]+@/gi, '$1***@');
    const { password } = this.opts;
    if (password.length >= 3) out = out.split(password).join('***');
    return out;
  }
}

function lastLine(text: string): string {
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('hint:'));
  return (lines[lines.length - 1] ?? '').replace(/^(fatal|error): /, '').slice(0, 300);
}
