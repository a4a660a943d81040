import fs from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { StringDecoder } from 'node:string_decoder';
import { z } from 'zod';
import { StowageError, errorMessage } from '../errors.js';

/**
 * Command hooks: programs the user's config runs before and after backups and restores (stop
 * the application, flush a cache, start it again). Hooks of a phase run one at a time, in order,
 * each in its own process group so that a timeout kills everything the hook started.
 */

export const HOOK_PHASES = ['beforeBackup', 'afterBackup', 'beforeRestore', 'afterRestore'] as const;
export type HookPhase = (typeof HOOK_PHASES)[number];

const UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const MAX_TIMEOUT_MS = 24 * 3_600_000;
const TIMEOUT_HINT = 'must be a duration with a unit, such as "500ms", "30s", "5m" or "1h" (at most 24h)';

function timeoutMs(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$/.exec(text);
  if (!m) return null;
  const ms = Math.round(Number(m[1]) * (UNITS_MS[m[2] as string] as number));
  return ms > 0 && ms <= MAX_TIMEOUT_MS ? ms : null;
}

/** "500ms", "30s", "5m", "1h" (decimals allowed, "1.5s") → milliseconds. A bare number has no unit and is refused. */
export function parseTimeout(text: string): number {
  const ms = timeoutMs(text);
  if (ms === null) throw new StowageError('USAGE', `"${text}" is not a valid timeout: it ${TIMEOUT_HINT}`);
  return ms;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export const hookSchema = z
  .object({
    command: z.union([z.string(), z.array(z.string())], {
      error: 'must be an argv list such as ["systemctl", "stop", "myapp"], or a shell script string together with shell: true',
    }),
    /** Run a string command through /bin/sh -c. Off by default: argv lists need no quoting. */
    shell: z.boolean({ error: 'must be true or false' }).default(false),
    timeout: z
      .string({ error: TIMEOUT_HINT })
      .transform((v, ctx) => {
        const ms = timeoutMs(v);
        if (ms === null) {
          ctx.addIssue({ code: 'custom', message: TIMEOUT_HINT });
          return z.NEVER;
        }
        return ms;
      })
      .default(60_000),
    mode: z.enum(['essential', 'optional'], { error: 'must be "essential" (a failure stops the job) or "optional" (a failure is a warning)' }).default('essential'),
    cwd: z.string({ error: 'must be a folder path' }).min(1, 'must be a folder path').optional(),
    env: z
      .record(z.string().regex(ENV_NAME), z.union([z.string(), z.number(), z.boolean()]).transform(String), {
        error: (issue) =>
          issue.code === 'invalid_key'
            ? 'variable names are letters, digits and "_", not starting with a digit'
            : 'must map variable names to values, e.g. { PGHOST: "localhost" }',
      })
      .default({}),
  })
  .strict()
  .superRefine((hook, ctx) => {
    if (typeof hook.command === 'string') {
      if (!hook.shell) {
        ctx.addIssue({
          code: 'custom',
          path: ['command'],
          message: 'a string command needs shell: true (it then runs through /bin/sh -c); or give an argv list such as ["pg_isready", "-q"], which runs without a shell',
        });
      } else if (hook.command.trim() === '') {
        ctx.addIssue({ code: 'custom', path: ['command'], message: 'cannot be empty: give the shell script to run' });
      }
    } else if (hook.shell) {
      ctx.addIssue({
        code: 'custom',
        path: ['shell'],
        message: 'shell: true needs the command as one string (the script for /bin/sh -c); drop shell: true to run the argv list directly',
      });
    } else if (!hook.command[0]) {
      ctx.addIssue({ code: 'custom', path: ['command'], message: 'needs at least the program to run, e.g. ["systemctl", "stop", "myapp"]' });
    }
  });

const hookList = z
  .array(hookSchema, { error: 'must be a list of hooks, each with a command, e.g. [{ command: ["systemctl", "stop", "myapp"] }]' })
  .default([]);

/** The `hooks:` section of stowage.yaml; every phase defaults to no hooks. */
export const hooksSchema = z
  .object({ beforeBackup: hookList, afterBackup: hookList, beforeRestore: hookList, afterRestore: hookList })
  .strict()
  .default({ beforeBackup: [], afterBackup: [], beforeRestore: [], afterRestore: [] });

export type HookConfig = z.output<typeof hookSchema>;
export type HooksConfig = z.output<typeof hooksSchema>;
export type HookMode = HookConfig['mode'];

export interface HookContext {
  /** The event the hooks run for, e.g. "backup.before". */
  event: string;
  /** The backup's key (its file name). */
  backupKey?: string;
  /** Where the archive is on disk, when the storage has a local path. */
  backupPath?: string | null;
  /** What started the job: "cli", "api", "schedule", ... */
  trigger?: string;
  /** For after-hooks: how the job ended. */
  status?: 'completed' | 'failed';
  /** For after-hooks of a failed job: why it failed. */
  error?: string;
  /** Source names. */
  sources?: string[];
  dataDir: string;
}

export interface HookLogLine {
  /** The hook's index in its phase's list (0-based, as in hooks.beforeBackup[0]). */
  hook: number;
  stream: 'stdout' | 'stderr';
  text: string;
}

export interface RunHooksOptions {
  /** Aborting kills the running hook's process group; runHooks then rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Called with every line a hook prints, as it prints it. */
  log?: (line: HookLogLine) => void;
  /** Time between SIGTERM and SIGKILL for a hook that timed out or was cancelled; default 5 s. */
  killGraceMs?: number;
}

export interface HookOutcome {
  index: number;
  /** The command as a person would type it (argv lists are shell-quoted for display only). */
  command: string;
  mode: HookMode;
  ok: boolean;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  durationMs: number;
  /** Why the hook failed, in words ("exited with code 3", "timed out after 30s ..."); null when ok. */
  error: string | null;
  /** The last OUTPUT_TAIL_BYTES of stdout and stderr, line by line, interleaved as the lines arrived. */
  output: string;
  /** True when earlier output was dropped to keep the tail bounded. */
  outputTruncated: boolean;
}

export const OUTPUT_TAIL_BYTES = 64 * 1024;
const KILL_GRACE_MS = 5000;
/** After a hook exits, how long to keep reading output that a background child may still hold open. */
const DRAIN_MS = 1000;
/** A "line" longer than this is passed to `log` in pieces, so a hook printing no newlines cannot grow memory. */
const MAX_LINE_CHARS = 16 * 1024;
const MAX_ERROR_ENV_CHARS = 4096;
const MESSAGE_TAIL_LINES = 20;

/**
 * The environment a hook runs with. It inherits the parent's, minus anything that could be a
 * secret of Stowage or of the host:
 * - every inherited STOWAGE_* variable. This matters most for STOWAGE_BACKUP_KEY, which in the
 *   server's environment is the secret key of the export endpoint but for a hook is the backup's
 *   key (its file name); STOWAGE_ADMIN_PASSWORD goes the same way. Hooks see only the STOWAGE_*
 *   variables set below.
 * - every inherited variable whose name contains SECRET, PASSWORD or TOKEN (any case), e.g.
 *   PGPASSWORD, GITHUB_TOKEN, AWS_SECRET_ACCESS_KEY.
 * A hook that needs one of them names it in its own `env` (e.g. `PGPASSWORD: ${PGPASSWORD}` with
 * the config file's ${ENV} substitution); the hook's `env` is applied last and wins.
 */
export function hookEnvironment(phase: HookPhase, context: HookContext, hookEnv: Record<string, string> = {}, parent: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(parent)) {
    if (value === undefined || name.startsWith('STOWAGE_') || /SECRET|PASSWORD|TOKEN/i.test(name)) continue;
    env[name] = value;
  }
  env.STOWAGE_EVENT = context.event;
  env.STOWAGE_PHASE = phase;
  env.STOWAGE_DATA_DIR = context.dataDir;
  if (context.backupKey !== undefined) env.STOWAGE_BACKUP_KEY = context.backupKey;
  if (context.backupPath != null) env.STOWAGE_BACKUP_PATH = context.backupPath;
  if (context.trigger !== undefined) env.STOWAGE_TRIGGER = context.trigger;
  if (context.status !== undefined) env.STOWAGE_STATUS = context.status;
  if (context.error !== undefined) env.STOWAGE_ERROR = context.error.slice(0, MAX_ERROR_ENV_CHARS);
  if (context.sources !== undefined) env.STOWAGE_SOURCES = context.sources.join(',');
  return Object.assign(env, hookEnv);
}

