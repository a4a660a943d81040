import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { stowage } from '../src/testing/cli.js';
import { startTestServer } from '../src/testing/server.js';
import { makeTempDir, removeDir } from '../src/testing/tmp.js';
import { snapshotTree } from '../src/testing/tree-snapshot.js';

/**
 * `stowage drill` as a real process: a good backup restores into scratch space and is recorded
 * as drilled (visible in `stowage list --json`), the configured data and the restore status are
 * untouched, nothing is left in the data folder, and damaged bytes or a broken database fail
 * the drill with a message saying what to do.
 */
let project: string;

interface Listed {
  key: string;
  drilledAt: string | null;
  drillStatus: 'ok' | 'failed' | null;
  drillMessage: string;
}

function writeConfig(extra = '') {
  fs.writeFileSync(
    path.join(project, 'stowage.yaml'),
    `dataDir: data
app: { name: Drilled, version: "1.2.0" }
sources:
  - { name: files, kind: dir, path: ./app, exclude: [logs] }
  - { name: db, kind: sqlite, path: ./db/app.db }
${extra}`,
  );
}

const listed = (key: string): Listed => {
  const r = stowage(project, ['list', '--json']);
  expect(r.status).toBe(0);
  return (r.result?.backups as Listed[]).find((b) => b.key === key)!;
};

/** A backup that must succeed (its output in the failure message if not). */
function backup(name: string): void {
  const r = stowage(project, ['backup', '--name', name, '--json']);
  expect(r.status, `stowage backup --name ${name}: ${r.stderr}${r.stdout.slice(-2000)}`).toBe(0);
}

const snapshot = () => ({ app: snapshotTree(path.join(project, 'app')), db: snapshotTree(path.join(project, 'db')) });

/** Everything under the data folder's tmp/ (a drill must leave nothing). */
function tmpLeftovers(): string[] {
  const tmp = path.join(project, 'data/tmp');
  if (!fs.existsSync(tmp)) return [];
  return fs.readdirSync(tmp, { recursive: true }).map(String);
}

