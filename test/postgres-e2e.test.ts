import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { Stowage } from '../src/engine/stowage.js';
import { CLI, stowage, stowageAsync, type CliResult } from '../src/testing/cli.js';
import { buildZip, manifestRawEntry, S_IFDIR, S_IFREG, type RawEntry } from '../src/testing/evil-zip.js';
import { databaseSnapshot, INVARIANT_WRITER_SQL, startPostgresServer, type PostgresServer } from '../src/testing/postgres-server.js';
import { PG_PASSWORD_VAR, usePostgresFixture } from '../src/testing/postgres-fixture.js';
import { waitFor } from '../src/testing/server.js';
import { run } from '../src/testing/tmp.js';
import { snapshotTree } from '../src/testing/tree-snapshot.js';

/**
 * kind: postgres end to end: the CLI as a real process against a real PostgreSQL server
 * (src/testing/postgres-server.ts, SCRAM passwords). Judges independent of Stowage: unzip for
 * the archive, pg_restore run by hand into another database for what the backup holds, psql for
 * the rows.
 */

const fx = usePostgresFixture({ dirPrefix: 'stowage-fx.server-e2e-', databasePrefix: 'e2e' });
const PASSWORD_VAR = PG_PASSWORD_VAR;
const APP_PASSWORD = fx.appPassword;
const ENV = { [PASSWORD_VAR]: APP_PASSWORD, STOWAGE_FAILPOINTS: '' };
const { newDatabase, app } = fx;

interface ConfigOptions {
  database: string;
  server?: PostgresServer;
  /** Extra lines for the postgres source (indented 4). */
  pgExtra?: string[];
  /** Add a dir source (./app) and a SQLite source (./app-db/app.db). */
  mixed?: boolean;
  versionPolicy?: 'any' | 'same-or-older' | 'same';
}

function writeConfig(o: ConfigOptions): void {
  const server = o.server ?? fx.server;
  const files = o.mixed
    ? `  - name: files
    kind: dir
    path: ./app
  - name: appdb
    kind: sqlite
    path: ./app-db/app.db
`
    : '';
  fs.writeFileSync(
    path.join(fx.dir, 'stowage.yaml'),
    `dataDir: data
app:
  name: pgapp
  version: "1.0.0"
sources:
${files}  - name: db
    kind: postgres
    url: ${server.url(o.database, 'app')}
    passwordEnv: ${PASSWORD_VAR}
    binDir: ${server.binDir}
${(o.pgExtra ?? []).map((l) => `    ${l}\n`).join('')}restore:
  versionPolicy: ${o.versionPolicy ?? 'same-or-older'}
`,
  );
}

/** The files of the mixed configuration: ./app (a folder) and ./app-db/app.db (SQLite, table t with one row). */
function makeAppFiles(): string {
  const appDir = path.join(fx.dir, 'app');
  fs.mkdirSync(path.join(appDir, 'sub'), { recursive: true });
  fs.writeFileSync(path.join(appDir, 'config.json'), '{"v":1}');
  fs.writeFileSync(path.join(appDir, 'sub/data.bin'), crypto.randomBytes(100_000));
  fs.mkdirSync(path.join(fx.dir, 'app-db'));
  const sqlite = new Database(path.join(fx.dir, 'app-db/app.db'));
  sqlite.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t (v) VALUES ('backed up');");
  sqlite.close();
  return appDir;
}

function cli(args: string[], env: NodeJS.ProcessEnv = {}): CliResult {
  return stowage(fx.dir, args, { ...ENV, ...env });
}

function snapshot(database: string, tables: string[]): Record<string, string> {
  return databaseSnapshot(fx.server, database, tables);
}

/** The dump inside an archive, restored by pg_restore run by hand into a new database: what the backup holds. */
function restoreByHand(archive: string): string {
  const dump = path.join(fx.dir, `by-hand-${crypto.randomBytes(4).toString('hex')}.pgdump`);
  const unzip = spawnSync('unzip', ['-p', archive, 'db/database.pgdump'], { maxBuffer: 1024 ** 3 });
  expect(unzip.status).toBe(0);
  fs.writeFileSync(dump, unzip.stdout);
  const copy = newDatabase();
  const r = spawnSync(path.join(fx.server.binDir, 'pg_restore'), ['--no-password', '--exit-on-error', `--dbname=${fx.server.url(copy, 'app')}`, dump], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH, PGPASSWORD: APP_PASSWORD },
  });
  expect(r.status, r.stderr).toBe(0);
  return copy;
}

/**
 * The archive `src` rebuilt byte by byte with its manifest edited, and optionally some entries'
 * content replaced (their size and SHA-256 in the manifest updated to match, so that only what
 * reads the content can tell).
 */