/**
 * Runs a phase's hooks in order, one at a time. An essential hook that fails (non-zero exit,
 * killed, timed out, could not start) stops the phase: later hooks do not run and this throws
 * HOOK_FAILED, with `details.outcomes` holding every outcome so far. An optional hook that fails
 * gives an outcome with ok: false, which the caller reports as a warning, and the phase goes on.
 */
export async function runHooks(phase: HookPhase, hooks: readonly HookConfig[], context: HookContext, options: RunHooksOptions = {}): Promise<HookOutcome[]> {
  const outcomes: HookOutcome[] = [];
  for (const [index, hook] of hooks.entries()) {
    options.signal?.throwIfAborted();
    const env = hookEnvironment(phase, context, hook.env);
    const outcome = await runHook(index, hook, env, options);
    outcomes.push(outcome);
    options.signal?.throwIfAborted();
    if (!outcome.ok && hook.mode === 'essential') {
      throw new StowageError('HOOK_FAILED', failureMessage(phase, outcome), { details: { phase, hook: index, outcomes } });
    }
  }
  return outcomes;
}

function failureMessage(phase: HookPhase, outcome: HookOutcome): string {
  const command = outcome.command.length > 200 ? `${outcome.command.slice(0, 200)}...` : outcome.command;
  const lines = outcome.output.split('\n');
  if (lines.at(-1) === '') lines.pop();
  const tail = lines.slice(-MESSAGE_TAIL_LINES).map((l) => `  ${l.length > 500 ? `${l.slice(0, 500)}...` : l}`);
  const output = tail.length === 0 ? 'It printed nothing.' : `Its last output:\n${tail.join('\n')}`;
  return (
    `hooks.${phase}[${outcome.index}] (${command}) failed: ${outcome.error}.\n${output}\n` +
    'Fix the hook, or set mode: optional on it if its failure should only be a warning.'
  );
}

