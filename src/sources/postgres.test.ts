import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ZipWriter, type ArchiveInput, type WrittenEntry } from '../archive/zip-writer.js';
import { StowageError } from '../errors.js';
import { ExcludeRules } from './fnmatch.js';
import {
  POSTGRES_DUMP_ENTRY,
  POSTGRES_METADATA_ENTRY,
  PostgresSource,
  parsePgDumpHeader,
  parsePgVersion,
  readPgDumpHeader,
  redactPostgresUrl,
  resolvePostgresConnection,
  type PostgresSourceConfig,
} from './postgres.js';
import { checkPostgresRestore, restorePostgres } from './postgres-restore.js';
import type { BackupContext } from './source.js';
import { databaseSnapshot, INVARIANT_WRITER_SQL, startPostgresServer } from '../testing/postgres-server.js';
import { PG_PASSWORD_VAR, usePostgresFixture } from '../testing/postgres-fixture.js';

/**
 * The PostgreSQL source against a real server (src/testing/postgres-server.ts): backups are
 * written through the real ZipWriter and read back with unzip, restores run pg_restore into the
 * server, and every comparison is of row sets read back with psql.
 */

const fx = usePostgresFixture({ dirPrefix: 'stowage-fx.server-test-', databasePrefix: 'db' });
const PASSWORD_VAR = PG_PASSWORD_VAR;
const APP_PASSWORD = fx.appPassword;
const ENV = { ...process.env, [PASSWORD_VAR]: APP_PASSWORD };
const { newDatabase, app } = fx;

function configFor(database: string, extra: Partial<PostgresSourceConfig> = {}): PostgresSourceConfig {
  return { name: 'db', kind: 'postgres', url: fx.server.url(database, 'app'), passwordEnv: PASSWORD_VAR, binDir: fx.server.binDir, ...extra };
}

const FIXTURE = `
CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL);
INSERT INTO accounts SELECT g, 'owner ' || g, 1000 FROM generate_series(1, 100) g;
CREATE TABLE notes (id serial PRIMARY KEY, body text, tags text[], meta jsonb, created timestamptz NOT NULL DEFAULT '2024-01-02 03:04:05+00');
INSERT INTO notes (body, tags, meta) SELECT 'note ' || g || E'\\twith tab, ünïcode', ARRAY['a', 'b' || g], jsonb_build_object('g', g, 'nested', jsonb_build_array(g, null)) FROM generate_series(1, 500) g;
INSERT INTO notes (body, tags, meta) VALUES (NULL, NULL, NULL);
CREATE VIEW rich AS SELECT id, owner FROM accounts WHERE balance > 1000;
CREATE FUNCTION add_one(x int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT x + 1';
CREATE SCHEMA audit;
CREATE TABLE audit.events (id bigserial PRIMARY KEY, what text NOT NULL, account int REFERENCES accounts(id));
INSERT INTO audit.events (what, account) SELECT 'event ' || g, 1 + g % 100 FROM generate_series(1, 300) g;
CREATE SCHEMA scratch;
CREATE TABLE scratch.cache (k text PRIMARY KEY, v text);
INSERT INTO scratch.cache SELECT 'k' || g, repeat('v', g) FROM generate_series(1, 50) g;
`;

const FIXTURE_TABLES = ['accounts', 'notes', 'audit.events', 'scratch.cache'];

/** Every row of each table (ordered), the sequences' positions, and the objects that exist. */
function snapshot(database: string, tables = FIXTURE_TABLES): Record<string, string> {
  return databaseSnapshot(fx.server, database, tables);
}

function backupContext(): BackupContext {
  const tempDir = path.join(fx.dir, 'tmp');
  fs.mkdirSync(tempDir, { recursive: true });
  return { excludes: new ExcludeRules([]), neverInclude: [], tempDir, warn: () => {} };
}

interface Backup {
  zip: string;
  dumpFile: string;
  metadataFile: string;
  written: WrittenEntry[];
  source: PostgresSource;
}

