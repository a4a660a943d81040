import crypto from 'node:crypto';
import { afterAll, afterEach, beforeAll, beforeEach, expect, it } from 'vitest';
import { findPostgresBinDir, POSTGRES_MISSING_MESSAGE, startPostgresServer, type PostgresServer } from './postgres-server.js';
import { makeTempDir, removeDir } from './tmp.js';

/** The variable the tests' stowage.yaml and source configs read the application's password from. */
export const PG_PASSWORD_VAR = 'STOWAGE_TEST_PG_PASSWORD';

export interface PostgresFixture {
  /** The password of the `app` role (SCRAM), for PG_PASSWORD_VAR. */
  readonly appPassword: string;
  /** The server shared by the file's tests (started in beforeAll). */
  readonly server: PostgresServer;
  /** A fresh temporary folder for the test running now. */
  readonly dir: string;
  /** A new database owned by `app`, on `server` unless another is given. */
  newDatabase(server?: PostgresServer): string;
  /** SQL as the `app` role. */
  app(database: string, sql: string, server?: PostgresServer): string;
}

/**
 * One real PostgreSQL server per test file (src/testing/postgres-server.ts), with an `app` role.
 * Registers a test that fails when PostgreSQL is not installed (never a skip: CI must install
 * it), starts and stops the server, and gives each test its own temporary folder.
 */
export function usePostgresFixture(names: { dirPrefix: string; databasePrefix: string }): PostgresFixture {
  const appPassword = `app-pw-${crypto.randomBytes(8).toString('hex')}`;
  let server: PostgresServer | undefined;
  let dir: string | undefined;
  let databases = 0;

  it('PostgreSQL is installed (.ci/run must install the Debian package postgresql)', () => {
    expect(findPostgresBinDir(), POSTGRES_MISSING_MESSAGE).not.toBeNull();
  });
  beforeAll(async () => {
    server = await startPostgresServer();
    server.createRole('app', appPassword);
  }, 120_000);
  afterAll(async () => {
    await server?.stop();
  });
  beforeEach(() => {
    dir = makeTempDir(names.dirPrefix);
  });
  afterEach(() => {
    if (dir) removeDir(dir);
  });

  const started = (): PostgresServer => {
    if (!server) throw new Error('the PostgreSQL test server has not started (used outside a test?)');
    return server;
  };
  return {
    appPassword,
    get server() {
      return started();
    },
    get dir() {
      if (!dir) throw new Error('no test folder outside a test');
      return dir;
    },
    newDatabase(on = started()) {
      const name = `${names.databasePrefix}_${process.pid}_${++databases}`;
      on.createDatabase(name, 'app');
      return name;
    },
    app(database, sql, on = started()) {
      return on.psql(sql, { database, user: 'app', password: appPassword });
    },
  };
}
