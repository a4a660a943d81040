import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { stowage, type CliResult } from '../src/testing/cli.js';
import { makeTempDir, removeDir } from '../src/testing/tmp.js';
import { snapshotTree, type TreeSnapshot } from '../src/testing/tree-snapshot.js';

/**
 * Crash safety of restore, against real dead processes: the CLI is SIGKILLed at each failpoint
 * of the restore (STOWAGE_FAILPOINTS), then any command must leave the data exactly as it was
 * before (state B) or exactly as the backup has it (state A), with nothing of the restore's
 * own left behind. Also: injected and real failures mid-restore (error failpoint, a full tmpfs,
 * an immutable target) roll back, and the data-folder lock of a dead process is cleared while a
 * live holder's is respected.
 */

// ---------------------------------------------------------------------------------------------
// Tree snapshots

type Snapshot = TreeSnapshot;
const snapshot = (root: string): Snapshot => snapshotTree(root, { wholeMs: true });

interface AppState {
  /** Everything the backup covers (all but logs/). */
  data: Snapshot;
  /** logs/ (excluded from the backup: a restore must leave it as it is). */
  logs: Snapshot;
}

function appState(project: string): AppState {
  const data: Snapshot = {};
  const logs: Snapshot = {};
  for (const [rel, node] of Object.entries(snapshot(path.join(project, 'app')))) {
    if (rel === 'logs' || rel.startsWith('logs/')) logs[rel] = node;
    else data[rel] = node;
  }
  return { data, logs };
}

/** Anything a restore leaves behind: staging/previous folders, temp databases, journal temp files, scratch. */
function leftovers(project: string, dataDir = 'data'): string[] {
  const found: string[] = [];
  const walk = (dir: string, rel: string) => {
    for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
      const r = rel ? `${rel}/${d.name}` : d.name;
      if (d.name.includes('.stowage-restore-') || d.name.includes('.stowage-previous-') || /^restore-journal\.json\..+\.tmp$/.test(d.name)) found.push(r);
      if (d.isDirectory()) walk(path.join(dir, d.name), r);
    }
  };
  walk(project, '');
  const tmp = path.join(project, dataDir, 'tmp');
  if (fs.existsSync(tmp)) for (const n of fs.readdirSync(tmp)) found.push(`${dataDir}/tmp/${n}`);
  return found;
}

// ---------------------------------------------------------------------------------------------
// The project: state A (backed up as a.zip) and state B (the current data)

interface DbState {
  integrity: string;
  rows: Array<{ id: number; v: string }>;
}

function dbState(project: string): DbState {
  const db = new Database(path.join(project, 'db/app.db'), { fileMustExist: true });
  try {
    const integrity = (db.pragma('integrity_check') as Array<{ integrity_check: string }>).map((r) => r.integrity_check).join('; ');
    const rows = db.prepare('SELECT id, v FROM t ORDER BY id').all() as Array<{ id: number; v: string }>;
    return { integrity, rows };
  } finally {
    db.close();
  }
}

function writeConfig(project: string): void {
  fs.writeFileSync(
    path.join(project, 'stowage.yaml'),
    `dataDir: data
app:
  name: Crash Test
  version: "1.2.3"
sources:
  - name: files
    kind: dir
    path: ./app
    exclude: [logs]
  - name: db
    kind: sqlite
    path: ./db/app.db
`,
  );
}

const OLD = new Date('2022-01-02T03:04:05.678Z');

function writeStateA(project: string, extra: (app: string) => void = () => {}): void {
  const app = path.join(project, 'app');
  for (const d of ['docs', 'nested/deeper', 'empty', 'logs']) fs.mkdirSync(path.join(app, d), { recursive: true });
  fs.writeFileSync(path.join(app, 'config.json'), '{"state":"A"}');
  fs.writeFileSync(path.join(app, 'old-top.txt'), 'only in A');
  fs.writeFileSync(path.join(app, 'docs/guide.md'), '# guide A\n'.repeat(200));
  fs.writeFileSync(path.join(app, 'docs/remove-me.txt'), 'deleted in B');
  fs.writeFileSync(path.join(app, 'nested/deeper/data.bin'), crypto.randomBytes(64 * 1024 + 3));
  fs.writeFileSync(path.join(app, 'nested/script.sh'), '#!/bin/sh\necho A\n');
  fs.chmodSync(path.join(app, 'nested/script.sh'), 0o755);
  fs.chmodSync(path.join(app, 'nested/deeper'), 0o750);
  fs.symlinkSync('config.json', path.join(app, 'link'));
  fs.writeFileSync(path.join(app, 'logs/app.log'), 'log A\n');
  extra(app);
  for (const p of ['config.json', 'docs/guide.md', 'docs', 'empty']) fs.utimesSync(path.join(app, p), OLD, OLD);
  fs.mkdirSync(path.join(project, 'db'), { recursive: true });
  const db = new Database(path.join(project, 'db/app.db'));
  db.pragma('journal_mode = WAL');
  db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL); INSERT INTO t (v) VALUES ('a1'), ('a2'), ('a3');");
  db.close();
}

