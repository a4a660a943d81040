import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { spawnSync } from 'node:child_process';
import { CLI, stowage } from '../src/testing/cli.js';
import { hasCommand, makeTempDir, removeDir, run } from '../src/testing/tmp.js';
import { snapshotTree, type TreeSnapshot } from '../src/testing/tree-snapshot.js';

/**
 * End to end through the real CLI process: backup, verify, change the data, restore, and
 * compare byte for byte (content, modes, mtimes, empty folders, symlinks, unicode and long
 * names, zero-byte files). External tools judge the archives.
 */

/** Every folder above `file` is searchable by others and the file readable by them. */
function readableByOthers(file: string): boolean {
  let p = path.resolve(file);
  if ((fs.statSync(p).mode & 0o004) === 0) return false;
  while (p !== path.dirname(p)) {
    p = path.dirname(p);
    if ((fs.statSync(p).mode & 0o001) === 0) return false;
  }
  return true;
}

let project: string;
const longName = `${'l'.repeat(200)}-ünïcødé-名前.txt`; // 220+ bytes in UTF-8, near the 255-byte limit

function writeConfig(extra = '') {
  fs.writeFileSync(
    path.join(project, 'stowage.yaml'),
    `dataDir: data
app:
  name: Round Trip
  version: "3.1.0"
  labels: { model: rt-1, serial: "0042" }
sources:
  - name: files
    kind: dir
    path: ./app
    exclude: [logs, "*.tmp"]
  - name: db
    kind: sqlite
    path: ./app/db/app.db
excludes: ["app/db/*"]
${extra}`,
  );
}

