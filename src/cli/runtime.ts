import fs from 'node:fs';
import type { Command } from 'commander';
import type { DecryptionKeys } from '../encryption/archive.js';
import { readSecret } from './secret-prompt.js';
import { StowageError, errorMessage, isStowageError } from '../errors.js';
import type { Progress } from '../events/events.js';
import { Stowage } from '../engine/stowage.js';
import { ProgressBar } from './progress.js';
import { WebhookDispatcher, deliverPendingBeforeExit, syncWebhooksFromConfig } from '../events/webhooks.js';

/** Documented exit codes (README, "Exit codes"). */
export const EXIT = { OK: 0, ERROR: 1, USAGE: 2, WARNINGS: 3 } as const;

/**
 * Where a command's output goes. Text for people on stdout (notices and progress on stderr);
 * with --json, stdout carries only JSON lines: progress events, then one result or error line.
 */
export class Output {
  readonly bar = new ProgressBar();

  constructor(readonly json: boolean) {}

  /** A line for people (suppressed in JSON mode, where it would break parsing). */
  info(text: string): void {
    if (!this.json) process.stdout.write(`${text}\n`);
  }

  /** A notice that matters in any mode: stderr. */
  notice(text: string): void {
    this.bar.done();
    process.stderr.write(`${text}\n`);
  }

  progress(kind: string, p: Progress): void {
    if (this.json) this.line({ type: 'progress', kind, ...p });
    else this.bar.update(p);
  }

  result(data: Record<string, unknown>): void {
    this.bar.done();
    if (this.json) this.line({ type: 'result', ...data });
  }

  line(obj: Record<string, unknown>): void {
    process.stdout.write(`${JSON.stringify(obj)}\n`);
  }
}

export interface GlobalOptions {
  config?: string;
}

export function globalOptions(cmd: Command): GlobalOptions {
  return cmd.optsWithGlobals() as GlobalOptions;
}

/** Opens the engine and tells the user what they need to know before the command runs. */
export async function openStowage(opts: GlobalOptions, out: Output): Promise<Stowage> {
  const stowage = await Stowage.open({ configPath: opts.config });
  if (stowage.usingDefaultConfig) {
    out.notice(
      `No stowage.yaml here: protecting the demo application in ${stowage.config.dataDir}/demo-app (the embedded default).\n` +
        `  To protect your own data: "stowage init", then edit stowage.yaml (or point --config / STOWAGE_CONFIG at one).`,
    );
  }
  const r = stowage.recovery;
  if (r?.restore) out.notice(`Recovered: ${r.restore}.`);
  if (r?.failedBackups.length) out.notice(`Marked as failed (interrupted by a crash or kill): ${r.failedBackups.join(', ')}.`);
  return stowage;
}

/** Runs a command body with uniform error reporting and exit codes. */
export function action<A extends unknown[]>(fn: (out: Output, ...args: A) => Promise<number | void>) {
  return async (...args: A): Promise<void> => {
    const cmd = args[args.length - 1] as Command;
    const json = Boolean((cmd.opts() as { json?: boolean }).json);
    const out = new Output(json);
    try {
      const code = await fn(out, ...args);
      process.exitCode = code ?? EXIT.OK;
    } catch (err) {
      out.bar.done();
      const code = isStowageError(err) && err.code === 'USAGE' ? EXIT.USAGE : EXIT.ERROR;
      if (json) {
        out.line({ type: 'error', code: isStowageError(err) ? err.code : 'INTERNAL', message: errorMessage(err), ...(isStowageError(err) && err.details ? { details: err.details } : {}) });
      } else {
        process.stderr.write(`error: ${errorMessage(err)}\n`);
        if (!(err instanceof StowageError) && process.env.STOWAGE_DEBUG) process.stderr.write(`${(err as Error).stack}\n`);
      }
      process.exitCode = code;
    }
  };
}

/**
 * `action` for commands that work on the engine: opens it (with the notices openStowage prints),
 * runs the body with commander's arguments, and closes it whatever happens.
 */
export function engineAction<A extends unknown[]>(fn: (out: Output, stowage: Stowage, ...args: A) => Promise<number | void>) {
  return action(async (out: Output, ...args: unknown[]) => {
    const cmd = args[args.length - 1] as Command;
    const stowage = await openStowage(globalOptions(cmd), out);
    // A backup run by cron through the CLI must reach the webhooks too. Not in Stowage.open:
    // the server's job thread opens an engine as well and would deliver every event twice.
    const webhooks = new WebhookDispatcher({
      db: stowage.catalogue.database,
      events: stowage,
      log: (level, message) => {
        if (level === 'warn' || level === 'error') out.notice(`webhook: ${message}`);
      },
    });
    try {
      const keys = await commandKeys(cmd);
      if (keys) stowage.useDecryptionKeys(keys);
      syncWebhooksFromConfig(webhooks, stowage.config);
      webhooks.resume(); // retries left by an earlier run (setups with no server)
      return await fn(out, stowage, ...(args as A));
    } finally {
      // One attempt's worth of waiting; what is still pending is retried by the next process.
      await deliverPendingBeforeExit(webhooks, Number(process.env.STOWAGE_WEBHOOK_WAIT_MS ?? 10_000));
      stowage.close();
    }
  });
}

/** Collects a repeatable option into an array. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** The server's auth store, loaded on demand (it pulls in JWT code other commands do not need). */
export async function authService(stowage: Stowage): Promise<import('../server/auth.js').AuthService> {
  const { AuthService } = await import('../server/auth.js');
  return new AuthService(stowage.catalogue);
}

/**
 * `--identity FILE` (repeatable) and `--passphrase` for the commands that read encrypted
 * backups (restore, verify, show, drill). The passphrase is never an argument (shell history,
 * `ps`): it comes from STOWAGE_PASSPHRASE, else a prompt on the terminal, else stdin's first line.
 */
export function addKeyOptions(cmd: Command): Command {
  return cmd
    .option('-i, --identity <file>', 'an age identity file (AGE-SECRET-KEY-1...) to decrypt an encrypted backup (repeatable; or STOWAGE_IDENTITY)', collect, [])
    .option('--passphrase', 'decrypt with a passphrase: STOWAGE_PASSPHRASE, or asked for on the terminal');
}

const keysByCommand = new WeakMap<Command, Promise<DecryptionKeys | null>>();

/** The keys a command was given (read once: a prompted passphrase is asked for once). */
export function commandKeys(cmd: Command): Promise<DecryptionKeys | null> {
  let keys = keysByCommand.get(cmd);
  if (!keys) {
    keys = readCommandKeys(cmd.opts() as { identity?: string[]; passphrase?: boolean });
    keysByCommand.set(cmd, keys);
  }
  return keys;
}

async function readCommandKeys(opts: { identity?: string[]; passphrase?: boolean }): Promise<DecryptionKeys | null> {
  const identities = (opts.identity ?? []).map((file) => {
    try {
      return fs.readFileSync(file, 'utf8');
    } catch (err) {
      throw new StowageError('USAGE', `--identity ${file}: cannot read it (${(err as NodeJS.ErrnoException).code}); give the path of an age identity file (stowage keygen makes one)`);
    }
  });
  let passphrase: string | undefined;
  if (opts.passphrase === true) {
    passphrase = process.env.STOWAGE_PASSPHRASE || (await readSecret('Passphrase: '));
    if (!passphrase) throw new StowageError('USAGE', '--passphrase: no passphrase given (set STOWAGE_PASSPHRASE, or type it when asked)');
  }
  return identities.length || passphrase ? { identities, passphrase } : null;
}