/** Modify, add and delete files, folders and links; change the excluded logs; insert rows. */
function writeStateB(project: string): void {
  const app = path.join(project, 'app');
  fs.writeFileSync(path.join(app, 'config.json'), '{"state":"B","more":true}');
  fs.rmSync(path.join(app, 'old-top.txt'));
  fs.rmSync(path.join(app, 'docs/remove-me.txt'));
  fs.appendFileSync(path.join(app, 'docs/guide.md'), 'edited in B\n');
  fs.writeFileSync(path.join(app, 'docs/added.md'), 'added in B');
  fs.writeFileSync(path.join(app, 'nested/deeper/data.bin'), crypto.randomBytes(32 * 1024));
  fs.mkdirSync(path.join(app, 'nested/new-dir/sub'), { recursive: true });
  fs.writeFileSync(path.join(app, 'nested/new-dir/sub/x.txt'), 'x');
  fs.chmodSync(path.join(app, 'nested/script.sh'), 0o700);
  fs.writeFileSync(path.join(app, 'empty/not-empty-any-more.txt'), 'B');
  fs.rmSync(path.join(app, 'link'));
  fs.symlinkSync('docs/guide.md', path.join(app, 'link'));
  fs.writeFileSync(path.join(app, 'new-file.txt'), 'new in B');
  fs.mkdirSync(path.join(app, 'new-empty'));
  fs.appendFileSync(path.join(app, 'logs/app.log'), 'log B\n');
  fs.writeFileSync(path.join(app, 'logs/b.log'), 'only B');
  const db = new Database(path.join(project, 'db/app.db'));
  db.exec("INSERT INTO t (v) VALUES ('b4'), ('b5'); UPDATE t SET v = 'b1' WHERE id = 1;");
  db.close();
}

function cli(project: string, args: string[], failpoints = ''): CliResult {
  // Always set the variable, so a STOWAGE_FAILPOINTS in the outer environment cannot leak in.
  return stowage(project, args, { STOWAGE_FAILPOINTS: failpoints });
}

function restoreStatus(project: string): { status: string; message: string } {
  const r = cli(project, ['restore-status', '--json']);
  expect(r.status, r.stderr).toBe(0);
  return (r.result as { status: { status: string; message: string } }).status;
}

function journalFile(project: string): string {
  return path.join(project, 'data/restore-journal.json');
}

interface JournalView {
  phase: string;
  dirs: Array<{ ops: Array<{ from: string; to: string }> }>;
  sqlite: Array<{ state: string }>;
}

function exists(p: string): boolean {
  return fs.existsSync(p) || fs.lstatSync(p, { throwIfNoEntry: false }) !== undefined;
}

/**
 * How many renames of the swap are done, found by replaying them on the set of paths that
 * exist (every `from` exists at the start; each rename moves one path to a new one, so each
 * prefix of the plan leaves a different set). -1 if the filesystem matches no prefix.
 */
