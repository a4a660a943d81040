import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { stowage, stowageAsync } from '../src/testing/cli.js';
import { makeTempDir, removeDir } from '../src/testing/tmp.js';

/**
 * SQLite consistency against real concurrent processes: a writer inserts rows in transactions
 * of BATCH rows while `stowage backup` runs; every backup, restored, must pass
 * `PRAGMA integrity_check`, hold a contiguous prefix of ids that ends on a transaction boundary
 * (no torn transaction) and a valid checksum on every row. And a restore over the live database
 * while other processes have it open: they see the complete old or the complete new data.
 */

const PACKAGE_JSON = fileURLToPath(new URL('../package.json', import.meta.url));
/** Rows per writer transaction (odd, so a torn transaction cannot end on a boundary by luck). */
const BATCH = 7;

const COMMON = `
import { createRequire } from 'node:module';
import crypto from 'node:crypto';
const require = createRequire(process.argv[2]);
const Database = require('better-sqlite3');
const file = process.argv[3];
const checksum = (id, payload) => crypto.createHash('sha256').update(id + ':' + payload).digest('hex');
let stop = false;
process.on('SIGTERM', () => { stop = true; });
const tick = (ms) => new Promise((resolve) => (ms ? setTimeout(resolve, ms) : setImmediate(resolve)));
`;

/** Inserts BATCH rows per transaction, ids 1, 2, 3, ..., until SIGTERM; prints the last id. */
const WRITER = `${COMMON}
const db = new Database(file);
db.pragma('journal_mode = ' + (process.argv[4] || 'WAL'));
db.pragma('busy_timeout = 10000');
db.exec('CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, payload TEXT NOT NULL, checksum TEXT NOT NULL)');
const insert = db.prepare('INSERT INTO rows (id, payload, checksum) VALUES (?, ?, ?)');
const batch = db.transaction((first) => {
  for (let id = first; id < first + ${BATCH}; id++) {
    const payload = crypto.randomBytes(48 + (id % 64)).toString('hex');
    insert.run(id, payload, checksum(id, payload));
  }
});
let next = (db.prepare('SELECT max(id) AS m FROM rows').get().m ?? 0) + 1;
batch(next);
next += ${BATCH};
process.stdout.write('ready\\n');
while (!stop) {
  batch(next);
  next += ${BATCH};
  await tick(1);
}
db.close();
process.stdout.write(JSON.stringify({ last: next - 1 }) + '\\n');
`;

/** Reads the whole table in a loop until SIGTERM; reports every distinct state it saw. */
const READER = `${COMMON}
const db = new Database(file, { fileMustExist: true });
db.pragma('busy_timeout = 10000');
const all = db.prepare('SELECT id, payload, checksum FROM rows ORDER BY id');
const seen = new Map();
const errors = [];
let reads = 0;
const observe = () => {
  const rows = all.all();
  const h = crypto.createHash('sha256');
  let valid = true;
  rows.forEach((r, i) => {
    if (r.id !== i + 1 || r.checksum !== checksum(r.id, r.payload)) valid = false;
    h.update(r.checksum);
  });
  const key = rows.length + ':' + h.digest('hex') + ':' + valid;
  seen.set(key, (seen.get(key) ?? 0) + 1);
  reads++;
};
observe();
process.stdout.write('ready\\n');
while (!stop) {
  try {
    observe();
  } catch (err) {
    errors.push(String(err && err.message));
  }
  await tick(0);
}
db.close();
process.stdout.write(JSON.stringify({ reads, seen: [...seen.keys()], errors }) + '\\n');
`;

/**
 * Holds a transaction open on the database for argv[5] ms: in WAL mode the write lock (BEGIN
 * IMMEDIATE, an application in the middle of a write), in rollback mode a read transaction
 * (SHARED lock). Reports the table as seen inside the transaction and after it ends.
 */
const HOLDER = `${COMMON}
const db = new Database(file, { fileMustExist: true });
db.pragma('busy_timeout = 10000');
const wal = db.pragma('journal_mode', { simple: true }) === 'wal';
const all = db.prepare('SELECT id, payload, checksum FROM rows ORDER BY id');
const print = (rows) => {
  const h = crypto.createHash('sha256');
  let valid = true;
  rows.forEach((r, i) => {
    if (r.id !== i + 1 || r.checksum !== checksum(r.id, r.payload)) valid = false;
    h.update(r.checksum);
  });
  return rows.length + ':' + h.digest('hex') + ':' + valid;
};
db.exec(wal ? 'BEGIN IMMEDIATE' : 'BEGIN');
const inside = print(all.all());
process.stdout.write('ready\\n');
await tick(Number(process.argv[5]));
const stillInside = print(all.all());
db.exec('COMMIT');
const after = print(all.all());
db.close();
process.stdout.write(JSON.stringify({ inside, stillInside, after }) + '\\n');
`;