/** Shell-quotes an argument for display, only when it needs it. */
function quoteForDisplay(arg: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

export function displayCommand(hook: Pick<HookConfig, 'command'>): string {
  return typeof hook.command === 'string' ? hook.command : hook.command.map(quoteForDisplay).join(' ');
}

function formatMs(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/** The last `limit` bytes of a hook's output, kept as whole lines (stdout and stderr lines interleave, never mix). */
class OutputTail {
  private chunks: Buffer[] = [];
  private bytes = 0;
  truncated = false;

  constructor(private readonly limit: number) {}

  pushLine(text: string): void {
    const chunk = Buffer.from(`${text}\n`);
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    if (this.bytes > 2 * this.limit) this.trim();
  }

  private trim(): void {
    if (this.bytes <= this.limit) return;
    const all = Buffer.concat(this.chunks);
    let start = all.length - this.limit;
    // Start at a line boundary if there is one in the kept part, else at least not inside a UTF-8 character.
    const nl = all.indexOf(10, start - 1);
    if (nl !== -1 && nl < all.length - 1) start = nl + 1;
    else while (start < all.length && ((all[start] as number) & 0xc0) === 0x80) start++;
    this.chunks = [all.subarray(start)];
    this.bytes = all.length - start;
    this.truncated = true;
  }

  text(): string {
    this.trim();
    return Buffer.concat(this.chunks).toString('utf8');
  }
}

/** Splits one stream's bytes into lines for `log`. */
class LineSplitter {
  private readonly decoder = new StringDecoder('utf8');
  private pending = '';

  constructor(private readonly emit: (text: string) => void) {}

  write(chunk: Buffer): void {
    this.pending += this.decoder.write(chunk);
    let nl: number;
    while ((nl = this.pending.indexOf('\n')) !== -1) {
      this.emit(this.pending.slice(0, nl).replace(/\r$/, ''));
      this.pending = this.pending.slice(nl + 1);
    }
    while (this.pending.length > MAX_LINE_CHARS) {
      this.emit(this.pending.slice(0, MAX_LINE_CHARS));
      this.pending = this.pending.slice(MAX_LINE_CHARS);
    }
  }

  end(): void {
    this.pending += this.decoder.end();
    if (this.pending !== '') this.emit(this.pending.replace(/\r$/, ''));
    this.pending = '';
  }
}

function isFolder(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function spawnFailure(file: string, err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return `could not start: "${file}" was not found${file.includes('/') ? '' : ' on PATH'} (check the name, or give its full path)`;
  if (code === 'EACCES') return `could not start: "${file}" is not executable (permission denied)`;
  return `could not start: ${errorMessage(err)}`;
}

/**
 * True while a live process of the group remains. Zombies do not count: a killed child waits
 * for init to reap it, and some inits (containers) take a second or more to do so. Where /proc
 * is missing, any member counts.
 */
function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  let pids: string[];
  try {
    pids = fs.readdirSync('/proc').filter((name) => /^\d+$/.test(name));
  } catch {
    return true;
  }
  return pids.some((pid) => {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      // "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses.
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return Number(pgrp) === pgid && state !== 'Z' && state !== 'X';
    } catch {
      return false; // exited meanwhile
    }
  });
}

function killGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // ESRCH: the group is already gone.
  }
}

