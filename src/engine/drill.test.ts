import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { Stowage } from './stowage.js';
import { chooseBackup, compareWithManifest, sqliteIntegrityProblems } from './drill.js';
import type { BackupRecord } from './catalogue.js';
import { parseConfig, resolveConfig } from '../config/load.js';
import { makeTempDir, removeDir, writeTree } from '../testing/tmp.js';
import { snapshotTree } from '../testing/tree-snapshot.js';
import type { StowageEvents } from '../events/events.js';
import type { ManifestEntry } from '../archive/manifest.js';

/**
 * Restore drills and recorded verification against real files, real SQLite and real
 * archives: a drill restores into scratch space only, compares independently of the restore,
 * records its outcome on the backup, and cleans up whatever happens.
 */
let root: string;
let stowage: Stowage;

function configFor(extra: Record<string, unknown> = {}) {
  return resolveConfig(
    parseConfig({
      dataDir: 'data',
      app: { name: 'Drill App', version: '2.0.0' },
      sources: [
        { name: 'files', kind: 'dir', path: 'app', exclude: ['logs'] },
        { name: 'db', kind: 'sqlite', path: 'db/app.db' },
      ],
      ...extra,
    }),
    root,
    path.join(root, 'stowage.yaml'),
  );
}

async function reopen(extra: Record<string, unknown> = {}): Promise<void> {
  stowage.close();
  stowage = await Stowage.open({ config: configFor(extra) });
}

/** Overwrites `length` bytes in the middle of the stored archive (inside big.bin's data). */
function damageArchive(key: string): void {
  const file = path.join(root, 'data/backups', key);
  const fd = fs.openSync(file, 'r+');
  const size = fs.fstatSync(fd).size;
  fs.writeSync(fd, Buffer.from([0xde, 0xad, 0xbe, 0xef]), 0, 4, Math.floor(size / 2));
  fs.closeSync(fd);
}

/** The restore's scratch root for this data folder: must hold nothing after a drill. */
function scratchLeftovers(): string[] {
  const tmp = path.join(root, 'data/tmp');
  if (!fs.existsSync(tmp)) return [];
  return fs.readdirSync(tmp).flatMap((tag) => fs.readdirSync(path.join(tmp, tag)).map((n) => `${tag}/${n}`));
}

/**
 * A database whose bytes are intact (CRC and SHA-256 match, VACUUM INTO copies it as is) but
 * whose content breaks its own schema: the column definition is patched in place, with the same
 * length, from `placeholder` to `constraint` after rows that violate it were written.
 */
function writeDatabaseBreakingItsSchema(file: string, placeholder: string, constraint: string, rows: string): void {
  fs.rmSync(file, { force: true });
  const db = new Database(file);
  db.exec(`CREATE TABLE t (id INTEGER PRIMARY KEY, v ${placeholder}); INSERT INTO t (v) VALUES ${rows};`);
  db.close();
  const bytes = fs.readFileSync(file);
  const at = bytes.indexOf(placeholder);
  expect(at).toBeGreaterThan(0);
  expect(constraint.length).toBe(placeholder.length);
  bytes.write(constraint, at, 'utf8');
  fs.writeFileSync(file, bytes);
}

beforeEach(async () => {
  root = makeTempDir('stowage-drill-');
  writeTree(root, {
    'app/config.json': '{"a":1}',
    'app/uploads/photo.jpg': Buffer.alloc(5000, 7),
    'app/big.bin': crypto.randomBytes(600_000), // incompressible: most of the archive, so its middle is inside this entry
    'app/logs/app.log': 'log line\n',
    'app/empty/': null,
  });
  fs.symlinkSync('config.json', path.join(root, 'app/link-to-config'));
  fs.chmodSync(path.join(root, 'app/config.json'), 0o640);
  fs.mkdirSync(path.join(root, 'db'));
  const db = new Database(path.join(root, 'db/app.db'));
  db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t (v) VALUES ('one'), ('two');");
  db.close();
  stowage = await Stowage.open({ config: configFor() });
});