function rewriteManifest(src: string, dest: string, edit: (manifest: { sources: Array<Record<string, unknown>> }) => void, replace: Record<string, Buffer> = {}): void {
  const manifest = JSON.parse(spawnSync('unzip', ['-p', src, 'stowage.json'], { encoding: 'utf8' }).stdout) as {
    sources: Array<Record<string, unknown>>;
    entries: Array<{ path: string; type: string; mode: string; size: number; sha256?: string }>;
  };
  edit(manifest);
  const entries: RawEntry[] = manifest.entries.map((e) => {
    const perm = parseInt(e.mode, 8);
    if (e.type === 'dir') return { name: e.path, mode: S_IFDIR | perm, method: 0 };
    const data = replace[e.path] ?? spawnSync('unzip', ['-p', src, e.path], { maxBuffer: 1024 ** 3 }).stdout;
    if (replace[e.path]) Object.assign(e, { size: data.length, sha256: crypto.createHash('sha256').update(data).digest('hex') });
    return { name: e.path, data, method: 8, mode: S_IFREG | perm };
  });
  fs.writeFileSync(dest, buildZip([...entries, manifestRawEntry(JSON.stringify(manifest, null, 2))]));
}

type SourceStatus = { name: string; status: string; target: string; errors: string[] };
const sourcesOf = (r: CliResult): SourceStatus[] => (r.result!.status as { sources: SourceStatus[] }).sources;

function expectNoSecret(r: CliResult, secret: string): void {
  expect(r.stdout).not.toContain(secret);
  expect(r.stderr).not.toContain(secret);
}