beforeEach(() => {
  project = makeTempDir('stowage-e2e-');
  const app = path.join(project, 'app');
  fs.mkdirSync(path.join(app, 'nested/deeper/deepest'), { recursive: true });
  fs.mkdirSync(path.join(app, 'empty-folder'));
  fs.mkdirSync(path.join(app, 'logs'));
  fs.mkdirSync(path.join(app, 'db'));
  fs.writeFileSync(path.join(app, 'config.json'), JSON.stringify({ hello: 'world' }));
  fs.writeFileSync(path.join(app, 'zero-bytes'), '');
  fs.writeFileSync(path.join(app, 'nested/deeper/deepest/data.bin'), crypto.randomBytes(3 * 1024 * 1024 + 17));
  fs.writeFileSync(path.join(app, 'nested/text.md'), '# notes\n'.repeat(50_000));
  fs.writeFileSync(path.join(app, longName), 'long and unicode');
  fs.writeFileSync(path.join(app, 'script.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
  fs.writeFileSync(path.join(app, 'secret.key'), 'k', { mode: 0o600 });
  fs.writeFileSync(path.join(app, 'logs/app.log'), 'log before backup\n');
  fs.writeFileSync(path.join(app, 'scratch.tmp'), 'temporary');
  fs.symlinkSync('nested/text.md', path.join(app, 'link-to-text'));
  fs.symlinkSync('deeper', path.join(app, 'nested/dir-link'));
  fs.chmodSync(path.join(app, 'nested/deeper'), 0o750);
  const old = new Date('2021-03-04T05:06:07.000Z');
  fs.utimesSync(path.join(app, 'config.json'), old, old);
  fs.utimesSync(path.join(app, 'empty-folder'), old, old);
  const db = new Database(path.join(app, 'db/app.db'));
  db.pragma('journal_mode = WAL');
  db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes (body) VALUES ('a'), ('b'), ('c');");
  db.close();
  writeConfig();
});

afterEach(() => removeDir(project));

/** The tree as the backup should restore it: excluded paths (logs, *.tmp, the db folder) left out. */
function backedUpView(snap: TreeSnapshot): TreeSnapshot {
  return Object.fromEntries(Object.entries(snap).filter(([p]) => !p.startsWith('logs') && !p.endsWith('.tmp') && !p.startsWith('db')));
}

describe('stowage CLI round trip', () => {
  it('backs up, verifies, restores byte for byte, and leaves excluded paths alone', async () => {
    const before = snapshotTree(path.join(project, 'app'), { wholeMs: true });

    const backup = stowage(project, ['backup', '--name', 'rt', '--description', 'round trip', '--json']);
    expect(backup.stderr).toBe('');
    expect(backup.status).toBe(0);
    expect(backup.result).toMatchObject({ type: 'result', ok: true, backup: { key: 'rt.zip', status: 'completed', trigger: 'manual', appVersion: '3.1.0' } });
    expect(backup.lines.some((l) => l.type === 'progress')).toBe(true);
    const archive = path.join(project, 'data/backups/rt.zip');

    // Independent judges.
    const t = run('unzip', ['-t', archive]);
    expect(t.stdout).toContain('No errors detected');
    if (hasCommand('7z')) expect(run('7z', ['t', archive]).stdout).toContain('Everything is Ok');
    const names = run('unzip', ['-Z1', archive]).stdout.split('\n');
    expect(names).toContain(`files/${longName}`);
    expect(names).toContain('files/empty-folder/');
    expect(names).toContain('db/app.db');
    expect(names[names.length - 2]).toBe('stowage.json'); // written last (last line is empty)
    expect(names.some((n) => n.startsWith('files/logs'))).toBe(false);
    expect(names.some((n) => n.endsWith('.tmp'))).toBe(false);

    const show = stowage(project, ['show', 'rt.zip', '--json']);
    expect(show.status).toBe(0);
    expect(show.result!.manifest).toMatchObject({
      format: 'stowage-backup',
      formatVersion: 1,
      key: 'rt.zip',
      description: 'round trip',
      app: { name: 'Round Trip', version: '3.1.0', labels: { model: 'rt-1', serial: '0042' } },
    });
    const verify = stowage(project, ['verify', 'rt.zip', '--json']);
    expect(verify.status).toBe(0);
    expect(verify.result).toMatchObject({ ok: true, errors: [] });

    // Change everything.
    const app = path.join(project, 'app');
    fs.writeFileSync(path.join(app, 'config.json'), 'changed');
    fs.rmSync(path.join(app, 'nested'), { recursive: true });
    fs.rmSync(path.join(app, 'empty-folder'), { recursive: true });
    fs.writeFileSync(path.join(app, 'new.txt'), 'new');
    fs.chmodSync(path.join(app, 'script.sh'), 0o644);
    fs.writeFileSync(path.join(app, 'logs/app.log'), 'log after backup\n');
    fs.writeFileSync(path.join(app, 'logs/new.log'), 'another\n');
    const db = new Database(path.join(app, 'db/app.db'));
    db.exec("DELETE FROM notes; INSERT INTO notes (body) VALUES ('changed')");
    db.close();

    const dry = stowage(project, ['restore', 'rt.zip', '--dry-run', '--json']);
    expect(dry.status).toBe(0);
    const plan = (dry.result!.plan as Array<{ name: string; added: string[]; replaced: string[]; removed: string[] }>).find((p) => p.name === 'files')!;
    expect(plan.removed).toEqual(['new.txt']);
    expect(plan.replaced).toContain('config.json');
    expect(plan.added).toContain('nested/deeper/deepest/data.bin');
    expect(fs.readFileSync(path.join(app, 'config.json'), 'utf8')).toBe('changed'); // dry run changed nothing

    const restore = stowage(project, ['restore', 'rt.zip', '--yes', '--json']);
    expect(restore.stderr).toBe('');
    expect(restore.status).toBe(0);
    expect(restore.result).toMatchObject({ ok: true, status: { status: 'completed', key: 'rt.zip' } });
    expect(restore.lines.some((l) => l.type === 'progress' && l.phase === 'swapping')).toBe(true);

    const after = snapshotTree(app, { wholeMs: true });
    expect(backedUpView(after)).toEqual(backedUpView(before));
    // Excluded paths are as they were just before the restore, not as in the backup.
    expect(fs.readFileSync(path.join(app, 'logs/app.log'), 'utf8')).toBe('log after backup\n');
    expect(fs.readFileSync(path.join(app, 'logs/new.log'), 'utf8')).toBe('another\n');
    expect(fs.readFileSync(path.join(app, 'scratch.tmp'), 'utf8')).toBe('temporary');
    const restoredDb = new Database(path.join(app, 'db/app.db'), { readonly: true });
    expect(restoredDb.prepare('SELECT body FROM notes ORDER BY id').all()).toEqual([{ body: 'a' }, { body: 'b' }, { body: 'c' }]);
    expect(restoredDb.pragma('integrity_check', { simple: true })).toBe('ok');
    restoredDb.close();
    expect(Object.keys(after).filter((p) => p.includes('.stowage'))).toEqual([]);

    const status = stowage(project, ['restore-status', '--json']);
    expect(status.result).toMatchObject({ status: { status: 'completed', key: 'rt.zip' } });
    const safety = (restore.result!.status as { safetyBackupKey: string }).safetyBackupKey;
    expect(safety).toMatch(/^@pre-restore_round_trip_\d{14}\.zip$/);
    const list = stowage(project, ['list', '--json']);
    const keys = (list.result!.backups as Array<{ key: string; trigger: string; status: string }>).map((b) => `${b.key}:${b.trigger}:${b.status}`);
    expect(keys).toEqual(expect.arrayContaining(['rt.zip:manual:completed', `${safety}:pre-restore:completed`]));
    for (const key of ['rt.zip', safety]) expect(run('unzip', ['-tq', path.join(project, 'data/backups', key)]).status).toBe(0);

    // The safety backup undoes the restore.
    const undo = stowage(project, ['restore', safety, '--yes', '--no-safety-backup', '--json']);
    expect(undo.status).toBe(0);
    expect(fs.readFileSync(path.join(app, 'config.json'), 'utf8')).toBe('changed');
    expect(fs.existsSync(path.join(app, 'new.txt'))).toBe(true);
  });

  it('restores a single source and into another folder', () => {
    expect(stowage(project, ['backup', '--name', 'two', '--json']).status).toBe(0);
    const target = path.join(project, 'elsewhere');
    const r = stowage(project, ['restore', 'two.zip', '--target', target, '--source', 'files', '--json']);
    expect(r.status).toBe(0);
    expect(fs.readFileSync(path.join(target, 'files/config.json'), 'utf8')).toBe(JSON.stringify({ hello: 'world' }));
    expect(fs.existsSync(path.join(target, 'db'))).toBe(false);
    expect(r.result!.status).toMatchObject({ safetyBackupKey: null });
    const bad = stowage(project, ['restore', 'two.zip', '--source', 'nope', '--json']);
    expect(bad.status).toBe(2);
    expect(bad.result).toMatchObject({ type: 'error', code: 'USAGE' });
    expect(bad.result!.message).toMatch(/has no source nope; it has: files, db/);
  });

  it('restores what it can and says completed_with_errors about the rest (exit 3)', () => {
    expect(stowage(project, ['backup', '--name', 'both', '--json']).status).toBe(0);
    // The db source is no longer configured: there is no target for it.
    const yaml = fs.readFileSync(path.join(project, 'stowage.yaml'), 'utf8');
    fs.writeFileSync(path.join(project, 'stowage.yaml'), yaml.replace(/  - name: db\n    kind: sqlite\n    path: \.\/app\/db\/app\.db\n/, ''));
    fs.writeFileSync(path.join(project, 'app/config.json'), 'changed');
    const r = stowage(project, ['restore', 'both.zip', '--yes', '--json']);
    expect(r.status).toBe(3);
    expect(r.result!.status).toMatchObject({ status: 'completed_with_errors' });
    const sources = (r.result!.status as { sources: Array<{ name: string; status: string; errors: string[] }> }).sources;
    expect(sources.find((x) => x.name === 'files')).toMatchObject({ status: 'restored' });
    expect(sources.find((x) => x.name === 'db')).toMatchObject({ status: 'skipped', errors: [expect.stringMatching(/no sqlite source named "db" is configured.*--target/)] });
    expect(fs.readFileSync(path.join(project, 'app/config.json'), 'utf8')).toBe(JSON.stringify({ hello: 'world' }));
    expect(stowage(project, ['restore-status', '--json']).result).toMatchObject({ status: { status: 'completed_with_errors' } });
  });

  it('applies the version policy and the restore switch', () => {
    expect(stowage(project, ['backup', '--name', 'v3', '--json']).status).toBe(0);
    fs.writeFileSync(path.join(project, 'stowage.yaml'), fs.readFileSync(path.join(project, 'stowage.yaml'), 'utf8').replace('"3.1.0"', '"2.9.0"'));
    const refused = stowage(project, ['restore', 'v3.zip', '--yes', '--json']);
    expect(refused.status).toBe(1);
    expect(refused.result).toMatchObject({ type: 'error', code: 'VERSION_POLICY' });
    expect(refused.result!.message).toMatch(/newer app version \(3\.1\.0\) than the one running \(2\.9\.0\)/);
    expect(stowage(project, ['restore', 'v3.zip', '--force', '--json']).status).toBe(0);

    const off = stowage(project, ['restore', 'v3.zip', '--force', '--json'], { STOWAGE_RESTORE_UNSUPPORTED: 'true' });
    expect(off.status).toBe(1);
    expect(off.result).toMatchObject({ type: 'error', code: 'RESTORE_DISABLED' });
    expect(off.result!.message).toMatch(/STOWAGE_RESTORE_UNSUPPORTED=true/);
  });

  it('lists a failed backup with its reason and exits 1', () => {
    fs.rmSync(path.join(project, 'app/db/app.db'));
    const r = stowage(project, ['backup', '--name', 'broken', '--json']);
    expect(r.status).toBe(1);
    expect(r.result).toMatchObject({ type: 'error', code: 'SOURCE_FAILED' });
    const list = stowage(project, ['list']);
    expect(list.stdout).toMatch(/broken\.zip .* failed: source "db": SQLite database .* does not exist/);
    expect(fs.readdirSync(path.join(project, 'data/backups'))).toEqual([]);
  });

  it('warns about unreadable and special files and exits 3', () => {
    run('mkfifo', [path.join(project, 'app/a-fifo')]);
    const r = stowage(project, ['backup', '--name', 'warn', '--json']);
    expect(r.status).toBe(3);
    const warnings = (r.result!.backup as { warnings: Array<{ path: string; reason: string }> }).warnings;
    expect(warnings).toEqual([{ path: 'files/a-fifo', reason: 'skipped: a FIFO cannot be backed up' }]);
  });

  // As root every file is readable; run the CLI as "nobody" to meet a real permission error
  // (possible only when the checkout itself is readable by others).
  it.skipIf(process.getuid?.() !== 0 || !readableByOthers(CLI))('lists unreadable files as warnings instead of failing', () => {
    fs.writeFileSync(path.join(project, 'app/private.txt'), 'secret');
    fs.chmodSync(path.join(project, 'app/private.txt'), 0o000);
    fs.mkdirSync(path.join(project, 'app/locked'));
    fs.writeFileSync(path.join(project, 'app/locked/inside.txt'), 'x');
    fs.chmodSync(path.join(project, 'app/locked'), 0o000);
    run('chmod', ['-R', 'a+rwX', project]);
    fs.chmodSync(path.join(project, 'app/private.txt'), 0o000);
    fs.chmodSync(path.join(project, 'app/locked'), 0o000);
    const r = spawnSync(process.execPath, [CLI, 'backup', '--name', 'perm', '--json'], { cwd: project, uid: 65534, gid: 65534, encoding: 'utf8' });
    expect(r.status).toBe(3);
    const result = JSON.parse(r.stdout.trim().split('\n').pop()!) as { backup: { status: string; warnings: Array<{ path: string; reason: string }> } };
    expect(result.backup.status).toBe('completed');
    expect(result.backup.warnings).toEqual(
      expect.arrayContaining([
        { path: 'files/private.txt', reason: 'permission denied (not readable by this user)' },
        { path: 'files/locked', reason: 'folder not readable: EACCES' },
      ]),
    );
  });

  it('never puts its own data folder into a backup', () => {
    // dataDir inside the source: the classic way to get backups of backups.
    writeConfig();
    fs.writeFileSync(path.join(project, 'stowage.yaml'), fs.readFileSync(path.join(project, 'stowage.yaml'), 'utf8').replace('dataDir: data', 'dataDir: app/stowage-data'));
    expect(stowage(project, ['backup', '--name', 'first', '--json']).status).toBe(0);
    expect(stowage(project, ['backup', '--name', 'second', '--json']).status).toBe(0);
    const names = run('unzip', ['-Z1', path.join(project, 'app/stowage-data/backups/second.zip')]).stdout;
    expect(names).not.toContain('stowage-data');
    // And a restore keeps it in place (it was never backed up, so it is not removed).
    expect(stowage(project, ['restore', 'first.zip', '--yes', '--json']).status).toBe(0);
    expect(fs.existsSync(path.join(project, 'app/stowage-data/backups/second.zip'))).toBe(true);
  });

  it('reports configuration errors by field', () => {
    fs.writeFileSync(path.join(project, 'stowage.yaml'), 'sources:\n  - name: Bad Name\n    kind: dir\n  - name: x\n    kind: tape\n    path: /\nrestore:\n  versionPolicy: newest\n');
    const r = stowage(project, ['list', '--json']);
    expect(r.status).toBe(1);
    expect(r.result).toMatchObject({ type: 'error', code: 'CONFIG_INVALID' });
    const msg = r.result!.message as string;
    expect(msg).toMatch(/sources\[0\]\.name: must be 1-64 characters/);
    expect(msg).toMatch(/sources\[0\]\.path: is required/);
    expect(msg).toMatch(/sources\[1\].*kind must be "dir", "sqlite" or "postgres"/);
    expect(msg).toMatch(/restore\.versionPolicy: must be one of: any, same-or-older, same/);
  });

  it('reads secrets from ${ENV} and says which variable is missing', () => {
    fs.writeFileSync(path.join(project, 'stowage.yaml'), 'dataDir: ${DATA_DIR}\nsources:\n  - { name: files, kind: dir, path: ./app }\n');
    const missing = stowage(project, ['list', '--json'], { DATA_DIR: undefined });
    expect(missing.result!.message).toMatch(/dataDir: environment variable DATA_DIR is not set/);
    const ok = stowage(project, ['backup', '--name', 'env', '--json'], { DATA_DIR: 'from-env' });
    expect(ok.status).toBe(0);
    expect(fs.existsSync(path.join(project, 'from-env/backups/env.zip'))).toBe(true);
  });

  it('runs with the embedded default and says so', () => {
    const empty = makeTempDir('stowage-default-');
    try {
      const r = stowage(empty, ['backup', '--json']);
      expect(r.status).toBe(0);
      expect(r.stderr).toMatch(/No stowage\.yaml here: protecting the demo application in .*demo-app/);
      expect(r.stderr).toMatch(/stowage init/);
      expect((r.result!.backup as { key: string }).key).toMatch(/^demo_app_\d{14}\.zip$/);
      const init = stowage(empty, ['init', '--app', 'myapp']);
      expect(init.status).toBe(0);
      expect(fs.readFileSync(path.join(empty, 'stowage.yaml'), 'utf8')).toMatch(/name: myapp/);
      expect(stowage(empty, ['init']).status).toBe(2);
    } finally {
      removeDir(empty);
    }
  });

  it('deletes backups and explains unknown keys', () => {
    expect(stowage(project, ['backup', '--name', 'gone', '--json']).status).toBe(0);
    expect(stowage(project, ['delete', 'gone.zip', '--json']).status).toBe(0);
    const again = stowage(project, ['delete', 'gone.zip', '--json']);
    expect(again.status).toBe(1);
    expect(again.result).toMatchObject({ code: 'BACKUP_NOT_FOUND' });
    const bad = stowage(project, ['backup', '--name', 'Has Spaces', '--json']);
    expect(bad.result).toMatchObject({ code: 'INVALID_KEY' });
    expect(bad.result!.message).toMatch(/lowercase letters, digits/);
  });
});