function swapProgress(ops: Array<{ from: string; to: string }>): number {
  const endpoints = [...new Set(ops.flatMap((op) => [op.from, op.to]))];
  const real = new Set(endpoints.filter(exists));
  const model = new Set(ops.map((op) => op.from));
  for (let j = 0; ; j++) {
    if (endpoints.every((p) => model.has(p) === real.has(p))) return j;
    if (j === ops.length) return -1;
    model.delete(ops[j]!.from);
    model.add(ops[j]!.to);
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Field 22 of /proc/PID/stat, as src/engine/lock.ts records it. */
function procStart(pid: number): string | undefined {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}

function writeLock(project: string, pid: number, start: string | undefined, job = 'backup nightly'): string {
  const file = path.join(project, 'data/stowage.lock');
  fs.writeFileSync(file, JSON.stringify({ pid, host: os.hostname(), job, startedAt: new Date().toISOString(), procStart: start }));
  return file;
}

function startSleeper(): ChildProcess {
  const child = spawn('sleep', ['60'], { stdio: 'ignore' });
  if (!child.pid) throw new Error('could not start sleep');
  return child;
}

function waitExit(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
}

const RESTORE = ['restore', 'a.zip', '--yes', '--no-safety-backup', '--json'];

// ---------------------------------------------------------------------------------------------

let template: string;
let A: AppState;
let B: AppState;
let rowsA: DbState;
let rowsB: DbState;
/** Renames of the dir swap: current top-level entries aside, then the backup's in. */
let swapOps: number;
const cleanups: Array<() => void> = [];

beforeAll(() => {
  template = makeTempDir('stowage-crash-tpl-');
  writeConfig(template);
  writeStateA(template);
  A = appState(template);
  rowsA = dbState(template);
  const backup = cli(template, ['backup', '--name', 'a', '--json']);
  expect(backup.status, backup.stderr).toBe(0);
  expect(backup.result).toMatchObject({ ok: true, backup: { key: 'a.zip', status: 'completed' } });
  writeStateB(template);
  B = appState(template);
  rowsB = dbState(template);
  expect(B.data).not.toEqual(A.data);
  expect(rowsB.rows).not.toEqual(rowsA.rows);
  const topLevel = (s: Snapshot) => Object.keys(s).filter((k) => !k.includes('/')).length;
  swapOps = topLevel(B.data) + topLevel(A.data);
});

afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) {
    try {
      c();
    } catch (err) {
      console.error('cleanup failed:', err);
    }
  }
});

afterAll(() => {
  if (template) removeDir(template);
});