describe('kind: postgres through the CLI', () => {
  it('backs up while a writer commits, restores over changed data, and the database equals what the backup holds', async () => {
    const db = newDatabase();
    app(
      db,
      `CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
       INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, 100) g;
       CREATE TABLE ledger (id bigserial PRIMARY KEY, amount int NOT NULL, pad text);
       INSERT INTO ledger (amount, pad) SELECT 1, repeat('p', 40) FROM generate_series(1, 200000);
       CREATE TABLE totals (total bigint NOT NULL);
       INSERT INTO totals VALUES (200000);
       CREATE TABLE zz_control (stop boolean NOT NULL);
       INSERT INTO zz_control VALUES (false);
       CREATE VIEW rich AS SELECT id FROM accounts WHERE balance > 1000;`,
    );
    writeConfig({ database: db });
    // Every transaction keeps sum(ledger) = totals and sum(balance) = 100000.
    const writer = fx.server.psqlAsync(
      INVARIANT_WRITER_SQL,
      { database: db, user: 'app', password: APP_PASSWORD },
    );
    const maxId = async (): Promise<number> => Number(await fx.server.psqlAsync('SELECT max(id) FROM ledger', { database: db }));
    let backup: CliResult;
    let startId: number;
    let endId: number;
    try {
      await waitFor(async () => (await maxId()) > 200_100, 20_000, 'the writer to write');
      startId = await maxId();
      backup = await stowageAsync(fx.dir, ['backup', '--name', 'pg1', '--json'], ENV);
      endId = await maxId();
    } finally {
      fx.server.psql('UPDATE zz_control SET stop = true', { database: db });
      await writer;
    }
    expect(backup.stderr).toBe('');
    expect(backup.status).toBe(0);
    expect(backup.result).toMatchObject({ ok: true, backup: { key: 'pg1.zip', status: 'completed' } });
    expect(endId).toBeGreaterThan(startId); // the writer committed during the backup
    expectNoSecret(backup, APP_PASSWORD);

    const archive = path.join(fx.dir, 'data/backups/pg1.zip');
    expect(run('unzip', ['-t', archive]).stdout).toContain('No errors detected');
    const names = run('unzip', ['-Z1', archive]).stdout.trim().split('\n');
    expect(names).toEqual(['db/', 'db/postgres.json', 'db/database.pgdump', 'stowage.json']);

    // The manifest records the server version (for the version policy), the URL without secrets.
    const show = cli(['show', 'pg1.zip', '--json']);
    expect(show.status).toBe(0);
    const source = (show.result!.manifest as { sources: Array<Record<string, unknown>> }).sources[0]!;
    expect(source).toMatchObject({ name: 'db', kind: 'postgres', path: fx.server.url(db, 'app'), files: 2, postgres: { serverVersion: fx.server.version, database: db } });
    expect((source.postgres as { serverVersionNum: number }).serverVersionNum).toBeGreaterThan(100000);

    // What the backup holds, by hand: a consistent snapshot from inside the writer's run.
    const tables = ['accounts', 'ledger', 'totals', 'zz_control'];
    const copy = restoreByHand(archive);
    const [ledgerSum, ledgerMax] = fx.server.psql('SELECT sum(amount), max(id) FROM ledger', { database: copy }).split('\t').map(Number);
    expect(ledgerSum).toBe(Number(fx.server.psql('SELECT total FROM totals', { database: copy })));
    expect(Number(fx.server.psql('SELECT sum(balance) FROM accounts', { database: copy }))).toBe(100_000);
    expect(ledgerMax).toBeGreaterThanOrEqual(startId);
    expect(ledgerMax).toBeLessThanOrEqual(endId);
    const held = snapshot(copy, tables);

    // Change it: rows, a column, a table the backup does not have.
    app(
      db,
      `UPDATE accounts SET balance = 0 WHERE id <= 50;
       DELETE FROM ledger WHERE id % 3 = 0;
       ALTER TABLE accounts ADD COLUMN nickname text DEFAULT 'x';
       CREATE TABLE created_later (id int PRIMARY KEY); INSERT INTO created_later VALUES (1);`,
    );
    const changed = snapshot(db, tables);

    const dry = cli(['restore', 'pg1.zip', '--dry-run', '--json']);
    expect(dry.status).toBe(0);
    expect(dry.result!.plan).toEqual([
      expect.objectContaining({ name: 'db', kind: 'postgres', target: fx.server.url(db, 'app'), replaced: [`database ${db}`], note: expect.stringContaining('the database would be replaced') }),
    ]);
    expect((dry.result!.plan as Array<{ note: string }>)[0]!.note).toContain(`the server runs ${fx.server.version}`);
    expect(stowage(fx.dir, ['restore', 'pg1.zip', '--dry-run'], ENV).stdout).toContain('the database would be replaced');
    expect(snapshot(db, tables)).toEqual(changed);

    const restore = cli(['restore', 'pg1.zip', '--yes', '--json']);
    expect(restore.stderr).toBe('');
    expect(restore.status).toBe(0);
    expect(restore.result).toMatchObject({ ok: true, status: { status: 'completed', key: 'pg1.zip' } });
    expect(sourcesOf(restore)).toEqual([{ name: 'db', kind: 'postgres', target: fx.server.url(db, 'app'), status: 'restored', files: 1, bytes: expect.any(Number), errors: [] }]);
    expect(restore.lines.some((l) => l.type === 'progress' && l.phase === 'restoring-database')).toBe(true);
    expectNoSecret(restore, APP_PASSWORD);

    // Objects not in the backup stay; everything in it is as the backup holds it.
    expect(app(db, 'SELECT count(*) FROM created_later')).toBe('1');
    app(db, 'DROP TABLE created_later');
    expect(snapshot(db, tables)).toEqual(held);
    expect(app(db, 'SELECT count(*) FROM rich')).toMatch(/^\d+$/);
    expect(cli(['restore-status', '--json']).result).toMatchObject({ status: { status: 'completed', key: 'pg1.zip' } });
    // The safety backup holds the database as it was (a pg_dump of it), and undoes the restore.
    const safety = (restore.result!.status as { safetyBackupKey: string }).safetyBackupKey;
    expect(safety).toMatch(/^@pre-restore_pgapp_\d{14}\.zip$/);
    expect(run('unzip', ['-tq', path.join(fx.dir, 'data/backups', safety)]).status).toBe(0);
    const undo = cli(['restore', safety, '--yes', '--no-safety-backup', '--json']);
    expect(undo.status, JSON.stringify(undo.result)).toBe(0);
    expect(app(db, 'SELECT count(*) FROM created_later')).toBe('1');
    expect(app(db, 'SELECT DISTINCT nickname FROM accounts')).toBe('x');

    // show-config shows the URL, never a password.
    const shown = cli(['show-config', '--json']);
    expect(shown.status).toBe(0);
    expectNoSecret(shown, APP_PASSWORD);
  });

  it('a mixed dir + SQLite + PostgreSQL restore: a failing pg_restore rolls back the database and the swapped files, the status says why per source; then it restores all three', () => {
    const db = newDatabase();
    // shared.amount lives in a schema the backup excludes; made stricter after the backup, it
    // refuses rows of the dump midway through pg_restore.
    app(
      db,
      `CREATE SCHEMA shared;
       CREATE DOMAIN shared.amount AS int CHECK (VALUE >= 0);
       CREATE TABLE payments (id int PRIMARY KEY, amount shared.amount NOT NULL);
       INSERT INTO payments SELECT g, g FROM generate_series(1, 1000) g;
       CREATE TABLE notes (id int PRIMARY KEY, body text);
       INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 100) g;`,
    );
    const appDir = makeAppFiles();
    writeConfig({ database: db, mixed: true, pgExtra: ['excludeSchemas: [shared]'] });

    const backup = cli(['backup', '--name', 'mix', '--json']);
    expect(backup.status).toBe(0);
    const archive = path.join(fx.dir, 'data/backups/mix.zip');
    expect(run('unzip', ['-t', archive]).stdout).toContain('No errors detected');
    const tables = ['payments', 'notes'];
    const held = snapshot(db, tables); // nothing writes: the database as backed up
    const filesBackedUp = snapshotTree(appDir, { wholeMs: true });

    // Change all three, and make the domain refuse amounts >= 500.
    fs.writeFileSync(path.join(appDir, 'config.json'), '{"v":2}');
    fs.rmSync(path.join(appDir, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(appDir, 'new.txt'), 'new');
    const sqliteNow = new Database(path.join(fx.dir, 'app-db/app.db'));
    sqliteNow.exec("UPDATE t SET v = 'changed'");
    sqliteNow.close();
    app(db, `DELETE FROM payments WHERE id > 900; UPDATE notes SET body = 'changed'; ALTER DOMAIN shared.amount ADD CONSTRAINT below_500 CHECK (VALUE < 500) NOT VALID;`);
    const filesChanged = snapshotTree(appDir, { wholeMs: true });
    const dbChanged = snapshot(db, tables);

    const dry = cli(['restore', 'mix.zip', '--dry-run', '--json']);
    expect(dry.status).toBe(0);
    expect((dry.result!.plan as Array<{ name: string }>).map((p) => p.name)).toEqual(['files', 'appdb', 'db']);

    const failed = cli(['restore', 'mix.zip', '--yes', '--json']);
    expect(failed.status).toBe(1);
    expect(failed.result).toMatchObject({ type: 'error', code: 'RESTORE_FAILED' });
    const message = failed.result!.message as string;
    expect(message).toContain('violates check constraint "below_500"');
    expect(message).toContain(`the restore was rolled back, database ${db} is as it was`);
    expect(message).toContain('the swap was rolled back; the data is as it was before');
    expectNoSecret(failed, APP_PASSWORD);

    // All three as they were just before the restore.
    expect(snapshotTree(appDir, { wholeMs: true })).toEqual(filesChanged);
    const sqliteAfter = new Database(path.join(fx.dir, 'app-db/app.db'), { readonly: true });
    expect(sqliteAfter.prepare('SELECT v FROM t').all()).toEqual([{ v: 'changed' }]);
    sqliteAfter.close();
    expect(snapshot(db, tables)).toEqual(dbChanged);
    expect(fs.readdirSync(appDir).filter((n) => n.startsWith('.stowage'))).toEqual([]);
    expect(fs.existsSync(path.join(fx.dir, 'data/restore-journal.json'))).toBe(false);

    const status = cli(['restore-status', '--json']);
    expect(status.result).toMatchObject({ status: { status: 'failed', key: 'mix.zip', safetyBackupKey: expect.stringMatching(/^@pre-restore_/) } });
    const perSource = sourcesOf(status);
    expect(perSource.find((s) => s.name === 'files')).toMatchObject({ status: 'rolled_back' });
    expect(perSource.find((s) => s.name === 'appdb')).toMatchObject({ status: 'rolled_back' });
    expect(perSource.find((s) => s.name === 'db')).toMatchObject({ status: 'rolled_back', target: fx.server.url(db, 'app'), errors: [expect.stringContaining('violates check constraint "below_500"')] });

    // With the constraint gone, all three come back as backed up.
    app(db, 'ALTER DOMAIN shared.amount DROP CONSTRAINT below_500');
    const ok = cli(['restore', 'mix.zip', '--yes', '--json']);
    expect(ok.status).toBe(0);
    expect(sourcesOf(ok).map((s) => `${s.name}:${s.status}`)).toEqual(['files:restored', 'appdb:restored', 'db:restored']);
    expect(snapshotTree(appDir, { wholeMs: true })).toEqual(filesBackedUp);
    const sqliteRestored = new Database(path.join(fx.dir, 'app-db/app.db'), { readonly: true });
    expect(sqliteRestored.prepare('SELECT v FROM t').all()).toEqual([{ v: 'backed up' }]);
    sqliteRestored.close();
    expect(snapshot(db, tables)).toEqual(held);

    // --source: only the named source; the database is not touched.
    app(db, "UPDATE notes SET body = 'after'");
    fs.writeFileSync(path.join(appDir, 'config.json'), '{"v":3}');
    const onlyFiles = cli(['restore', 'mix.zip', '--yes', '--source', 'files', '--json']);
    expect(onlyFiles.status).toBe(0);
    expect(sourcesOf(onlyFiles).map((s) => s.name)).toEqual(['files']);
    expect(fs.readFileSync(path.join(appDir, 'config.json'), 'utf8')).toBe('{"v":1}');
    expect(app(db, 'SELECT DISTINCT body FROM notes')).toBe('after');
    const onlyDb = cli(['restore', 'mix.zip', '--yes', '--source', 'db', '--json']);
    expect(onlyDb.status).toBe(0);
    expect(sourcesOf(onlyDb).map((s) => `${s.name}:${s.status}`)).toEqual(['db:restored']);
    expect(snapshot(db, tables)).toEqual(held);

    // --target: the dump is restored as files (for pg_restore by hand); the database is not touched.
    app(db, "UPDATE notes SET body = 'kept'");
    const target = path.join(fx.dir, 'elsewhere');
    const toTarget = cli(['restore', 'mix.zip', '--target', target, '--source', 'db', '--json']);
    expect(toTarget.status).toBe(0);
    const list = spawnSync(path.join(fx.server.binDir, 'pg_restore'), ['--list', path.join(target, 'db/database.pgdump')], { encoding: 'utf8' });
    expect(list.status, list.stderr).toBe(0);
    expect(list.stdout).toContain('TABLE public payments');
    expect(JSON.parse(fs.readFileSync(path.join(target, 'db/postgres.json'), 'utf8'))).toMatchObject({ serverVersion: fx.server.version, database: db });
    expect(app(db, 'SELECT DISTINCT body FROM notes')).toBe('kept');
  });

  it('a drill checks the dump with pg_restore --list and never connects to the database', () => {
    const db = newDatabase();
    app(db, 'CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100);');
    writeConfig({ database: db });
    expect(cli(['backup', '--name', 'd1', '--json']).status).toBe(0);
    // The configured server is now unreachable: a drill that connected would fail.
    fs.writeFileSync(path.join(fx.dir, 'stowage.yaml'), fs.readFileSync(path.join(fx.dir, 'stowage.yaml'), 'utf8').replace(`:${fx.server.port}/`, ':1/'));
    const drill = cli(['drill', 'd1.zip', '--json']);
    expect(drill.status).toBe(0);
    expect(drill.result).toMatchObject({ ok: true });
    expect(JSON.stringify(drill.result)).toContain('every PostgreSQL dump reads with pg_restore --list');
    expect(stowage(fx.dir, ['drill', 'd1.zip'], ENV).stdout).toContain('pg_restore --list ok');

    // A dump damaged before it was archived (cut short; the manifest's checksum matches it, so
    // verify passes): the drill finds it.
    const archive = path.join(fx.dir, 'data/backups/d1.zip');
    const dump = spawnSync('unzip', ['-p', archive, 'db/database.pgdump']).stdout;
    // Put into storage, where "list" finds it (as a backup copied in from elsewhere).
    const damaged = path.join(fx.dir, 'data/backups/damaged.zip');
    rewriteManifest(archive, damaged, () => {}, { 'db/database.pgdump': dump.subarray(0, 400) });
    expect(cli(['verify', damaged, '--json']).result).toMatchObject({ ok: true });
    expect(cli(['list']).stdout).toContain('damaged.zip');
    const bad = cli(['drill', 'damaged.zip', '--json']);
    expect(bad.status).toBe(1);
    expect(JSON.stringify(bad.result)).toContain("pg_restore cannot read the dump's table of contents");
  });
});

describe('kind: postgres in the library', () => {
  it('a factory reset empties the folders and the SQLite database, leaves the PostgreSQL database alone, and says so', async () => {
    const db = newDatabase();
    app(db, 'CREATE TABLE t (id int); INSERT INTO t VALUES (1);');
    const appDir = makeAppFiles();
    writeConfig({ database: db, mixed: true });
    process.env[PASSWORD_VAR] = APP_PASSWORD;
    const engine = await Stowage.open({ config: loadConfig({ cwd: fx.dir, env: process.env }) });
    try {
      const outcome = await (await engine.startFactoryReset()).done;
      expect(outcome.status.status).toBe('completed_with_errors');
      const byName = Object.fromEntries(outcome.status.sources.map((s) => [s.name, s]));
      expect(byName.files).toMatchObject({ status: 'restored' });
      expect(byName.appdb).toMatchObject({ status: 'restored' });
      expect(byName.db).toMatchObject({ status: 'skipped', errors: [expect.stringContaining('a factory reset does not empty PostgreSQL databases')] });
      expect(fs.readdirSync(appDir)).toEqual([]);
      const sqlite = new Database(path.join(fx.dir, 'app-db/app.db'), { readonly: true });
      expect(sqlite.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all()).toEqual([]);
      sqlite.close();
      expect(app(db, 'SELECT count(*) FROM t')).toBe('1');
      // The safety backup taken first holds the database too.
      const safety = outcome.status.safetyBackupKey!;
      expect(run('unzip', ['-Z1', path.join(fx.dir, 'data/backups', safety)]).stdout).toContain('db/database.pgdump');
    } finally {
      engine.close();
      delete process.env[PASSWORD_VAR];
    }
  });
});

describe('PostgreSQL failures through the CLI say what to do', () => {
  it('a wrong password: the backup fails and the restore refuses, naming where the password comes from, never showing it', () => {
    const db = newDatabase();
    app(db, 'CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);');
    writeConfig({ database: db });
    expect(cli(['backup', '--name', 'good', '--json']).status).toBe(0);
    app(db, 'INSERT INTO t VALUES (3)');

    const wrong = `wrong-${crypto.randomBytes(6).toString('hex')}`;
    const backup = cli(['backup', '--name', 'bad', '--json'], { [PASSWORD_VAR]: wrong });
    expect(backup.status).toBe(1);
    expect(backup.result).toMatchObject({ type: 'error', code: 'SOURCE_FAILED' });
    expect(backup.result!.message).toContain(`refused the credentials of user "app"; check the user in the url and the password in environment variable ${PASSWORD_VAR}`);
    expectNoSecret(backup, wrong);
    expect(cli(['list']).stdout).toMatch(/bad\.zip .* failed: source "db": .*refused the credentials/);

    const restore = cli(['restore', 'good.zip', '--yes', '--json'], { [PASSWORD_VAR]: wrong });
    expect(restore.status).toBe(1);
    expect(restore.result).toMatchObject({ type: 'error', code: 'RESTORE_FAILED' });
    expect(restore.result!.message).toContain('refused the credentials of user "app"');
    expectNoSecret(restore, wrong);
    expect(cli(['restore-status', '--json']).result).toMatchObject({ status: { status: 'failed', key: 'good.zip', message: expect.stringContaining('nothing was changed') } });
    expect(app(db, 'SELECT count(*) FROM t')).toBe('3');
    // No safety backup was taken for a restore that could not start.
    expect(fs.readdirSync(path.join(fx.dir, 'data/backups')).filter((n) => n.startsWith('@pre-restore'))).toEqual([]);

    // passwordEnv not set at all.
    const unset = stowage(fx.dir, ['restore', 'good.zip', '--yes', '--json'], { [PASSWORD_VAR]: '', STOWAGE_FAILPOINTS: '' });
    expect(unset.status).toBe(1);
    expect(unset.result!.message).toContain(`environment variable ${PASSWORD_VAR} (passwordEnv) is not set`);
  });

  it('the server down: backup and restore fail with where it tried and what to check; nothing is changed', async () => {
    const other = await startPostgresServer();
    try {
      other.createRole('app', APP_PASSWORD);
      const db = newDatabase(other);
      app(db, 'CREATE TABLE t (id int); INSERT INTO t VALUES (1);', other);
      writeConfig({ database: db, server: other });
      expect(cli(['backup', '--name', 'before', '--json']).status).toBe(0);
      await other.kill();
      const url = other.url(db, 'app');

      const backup = cli(['backup', '--name', 'down', '--json']);
      expect(backup.status).toBe(1);
      expect(backup.result).toMatchObject({ type: 'error', code: 'SOURCE_FAILED' });
      expect(backup.result!.message).toContain(`cannot reach the PostgreSQL server at ${url}; check that it is running and accepts TCP connections on that host and port`);

      const restore = cli(['restore', 'before.zip', '--yes', '--json']);
      expect(restore.status).toBe(1);
      expect(restore.result).toMatchObject({ type: 'error', code: 'RESTORE_FAILED' });
      expect(restore.result!.message).toContain(`cannot reach the PostgreSQL server at ${url}`);
      expect(cli(['restore-status', '--json']).result).toMatchObject({ status: { status: 'failed', key: 'before.zip', message: expect.stringContaining('nothing was changed') } });
      expect(cli(['restore', 'before.zip', '--dry-run', '--json']).result!.message).toContain('cannot reach the PostgreSQL server');
    } finally {
      await other.stop();
    }
  });

  it('the version policy compares PostgreSQL major versions, says what differs, and --force overrides it', () => {
    const db = newDatabase();
    app(db, 'CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, $$backed up$$);');
    writeConfig({ database: db });
    expect(cli(['backup', '--name', 'v', '--json']).status).toBe(0);
    const archive = path.join(fx.dir, 'data/backups/v.zip');
    app(db, "UPDATE t SET v = 'changed'");
    const major = fx.server.version.split('.')[0]!;

    // A backup recorded from a newer server (the archive rebuilt with that in its manifest).
    const newer = path.join(fx.dir, 'from-newer.zip');
    rewriteManifest(archive, newer, (m) => Object.assign(m.sources[0]!.postgres as object, { serverVersion: '99.1 (test)', serverVersionNum: 990001 }));
    expect(run('unzip', ['-t', newer]).stdout).toContain('No errors detected');
    const refused = cli(['restore', newer, '--yes', '--json']);
    expect(refused.status).toBe(1);
    expect(refused.result).toMatchObject({ type: 'error', code: 'VERSION_POLICY' });
    expect(refused.result!.message).toContain(`source "db": this backup comes from a newer PostgreSQL (99.1 (test)) than the target server (${fx.server.url(db, 'app')}) runs (${fx.server.version})`);
    expect(refused.result!.message).toContain(`99 or later, the server has ${major}`);
    expect(refused.result!.message).toContain('--force');
    expect(cli(['restore', newer, '--dry-run', '--json']).result).toMatchObject({ type: 'error', code: 'VERSION_POLICY' });
    expect(app(db, 'SELECT v FROM t')).toBe('changed');
    const forced = cli(['restore', newer, '--force', '--json']);
    expect(forced.status).toBe(0);
    expect(app(db, 'SELECT v FROM t')).toBe('backed up');

    // From an older server: "same" refuses (major versions differ), "same-or-older" restores.
    app(db, "UPDATE t SET v = 'changed'");
    const older = path.join(fx.dir, 'from-older.zip');
    rewriteManifest(archive, older, (m) => Object.assign(m.sources[0]!.postgres as object, { serverVersion: '9.6.24', serverVersionNum: 90624 }));
    writeConfig({ database: db, versionPolicy: 'same' });
    const same = cli(['restore', older, '--yes', '--json']);
    expect(same.result).toMatchObject({ type: 'error', code: 'VERSION_POLICY' });
    expect(same.result!.message).toContain(`this backup comes from PostgreSQL 9.6.24 and the target server (${fx.server.url(db, 'app')}) runs PostgreSQL ${fx.server.version}; the policy "same" wants the same major version (9.6 in the backup, ${major} on the server)`);
    // The real backup is of the same major version: "same" restores it.
    expect(cli(['restore', 'v.zip', '--yes', '--json']).status).toBe(0);
    app(db, "UPDATE t SET v = 'changed'");
    writeConfig({ database: db, versionPolicy: 'same-or-older' });
    expect(cli(['restore', older, '--yes', '--json']).status).toBe(0);
    expect(app(db, 'SELECT v FROM t')).toBe('backed up');
  });
});

/** Running pg_restore processes of a Stowage restore (their --dbname names the application stowage-restore-...). */
function pgRestoreProcesses(): string[] {
  const found: string[] = [];
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmdline.includes('pg_restore') && cmdline.includes('application_name=stowage-restore-')) found.push(pid);
    } catch {
      // gone
    }
  }
  return found;
}