/** A backup as the engine makes it: the source's entries, prefixed, through the ZipWriter; then unzipped. */
async function backup(config: PostgresSourceConfig, options: { onCommand?: (argv: readonly string[]) => void } = {}): Promise<Backup> {
  const source = new PostgresSource(config, { env: ENV, onCommand: options.onCommand });
  const zip = path.join(fx.dir, `backup-${crypto.randomBytes(4).toString('hex')}.zip`);
  const out = fs.createWriteStream(zip);
  const written: WrittenEntry[] = [];
  const writer = new ZipWriter(out, { spoolPath: `${zip}.cd`, onEntry: (e) => written.push(e) });
  const ctx = backupContext();
  try {
    for await (const entry of source.entries(ctx)) {
      await writer.add({ ...entry, name: entry.name === '' ? `${config.name}/` : `${config.name}/${entry.name}` } as ArchiveInput);
    }
    await writer.finish();
  } catch (err) {
    await writer.abort(err);
    throw err;
  } finally {
    await source.release();
    await new Promise<void>((resolve) => out.end(() => resolve()));
  }
  // Streamed: nothing was spooled to the temporary folder.
  expect(fs.readdirSync(ctx.tempDir)).toEqual([]);
  const extract = path.join(fx.dir, `x-${crypto.randomBytes(4).toString('hex')}`);
  const unzip = spawnSync('unzip', ['-q', zip, '-d', extract], { encoding: 'utf8' });
  expect(unzip.status, unzip.stderr).toBe(0);
  const dumpFile = path.join(extract, config.name, POSTGRES_DUMP_ENTRY);
  const entry = written.find((e) => e.name === `${config.name}/${POSTGRES_DUMP_ENTRY}`)!;
  expect(entry.size).toBe(fs.statSync(dumpFile).size);
  expect(entry.sha256).toBe(crypto.createHash('sha256').update(fs.readFileSync(dumpFile)).digest('hex'));
  return { zip, dumpFile, metadataFile: path.join(extract, config.name, POSTGRES_METADATA_ENTRY), written, source };
}

/** The tables in a dump, as "schema.name", from pg_restore's own listing. */
function dumpTables(dumpFile: string): string[] {
  const r = spawnSync(path.join(fx.server.binDir, 'pg_restore'), ['--list', dumpFile], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return r.stdout
    .split('\n')
    .map((l) => /^\d+; \d+ \d+ TABLE (?!DATA )(\S+) (\S+) /.exec(l))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => `${m[1]}.${m[2]}`)
    .sort();
}

async function expectStowageError(p: Promise<unknown>): Promise<StowageError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(StowageError);
    return err as StowageError;
  }
  throw new Error('expected a StowageError, got success');
}

function everyCommandFree(commands: (readonly string[])[], secret: string): void {
  expect(commands.length).toBeGreaterThan(0);
  for (const argv of commands) for (const a of argv) expect(a).not.toContain(secret);
}

