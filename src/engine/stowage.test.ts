import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { Stowage } from './stowage.js';
import { parseConfig, resolveConfig } from '../config/load.js';
import { makeTempDir, removeDir, run, writeTree } from '../testing/tmp.js';
import type { StowageEvents } from '../events/events.js';

let root: string;
let stowage: Stowage;

function configFor(extra: Record<string, unknown> = {}) {
  return resolveConfig(
    parseConfig({
      dataDir: 'data',
      app: { name: 'Test App', version: '2.0.0', labels: { serial: 'S1' } },
      sources: [
        { name: 'files', kind: 'dir', path: 'app', exclude: ['logs', '*.tmp'] },
        { name: 'db', kind: 'sqlite', path: 'db/app.db' },
      ],
      ...extra,
    }),
    root,
    path.join(root, 'stowage.yaml'),
  );
}

beforeEach(async () => {
  root = makeTempDir();
  writeTree(root, {
    'app/config.json': '{"a":1}',
    'app/uploads/photo.jpg': Buffer.alloc(5000, 7),
    'app/logs/app.log': 'log line\n',
    'app/cache.tmp': 'temp',
    'app/empty/': null,
  });
  fs.symlinkSync('config.json', path.join(root, 'app/link-to-config'));
  fs.mkdirSync(path.join(root, 'db'));
  const db = new Database(path.join(root, 'db/app.db'));
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t (v) VALUES (\'one\'), (\'two\');');
  db.close();
  stowage = await Stowage.open({ config: configFor() });
});

afterEach(() => {
  stowage.close();
  removeDir(root);
});

describe('Stowage engine', () => {
  it('backs up, lists, verifies and restores with excludes left alone', async () => {
    const created: Array<StowageEvents['backup.created']> = [];
    stowage.on('backup.created', (e) => created.push(e));
    const backup = await stowage.createBackup({ description: 'first' });
    expect(backup.key).toMatch(/^test_app_\d{14}\.zip$/);
    expect(backup.status).toBe('completed');
    expect(created[0]!.excludes).toEqual([]);
    expect(created[0]!.path).toBe(path.join(root, 'data/backups', backup.key));
    expect(run('unzip', ['-tq', created[0]!.path!]).status).toBe(0);

    const list = await stowage.listBackups();
    expect(list.map((b) => b.key)).toEqual([backup.key]);
    expect(list[0]!.sources.find((s) => s.name === 'files')!.files).toBe(2);

    const manifest = await stowage.readManifest(backup.key);
    expect(manifest.entries.map((e) => e.path)).toContain('files/link-to-config');
    expect(manifest.entries.map((e) => e.path)).not.toContain('files/logs/app.log');
    expect(manifest.app).toEqual({ name: 'Test App', version: '2.0.0', labels: { serial: 'S1' } });

    const verify = await stowage.verify(backup.key);
    expect(verify.ok).toBe(true);

    // Change the data, then restore.
    fs.writeFileSync(path.join(root, 'app/config.json'), '{"a":2}');
    fs.writeFileSync(path.join(root, 'app/new-file.txt'), 'added after the backup');
    fs.writeFileSync(path.join(root, 'app/logs/app.log'), 'newer log\n');
    const db = new Database(path.join(root, 'db/app.db'));
    db.exec("INSERT INTO t (v) VALUES ('three')");
    db.close();

    const dry = await stowage.restore(backup.key, { dryRun: true });
    const files = dry.plan!.find((p) => p.name === 'files')!;
    expect(files.replaced).toEqual(['config.json']);
    expect(files.removed).toEqual(['new-file.txt']);

    const outcome = await stowage.restore(backup.key);
    expect(outcome.status.status).toBe('completed');
    expect(outcome.status.safetyBackupKey).toMatch(/^@pre-restore_test_app_\d{14}\.zip$/);
    expect(fs.readFileSync(path.join(root, 'app/config.json'), 'utf8')).toBe('{"a":1}');
    expect(fs.existsSync(path.join(root, 'app/new-file.txt'))).toBe(false);
    expect(fs.readFileSync(path.join(root, 'app/logs/app.log'), 'utf8')).toBe('newer log\n');
    expect(fs.readFileSync(path.join(root, 'app/cache.tmp'), 'utf8')).toBe('temp');
    expect(fs.readlinkSync(path.join(root, 'app/link-to-config'))).toBe('config.json');
    expect(fs.statSync(path.join(root, 'app/empty')).isDirectory()).toBe(true);
    const after = new Database(path.join(root, 'db/app.db'), { readonly: true });
    expect(after.prepare('SELECT count(*) AS n FROM t').get()).toEqual({ n: 2 });
    after.close();
    expect(stowage.restoreStatus().status).toBe('completed');
    expect(fs.readdirSync(path.join(root, 'app')).filter((n) => n.startsWith('.stowage'))).toEqual([]);
  });

  it('runs exclude hooks with the rules so far', async () => {
    const seen: string[][] = [];
    stowage.addExcludeHook(({ source, excludes }) => {
      seen.push([source, ...excludes]);
      return ['uploads'];
    });
    const backup = await stowage.createBackup({ excludes: ['empty'] });
    expect(seen).toEqual([['files', 'logs', '*.tmp', 'empty']]);
    const manifest = await stowage.readManifest(backup.key);
    expect(manifest.entries.some((e) => e.path.startsWith('files/uploads'))).toBe(false);
    expect(manifest.sources.find((s) => s.name === 'files')!.excludes).toEqual(['logs', '*.tmp', 'empty', 'uploads']);
  });

  it('keeps a failed backup in the list with its reason', async () => {
    fs.rmSync(path.join(root, 'db/app.db'));
    await expect(stowage.createBackup({ name: 'will-fail' })).rejects.toThrow(/does not exist/);
    const list = await stowage.listBackups();
    expect(list[0]).toMatchObject({ key: 'will-fail.zip', status: 'failed' });
    expect(list[0]!.statusMessage).toMatch(/SQLite database .* does not exist/);
    expect(fs.readdirSync(path.join(root, 'data/backups'))).toEqual([]);
  });

  it('refuses invalid and duplicate names', async () => {
    await expect(stowage.createBackup({ name: '../evil' })).rejects.toThrow(/not a valid backup key/);
    await stowage.createBackup({ name: 'same' });
    await expect(stowage.createBackup({ name: 'same' })).rejects.toThrow(/already exists/);
  });
});