/** A copy of the template: state B current, a.zip (state A) in storage. */
function freshProject(): string {
  const project = makeTempDir('stowage-crash-');
  cleanups.push(() => removeDir(project));
  const r = spawnSync('cp', ['-a', `${template}/.`, project], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  expect(appState(project)).toEqual(B);
  return project;
}

function expectState(project: string, which: 'A' | 'B'): void {
  const now = appState(project);
  expect(now.data).toEqual(which === 'A' ? A.data : B.data);
  expect(now.logs).toEqual(B.logs); // excluded: untouched either way
  expect(dbState(project)).toEqual(which === 'A' ? rowsA : rowsB);
  expect(leftovers(project)).toEqual([]);
  expect(exists(journalFile(project))).toBe(false);
}

function expectRestoreWorks(project: string): void {
  const again = cli(project, RESTORE);
  expect(again.status, `${again.stderr}\n${again.stdout}`).toBe(0);
  expect(again.result).toMatchObject({ ok: true, status: { status: 'completed', message: 'restored a.zip' } });
  expectState(project, 'A');
  expect(exists(path.join(project, 'data/stowage.lock'))).toBe(false);
}

interface KillCase {
  name: string;
  spec: (ops: number) => string;
  phase: 'staging' | 'swapping' | 'committed';
  /** Swap renames done when the process died. */
  done: (ops: number) => number;
  /** State of the database swap in the journal when the process died. */
  sqlite: 'pending' | 'previous-ready' | 'applied';
  expected: 'A' | 'B';
}

const killCases: KillCase[] = [
  { name: 'restore.after-stage', spec: () => 'restore.after-stage=kill', phase: 'staging', done: () => 0, sqlite: 'pending', expected: 'B' },
  { name: 'restore.before-swap', spec: () => 'restore.before-swap=kill', phase: 'swapping', done: () => 0, sqlite: 'pending', expected: 'B' },
  { name: 'restore.swap@1', spec: () => 'restore.swap=kill@1', phase: 'swapping', done: () => 0, sqlite: 'pending', expected: 'B' },
  { name: 'restore.swap@2', spec: () => 'restore.swap=kill@2', phase: 'swapping', done: () => 1, sqlite: 'pending', expected: 'B' },
  { name: 'restore.swap@3', spec: () => 'restore.swap=kill@3', phase: 'swapping', done: () => 2, sqlite: 'pending', expected: 'B' },
  { name: 'restore.swap@last', spec: (ops) => `restore.swap=kill@${ops}`, phase: 'swapping', done: (ops) => ops - 1, sqlite: 'pending', expected: 'B' },
  { name: 'restore.sqlite', spec: () => 'restore.sqlite=kill', phase: 'swapping', done: (ops) => ops, sqlite: 'previous-ready', expected: 'B' },
  { name: 'restore.before-commit', spec: () => 'restore.before-commit=kill', phase: 'swapping', done: (ops) => ops, sqlite: 'applied', expected: 'B' },
  { name: 'restore.after-commit', spec: () => 'restore.after-commit=kill', phase: 'committed', done: (ops) => ops, sqlite: 'applied', expected: 'A' },
];

describe('restore killed with SIGKILL, then any command', () => {
  it.each(killCases)('$name: recovered to exactly the $expected state', (c) => {
    const project = freshProject();
    const killed = cli(project, RESTORE, c.spec(swapOps));
    expect(killed.signal, `exit ${killed.status}: ${killed.stderr}`).toBe('SIGKILL');
    expect(killed.result).toBeUndefined();

    // The process really died where we meant: the journal says so, and it still holds the lock.
    const journal = JSON.parse(fs.readFileSync(journalFile(project), 'utf8')) as JournalView;
    expect(journal.phase).toBe(c.phase);
    expect(journal.dirs).toHaveLength(1);
    const ops = journal.dirs[0]!.ops;
    if (c.phase !== 'staging') expect(ops).toHaveLength(swapOps);
    expect(swapProgress(ops)).toBe(c.done(swapOps));
    if (c.done(swapOps) === swapOps) {
      // Fully swapped in before the kill: apart from the staging folder, the target already is A.
      const mid = Object.fromEntries(Object.entries(appState(project).data).filter(([rel]) => !rel.startsWith('.stowage-restore-')));
      expect(mid).toEqual(A.data);
    }
    expect(journal.sqlite.map((s) => s.state)).toEqual([c.sqlite]);
    const lock = JSON.parse(fs.readFileSync(path.join(project, 'data/stowage.lock'), 'utf8')) as { pid: number };
    expect(processAlive(lock.pid)).toBe(false);

    // Any command recovers (and clears the dead process's lock).
    const list = cli(project, ['list', '--json']);
    expect(list.status, list.stderr).toBe(0);
    expect(list.stderr).toMatch(/Recovered: the restore of a\.zip/);
    expect(exists(path.join(project, 'data/stowage.lock'))).toBe(false);
    expectState(project, c.expected);

    const status = restoreStatus(project);
    if (c.expected === 'A') {
      expect(status.status).toBe('completed');
      expect(status.message).toMatch(/interrupted after its data was in place; its clean-up has now been finished, the restore is complete/);
    } else {
      expect(status.status).toBe('failed');
      expect(status.message).toMatch(c.phase === 'staging' ? /interrupted before any data was changed/ : /interrupted while swapping .* rolled back/);
    }

    // Recovery left everything usable: the same restore now simply works.
    expectRestoreWorks(project);
  });
});

describe('restore of a database that did not exist yet, killed mid-copy', () => {
  it('recovery removes the partly copied database next to the target', () => {
    // State B without the database: the restore copies it to "<target>.stowage-restore-<id>"
    // and renames it into place. A kill while copying (simulated: the kill at restore.sqlite,
    // just before the copy, plus the partial file the copy would have left) must be cleaned up.
    const project = freshProject();
    fs.rmSync(path.join(project, 'db/app.db'));
    const killed = cli(project, RESTORE, 'restore.sqlite=kill');
    expect(killed.signal).toBe('SIGKILL');
    const journal = JSON.parse(fs.readFileSync(journalFile(project), 'utf8')) as JournalView & { id: string; scratch: string; sqlite: Array<{ previous: string | null }> };
    expect(journal.sqlite).toMatchObject([{ state: 'previous-ready', previous: null }]);
    const partial = path.join(project, `db/app.db.stowage-restore-${journal.id}`);
    fs.writeFileSync(partial, fs.readFileSync(path.join(journal.scratch, 'db.db')).subarray(0, 4096));

    const list = cli(project, ['list', '--json']);
    expect(list.status, list.stderr).toBe(0);
    expect(leftovers(project)).toEqual([]);
    expect(fs.readdirSync(path.join(project, 'db'))).toEqual([]);
    expect(appState(project)).toEqual(B);
    expect(restoreStatus(project).status).toBe('failed');
    expectRestoreWorks(project);
  });
});

describe('the data-folder lock', () => {
  it('is cleared automatically when its holder was killed', async () => {
    const project = freshProject();
    const sleeper = startSleeper();
    const start = procStart(sleeper.pid!);
    const lockFile = writeLock(project, sleeper.pid!, start);
    sleeper.kill('SIGKILL');
    await waitExit(sleeper);
    expect(processAlive(sleeper.pid!)).toBe(false);
    const r = cli(project, RESTORE);
    expect(r.status, r.stderr).toBe(0);
    expect(r.result).toMatchObject({ ok: true, status: { status: 'completed' } });
    expect(exists(lockFile)).toBe(false);
    expectState(project, 'A');
  });

  it('is cleared when its pid now belongs to another process (pid reuse)', () => {
    const project = freshProject();
    const sleeper = startSleeper();
    cleanups.push(() => sleeper.kill('SIGKILL'));
    const lockFile = writeLock(project, sleeper.pid!, '1'); // a start time that is not this process's
    const r = cli(project, ['backup', '--name', 'after-reuse', '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect(exists(lockFile)).toBe(false);
  });

  it('held by a live process makes restore fail with "busy" and change nothing', () => {
    const project = freshProject();
    const sleeper = startSleeper();
    cleanups.push(() => sleeper.kill('SIGKILL'));
    const lockFile = writeLock(project, sleeper.pid!, procStart(sleeper.pid!));
    const before = fs.readFileSync(lockFile, 'utf8');
    const r = cli(project, RESTORE);
    expect(r.status).toBe(1);
    expect(r.result).toMatchObject({ type: 'error', code: 'BUSY' });
    const message = String(r.result!.message);
    expect(message).toMatch(/^busy, held by backup nightly by pid \d+ on .*\(lock .*stowage\.lock\)/);
    expect(message).toContain(`by pid ${sleeper.pid} on ${os.hostname()}`);
    expect(fs.readFileSync(lockFile, 'utf8')).toBe(before);
    // A read-only command still works and recovery did not touch the live job's lock.
    expect(cli(project, ['list', '--json']).status).toBe(0);
    expect(fs.readFileSync(lockFile, 'utf8')).toBe(before);
    fs.rmSync(lockFile);
    expectState(project, 'B');
  });
});

describe('restore failing mid-way rolls back', () => {
  it('an injected error at the second swap rename: exit 1, state B intact, status failed (rolled back)', () => {
    const project = freshProject();
    const r = cli(project, RESTORE, 'restore.swap=error@2');
    expect(r.status, r.stderr).toBe(1);
    expect(r.result).toMatchObject({ type: 'error' });
    expect(String(r.result!.message)).toMatch(/injected failure at restore\.swap.*the swap was rolled back; the data is as it was before/);
    expectState(project, 'B');
    const status = restoreStatus(project);
    expect(status.status).toBe('failed');
    expect(status.message).toMatch(/rolled back/);
    expectRestoreWorks(project);
  });

  it('an injected error while writing the database: the folder swap is rolled back too', () => {
    const project = freshProject();
    const r = cli(project, RESTORE, 'restore.sqlite=error');
    expect(r.status, r.stderr).toBe(1);
    expect(String(r.result!.message)).toMatch(/rolled back/);
    expectState(project, 'B');
    expect(restoreStatus(project).status).toBe('failed');
  });
});

// ---------------------------------------------------------------------------------------------
// Real filesystem failures: a full tmpfs, an immutable (or read-only) target

function tryMountTmpfs(dir: string, size: string): string | null {
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { encoding: 'utf8' });
  return r.status === 0 ? null : (r.stderr || r.error?.message || `mount exited ${r.status}`).trim();
}

function umount(dir: string): void {
  spawnSync('umount', [dir]);
}

const mountProblem = (() => {
  if (process.platform !== 'linux') return 'not Linux';
  const probe = fs.mkdtempSync(path.join(os.tmpdir(), 'stowage-mount-probe-'));
  try {
    const problem = tryMountTmpfs(probe, '64k');
    if (problem === null) umount(probe);
    return problem;
  } finally {
    fs.rmSync(probe, { recursive: true, force: true });
  }
})();
if (mountProblem) console.warn(`restore-crash: skipping the full-disk tests: cannot mount a tmpfs here (${mountProblem})`);

/** Makes `dir` unwritable even for root: immutable attribute, else a read-only bind mount. Returns the undo, or a reason. */
function makeUnwritable(dir: string): { undo: () => void; how: string } | { reason: string } {
  const ch = spawnSync('chattr', ['+i', dir], { encoding: 'utf8' });
  if (ch.status === 0) return { undo: () => void spawnSync('chattr', ['-i', dir]), how: 'chattr +i' };
  const bind = spawnSync('mount', ['--bind', dir, dir], { encoding: 'utf8' });
  if (bind.status === 0) {
    const ro = spawnSync('mount', ['-o', 'remount,bind,ro', dir], { encoding: 'utf8' });
    if (ro.status === 0) return { undo: () => umount(dir), how: 'read-only bind mount' };
    umount(dir);
    return { reason: `chattr: ${ch.stderr.trim()}; read-only remount: ${ro.stderr.trim()}` };
  }
  return { reason: `chattr: ${(ch.stderr || ch.error?.message || '').trim()}; bind mount: ${bind.stderr.trim()}` };
}

describe('restore onto a full disk', () => {
  let project: string;
  let app: string;
  let mounted = false;
  let stateB: AppState;

  beforeAll(() => {
    if (mountProblem) return;
    project = makeTempDir('stowage-fulldisk-');
    app = path.join(project, 'app');
    writeConfig(project);
    // "big": more than the 2 MB disk holds.
    writeStateA(project, (dir) => fs.writeFileSync(path.join(dir, 'big.bin'), crypto.randomBytes(3 * 1024 * 1024)));
    expect(cli(project, ['backup', '--name', 'big', '--json']).status).toBe(0);
    // "many": 700 files of 100 bytes, 70 KB in all, so the free-space check passes; but each
    // takes a 4 KB page on tmpfs (2.8 MB), so the disk fills while staging.
    fs.rmSync(path.join(app, 'big.bin'));
    for (let i = 0; i < 700; i++) writeTreeFile(path.join(app, `many/${String(i).padStart(3, '0')}.txt`), crypto.randomBytes(50).toString('hex'));
    expect(cli(project, ['backup', '--name', 'many', '--json']).status).toBe(0);
    // The target becomes a 2 MB tmpfs holding a small state B.
    fs.rmSync(app, { recursive: true });
    fs.mkdirSync(app);
    const problem = tryMountTmpfs(app, '2m');
    if (problem) throw new Error(`mount failed although the probe worked: ${problem}`);
    mounted = true;
    writeSmallB(app);
    stateB = appState(project);
  });

  afterAll(() => {
    if (mounted) umount(app);
    if (project) removeDir(project);
  });

  function writeTreeFile(file: string, content: string): void {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, content);
  }

  function writeSmallB(dir: string): void {
    writeTreeFile(path.join(dir, 'config.json'), '{"state":"B on tmpfs"}');
    writeTreeFile(path.join(dir, 'docs/notes.md'), 'notes\n'.repeat(100));
    writeTreeFile(path.join(dir, 'logs/app.log'), 'log B\n');
    fs.mkdirSync(path.join(dir, 'empty'));
    fs.symlinkSync('config.json', path.join(dir, 'link'));
  }

  function freeBytes(): number {
    const st = fs.statfsSync(app);
    return st.bavail * st.bsize;
  }

  it.skipIf(mountProblem !== null)('refuses up front when the backup does not fit (free-space check), nothing changed', () => {
    const free = freeBytes();
    const r = cli(project, ['restore', 'big.zip', '--yes', '--no-safety-backup', '--json']);
    expect(r.status, r.stderr).toBe(1);
    expect(String(r.result!.message)).toMatch(/not enough free space: the restore needs \d+ bytes .* only \d+ are free.*Nothing was changed/);
    expect(appState(project)).toEqual(stateB);
    expect(leftovers(project)).toEqual([]);
    expect(exists(journalFile(project))).toBe(false);
    expect(freeBytes()).toBe(free);
    expect(restoreStatus(project).status).toBe('failed');
  });

  it.skipIf(mountProblem !== null)('runs out of space while staging (check passed): disk-full error, rolled back, space given back', () => {
    const free = freeBytes();
    const r = cli(project, ['restore', 'many.zip', '--yes', '--no-safety-backup', '--json']);
    expect(r.status, r.stderr).toBe(1);
    expect(String(r.result!.message)).toMatch(/the disk is full while writing .*; free some space and restore again; nothing was changed/);
    expect(appState(project)).toEqual(stateB);
    expect(leftovers(project)).toEqual([]);
    expect(exists(journalFile(project))).toBe(false);
    expect(freeBytes()).toBe(free);
    const status = restoreStatus(project);
    expect(status.status).toBe('failed');
    expect(status.message).toMatch(/disk is full/);
  });

  it.skipIf(mountProblem !== null)('database target and data folder on a full disk: writing the database fails, rolled back, old rows intact', () => {
    // The free-space check counts the database once; staging it in the data folder on the same
    // disk takes that space again, so SQLite runs out while writing the target (mid-swap).
    const dbProject = makeTempDir('stowage-fulldisk-db-');
    const vol = path.join(dbProject, 'vol');
    let volMounted = false;
    try {
      fs.mkdirSync(path.join(vol, 'db'), { recursive: true });
      fs.writeFileSync(
        path.join(dbProject, 'stowage.yaml'),
        'dataDir: ./vol/data\nstorage: { type: local, path: ./store }\napp:\n  name: Full\n  version: "1.0.0"\nsources:\n  - name: db\n    kind: sqlite\n    path: ./vol/db/app.db\n',
      );
      const big = new Database(path.join(vol, 'db/app.db'));
      big.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)');
      const insert = big.prepare('INSERT INTO t (v) VALUES (?)');
      for (let i = 0; i < 250; i++) insert.run(crypto.randomBytes(4000));
      big.close();
      expect(cli(dbProject, ['backup', '--name', 'big', '--json']).status).toBe(0);
      const keep = path.join(dbProject, 'keep');
      fs.renameSync(vol, keep);
      fs.mkdirSync(vol);
      const problem = tryMountTmpfs(vol, '1600k');
      if (problem) throw new Error(`mount failed although the probe worked: ${problem}`);
      volMounted = true;
      expect(spawnSync('cp', ['-a', `${keep}/.`, vol]).status).toBe(0);
      fs.rmSync(keep, { recursive: true });
      fs.rmSync(path.join(vol, 'db/app.db'));
      const small = new Database(path.join(vol, 'db/app.db'));
      small.pragma('journal_mode = WAL');
      small.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB); INSERT INTO t (v) VALUES ('old 1'), ('old 2');");
      small.close();
      const before = fs.readdirSync(path.join(vol, 'db'));

      const r = cli(dbProject, ['restore', 'big.zip', '--yes', '--no-safety-backup', '--json']);
      expect(r.status, r.stderr).toBe(1);
      expect(String(r.result!.message)).toMatch(/^restore of big\.zip failed: .*(disk is full|ENOSPC|no space left).*; the swap was rolled back; the data is as it was before$/);
      const db = new Database(path.join(vol, 'db/app.db'), { fileMustExist: true });
      try {
        expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
        expect(db.prepare('SELECT v FROM t ORDER BY id').all()).toEqual([{ v: 'old 1' }, { v: 'old 2' }]);
      } finally {
        db.close();
      }
      expect(fs.readdirSync(path.join(vol, 'db'))).toEqual(before);
      expect(leftovers(dbProject, 'vol/data')).toEqual([]);
      expect(exists(path.join(vol, 'data/restore-journal.json'))).toBe(false);
      expect(restoreStatus(dbProject).status).toBe('failed');
    } finally {
      if (volMounted) umount(vol);
      removeDir(dbProject);
    }
  });
});