describe('crashes during a PostgreSQL restore', () => {
  function setup(): { db: string; appDir: string; tables: string[]; held: Record<string, string>; filesBackedUp: ReturnType<typeof snapshotTree> } {
    const db = newDatabase();
    app(db, `CREATE TABLE big (id int PRIMARY KEY, pad text); INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g;`);
    const appDir = makeAppFiles();
    writeConfig({ database: db, mixed: true });
    expect(cli(['backup', '--name', 'c', '--json']).status).toBe(0);
    const tables = ['big'];
    const held = snapshot(db, tables);
    const filesBackedUp = snapshotTree(appDir, { wholeMs: true });
    app(db, "DELETE FROM big WHERE id > 10; INSERT INTO big VALUES (0, 'after');");
    fs.writeFileSync(path.join(appDir, 'config.json'), '{"v":2}');
    return { db, appDir, tables, held, filesBackedUp };
  }

  it('killed while pg_restore runs: pg_restore dies with it (not only when it next writes), PostgreSQL rolls back, and the next command undoes the file swaps', async () => {
    // pg_restore blocked on a lock writes nothing, so a closed stderr pipe would not stop it: only
    // the parent-death signal does. Without it, it would go on once the lock is free, and commit.
    const db = newDatabase();
    app(
      db,
      `CREATE SCHEMA shared;
       CREATE TABLE shared.ref (id int PRIMARY KEY); INSERT INTO shared.ref SELECT generate_series(1, 10);
       CREATE TABLE big (id int PRIMARY KEY, ref int REFERENCES shared.ref (id), pad text);
       INSERT INTO big SELECT g, 1 + g % 10, 'backed up' FROM generate_series(1, 1000) g;`,
    );
    const appDir = makeAppFiles();
    writeConfig({ database: db, mixed: true, pgExtra: ['excludeSchemas: [shared]'] });
    expect(cli(['backup', '--name', 'c', '--json']).status).toBe(0);
    app(db, "UPDATE big SET pad = 'changed'");
    fs.writeFileSync(path.join(appDir, 'config.json'), '{"v":2}');
    const tables = ['big'];
    const dbChanged = snapshot(db, tables);
    const filesChanged = snapshotTree(appDir, { wholeMs: true });

    // Another session holds shared.ref: dropping big's foreign key (pg_restore --clean) waits for it.
    const holder = fx.server.psqlAsync('BEGIN; LOCK TABLE shared.ref IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60); COMMIT;', { database: db }).catch(() => 'cancelled');
    const release = () => fx.server.psql(`SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()`);
    try {
      const locked = `SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'ref' AND l.mode = 'AccessExclusiveLock' AND l.granted`;
      await waitFor(() => fx.server.psql(locked, { database: db }) !== '0', 10_000, 'the lock holder');
      const child = spawn(process.execPath, [CLI, 'restore', 'c.zip', '--yes', '--no-safety-backup', '--json'], { cwd: fx.dir, env: { ...process.env, ...ENV }, stdio: 'ignore' });
      const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
      const waiting = `SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'stowage-restore-%' AND wait_event_type = 'Lock'`;
      await waitFor(async () => (await fx.server.psqlAsync(waiting)) !== '0', 60_000, 'pg_restore to wait for the lock');
      // The files were swapped in before pg_restore started.
      expect(fs.readFileSync(path.join(appDir, 'config.json'), 'utf8')).toBe('{"v":1}');
      child.kill('SIGKILL');
      expect(await exited).toBe('SIGKILL');
      // The lock still held, pg_restore (found by the application name in its --dbname) must end with Stowage.
      await waitFor(() => pgRestoreProcesses().length === 0, 15_000, 'pg_restore to end with Stowage');
    } finally {
      release();
      await holder;
    }
    // Its server session notices the closed connection once it has the lock, and rolls back.
    const sessions = `SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'stowage-restore-%'`;
    await waitFor(async () => (await fx.server.psqlAsync(sessions)) === '0', 15_000, 'the restore session to end');
    expect(snapshot(db, tables)).toEqual(dbChanged);

    // The next command finds the journal: the files and the SQLite database go back.
    const status = cli(['restore-status', '--json']);
    expect(status.result).toMatchObject({ status: { status: 'failed', key: 'c.zip' } });
    const message = (status.result!.status as { message: string }).message;
    expect(message).toContain('has been rolled back and the data is as it was before the restore');
    expect(message).toContain('the database of db was being restored');
    expect(snapshotTree(appDir, { wholeMs: true })).toEqual(filesChanged);
    expect(snapshot(db, tables)).toEqual(dbChanged);
    expect(fs.existsSync(path.join(fx.dir, 'data/restore-journal.json'))).toBe(false);
  }, 120_000);

  it('killed after pg_restore committed (before the journal commit): the next command finishes the restore instead of undoing the files', () => {
    const { db, appDir, tables, held, filesBackedUp } = setup();
    const killed = cli(['restore', 'c.zip', '--yes', '--no-safety-backup', '--json'], { STOWAGE_FAILPOINTS: 'restore.postgres-restored=kill' });
    expect(killed.signal).toBe('SIGKILL');
    expect(snapshot(db, tables)).toEqual(held);
    const status = cli(['restore-status', '--json']);
    expect(status.result).toMatchObject({ status: { status: 'completed', key: 'c.zip' } });
    expect(sourcesOf(status).map((s) => `${s.name}:${s.status}`)).toEqual(['files:restored', 'appdb:restored', 'db:restored']);
    expect(snapshotTree(appDir, { wholeMs: true })).toEqual(filesBackedUp);
    expect(snapshot(db, tables)).toEqual(held);
  }, 120_000);

  it('killed just before pg_restore starts: the files are undone and the database was never touched', () => {
    const { db, appDir, tables } = setup();
    const dbChanged = snapshot(db, tables);
    const filesChanged = snapshotTree(appDir, { wholeMs: true });
    const killed = cli(['restore', 'c.zip', '--yes', '--no-safety-backup', '--json'], { STOWAGE_FAILPOINTS: 'restore.postgres=kill' });
    expect(killed.signal).toBe('SIGKILL');
    // Files were swapped in already: the journal says swapping.
    expect(fs.readFileSync(path.join(appDir, 'config.json'), 'utf8')).toBe('{"v":1}');
    expect(cli(['restore-status', '--json']).result).toMatchObject({ status: { status: 'failed' } });
    expect(snapshotTree(appDir, { wholeMs: true })).toEqual(filesChanged);
    expect(snapshot(db, tables)).toEqual(dbChanged);
  }, 120_000);
});