function checksum(id: number, payload: string): string {
  return crypto.createHash('sha256').update(`${id}:${payload}`).digest('hex');
}

interface Row {
  id: number;
  payload: string;
  checksum: string;
}

/** The same fingerprint the reader computes. */
function fingerprint(rows: Row[]): string {
  const h = crypto.createHash('sha256');
  let valid = true;
  rows.forEach((r, i) => {
    if (r.id !== i + 1 || r.checksum !== checksum(r.id, r.payload)) valid = false;
    h.update(r.checksum);
  });
  return `${rows.length}:${h.digest('hex')}:${valid}`;
}

interface Checked {
  integrity: string;
  rows: Row[];
}

function readDb(file: string): Checked {
  const db = new Database(file, { fileMustExist: true });
  try {
    const integrity = (db.pragma('integrity_check') as Array<{ integrity_check: string }>).map((r) => r.integrity_check).join('; ');
    return { integrity, rows: db.prepare('SELECT id, payload, checksum FROM rows ORDER BY id').all() as Row[] };
  } finally {
    db.close();
  }
}

/** integrity_check ok, ids exactly 1..N, N on a transaction boundary, every checksum right. */
function expectConsistent(file: string): number {
  const { integrity, rows } = readDb(file);
  expect(integrity).toBe('ok');
  expect(rows.length).toBeGreaterThan(0);
  expect(rows.length % BATCH).toBe(0);
  const badIds = rows.filter((r, i) => r.id !== i + 1).map((r) => r.id);
  expect(badIds).toEqual([]);
  const badChecksums = rows.filter((r) => r.checksum !== checksum(r.id, r.payload)).map((r) => r.id);
  expect(badChecksums).toEqual([]);
  return rows.length;
}

let project: string;
const children: ChildProcessWithoutNullStreams[] = [];

afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  if (project) removeDir(project);
});

function setUp(): void {
  project = makeTempDir('stowage-sqlite-');
  fs.mkdirSync(path.join(project, 'db'));
  fs.writeFileSync(
    path.join(project, 'stowage.yaml'),
    `dataDir: data
app:
  name: SQLite Consistency
  version: "1.0.0"
sources:
  - name: db
    kind: sqlite
    path: ./db/app.db
`,
  );
  fs.writeFileSync(path.join(project, 'writer.mjs'), WRITER);
  fs.writeFileSync(path.join(project, 'reader.mjs'), READER);
  fs.writeFileSync(path.join(project, 'holder.mjs'), HOLDER);
}

interface Child {
  proc: ChildProcessWithoutNullStreams;
  /** Resolves on the first stdout line "ready". */
  ready: Promise<void>;
  /** Waits for it to exit (status 0) and resolves with its last stdout line, parsed. */
  finished: () => Promise<Record<string, unknown>>;
  /** SIGTERM, then `finished`. */
  stop: () => Promise<Record<string, unknown>>;
}