/** Whether makeUnwritable works here (on the filesystem of the temporary folders); null if it does. */
const unwritableProblem = (() => {
  const probe = fs.mkdtempSync(path.join(os.tmpdir(), 'stowage-ro-probe-'));
  try {
    const made = makeUnwritable(probe);
    if ('reason' in made) return made.reason;
    const blocked = (() => {
      try {
        fs.writeFileSync(path.join(probe, 'x'), 'x');
        return false;
      } catch {
        return true;
      }
    })();
    made.undo();
    return blocked ? null : `${made.how} did not stop root from writing`;
  } finally {
    fs.rmSync(probe, { recursive: true, force: true });
  }
})();
if (unwritableProblem) console.warn(`restore-crash: skipping the unwritable-target tests: cannot make a folder unwritable for root here (${unwritableProblem})`);

function unwritable(dir: string): { undo: () => void; how: string } {
  const made = makeUnwritable(dir);
  if ('reason' in made) throw new Error(`could not make ${dir} unwritable although the probe could: ${made.reason}`);
  return made;
}

describe('restore onto an unwritable target', () => {
  it.skipIf(unwritableProblem !== null)('target folder itself unwritable: clear error at staging, nothing changed', () => {
    const project = freshProject();
    const app = path.join(project, 'app');
    const lock = unwritable(app);
    try {
      const r = cli(project, RESTORE);
      expect(r.status, r.stderr).toBe(1);
      const message = String(r.result!.message);
      expect(message).toMatch(/^restore of a\.zip failed: /);
      expect(message).toMatch(/EPERM|EACCES|EROFS|not permitted|read-only/i);
      expect(message).toContain(app);
      expect(message).toMatch(/nothing was changed/);
      expect(restoreStatus(project).status).toBe('failed');
    } finally {
      lock.undo();
    }
    expectState(project, 'B');
    expectRestoreWorks(project);
  });

  it.skipIf(unwritableProblem !== null)('a folder inside the target cannot be moved: fails mid-swap and the renames already done are rolled back', () => {
    const project = freshProject();
    const nested = path.join(project, 'app/nested');
    const lock = unwritable(nested);
    try {
      const r = cli(project, RESTORE);
      expect(r.status, r.stderr).toBe(1);
      const message = String(r.result!.message);
      expect(message).toMatch(/EPERM|EBUSY|EROFS|not permitted|busy/i);
      expect(message).toContain(nested);
      expect(message).toMatch(/the swap was rolled back; the data is as it was before/);
    } finally {
      lock.undo();
    }
    expectState(project, 'B');
    expectRestoreWorks(project);
  });
});