describe('PostgresSource backup and restore', () => {
  it('backs up into a streamed archive entry with the versions recorded, and restores a dropped database to equal rows', async () => {
    const db = newDatabase();
    app(db, FIXTURE);
    const before = snapshot(db);
    const commands: (readonly string[])[] = [];
    const b = await backup(configFor(db), { onCommand: (argv) => commands.push(argv) });

    // Versions: in the source's metadata, in postgres.json, and in the dump's own header.
    const meta = b.source.metadata!;
    expect(meta.serverVersion).toBe(fx.server.version);
    expect(parsePgVersion(meta.pgDumpVersion)?.major).toBe(parsePgVersion(fx.server.version)?.major);
    expect(meta.serverVersionNum).toBeGreaterThan(100000);
    expect(meta.url).toBe(fx.server.url(db, 'app'));
    expect(JSON.parse(fs.readFileSync(b.metadataFile, 'utf8'))).toEqual(meta);
    const header = (await readPgDumpHeader(b.dumpFile))!;
    expect(header).toMatchObject({ format: 'custom', database: db, serverVersion: fx.server.version, pgDumpVersion: meta.pgDumpVersion });
    // ... the same as pg_restore reads it.
    const list = spawnSync(path.join(fx.server.binDir, 'pg_restore'), ['--list', b.dumpFile], { encoding: 'utf8' }).stdout;
    expect(list).toContain(`;     Dumped from database version: ${header.serverVersion}`);
    expect(list).toContain(`;     Dumped by pg_dump version: ${header.pgDumpVersion}`);
    expect(list).toContain(`;     Dump Version: ${header.formatVersion.replace(/\.(\d+)$/, '-$1')}`);
    expect(commands.some((c) => c[0]!.endsWith('pg_dump'))).toBe(true);
    everyCommandFree(commands, APP_PASSWORD);

    // Lose most of it.
    app(db, 'DROP SCHEMA audit CASCADE; DROP SCHEMA scratch CASCADE; DROP VIEW rich; DROP TABLE notes; DELETE FROM accounts WHERE id > 10; DROP FUNCTION add_one(int);');
    expect(app(db, 'SELECT count(*) FROM accounts')).toBe('10');

    const check = await checkPostgresRestore(configFor(db), b.dumpFile, { env: ENV });
    expect(check.serverVersion).toBe(fx.server.version);
    expect(check.warnings).toEqual([]);
    const lines: string[] = [];
    const result = await restorePostgres(configFor(db), b.dumpFile, { env: ENV, log: (l) => lines.push(l) });
    expect(result.dump.pgDumpVersion).toBe(meta.pgDumpVersion);
    expect(snapshot(db)).toEqual(before);
    expect(app(db, 'SELECT add_one(41), count(*) FROM rich')).toBe('42\t0');
    for (const l of lines) expect(l).not.toContain(APP_PASSWORD);
  });

  it('restores over changed data: updated, deleted, inserted rows and an altered table all come back as backed up; objects not in the backup stay', async () => {
    const db = newDatabase();
    app(db, FIXTURE);
    const before = snapshot(db);
    const b = await backup(configFor(db));
    app(
      db,
      `UPDATE accounts SET balance = balance * 2 WHERE id % 3 = 0;
       DELETE FROM notes WHERE id % 7 = 0;
       INSERT INTO notes (body) SELECT 'later ' || g FROM generate_series(1, 100) g;
       ALTER TABLE accounts ADD COLUMN nickname text DEFAULT 'x';
       UPDATE scratch.cache SET v = 'changed';
       TRUNCATE audit.events;
       CREATE TABLE created_later (id int PRIMARY KEY); INSERT INTO created_later VALUES (1), (2);`,
    );
    expect(snapshot(db)).not.toEqual(before);
    await restorePostgres(configFor(db), b.dumpFile, { env: ENV });
    const after = snapshot(db);
    // The table made after the backup is not in it, so the restore leaves it alone.
    expect(after.relations).toContain('public.created_later:r');
    expect(app(db, 'SELECT count(*) FROM created_later')).toBe('2');
    app(db, 'DROP TABLE created_later');
    expect(snapshot(db)).toEqual(before);
    // And a second restore of the same backup is the same (--clean --if-exists is idempotent).
    await restorePostgres(configFor(db), b.dumpFile, { env: ENV });
    expect(snapshot(db)).toEqual(before);
  });

  it('takes a consistent snapshot while a writer commits transactions during the backup (sum invariants hold in the restored copy)', async () => {
    const db = newDatabase();
    app(
      db,
      `CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
       INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, 100) g;
       CREATE TABLE ledger (id bigserial PRIMARY KEY, amount int NOT NULL, pad text);
       INSERT INTO ledger (amount, pad) SELECT 1, repeat('p', 40) FROM generate_series(1, 300000);
       CREATE TABLE totals (total bigint NOT NULL);
       INSERT INTO totals VALUES (300000);
       CREATE TABLE zz_control (stop boolean NOT NULL);
       INSERT INTO zz_control VALUES (false);`,
    );
    // Each transaction adds a ledger row and its amount to totals, and moves money between two
    // accounts: in any consistent snapshot sum(ledger) = totals and sum(balance) = 100000.
    const writer = fx.server.psqlAsync(
      INVARIANT_WRITER_SQL,
      { database: db, user: 'app', password: APP_PASSWORD },
    );
    const maxId = async (): Promise<number> => Number(await fx.server.psqlAsync('SELECT max(id) FROM ledger', { database: db }));
    try {
      const deadline = Date.now() + 20_000;
      while ((await maxId()) < 300_100) {
        if (Date.now() > deadline) throw new Error('the writer does not write');
        await new Promise((r) => setTimeout(r, 20));
      }
      const startId = await maxId();
      const b = await backup(configFor(db));
      const endId = await maxId();
      expect(endId).toBeGreaterThan(startId); // the writer kept committing during the backup

      const copy = newDatabase();
      await restorePostgres(configFor(copy), b.dumpFile, { env: ENV });
      const [ledgerSum, ledgerMax] = fx.server.psql('SELECT sum(amount), max(id) FROM ledger', { database: copy }).split('\t').map(Number);
      const total = Number(fx.server.psql('SELECT total FROM totals', { database: copy }));
      expect(ledgerSum).toBe(total);
      expect(Number(fx.server.psql('SELECT sum(balance) FROM accounts', { database: copy }))).toBe(100_000);
      expect(ledgerMax).toBeGreaterThanOrEqual(startId);
      expect(ledgerMax).toBeLessThanOrEqual(endId);
    } finally {
      fx.server.psql('UPDATE zz_control SET stop = true', { database: db });
      await writer;
    }
    // The live database kept the invariants too (a sanity check of the writer itself).
    expect(fx.server.psql('SELECT (SELECT sum(amount) FROM ledger) = (SELECT total FROM totals)', { database: db })).toBe('t');
  });

  it('a restore that fails midway (a row the database now refuses) is rolled back: the data is as it was before the restore', async () => {
    const db = newDatabase();
    // shared.amount lives in a schema the backup excludes (managed elsewhere, say by a migration tool).
    app(
      db,
      `CREATE SCHEMA shared;
       CREATE DOMAIN shared.amount AS int CHECK (VALUE >= 0);
       CREATE TABLE a_first (id int PRIMARY KEY, v text);
       INSERT INTO a_first SELECT g, 'original ' || g FROM generate_series(1, 1000) g;
       CREATE TABLE payments (id int PRIMARY KEY, amount shared.amount NOT NULL);
       INSERT INTO payments SELECT g, g FROM generate_series(1, 1000) g;`,
    );
    const config = configFor(db, { excludeSchemas: ['shared'] });
    const b = await backup(config);
    expect(dumpTables(b.dumpFile)).toEqual(['public.a_first', 'public.payments']);
    // After the backup: data changes, and the domain gets stricter than some backed-up rows.
    app(
      db,
      `UPDATE a_first SET v = 'changed after the backup';
       DELETE FROM payments WHERE id > 900;
       ALTER DOMAIN shared.amount ADD CONSTRAINT below_500 CHECK (VALUE < 500) NOT VALID;`,
    );
    const before = snapshot(db, ['a_first', 'payments']);
    const lines: string[] = [];
    const err = await expectStowageError(restorePostgres(config, b.dumpFile, { env: ENV, log: (l) => lines.push(l) }));
    expect(err.code).toBe('RESTORE_FAILED');
    expect(err.details?.reason).toBe('restore-failed');
    expect(err.message).toContain('violates check constraint "below_500"');
    // It failed loading data, i.e. after the tables had been dropped and created again.
    expect(err.message).toContain('COPY failed for table "payments"');
    const log = lines.join('\n');
    for (const step of ['dropping TABLE payments', 'creating TABLE "public.payments"', 'processing data for table "public.a_first"', 'processing data for table "public.payments"']) {
      expect(log).toContain(step);
    }
    expect(log.indexOf('processing data for table "public.a_first"')).toBeGreaterThan(log.indexOf('creating TABLE "public.payments"'));
    expect(log.indexOf('processing data for table "public.payments"')).toBeGreaterThan(log.indexOf('processing data for table "public.a_first"'));
    expect(err.message).toContain(`rolled back, database ${db} is as it was`);
    expect(lines.join('\n')).toContain('below_500');
    expect(snapshot(db, ['a_first', 'payments'])).toEqual(before);
    expect(app(db, "SELECT count(*) FROM a_first WHERE v = 'changed after the backup'")).toBe('1000');
  });

  it('a restore cancelled through its signal while loading data is rolled back', async () => {
    const db = newDatabase();
    app(db, `CREATE TABLE big (id int PRIMARY KEY, pad text); INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, 400000) g;`);
    const b = await backup(configFor(db));
    app(db, 'DELETE FROM big WHERE id > 10; INSERT INTO big VALUES (0, $$after$$);');
    const before = snapshot(db, ['big']);
    const controller = new AbortController();
    const restoring = restorePostgres(configFor(db), b.dumpFile, { env: ENV, signal: controller.signal });
    const watching = (async () => {
      const deadline = Date.now() + 30_000;
      while (Date.now() < deadline) {
        const copying = await fx.server.psqlAsync(`SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'stowage-restore-%' AND query LIKE 'COPY public.big%'`);
        if (copying !== '0') {
          controller.abort();
          return true;
        }
        await new Promise((r) => setTimeout(r, 10));
      }
      return false;
    })();
    const err = await expectStowageError(restoring);
    expect(await watching).toBe(true);
    expect(err.details?.reason).toBe('aborted');
    expect(err.message).toContain('rolled it back');
    expect(snapshot(db, ['big'])).toEqual(before);
  });

  it('a restore blocked by an application holding a lock fails after lockTimeoutMs, rolled back, saying to stop the application', async () => {
    const db = newDatabase();
    app(db, FIXTURE);
    const b = await backup(configFor(db));
    app(db, 'UPDATE accounts SET balance = 7');
    const before = snapshot(db);
    const holder = fx.server.psqlAsync(`BEGIN; LOCK TABLE accounts IN ACCESS SHARE MODE; SELECT pg_sleep(3); COMMIT;`, { database: db, user: 'app', password: APP_PASSWORD });
    const deadline = Date.now() + 10_000;
    while (fx.server.psql(`SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'accounts' AND l.mode = 'AccessShareLock' AND l.granted`, { database: db }) === '0') {
      if (Date.now() > deadline) throw new Error('the lock holder did not start');
      await new Promise((r) => setTimeout(r, 20));
    }
    const started = Date.now();
    const err = await expectStowageError(restorePostgres(configFor(db), b.dumpFile, { env: ENV, lockTimeoutMs: 300 }));
    expect(Date.now() - started).toBeLessThan(2500); // it did not wait for the holder to finish
    expect(err.details?.reason).toBe('lock-timeout');
    expect(err.message).toContain(`held by another connection to ${db} (held by pid `);
    expect(err.message).toContain('user app, application stowage-test');
    expect(err.message).toContain('Stop the application (or its connections) and restore again');
    await holder;
    expect(snapshot(db)).toEqual(before);
  });

  it('includes and excludes schemas and tables, and a restore touches only what the backup holds', async () => {
    const db = newDatabase();
    app(db, FIXTURE);
    const all = ['audit.events', 'public.accounts', 'public.notes', 'scratch.cache'];
    expect(dumpTables((await backup(configFor(db))).dumpFile)).toEqual(all);
    expect(dumpTables((await backup(configFor(db, { schemas: ['audit'] }))).dumpFile)).toEqual(['audit.events']);
    expect(dumpTables((await backup(configFor(db, { schemas: ['public', 'scr*'] }))).dumpFile)).toEqual(['public.accounts', 'public.notes', 'scratch.cache']);
    expect(dumpTables((await backup(configFor(db, { excludeSchemas: ['audit', 'scratch'] }))).dumpFile)).toEqual(['public.accounts', 'public.notes']);
    expect(dumpTables((await backup(configFor(db, { tables: ['public.accounts', 'scratch.*'] }))).dumpFile)).toEqual(['public.accounts', 'scratch.cache']);
    expect(dumpTables((await backup(configFor(db, { excludeTables: ['public.notes', 'audit.*'] }))).dumpFile)).toEqual(['public.accounts', 'scratch.cache']);

    // An include that matches nothing is a mistake in stowage.yaml, not an empty backup.
    const err = await expectStowageError(backup(configFor(db, { schemas: ['nosuch'] })));
    expect(err.code).toBe('SOURCE_FAILED');
    expect(err.message).toMatch(/pg_dump failed: .*no matching schemas were found for pattern "nosuch"/);

    // Restoring a backup without scratch.cache leaves scratch.cache as it is now.
    const partial = await backup(configFor(db, { excludeSchemas: ['scratch'] }));
    const before = snapshot(db, ['accounts', 'notes', 'audit.events']);
    app(db, `UPDATE accounts SET balance = 0; UPDATE scratch.cache SET v = 'kept';`);
    await restorePostgres(configFor(db, { excludeSchemas: ['scratch'] }), partial.dumpFile, { env: ENV });
    const after = snapshot(db, ['accounts', 'notes', 'audit.events']);
    expect(after['accounts']).toEqual(before['accounts']);
    expect(after['notes']).toEqual(before['notes']);
    expect(after['audit.events']).toEqual(before['audit.events']);
    expect(app(db, `SELECT DISTINCT v FROM scratch.cache`)).toBe('kept');
  });
});