afterEach(() => {
  stowage.close();
  removeDir(root);
});

describe('restore drill', () => {
  it('restores a good backup into scratch space, records ok, and touches neither the data nor the restore status', async () => {
    const backup = await stowage.createBackup({ name: 'good' });
    const before = { app: snapshotTree(path.join(root, 'app')), db: snapshotTree(path.join(root, 'db')) };
    const statusBefore = stowage.restoreStatus();
    const events: string[] = [];
    stowage.onAny((name) => events.push(name));
    const completed: Array<StowageEvents['drill.completed']> = [];
    stowage.on('drill.completed', (e) => completed.push(e));
    const phases = new Set<string>();

    const result = await stowage.drill(undefined, { trigger: 'schedule', onProgress: (p) => phases.add(p.phase) });

    expect(result).toMatchObject({ key: backup.key, ok: true, trigger: 'schedule', problems: [], error: null });
    expect(result.sources.map((s) => [s.name, s.ok])).toEqual([['files', true], ['db', true]]);
    expect(result.files).toBe(4); // config.json, photo.jpg, big.bin, app.db (the symlink is compared, not counted)
    expect(result.message).toMatch(/every file matches the manifest, every SQLite database passes integrity_check/);
    expect(completed).toEqual([{ key: backup.key, trigger: 'schedule', files: 4, bytes: result.bytes, durationMs: result.durationMs }]);
    expect([...phases]).toEqual(expect.arrayContaining(['restoring', 'comparing', 'checking-sqlite', 'completed']));
    expect(events.filter((e) => e.startsWith('restore.'))).toEqual([]);

    const recorded = await stowage.getBackup(backup.key);
    expect(recorded).toMatchObject({ drillStatus: 'ok', drilledAt: result.drilledAt, drillMessage: result.message, verifiedAt: null, verifyStatus: null });
    expect({ app: snapshotTree(path.join(root, 'app')), db: snapshotTree(path.join(root, 'db')) }).toEqual(before);
    expect(stowage.restoreStatus()).toEqual(statusBefore);
    expect(scratchLeftovers()).toEqual([]);
    expect(fs.existsSync(path.join(root, 'data/restore-journal.json'))).toBe(false);
    expect(stowage.catalogue.listJobs().find((j) => j.kind === 'drill')).toMatchObject({ status: 'completed', key: backup.key });
  });

  it('drills the newest completed backup when no key is given, and the one named otherwise', async () => {
    const first = await stowage.createBackup({ name: 'first' });
    const second = await stowage.createBackup({ name: 'second' });
    expect((await stowage.drill()).key).toBe(second.key);
    expect((await stowage.drill(first.key)).key).toBe(first.key);
    await expect(stowage.drill('missing.zip')).rejects.toMatchObject({ code: 'BACKUP_NOT_FOUND' });
  });

  it('refuses with a clear message when there is no completed backup', async () => {
    await expect(stowage.drill()).rejects.toThrow(/no completed backup to drill; create one with: stowage backup/);
  });

  it('fails on damaged stored bytes, records failed with the entry, and removes the scratch folder', async () => {
    const backup = await stowage.createBackup({ name: 'damaged' });
    damageArchive(backup.key);
    const failed: Array<StowageEvents['drill.failed']> = [];
    stowage.on('drill.failed', (e) => failed.push(e));

    const result = await stowage.drill(backup.key);

    expect(result.ok).toBe(false);
    expect(result.problems[0]).toMatch(/files\/big\.bin: SHA-256 does not match the manifest/);
    expect(result.error?.code).toBe('CHECKSUM_MISMATCH');
    expect(failed).toEqual([{ key: backup.key, trigger: 'manual', error: { code: 'CHECKSUM_MISMATCH', message: result.message } }]);
    expect(await stowage.getBackup(backup.key)).toMatchObject({ drillStatus: 'failed', drillMessage: expect.stringMatching(/does not restore correctly: files\/big\.bin/) });
    expect(scratchLeftovers()).toEqual([]);
    expect(stowage.catalogue.listJobs().find((j) => j.kind === 'drill')).toMatchObject({ status: 'failed', message: expect.stringMatching(/big\.bin/) });
  });

  it('catches a SQLite database whose bytes are intact but whose rows break NOT NULL (verify passes, the drill does not)', async () => {
    writeDatabaseBreakingItsSchema(path.join(root, 'db/app.db'), 'TEXT /* nullable */', 'TEXT NOT NULL      ', "(NULL), ('x')");
    const backup = await stowage.createBackup({ name: 'bad-db' });
    expect((await stowage.verify(backup.key)).ok).toBe(true);

    const result = await stowage.drill(backup.key);

    expect(result.ok).toBe(false);
    expect(result.sources.find((s) => s.name === 'files')!.ok).toBe(true);
    expect(result.sources.find((s) => s.name === 'db')!.problems).toEqual([expect.stringMatching(/^db\/app\.db: the database fails SQLite's integrity check: NULL value in t\.v/)]);
    expect(result.error?.code).toBe('ARCHIVE_INVALID');
    expect((await stowage.getBackup(backup.key)).drillStatus).toBe('failed');
    expect(scratchLeftovers()).toEqual([]);
  });

  it('catches CHECK constraint violations, which a read-only integrity_check does not report', async () => {
    const file = path.join(root, 'db/app.db');
    writeDatabaseBreakingItsSchema(file, 'INTEGER CHECK (v >= 000)', 'INTEGER CHECK (v >= 100)', '(1), (2)');
    const readonly = new Database(file, { readonly: true });
    expect(readonly.pragma('integrity_check')).toEqual([{ integrity_check: 'ok' }]); // why the drill opens its copy read-write
    readonly.close();
    const backup = await stowage.createBackup({ name: 'bad-check' });

    const result = await stowage.drill(backup.key);

    expect(result.ok).toBe(false);
    expect(result.problems.join('\n')).toMatch(/CHECK constraint failed in t/);
  });

  it('runs while restore is disabled: it writes only scratch data', async () => {
    await stowage.createBackup({ name: 'disabled' });
    await reopen({ restore: { enabled: false } });
    await expect(stowage.restore('disabled.zip', { targetDir: path.join(root, 'elsewhere') })).rejects.toMatchObject({ code: 'RESTORE_DISABLED' });
    expect((await stowage.drill()).ok).toBe(true);
  });

  it('runs no restore hooks (they would stop the application)', async () => {
    await stowage.createBackup({ name: 'hooked' });
    const marker = path.join(root, 'hook-ran');
    await reopen({ hooks: { beforeRestore: [{ command: ['sh', '-c', `touch ${marker}`] }], afterRestore: [{ command: ['sh', '-c', `touch ${marker}`] }] } });
    expect((await stowage.drill()).ok).toBe(true);
    expect(fs.existsSync(marker)).toBe(false);
    await stowage.restore('hooked.zip', { targetDir: path.join(root, 'elsewhere') }); // the hooks are live: a restore runs them
    expect(fs.existsSync(marker)).toBe(true);
  });

  it('is a job: BUSY while another job holds the data folder', async () => {
    await stowage.createBackup({ name: 'busy' });
    const other = await Stowage.open({ config: configFor() });
    try {
      const job = await other.startBackup({ name: 'running' });
      await expect(stowage.drill('busy.zip')).rejects.toMatchObject({ code: 'BUSY' });
      await job.done;
    } finally {
      other.close();
    }
  });
});

describe('compareWithManifest', () => {
  const entry = (p: string, type: ManifestEntry['type'], extra: Partial<ManifestEntry> = {}): ManifestEntry => ({ path: p, type, size: 0, mode: type === 'dir' ? '0755' : '0644', mtime: '2024-01-01T00:00:00.000Z', ...extra });
  const hash = (s: string) => crypto.createHash('sha256').update(s).digest('hex');

  it('reports missing, extra, changed, wrongly linked and wrongly permitted paths, and accepts an exact tree', async () => {
    const tree = path.join(root, 'restored');
    writeTree(tree, { 'a.txt': 'alpha', 'sub/b.txt': 'beta', 'extra.txt': 'not in the manifest' });
    fs.chmodSync(path.join(tree, 'a.txt'), 0o644);
    fs.chmodSync(path.join(tree, 'sub/b.txt'), 0o600);
    fs.chmodSync(path.join(tree, 'sub'), 0o755);
    fs.symlinkSync('sub/b.txt', path.join(tree, 'link'));
    const entries: ManifestEntry[] = [
      entry('s/', 'dir'),
      entry('s/a.txt', 'file', { size: 5, sha256: hash('alpha') }),
      entry('s/sub/', 'dir'),
      entry('s/sub/b.txt', 'file', { size: 4, sha256: hash('BETA') }),
      entry('s/link', 'symlink', { size: 5, sha256: hash('a.txt') }),
      entry('s/gone.txt', 'file', { size: 1, sha256: hash('x') }),
      entry('other/a.txt', 'file', { size: 1, sha256: hash('y') }),
    ];
    const result = await compareWithManifest(tree, 's', entries);
    expect(result.problems.sort()).toEqual(
      [
        'extra.txt: present after the restore but not in the manifest',
        'gone.txt: missing after the restore (a file in the manifest)',
        'link: the link points to "sub/b.txt", not to the target the manifest records',
        'sub/b.txt: permissions are 0600 after the restore, 0644 in the manifest',
        'sub/b.txt: the restored content does not match the SHA-256 in the manifest',
      ].sort(),
    );
    expect(result.files).toBe(1);

    fs.rmSync(path.join(tree, 'extra.txt'));
    fs.chmodSync(path.join(tree, 'sub/b.txt'), 0o644);
    fs.writeFileSync(path.join(tree, 'sub/b.txt'), 'BETA');
    fs.unlinkSync(path.join(tree, 'link'));
    fs.symlinkSync('a.txt', path.join(tree, 'link'));
    fs.writeFileSync(path.join(tree, 'gone.txt'), 'x');
    fs.chmodSync(path.join(tree, 'gone.txt'), 0o644);
    expect(await compareWithManifest(tree, 's', entries)).toEqual({ files: 3, bytes: 10, problems: [] });
  });

  it('reports a type change and a size change without reading the content', async () => {
    const tree = path.join(root, 'restored2');
    writeTree(tree, { 'was-a-dir': 'now a file', 'short.txt': 'abc' });
    const entries = [entry('s/was-a-dir/', 'dir'), entry('s/short.txt', 'file', { size: 10, sha256: 'a'.repeat(64) })];
    const result = await compareWithManifest(tree, 's', entries);
    expect(result.problems.sort()).toEqual(['short.txt: 3 bytes after the restore, 10 in the manifest', 'was-a-dir: is a file after the restore, a dir in the manifest']);
  });
});

describe('sqliteIntegrityProblems', () => {
  it('is empty for a good database and names the problem for a file that is not one', () => {
    expect(sqliteIntegrityProblems(path.join(root, 'db/app.db'))).toEqual([]);
    fs.writeFileSync(path.join(root, 'not-a-db'), 'x'.repeat(4096));
    expect(sqliteIntegrityProblems(path.join(root, 'not-a-db'))[0]).toMatch(/not a database|cannot be opened/);
  });
});

describe('recorded verification', () => {
  it('records ok on the newest backup and emits verify.completed', async () => {
    await stowage.createBackup({ name: 'older' });
    const newest = await stowage.createBackup({ name: 'newer' });
    const completed: Array<StowageEvents['verify.completed']> = [];
    stowage.on('verify.completed', (e) => completed.push(e));
    const result = await stowage.verifyRecorded(undefined, { trigger: 'schedule' });
    expect(result).toMatchObject({ key: newest.key, ok: true, trigger: 'schedule', errors: [] });
    expect(completed).toEqual([{ key: newest.key, trigger: 'schedule', files: result.files, bytes: result.bytes }]);
    expect(await stowage.getBackup(newest.key)).toMatchObject({ verifyStatus: 'ok', verifiedAt: result.verifiedAt, verifyMessage: expect.stringMatching(/every checksum matches/) });
    expect((await stowage.getBackup('older.zip')).verifiedAt).toBeNull();
    expect(stowage.catalogue.listJobs().find((j) => j.kind === 'verify')).toMatchObject({ status: 'completed', key: newest.key });
  });

  it('records failed for damaged bytes and emits verify.failed with the entries', async () => {
    const backup = await stowage.createBackup({ name: 'broken' });
    damageArchive(backup.key);
    const failed: Array<StowageEvents['verify.failed']> = [];
    stowage.on('verify.failed', (e) => failed.push(e));
    const result = await stowage.verifyRecorded(backup.key);
    expect(result.ok).toBe(false);
    expect(failed[0]).toMatchObject({ key: backup.key, trigger: 'manual', error: { code: 'CHECKSUM_MISMATCH' }, errors: [{ path: 'files/big.bin' }] });
    expect(await stowage.getBackup(backup.key)).toMatchObject({ verifyStatus: 'failed', verifyMessage: expect.stringMatching(/files\/big\.bin/) });
  });

  it('records an unreadable archive as a failed verification', async () => {
    const backup = await stowage.createBackup({ name: 'truncated' });
    fs.truncateSync(path.join(root, 'data/backups', backup.key), 100);
    const result = await stowage.verifyRecorded(backup.key);
    expect(result.ok).toBe(false);
    expect((await stowage.getBackup(backup.key)).verifyStatus).toBe('failed');
  });

  it('with sample "rotate" takes never-verified backups first (oldest first), then the least recently verified', async () => {
    for (const name of ['one', 'two', 'three']) await stowage.createBackup({ name });
    await stowage.verifyRecorded('two.zip');
    const order: string[] = [];
    for (let i = 0; i < 4; i++) order.push((await stowage.verifyRecorded(undefined, { sample: 'rotate' })).key);
    expect(order).toEqual(['one.zip', 'three.zip', 'two.zip', 'one.zip']);
  });
});

describe('chooseBackup', () => {
  const record = (key: string, createdAt: string, extra: Partial<BackupRecord> = {}): BackupRecord => ({
    key, id: key, name: key, description: '', status: 'completed', statusMessage: '', trigger: 'manual', createdAt, completedAt: createdAt, size: 1,
    hostname: '', appName: '', appVersion: '', labels: {}, sources: [], excludes: [], warnings: [], encrypted: false, ...extra,
  });
  const list = [
    record('failed.zip', '2024-01-05T00:00:00Z', { status: 'failed', statusMessage: 'disk full' }),
    record('d.zip', '2024-01-04T00:00:00Z', { drilledAt: '2024-02-01T00:00:00Z', verifiedAt: '2024-02-03T00:00:00Z' }),
    record('c.zip', '2024-01-03T00:00:00Z', { drilledAt: '2024-02-02T00:00:00Z', verifiedAt: '2024-02-01T00:00:00Z' }),
    record('b.zip', '2024-01-02T00:00:00Z', { drilledAt: null, verifiedAt: '2024-02-02T00:00:00Z' }),
    record('a.zip', '2024-01-01T00:00:00Z'),
  ];

  it('newest completed, or by least recent check with never-checked first', () => {
    expect(chooseBackup(list, undefined, 'newest', 'drill')).toBe('d.zip');
    expect(chooseBackup(list, undefined, 'rotate', 'verify')).toBe('a.zip');
    expect(chooseBackup(list.filter((b) => b.key !== 'a.zip'), undefined, 'rotate', 'verify')).toBe('c.zip');
    expect(chooseBackup(list.filter((b) => b.key !== 'a.zip'), undefined, 'rotate', 'drill')).toBe('b.zip');
  });

  it('refuses an unknown or failed key with the reason', () => {
    expect(() => chooseBackup(list, 'nope.zip', 'newest', 'drill')).toThrow(/no backup named nope\.zip/);
    expect(() => chooseBackup(list, 'failed.zip', 'newest', 'drill')).toThrow(/failed \(disk full\); only a completed backup/);
  });
});