// ---------------------------------------------------------------------------------------------
// Excluded files inside a folder the restore replaces are carried into the restored folder.

describe('excluded files inside replaced folders (carried over)', () => {
  let carryTemplate: string;
  let cA: Snapshot;
  let cB: Snapshot;
  const B_TIME = new Date('2023-05-06T07:08:09.123Z');

  beforeAll(() => {
    carryTemplate = makeTempDir('stowage-carry-tpl-');
    fs.writeFileSync(
      path.join(carryTemplate, 'stowage.yaml'),
      'dataDir: data\napp:\n  name: Carry\n  version: "1.0.0"\nsources:\n  - name: files\n    kind: dir\n    path: ./app\n    exclude: [logs, "*.tmp"]\n',
    );
    const app = path.join(carryTemplate, 'app');
    fs.mkdirSync(path.join(app, 'nested/deeper'), { recursive: true });
    fs.writeFileSync(path.join(app, 'nested/a.txt'), 'A');
    fs.writeFileSync(path.join(app, 'nested/deeper/b.txt'), 'A');
    fs.writeFileSync(path.join(app, 'top.txt'), 'A');
    for (const d of ['nested/deeper', 'nested']) fs.utimesSync(path.join(app, d), OLD, OLD);
    cA = snapshot(app);
    expect(cli(carryTemplate, ['backup', '--name', 'a', '--json']).status).toBe(0);
    fs.writeFileSync(path.join(app, 'nested/a.txt'), 'B');
    fs.writeFileSync(path.join(app, 'nested/deeper/cache.tmp'), 'excluded, must survive');
    fs.writeFileSync(path.join(app, 'top.txt'), 'B');
    for (const d of ['nested/deeper', 'nested']) fs.utimesSync(path.join(app, d), B_TIME, B_TIME);
    cB = snapshot(app);
  });

  afterAll(() => {
    if (carryTemplate) removeDir(carryTemplate);
  });

  function carryProject(): string {
    const project = makeTempDir('stowage-carry-');
    cleanups.push(() => removeDir(project));
    expect(spawnSync('cp', ['-a', `${carryTemplate}/.`, project]).status).toBe(0);
    expect(snapshot(path.join(project, 'app'))).toEqual(cB);
    return project;
  }

  const withoutDirTimes = (snap: Snapshot): Snapshot => Object.fromEntries(Object.entries(snap).map(([k, v]) => [k, v.type === 'dir' ? { ...v, mtimeMs: 0 } : v]));
  const restoredView = (): Snapshot => ({ ...cA, 'nested/deeper/cache.tmp': cB['nested/deeper/cache.tmp']! });

  it('a kill after the carry is rolled back with the excluded file in place; a restore keeps it', () => {
    const project = carryProject();
    const killed = cli(project, RESTORE, 'restore.swap=kill@2'); // op 1 carried cache.tmp into the staged tree
    expect(killed.signal).toBe('SIGKILL');
    expect(cli(project, ['list', '--json']).status).toBe(0);
    expect(withoutDirTimes(snapshot(path.join(project, 'app')))).toEqual(withoutDirTimes(cB));
    expect(leftovers(project)).toEqual([]);
    const r = cli(project, RESTORE);
    expect(r.status, r.stderr).toBe(0);
    expect(withoutDirTimes(snapshot(path.join(project, 'app')))).toEqual(withoutDirTimes(restoredView()));
    expect(leftovers(project)).toEqual([]);
  });

  // PRODUCT BUG (not fixed here): moving an excluded file out of a folder (the carry) and back
  // (the rollback) changes that folder's mtime, and nothing restores it: after recovery the
  // folder holds exactly what it held, but with mtime "now" instead of B's. Fixing it needs the
  // original folder times in the journal (recovery must be able to put them back).
  it('the rollback leaves the mtime of a folder an excluded file was carried out of as it was', () => {
    const project = carryProject();
    expect(cli(project, RESTORE, 'restore.swap=kill@2').signal).toBe('SIGKILL');
    expect(cli(project, ['list', '--json']).status).toBe(0);
    expect(snapshot(path.join(project, 'app'))).toEqual(cB);
  });

  // PRODUCT BUG (not fixed here): staging sets every folder's mtime from the backup, then the
  // swap carries excluded files into the staged folders, which sets their mtime to "now"; a
  // completed restore therefore does not restore the mtime of such folders.
  it('a completed restore gives a folder an excluded file was carried into the mtime from the backup', () => {
    const project = carryProject();
    expect(cli(project, RESTORE).status).toBe(0);
    expect(snapshot(path.join(project, 'app'))).toEqual(restoredView());
  });
});