describe('PostgreSQL errors say what to do and never show the password', () => {
  it('a wrong password: backup and restore check fail with an auth error naming where the password comes from, not the password', async () => {
    const db = newDatabase();
    app(db, 'CREATE TABLE t (id int)');
    const wrong = `wrong-${crypto.randomBytes(6).toString('hex')}`;
    const env = { ...process.env, [PASSWORD_VAR]: wrong };
    const source = new PostgresSource(configFor(db), { env });
    const ctx = backupContext();
    const err = await expectStowageError((async () => {
      for await (const _ of source.entries(ctx)) void _;
    })());
    expect(err.code).toBe('SOURCE_FAILED');
    expect(err.details?.reason).toBe('auth');
    expect(err.message).toContain(`refused the credentials of user "app"`);
    expect(err.message).toContain(`environment variable ${PASSWORD_VAR}`);
    expect(JSON.stringify(err)).not.toContain(wrong);
    expect(err.message).not.toContain(wrong);

    const b = await backup(configFor(db));
    const check = await expectStowageError(checkPostgresRestore(configFor(db), b.dumpFile, { env }));
    expect(check.code).toBe('RESTORE_FAILED');
    expect(check.details?.reason).toBe('auth');
    expect(check.message).not.toContain(wrong);

    // The password in the URL instead: still not in the message, nor in source.path.
    const inUrl = configFor(db, { url: fx.server.url(db, 'app').replace('app@', `app:${wrong}@`), passwordEnv: undefined });
    const urlSource = new PostgresSource(inUrl, { env: process.env });
    expect(urlSource.path).not.toContain(wrong);
    const urlErr = await expectStowageError((async () => {
      for await (const _ of urlSource.entries(ctx)) void _;
    })());
    expect(urlErr.details?.reason).toBe('auth');
    expect(urlErr.message).not.toContain(wrong);
    expect(urlErr.message).toContain('check the user in the url and the password in the url');

    // No password at all, and a passwordEnv that is not set.
    const none = await expectStowageError(checkPostgresRestore(configFor(db, { passwordEnv: undefined }), b.dumpFile, { env: { PATH: process.env.PATH } }));
    expect(none.details?.reason).toBe('no-password');
    expect(none.message).toContain('set passwordEnv');
    const unset = await expectStowageError(checkPostgresRestore(configFor(db), b.dumpFile, { env: {} }));
    expect(unset.message).toContain(`environment variable ${PASSWORD_VAR} (passwordEnv) is not set`);
  });

  it('the server down, or the database missing: clear errors from the backup and the restore check', async () => {
    const db = newDatabase();
    app(db, 'CREATE TABLE t (id int); INSERT INTO t VALUES (1)');
    const b = await backup(configFor(db));

    const other = await startPostgresServer();
    try {
      other.createRole('app', APP_PASSWORD);
      other.createDatabase('gone', 'app');
      const cfg = configFor('gone', { url: other.url('gone', 'app'), binDir: other.binDir });
      await checkPostgresRestore(cfg, b.dumpFile, { env: ENV }); // reachable: fine
      await other.kill();
      expect(other.running).toBe(false);
      const check = await expectStowageError(checkPostgresRestore(cfg, b.dumpFile, { env: ENV }));
      expect(check.details?.reason).toBe('unreachable');
      expect(check.message).toContain(`cannot reach the PostgreSQL server at postgres://app@127.0.0.1:${other.port}/gone`);
      expect(check.message).toContain('check that it is running');
      const source = new PostgresSource(cfg, { env: ENV });
      const ctx = backupContext();
      const err = await expectStowageError((async () => {
        for await (const _ of source.entries(ctx)) void _;
      })());
      expect(err.code).toBe('SOURCE_FAILED');
      expect(err.details?.reason).toBe('unreachable');
      expect(await source.estimate(ctx)).toEqual({ files: 2, bytes: 0 });
    } finally {
      await other.stop();
    }

    const missing = await expectStowageError(checkPostgresRestore(configFor(`${db}_nope`), b.dumpFile, { env: ENV }));
    expect(missing.details?.reason).toBe('database-missing');
    expect(missing.message).toContain(`database "${db}_nope" does not exist`);
    expect(missing.message).toContain(`createdb -O app ${db}_nope`);
  });

  it('checks pg_restore before restoring: missing, older than the dump, and a dump from a newer pg_dump than any here', async () => {
    const db = newDatabase();
    app(db, 'CREATE TABLE t (id int)');
    const b = await backup(configFor(db));
    const dumpMajor = parsePgVersion((await readPgDumpHeader(b.dumpFile))!.pgDumpVersion!)!.major;

    // A bin folder with psql but no pg_restore.
    const noRestore = path.join(fx.dir, 'bin-none');
    fs.mkdirSync(noRestore);
    fs.symlinkSync(path.join(fx.server.binDir, 'psql'), path.join(noRestore, 'psql'));
    const missing = await expectStowageError(checkPostgresRestore(configFor(db, { binDir: noRestore }), b.dumpFile, { env: ENV }));
    expect(missing.details?.reason).toBe('pg_restore-missing');
    expect(missing.message).toContain(`pg_restore was not found in binDir ${noRestore}`);
    expect(missing.message).toContain(`postgresql-client-${dumpMajor}`);

    // An old pg_restore (a stand-in that reports 9.6).
    const old = path.join(fx.dir, 'bin-old');
    fs.mkdirSync(old);
    fs.symlinkSync(path.join(fx.server.binDir, 'psql'), path.join(old, 'psql'));
    fs.writeFileSync(path.join(old, 'pg_restore'), `#!/bin/sh\nif [ "$1" = "--version" ]; then echo "pg_restore (PostgreSQL) 9.6.24"; exit 0; fi\nexit 1\n`, { mode: 0o755 });
    const tooOld = await expectStowageError(checkPostgresRestore(configFor(db, { binDir: old }), b.dumpFile, { env: ENV }));
    expect(tooOld.details?.reason).toBe('pg_restore-too-old');
    expect(tooOld.message).toContain('pg_restore 9.6.24');
    expect(tooOld.message).toContain(`install the PostgreSQL client ${dumpMajor} or newer (Debian: apt-get install postgresql-client-${dumpMajor})`);

    // A dump header from a pg_dump newer than the pg_restore here: refused before pg_restore
    // is even asked to read it (it could not).
    const future = path.join(fx.dir, 'future.pgdump');
    fs.writeFileSync(future, fakeHeader({ format: [1, 16, 0], serverVersion: '99.1', pgDumpVersion: '99.1' }));
    expect(parsePgDumpHeader(fs.readFileSync(future))).toMatchObject({ formatVersion: '1.16.0', format: 'custom', database: 'app', pgDumpVersion: '99.1' });
    const newer = await expectStowageError(restorePostgres(configFor(db), future, { env: ENV }));
    expect(newer.details?.reason).toBe('pg_restore-too-old');
    expect(newer.message).toContain('install the PostgreSQL client 99 or newer (Debian: apt-get install postgresql-client-99)');

    // Not a dump at all, and a truncated one.
    const junk = path.join(fx.dir, 'junk.pgdump');
    fs.writeFileSync(junk, 'not a dump');
    expect((await expectStowageError(checkPostgresRestore(configFor(db), junk, { env: ENV }))).code).toBe('ARCHIVE_INVALID');
    const truncated = path.join(fx.dir, 'truncated.pgdump');
    fs.writeFileSync(truncated, fs.readFileSync(b.dumpFile).subarray(0, 300));
    const cut = await expectStowageError(checkPostgresRestore(configFor(db), truncated, { env: ENV }));
    expect(cut.code).toBe('ARCHIVE_INVALID');
    expect(cut.message).toContain('the backup is damaged');
  });

  it('the password is never on a command line: /proc/<pid>/cmdline of a running pg_dump, and every command run', async () => {
    const db = newDatabase();
    app(db, `CREATE TABLE big (id int, pad text); INSERT INTO big SELECT g, repeat('y', 200) FROM generate_series(1, 100000) g;`);
    const commands: (readonly string[])[] = [];
    const source = new PostgresSource(configFor(db), { env: ENV, onCommand: (argv) => commands.push(argv) });
    const ctx = backupContext();
    const entries: ArchiveInput[] = [];
    for await (const e of source.entries(ctx)) entries.push(e);
    const dump = entries.find((e) => e.name === POSTGRES_DUMP_ENTRY);
    if (dump?.kind !== 'stream') throw new Error('no dump stream');
    dump.stream.read(0); // starts pg_dump; nobody reads on, so it stays blocked on its full pipe
    try {
      let found: { pid: string; cmdline: string } | undefined;
      const deadline = Date.now() + 10_000;
      while (!found && Date.now() < deadline) {
        for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
          let cmdline: string;
          try {
            cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
          } catch {
            continue;
          }
          expect(cmdline).not.toContain(APP_PASSWORD);
          if (cmdline.includes('pg_dump') && cmdline.includes(`/${db}`)) found = { pid, cmdline };
        }
        if (!found) await new Promise((r) => setTimeout(r, 20));
      }
      expect(found, 'pg_dump was not seen running').toBeDefined();
      expect(found!.cmdline.split('\0')).toContain(`--dbname=${fx.server.url(db, 'app')}`);
      // It has the password the only way it should: in its environment.
      expect(fs.readFileSync(`/proc/${found!.pid}/environ`, 'utf8').split('\0')).toContain(`PGPASSWORD=${APP_PASSWORD}`);
    } finally {
      dump.stream.destroy();
      await source.release();
    }

    // Restore too: every command line run by the check and pg_restore.
    const b = await backup(configFor(db), { onCommand: (argv) => commands.push(argv) });
    await restorePostgres(configFor(db), b.dumpFile, { env: ENV, onCommand: (argv) => commands.push(argv) });
    expect(commands.some((c) => c[0]!.endsWith('pg_restore') && c.includes('--single-transaction'))).toBe(true);
    everyCommandFree(commands, APP_PASSWORD);
  });
});