function startScript(script: 'writer.mjs' | 'reader.mjs' | 'holder.mjs', dbFile: string, journalMode = 'WAL', holdMs = 0): Child {
  const proc = spawn(process.execPath, [path.join(project, script), PACKAGE_JSON, dbFile, journalMode, String(holdMs)], { cwd: project });
  children.push(proc);
  let stdout = '';
  let stderr = '';
  const exited = new Promise<number | null>((resolve) => proc.on('close', (code) => resolve(code)));
  const ready = new Promise<void>((resolve, reject) => {
    proc.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (stdout.includes('ready\n')) resolve();
    });
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    void exited.then((code) => reject(new Error(`${script} exited (${code}) before it was ready: ${stderr}`)));
  });
  const finished = async () => {
    const code = await exited;
    if (code !== 0) throw new Error(`${script} exited with ${code}: ${stderr}`);
    const last = stdout.trim().split('\n').pop()!;
    return JSON.parse(last) as Record<string, unknown>;
  };
  const stop = () => {
    proc.kill('SIGTERM');
    return finished();
  };
  return { proc, ready, finished, stop };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('SQLite consistency', () => {
  it('backups taken while a writer inserts rows restore to a consistent database (no torn transaction)', async () => {
    setUp();
    const live = path.join(project, 'db/app.db');
    const writer = startScript('writer.mjs', live);
    await writer.ready;
    await sleep(300);
    const keys: string[] = [];
    for (let i = 1; i <= 3; i++) {
      const r = await stowageAsync(project, ['backup', '--name', `during-${i}`, '--json']);
      expect(r.status, r.stderr).toBe(0);
      expect(r.result).toMatchObject({ ok: true, backup: { key: `during-${i}.zip`, status: 'completed' } });
      keys.push(`during-${i}.zip`);
      await sleep(150);
    }
    const { last } = (await writer.stop()) as { last: number };
    expect(last % BATCH).toBe(0);
    expect(expectConsistent(live)).toBe(last);

    const counts: number[] = [];
    for (const key of keys) {
      const target = path.join(project, `restored-${key}`);
      const r = stowage(project, ['restore', key, '--target', target, '--yes', '--no-safety-backup', '--json']);
      expect(r.status, r.stderr).toBe(0);
      expect(r.result).toMatchObject({ ok: true, status: { status: 'completed' } });
      const file = path.join(target, 'db/app.db');
      counts.push(expectConsistent(file));
    }
    // The writer really ran during the backups: each backup holds more rows than the one
    // before, and rows were added after the last one.
    expect(counts[0]!).toBeLessThan(counts[1]!);
    expect(counts[1]!).toBeLessThan(counts[2]!);
    expect(counts[2]!).toBeLessThan(last);
  });

  /** Backs up the database ("new" for the restore: snap.zip), then adds rows ("old": what is live). */
  async function oldAndNew(live: string, journalMode: string): Promise<{ oldRows: Row[]; newRows: Row[]; oldPrint: string; newPrint: string }> {
    const writer = startScript('writer.mjs', live, journalMode);
    await writer.ready;
    await sleep(200);
    await writer.stop();
    const backup = stowage(project, ['backup', '--name', 'snap', '--json']);
    expect(backup.status, backup.stderr).toBe(0);
    const newRows = readDb(live).rows;
    const more = startScript('writer.mjs', live, journalMode);
    await more.ready;
    await sleep(200);
    await more.stop();
    const oldRows = readDb(live).rows;
    expect(oldRows.length).toBeGreaterThan(newRows.length);
    return { oldRows, newRows, oldPrint: fingerprint(oldRows), newPrint: fingerprint(newRows) };
  }

  it.each(['WAL', 'DELETE'])('a restore over the live database (%s journal) while readers hold it open: they see the complete old or the complete new data', async (journalMode) => {
    setUp();
    const live = path.join(project, 'db/app.db');
    const { newRows, oldPrint, newPrint } = await oldAndNew(live, journalMode);

    // A connection opened before the restore (this process) and one reading in a loop throughout (another process).
    const reader = new Database(live, { readonly: true, fileMustExist: true });
    try {
      const query = reader.prepare('SELECT id, payload, checksum FROM rows ORDER BY id');
      expect(fingerprint(query.all() as Row[])).toBe(oldPrint);
      const looping = startScript('reader.mjs', live);
      await looping.ready;

      const r = await stowageAsync(project, ['restore', 'snap.zip', '--yes', '--no-safety-backup', '--json']);
      expect(r.status, r.stderr).toBe(0);
      expect(r.result).toMatchObject({ ok: true, status: { status: 'completed' } });
      await sleep(100);
      const report = (await looping.stop()) as { reads: number; seen: string[]; errors: string[] };

      expect(report.errors).toEqual([]);
      expect(report.reads).toBeGreaterThan(1);
      for (const seen of report.seen) expect([oldPrint, newPrint]).toContain(seen);
      expect(report.seen[0]).toBe(oldPrint);
      expect(report.seen.at(-1)).toBe(newPrint);

      // The connection opened before the restore, querying again.
      const after = fingerprint(query.all() as Row[]);
      expect([oldPrint, newPrint]).toContain(after);
      // The restore writes through SQLite (not a file rename), so open connections see the new data.
      expect(after).toBe(newPrint);
      expect((reader.pragma('integrity_check') as Array<{ integrity_check: string }>)[0]!.integrity_check).toBe('ok');
    } finally {
      reader.close();
    }
    expect(readDb(live)).toEqual({ integrity: 'ok', rows: newRows });
  });

  it.each(['WAL', 'DELETE'])('a restore over a database another process holds locked (%s journal) waits for the lock, then writes the new data', async (journalMode) => {
    setUp();
    const live = path.join(project, 'db/app.db');
    const { newRows, oldPrint, newPrint } = await oldAndNew(live, journalMode);
    // Held long enough that the restore (a new process: start-up, staging, verifying) reaches
    // the database write while the lock is still held.
    const holder = startScript('holder.mjs', live, journalMode, 2000);
    await holder.ready;
    const restore = stowageAsync(project, ['restore', 'snap.zip', '--yes', '--no-safety-backup', '--json']);
    const held = (await holder.finished()) as { inside: string; stillInside: string; after: string };
    const r = await restore;
    expect(r.status, r.stderr).toBe(0);
    expect(r.result).toMatchObject({ ok: true, status: { status: 'completed' } });
    // The transaction saw the old data throughout; the restore reported "completed", so the
    // database must now hold the backup's data.
    expect(held.inside).toBe(oldPrint);
    expect(held.stillInside).toBe(oldPrint);
    expect([oldPrint, newPrint]).toContain(held.after);
    expect(readDb(live)).toEqual({ integrity: 'ok', rows: newRows });
  });
});
