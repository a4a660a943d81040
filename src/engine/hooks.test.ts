import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { hookSchema, hooksSchema, parseTimeout, runHooks, OUTPUT_TAIL_BYTES, type HookConfig, type HookContext, type HookLogLine } from './hooks.js';
import { isStowageError, type StowageError } from '../errors.js';
import { makeTempDir, removeDir } from '../testing/tmp.js';

let root: string;
const saved: Record<string, string | undefined> = {};
const SECRETS = { STOWAGE_BACKUP_KEY: 'secret-export-key-123456', STOWAGE_ADMIN_PASSWORD: 'admin-pass-987', MY_API_TOKEN: 'tok-555', PGPASSWORD: 'pg-pass-777' };
const leftover: number[] = [];

beforeEach(() => {
  root = makeTempDir();
  for (const [name, value] of Object.entries(SECRETS)) {
    saved[name] = process.env[name];
    process.env[name] = value;
  }
});

afterEach(() => {
  for (const name of Object.keys(SECRETS)) {
    if (saved[name] === undefined) delete process.env[name];
    else process.env[name] = saved[name];
  }
  for (const pid of leftover.splice(0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  removeDir(root);
});

/** Parses hooks as the config file would, so defaults apply. */
function hooks(...list: unknown[]): HookConfig[] {
  return list.map((h) => hookSchema.parse(h));
}

function context(extra: Partial<HookContext> = {}): HookContext {
  return { event: 'backup.before', dataDir: path.join(root, 'data'), ...extra };
}

/** A process that exists and is not a zombie waiting for its reaper. */
function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

async function hookError(promise: Promise<unknown>): Promise<StowageError> {
  const err = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  if (!isStowageError(err, 'HOOK_FAILED')) throw new Error(`expected HOOK_FAILED, got ${String(err)}`);
  return err;
}

describe('hooksSchema', () => {
  it('fills the defaults', () => {
    expect(hooksSchema.parse(undefined)).toEqual({ beforeBackup: [], afterBackup: [], beforeRestore: [], afterRestore: [] });
    const parsed = hooksSchema.parse({ beforeBackup: [{ command: ['systemctl', 'stop', 'myapp'] }] });
    expect(parsed.beforeBackup[0]).toEqual({ command: ['systemctl', 'stop', 'myapp'], shell: false, timeout: 60_000, mode: 'essential', env: {} });
    expect(parsed.afterRestore).toEqual([]);
    const full = hookSchema.parse({ command: 'pg_isready && echo ok', shell: true, mode: 'optional', timeout: '500ms', cwd: '/srv', env: { PGPORT: 5432, FLAG: true } });
    expect(full).toMatchObject({ timeout: 500, mode: 'optional', cwd: '/srv', env: { PGPORT: '5432', FLAG: 'true' } });
  });

  it('rejects a string command without shell: true, with a message that says what to do', () => {
    const r = hooksSchema.safeParse({ afterBackup: [{ command: 'pg_isready && echo ok' }] });
    expect(r.success).toBe(false);
    const issue = r.error?.issues[0];
    expect(issue?.path).toEqual(['afterBackup', 0, 'command']);
    expect(issue?.message).toMatch(/a string command needs shell: true.*or give an argv list/);
  });

  it('rejects other mistakes field by field', () => {
    const message = (h: unknown) => hookSchema.safeParse(h).error?.issues[0]?.message;
    expect(message({ command: ['echo'], shell: true })).toMatch(/shell: true needs the command as one string/);
    expect(message({ command: [] })).toMatch(/needs at least the program/);
    expect(message({ command: 42 })).toMatch(/argv list such as/);
    expect(message({ command: ['true'], timeout: 60 })).toMatch(/duration with a unit, such as "500ms", "30s"/);
    expect(message({ command: ['true'], timeout: '10 years' })).toMatch(/duration with a unit/);
    expect(message({ command: ['true'], mode: 'maybe' })).toMatch(/"essential".*"optional"/);
    expect(message({ command: ['true'], env: { 'BAD-NAME': 'x' } })).toMatch(/variable names are letters/);
    expect(hooksSchema.safeParse({ beforeBakup: [] }).success).toBe(false);
  });

  it('parseTimeout reads ms, s, m and h', () => {
    expect(parseTimeout('500ms')).toBe(500);
    expect(parseTimeout('30s')).toBe(30_000);
    expect(parseTimeout('1.5s')).toBe(1500);
    expect(parseTimeout('5m')).toBe(300_000);
    expect(parseTimeout('2h')).toBe(7_200_000);
    expect(() => parseTimeout('30')).toThrow(/not a valid timeout/);
    expect(() => parseTimeout('0s')).toThrow(/not a valid timeout/);
    expect(() => parseTimeout('25h')).toThrow(/at most 24h/);
  });
});

describe('runHooks', () => {
  it('runs hooks one at a time, in order', async () => {
    const file = path.join(root, 'order.txt');
    const list = hooks(
      { command: ['sh', '-c', `sleep 0.1; echo one >> "$0"`, file] },
      { command: `echo two >> '${file}'`, shell: true },
      { command: ['sh', '-c', 'echo three >> "$0"', file] },
    );
    const outcomes = await runHooks('beforeBackup', list, context());
    expect(fs.readFileSync(file, 'utf8')).toBe('one\ntwo\nthree\n');
    expect(outcomes.map((o) => [o.index, o.ok, o.exitCode])).toEqual([
      [0, true, 0],
      [1, true, 0],
      [2, true, 0],
    ]);
  });

  it('passes the STOWAGE_* variables and the hook env, and strips secrets from the inherited env', async () => {
    const [outcome] = await runHooks(
      'afterBackup',
      hooks({ command: ['env'], env: { EXTRA: 'x y', PGPASSWORD: 'given-by-the-hook' } }),
      context({ event: 'backup.after', backupKey: 'app-2024.zip', backupPath: '/backups/app-2024.zip', trigger: 'cli', status: 'failed', error: 'disk full', sources: ['files', 'db'] }),
    );
    const env = Object.fromEntries((outcome?.output ?? '').trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    expect(env).toMatchObject({
      STOWAGE_EVENT: 'backup.after',
      STOWAGE_PHASE: 'afterBackup',
      STOWAGE_BACKUP_KEY: 'app-2024.zip',
      STOWAGE_BACKUP_PATH: '/backups/app-2024.zip',
      STOWAGE_TRIGGER: 'cli',
      STOWAGE_STATUS: 'failed',
      STOWAGE_ERROR: 'disk full',
      STOWAGE_SOURCES: 'files,db',
      STOWAGE_DATA_DIR: path.join(root, 'data'),
      EXTRA: 'x y',
      PGPASSWORD: 'given-by-the-hook',
      PATH: process.env.PATH,
    });
    expect(env.STOWAGE_ADMIN_PASSWORD).toBeUndefined();
    expect(env.MY_API_TOKEN).toBeUndefined();
    expect(outcome?.output).not.toContain('secret-export-key-123456');
    expect(outcome?.output).not.toContain('admin-pass-987');
    expect(outcome?.output).not.toContain('pg-pass-777');
  });

  it('leaves out context variables that are not given, and never inherits the export key', async () => {
    const [outcome] = await runHooks('beforeBackup', hooks({ command: ['env'] }), context());
    expect(outcome?.output).toContain('STOWAGE_EVENT=backup.before\n');
    expect(outcome?.output).not.toMatch(/STOWAGE_(BACKUP_KEY|BACKUP_PATH|STATUS|ERROR|SOURCES)=/);
    expect(outcome?.output).not.toContain('secret-export-key-123456');
  });

  it('runs an argv list without a shell: spaces and $HOME stay literal', async () => {
    const lines: HookLogLine[] = [];
    const [outcome] = await runHooks('beforeBackup', hooks({ command: ['printf', '%s\\n', 'two words', '$HOME', '*'] }), context(), { log: (l) => lines.push(l) });
    expect(outcome?.output).toBe('two words\n$HOME\n*\n');
    expect(outcome?.command).toBe(`printf '%s\\n' 'two words' '$HOME' '*'`);
    expect(lines).toEqual([
      { hook: 0, stream: 'stdout', text: 'two words' },
      { hook: 0, stream: 'stdout', text: '$HOME' },
      { hook: 0, stream: 'stdout', text: '*' },
    ]);
  });

  it('runs a string through /bin/sh -c with shell: true, in the given cwd', async () => {
    fs.mkdirSync(path.join(root, 'work'));
    const [outcome] = await runHooks('beforeRestore', hooks({ command: 'echo "$STOWAGE_PHASE" && pwd && echo err >&2', shell: true, cwd: path.join(root, 'work') }), context());
    expect(outcome?.ok).toBe(true);
    expect(outcome?.output).toContain('beforeRestore\n');
    expect(outcome?.output).toContain(`${fs.realpathSync(path.join(root, 'work'))}\n`);
    expect(outcome?.output).toContain('err\n');
  });

  it('a timeout kills the whole process group, children included', async () => {
    const pidFile = path.join(root, 'child.pid');
    const list = hooks({ command: `sleep 30 & echo $! > '${pidFile}'; echo started; wait`, shell: true, timeout: '300ms', mode: 'optional' });
    const [outcome] = await runHooks('beforeBackup', list, context());
    const childPid = Number(fs.readFileSync(pidFile, 'utf8'));
    leftover.push(childPid);
    expect(outcome).toMatchObject({ ok: false, timedOut: true, exitCode: null, signal: 'SIGTERM', output: 'started\n' });
    expect(outcome?.error).toMatch(/timed out after 300ms/);
    expect(isRunning(childPid)).toBe(false);
  });

  it('sends SIGKILL to a group that ignores SIGTERM', async () => {
    const pidFile = path.join(root, 'child.pid');
    const list = hooks({ command: `trap '' TERM; sleep 30 & echo $! > '${pidFile}'; wait`, shell: true, timeout: '300ms', mode: 'optional' });
    const [outcome] = await runHooks('beforeBackup', list, context(), { killGraceMs: 200 });
    const childPid = Number(fs.readFileSync(pidFile, 'utf8'));
    leftover.push(childPid);
    expect(outcome).toMatchObject({ ok: false, timedOut: true, signal: 'SIGKILL' });
    expect(isRunning(childPid)).toBe(false);
  });

  it('an essential failure throws HOOK_FAILED with the output tail and stops later hooks', async () => {
    const marker = path.join(root, 'later-ran');
    const list = hooks(
      { command: ['true'] },
      { command: 'for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25; do echo "line $i"; done; echo "db is locked" >&2; exit 3', shell: true },
      { command: ['touch', marker] },
    );
    const err = await hookError(runHooks('beforeBackup', list, context()));
    expect(err.message).toContain('hooks.beforeBackup[1] (for i in 1 2 3');
    expect(err.message).toContain('failed: exited with code 3');
    expect(err.message).toContain('  line 25\n');
    expect(err.message).toContain('  db is locked\n');
    expect(err.message).not.toContain('line 1\n'); // only the last lines
    expect(err.message).toMatch(/Fix the hook, or set mode: optional/);
    const outcomes = err.details?.outcomes as { ok: boolean }[];
    expect(outcomes.map((o) => o.ok)).toEqual([true, false]);
    expect(fs.existsSync(marker)).toBe(false);
  });

  it('an optional failure is reported and the next hooks still run', async () => {
    const marker = path.join(root, 'later-ran');
    const list = hooks({ command: 'echo warming failed; exit 1', shell: true, mode: 'optional' }, { command: 'kill -9 $$', shell: true, mode: 'optional' }, { command: ['touch', marker] });
    const outcomes = await runHooks('afterBackup', list, context());
    expect(outcomes[0]).toMatchObject({ ok: false, mode: 'optional', exitCode: 1, error: 'exited with code 1', output: 'warming failed\n' });
    expect(outcomes[1]).toMatchObject({ ok: false, signal: 'SIGKILL', error: 'was killed by SIGKILL' });
    expect(outcomes[2]?.ok).toBe(true);
    expect(fs.existsSync(marker)).toBe(true);
  });

  it('a command that does not exist is a clear error', async () => {
    const err = await hookError(runHooks('beforeBackup', hooks({ command: ['stowage-no-such-command', '--flag'] }), context()));
    expect(err.message).toContain('hooks.beforeBackup[0] (stowage-no-such-command --flag) failed: could not start: "stowage-no-such-command" was not found on PATH');
    expect(err.message).toContain('It printed nothing.');

    const viaShell = await hookError(runHooks('beforeBackup', hooks({ command: 'stowage-no-such-command', shell: true }), context()));
    expect(viaShell.message).toContain('exited with code 127 (command not found)');
    expect(viaShell.message).toContain('stowage-no-such-command');

    const badCwd = await hookError(runHooks('beforeBackup', hooks({ command: ['true'], cwd: path.join(root, 'missing') }), context()));
    expect(badCwd.message).toContain(`its cwd ${path.join(root, 'missing')} is not a folder`);
  });

  it('captures output line by line and keeps only the last 64 KiB', async () => {
    const lines: HookLogLine[] = [];
    // 5000 lines of 40 bytes: about 200 KiB, on both streams.
    const script = 'i=0; while [ $i -lt 5000 ]; do printf "%039d\\n" $i; i=$((i+1)); done; echo to-stderr >&2; printf "no newline at end"';
    const [outcome] = await runHooks('afterRestore', hooks({ command: script, shell: true }), context(), { log: (l) => lines.push(l) });
    expect(outcome?.outputTruncated).toBe(true);
    expect(Buffer.byteLength(outcome?.output ?? '')).toBeLessThanOrEqual(OUTPUT_TAIL_BYTES);
    const kept = outcome?.output.split('\n') ?? [];
    expect(kept[0]).toMatch(/^0{35}\d{4}$/); // starts at a whole line
    expect(kept).toContain(`${'0'.repeat(35)}4999`);
    expect(kept).toContain('to-stderr');
    expect(kept.at(-2)).toBe('no newline at end');
    expect(lines).toHaveLength(5002);
    expect(lines[0]).toEqual({ hook: 0, stream: 'stdout', text: '0'.repeat(39) });
    expect(lines.filter((l) => l.stream === 'stderr')).toEqual([{ hook: 0, stream: 'stderr', text: 'to-stderr' }]);
    expect(lines.at(-1)?.text).toBe('no newline at end');
  });

  it('does not wait forever for a background process that keeps the output open', async () => {
    const pidFile = path.join(root, 'daemon.pid');
    const [outcome] = await runHooks('afterBackup', hooks({ command: `sleep 30 & echo $! > '${pidFile}'; echo done`, shell: true }), context());
    const daemon = Number(fs.readFileSync(pidFile, 'utf8'));
    leftover.push(daemon);
    expect(outcome).toMatchObject({ ok: true, exitCode: 0, output: 'done\n' });
    // A hook may start a service on purpose: one that ended normally leaves it running.
    expect(isRunning(daemon)).toBe(true);
  });

  it('aborting kills the running hook and rejects with the reason', async () => {
    const pidFile = path.join(root, 'child.pid');
    const marker = path.join(root, 'later-ran');
    const controller = new AbortController();
    const list = hooks({ command: `sleep 30 & echo $! > '${pidFile}'; wait`, shell: true }, { command: ['touch', marker] });
    setTimeout(() => controller.abort(new Error('job cancelled')), 300);
    await expect(runHooks('beforeBackup', list, context(), { signal: controller.signal })).rejects.toThrow('job cancelled');
    const childPid = Number(fs.readFileSync(pidFile, 'utf8'));
    leftover.push(childPid);
    expect(isRunning(childPid)).toBe(false);
    expect(fs.existsSync(marker)).toBe(false);
  });
});