describe('PostgreSQL URLs and dump headers', () => {
  it('redacts passwords in URLs, takes the password out of what tools see, and refuses what it cannot keep secret', () => {
    expect(redactPostgresUrl('postgres://app:s3cret@db.example:5432/app?sslmode=require')).toBe('postgres://app:***@db.example:5432/app?sslmode=require');
    expect(redactPostgresUrl('postgresql://h/app?user=x&password=s3cret')).toBe('postgresql://h/app?user=x&password=***');
    const conn = resolvePostgresConnection({ name: 'db', kind: 'postgres', url: 'postgres://app:s%40cret@db.example:5432/app?sslmode=require&password=other' }, {});
    expect(conn).toMatchObject({ conninfo: 'postgres://app@db.example:5432/app?sslmode=require', database: 'app', user: 'app', password: 's@cret' });
    const fromEnv = resolvePostgresConnection({ name: 'db', kind: 'postgres', url: 'postgres://app@db.example/app', passwordEnv: 'X' }, { X: 'pw' });
    expect(fromEnv).toMatchObject({ conninfo: 'postgres://app@db.example/app', password: 'pw', passwordOrigin: 'environment variable X' });
    expect(() => resolvePostgresConnection({ name: 'db', kind: 'postgres', url: 'mysql://app:pw@h/app' }, {})).toThrow(/PostgreSQL URL like postgres:\/\/user@host:5432\/database, not "mysql:\/\/app:\*\*\*@h\/app"/);
    expect(() => resolvePostgresConnection({ name: 'db', kind: 'postgres', url: 'postgres://app@h/' }, {})).toThrow(/names no database/);
    expect(() => resolvePostgresConnection({ name: 'db', kind: 'postgres', url: 'postgres://app@h/app?sslpassword=k' }, {})).toThrow(/sslpassword/);
  });

  it('parses versions and the headers of older archive formats', () => {
    expect(parsePgVersion('pg_restore (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n')).toEqual({ text: '15.18 (Debian 15.18-0+deb12u1)', num: 150018, major: '15' });
    expect(parsePgVersion('9.6.24')).toEqual({ text: '9.6.24', num: 90624, major: '9.6' });
    expect(parsePgVersion('17beta2')).toMatchObject({ num: 170000, major: '17' });
    expect(parsePgVersion('nonsense')).toBeNull();
    const h14 = parsePgDumpHeader(fakeHeader({ format: [1, 14, 0], serverVersion: '15.2', pgDumpVersion: '15.3' }));
    expect(h14).toEqual({ formatVersion: '1.14.0', format: 'custom', database: 'app', serverVersion: '15.2', pgDumpVersion: '15.3', createdAt: '2024-03-05 06:07:08' });
    expect(parsePgDumpHeader(Buffer.from('PGDMX123456789'))).toBeNull();
  });
});

/** A custom-format dump header as pg_dump writes it (WriteHead), for format versions 1.10 and up. */
function fakeHeader(o: { format: [number, number, number]; serverVersion: string; pgDumpVersion: string }): Buffer {
  const parts: Buffer[] = [Buffer.from('PGDMP', 'latin1'), Buffer.from([...o.format, 4, 8, 1])];
  const int = (n: number): Buffer => {
    const b = Buffer.alloc(5);
    b[0] = n < 0 ? 1 : 0;
    b.writeUInt32LE(Math.abs(n), 1);
    return b;
  };
  const str = (s: string): Buffer => Buffer.concat([int(Buffer.byteLength(s)), Buffer.from(s)]);
  const [, minor] = o.format;
  parts.push(minor >= 15 ? Buffer.from([0]) : int(-1));
  for (const n of [8, 7, 6, 5, 2, 124, 0]) parts.push(int(n)); // 2024-03-05 06:07:08
  parts.push(str('app'), str(o.serverVersion), str(o.pgDumpVersion));
  return Buffer.concat(parts);
}