beforeEach(() => {
  project = makeTempDir('stowage-drill-e2e-');
  const app = path.join(project, 'app');
  fs.mkdirSync(path.join(app, 'nested/deeper'), { recursive: true });
  fs.mkdirSync(path.join(app, 'logs'));
  fs.mkdirSync(path.join(app, 'empty'));
  fs.mkdirSync(path.join(project, 'db'));
  fs.writeFileSync(path.join(app, 'config.json'), '{"hello":"world"}');
  fs.writeFileSync(path.join(app, 'nested/deeper/data.bin'), crypto.randomBytes(2 * 1024 * 1024 + 5));
  fs.writeFileSync(path.join(app, 'script.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
  fs.writeFileSync(path.join(app, 'logs/app.log'), 'excluded\n');
  fs.symlinkSync('nested/deeper/data.bin', path.join(app, 'link'));
  const db = new Database(path.join(project, 'db/app.db'));
  db.pragma('journal_mode = WAL');
  db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes (body) VALUES ('a'), ('b');");
  db.close();
  writeConfig();
});

afterEach(() => removeDir(project));

describe('stowage drill', () => {
  it('drills the newest backup: ok, recorded, data and restore status untouched, scratch removed', () => {
    backup('older');
    backup('newest');
    const before = snapshot();
    const statusBefore = stowage(project, ['restore-status', '--json']).result?.status;

    const r = stowage(project, ['drill', '--json']);

    expect(r.status).toBe(0);
    expect(r.result).toMatchObject({ type: 'result', key: 'newest.zip', ok: true, problems: [], error: null });
    expect(r.result?.files).toBe(4); // config.json, data.bin, script.sh, app.db
    expect(r.lines.some((l) => l.type === 'progress' && l.kind === 'drill')).toBe(true);
    const record = listed('newest.zip');
    expect(record).toMatchObject({ drillStatus: 'ok', drilledAt: r.result?.drilledAt, drillMessage: expect.stringMatching(/every file matches the manifest/) });
    expect(listed('older.zip')).toMatchObject({ drillStatus: null, drilledAt: null });
    expect(snapshot()).toEqual(before);
    expect(stowage(project, ['restore-status', '--json']).result?.status).toEqual(statusBefore);
    expect(tmpLeftovers()).toEqual([]);
  });

  it('prints a summary people can read, and drills the key it is given', () => {
    backup('first');
    backup('second');
    const r = stowage(project, ['drill', 'first.zip']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^OK: first\.zip restores correctly/m);
    expect(r.stdout).toMatch(/files\s+dir\s+3 files/);
    expect(r.stdout).toMatch(/db\s+sqlite\s+1 files.*integrity_check ok/);
    expect(r.stdout).toMatch(/configured data was not touched/);
    expect(listed('first.zip').drillStatus).toBe('ok');
    expect(listed('second.zip').drillStatus).toBeNull();
  });

  it('fails a backup whose stored bytes were damaged, says what to do, and records it', () => {
    backup('damaged');
    const archive = path.join(project, 'data/backups/damaged.zip');
    const fd = fs.openSync(archive, 'r+');
    fs.writeSync(fd, Buffer.from('DAMAGE'), 0, 6, Math.floor(fs.fstatSync(fd).size / 2));
    fs.closeSync(fd);
    const before = snapshot();

    const r = stowage(project, ['drill', 'damaged.zip']);

    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^FAILED: damaged\.zip does not restore correctly/m);
    expect(r.stderr).toMatch(/files\/nested\/deeper\/data\.bin: SHA-256 does not match the manifest/);
    expect(r.stderr).toMatch(/What to do:[\s\S]*stowage verify damaged\.zip[\s\S]*make a new backup/);
    expect(listed('damaged.zip')).toMatchObject({ drillStatus: 'failed', drillMessage: expect.stringMatching(/data\.bin/) });
    expect(snapshot()).toEqual(before);
    expect(tmpLeftovers()).toEqual([]);

    const json = stowage(project, ['drill', 'damaged.zip', '--json']);
    expect(json.status).toBe(1);
    expect(json.result).toMatchObject({ type: 'result', ok: false, error: { code: 'CHECKSUM_MISMATCH' } });
  });

  it('fails a SQLite database that passes every checksum but not integrity_check', () => {
    // Rows with NULL in a column, then the column declared NOT NULL by patching the schema text
    // in place (same length): the file is consistent bytes, its content breaks its own schema.
    const file = path.join(project, 'db/app.db');
    fs.rmSync(file);
    fs.rmSync(`${file}-wal`, { force: true });
    fs.rmSync(`${file}-shm`, { force: true });
    const db = new Database(file);
    db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT /*nullable*/); INSERT INTO notes (body) VALUES (NULL), ('b');");
    db.close();
    const bytes = fs.readFileSync(file);
    bytes.write('NOT NULL    ', bytes.indexOf('/*nullable*/'), 'utf8');
    fs.writeFileSync(file, bytes);
    backup('bad-db');
    expect(stowage(project, ['verify', 'bad-db.zip', '--json']).status).toBe(0); // every checksum matches

    const r = stowage(project, ['drill', 'bad-db.zip']);

    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/db: db\/app\.db: the database fails SQLite's integrity check: NULL value in notes\.body/);
    expect(r.stderr).toMatch(/already damaged when it was backed up/);
    expect(listed('bad-db.zip').drillStatus).toBe('failed');
    expect(tmpLeftovers()).toEqual([]);
  });

  it('runs when restore is disabled', () => {
    writeConfig('restore: { enabled: false }\n');
    backup('one');
    expect(stowage(project, ['restore', 'one.zip', '--target', path.join(project, 'out'), '--yes', '--json']).status).toBe(1);
    const r = stowage(project, ['drill', '--json']);
    expect(r.status).toBe(0);
    expect(r.result?.ok).toBe(true);
  });

  it('explains itself when there is nothing to drill or the key is unknown, and has --help with examples', () => {
    const none = stowage(project, ['drill']);
    expect(none.status).toBe(1);
    expect(none.stderr).toMatch(/no completed backup to drill; create one with: stowage backup/);
    backup('one');
    const unknown = stowage(project, ['drill', 'nope.zip', '--json']);
    expect(unknown.status).toBe(1);
    expect(unknown.result).toMatchObject({ type: 'error', code: 'BACKUP_NOT_FOUND' });
    const help = stowage(project, ['drill', '--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/Examples:\n\s+\$ stowage drill\n/);
    expect(help.stdout).toMatch(/runs when restore is disabled/);
  });
});

describe('stowage verify --record', () => {
  it('records the newest backup as verified, visible in list --json', () => {
    const dir = makeTempDir('stowage-verify-record-');
    try {
      fs.mkdirSync(path.join(dir, 'app'));
      fs.writeFileSync(path.join(dir, 'app/a.txt'), 'a\n');
      fs.writeFileSync(path.join(dir, 'stowage.yaml'), 'dataDir: data\nsources: [{ name: files, kind: dir, path: ./app }]\n');
      expect(stowage(dir, ['backup', '--name', 'one', '--json']).status).toBe(0);
      expect(stowage(dir, ['verify']).status).toBe(2); // no key and no --record
      const r = stowage(dir, ['verify', '--record', '--json']);
      expect(r.status).toBe(0);
      expect(r.result).toMatchObject({ key: 'one.zip', ok: true });
      const list = stowage(dir, ['list', '--json']).result?.backups as Array<{ key: string; verifyStatus?: string; verifiedAt?: string }>;
      expect(list.find((b) => b.key === 'one.zip')).toMatchObject({ verifyStatus: 'ok', verifiedAt: expect.any(String) });
    } finally {
      removeDir(dir);
    }
  });
});

describe('drills and verification in GET /api/health', () => {
  it('lastVerifiedRestoreAt and lastVerifiedAt follow the successful drills and verifications, a failed drill leaves them', async () => {
    const s = await startTestServer();
    try {
      type H = { lastVerifiedAt: string | null; lastVerifiedRestoreAt: string | null };
      const health = async () => ((await (await s.request('/api/health')).json()) as { backups: H }).backups;
      expect(await health()).toMatchObject({ lastVerifiedAt: null, lastVerifiedRestoreAt: null });
      const good = await s.stowage.createBackup({ name: 'good' });
      // `stowage drill` and `stowage verify --record` as separate processes, on the server's data folder.
      expect(stowage(s.root, ['drill', good.key, '--json']).status).toBe(0);
      expect(stowage(s.root, ['verify', '--record', good.key, '--json']).status).toBe(0);
      const info = (await (await s.request(`/api/backups/${good.key}/info`, { token: s.adminToken })).json()) as { drilledAt: string; verifiedAt: string };
      const after = await health();
      expect(after).toEqual(expect.objectContaining({ lastVerifiedRestoreAt: info.drilledAt, lastVerifiedAt: info.verifiedAt }));
      expect(Date.parse(after.lastVerifiedRestoreAt!)).toBeGreaterThan(Date.now() - 60_000);

      // A newer backup whose archive is damaged: its drill fails, and health still shows the last good one.
      const bad = await s.stowage.createBackup({ name: 'bad' });
      const file = path.join(s.root, 'data/backups', bad.key);
      const bytes = fs.readFileSync(file);
      const name = bytes.indexOf(Buffer.from('files/readme.txt')); // in the entry's local header, 30 bytes in
      const data = name + bytes.readUInt16LE(name - 30 + 26) + bytes.readUInt16LE(name - 30 + 28);
      bytes[data] = bytes[data]! ^ 0xff;
      fs.writeFileSync(file, bytes);
      expect(stowage(s.root, ['drill', bad.key, '--json']).status).not.toBe(0);
      expect(((await (await s.request(`/api/backups/${bad.key}/info`, { token: s.adminToken })).json()) as { drillStatus: string }).drillStatus).toBe('failed');
      expect(await health()).toMatchObject({ lastVerifiedRestoreAt: info.drilledAt, lastVerifiedAt: info.verifiedAt });
    } finally {
      await s.close();
    }
  });
});