function runHook(index: number, hook: HookConfig, env: Record<string, string>, options: RunHooksOptions): Promise<HookOutcome> {
  const started = performance.now();
  const output = new OutputTail(OUTPUT_TAIL_BYTES);
  const grace = options.killGraceMs ?? KILL_GRACE_MS;
  const finish = (r: { exitCode: number | null; signal: NodeJS.Signals | null; timedOut: boolean; error: string | null }): HookOutcome => ({
    index,
    command: displayCommand(hook),
    mode: hook.mode,
    ok: r.error === null,
    exitCode: r.exitCode,
    signal: r.signal,
    timedOut: r.timedOut,
    durationMs: Math.round(performance.now() - started),
    error: r.error,
    output: output.text(),
    outputTruncated: output.truncated,
  });

  if (hook.cwd !== undefined && !isFolder(hook.cwd)) {
    return Promise.resolve(finish({ exitCode: null, signal: null, timedOut: false, error: `could not start: its cwd ${hook.cwd} is not a folder` }));
  }
  const shell = typeof hook.command === 'string';
  const [file, ...args] = typeof hook.command === 'string' ? ['/bin/sh', '-c', hook.command] : hook.command;
  if (file === undefined) return Promise.resolve(finish({ exitCode: null, signal: null, timedOut: false, error: 'has no command' }));

  return new Promise((resolve) => {
    let child: ChildProcess;
    try {
      // detached: the hook leads its own process group, so a kill reaches everything it started.
      child = spawn(file, args, { cwd: hook.cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (err) {
      resolve(finish({ exitCode: null, signal: null, timedOut: false, error: spawnFailure(file, err) }));
      return;
    }

    const timers: NodeJS.Timeout[] = [];
    const later = (ms: number, fn: () => void) => timers.push(setTimeout(fn, ms));
    let timedOut = false;
    let cancelled = false;
    let terminating = false;
    let exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
    let spawnError: unknown = null;
    let closed = false;
    let groupGone = false;
    let settled = false;

    const splitters = (['stdout', 'stderr'] as const).map((stream) => {
      const splitter = new LineSplitter((text) => {
        output.pushLine(text);
        try {
          options.log?.({ hook: index, stream, text });
        } catch {
          // A failing log callback must not leave the hook running unsupervised.
        }
      });
      child[stream]?.on('data', (chunk: Buffer) => splitter.write(chunk));
      return splitter;
    });

    const settle = () => {
      if (settled) return;
      settled = true;
      for (const t of timers) clearTimeout(t);
      options.signal?.removeEventListener('abort', onAbort);
      child.stdout?.destroy();
      child.stderr?.destroy();
      for (const s of splitters) s.end();
      let error: string | null = null;
      if (spawnError !== null) error = spawnFailure(file, spawnError);
      else if (cancelled) error = 'was cancelled';
      else if (timedOut) error = `timed out after ${formatMs(hook.timeout)} and was killed`;
      else if (exit === null) error = 'did not report how it ended';
      else if (exit.signal !== null) error = `was killed by ${exit.signal}`;
      else if (exit.code !== 0) {
        const hint = exit.code === 127 && shell ? ' (command not found)' : exit.code === 126 && shell ? ' (not executable)' : '';
        error = `exited with code ${exit.code}${hint}`;
      }
      resolve(finish({ exitCode: exit?.code ?? null, signal: exit?.signal ?? null, timedOut, error }));
    };

    /** SIGTERM to the whole group, SIGKILL after the grace period; settles once the group is gone. */
    const terminate = () => {
      if (terminating || child.pid === undefined) return;
      terminating = true;
      const pgid = child.pid;
      killGroup(pgid, 'SIGTERM');
      later(grace, () => {
        killGroup(pgid, 'SIGKILL');
        // SIGKILL cannot be ignored; stop waiting even if the group still shows (uninterruptible I/O).
        later(1000, settle);
      });
      const poll = () => {
        if (exit === null || groupAlive(pgid)) return void later(50, poll);
        // Everything is dead, so the pipes are closed; 'close' comes once their last bytes are read.
        groupGone = true;
        if (closed) settle();
        else later(DRAIN_MS, settle);
      };
      poll();
    };

    const onAbort = () => {
      // A hook that already ended is not killed (its background service stays); just stop draining.
      if (exit !== null) return settle();
      cancelled = true;
      terminate();
    };

    child.on('error', (err) => {
      // 'error' also reports a failed kill; only a failed spawn ends the hook here.
      if (child.pid !== undefined) return;
      spawnError = err;
      settle();
    });
    child.on('exit', (code, signal) => {
      exit = { code, signal };
      if (terminating) return; // terminate() polls until the whole group is gone
      // The output pipes close when the last process holding them exits; a hook that leaves a
      // daemon running in the background keeps them open, so stop reading after a moment.
      later(DRAIN_MS, settle);
    });
    child.on('close', () => {
      closed = true;
      if (!terminating || groupGone) settle();
    });

    if (child.pid !== undefined) {
      later(hook.timeout, () => {
        if (exit !== null) return;
        timedOut = true;
        terminate();
      });
      if (options.signal?.aborted) onAbort();
      else options.signal?.addEventListener('abort', onAbort, { once: true });
    }
  });
}
