import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { isExecutable } from '../sources/postgres.js';

/**
 * A real PostgreSQL server for tests: `initdb` into a temporary folder, `postgres` listening on
 * 127.0.0.1 only, on a free port, with no Unix socket, and SCRAM-SHA-256 password
 * authentication for every connection (the superuser included), as a production server would.
 *
 * PostgreSQL refuses to run as root: when the tests run as root, initdb and the server run as
 * the `postgres` system user (through `setpriv`, which execs, so the child's pid is the
 * postmaster's and signals reach it directly), and the temporary folder belongs to that user.
 *
 * The server binaries come from Debian's `postgresql` package (`/usr/lib/postgresql/<N>/bin`);
 * `requirePostgresBinDir()` fails loudly when it is missing. Test-only.
 */

export const POSTGRES_MISSING_MESSAGE =
  'PostgreSQL is not installed: no /usr/lib/postgresql/<N>/bin/{initdb,postgres,pg_dump,pg_restore,psql}. ' +
  'The PostgreSQL source tests need a real server: .ci/run must install the Debian package "postgresql" ' +
  '(which brings postgresql-<N> and postgresql-client-<N>); locally: apt-get install postgresql';

const NEEDED = ['initdb', 'postgres', 'pg_isready', 'psql', 'pg_dump', 'pg_restore'];

/** The newest `/usr/lib/postgresql/<N>/bin` holding the server and client programs, or null. */
export function findPostgresBinDir(): string | null {
  const root = '/usr/lib/postgresql';
  let versions: string[];
  try {
    versions = fs.readdirSync(root);
  } catch {
    return null;
  }
  const sorted = versions.filter((v) => /^\d+(\.\d+)?$/.test(v)).sort((a, b) => Number(b) - Number(a));
  for (const v of sorted) {
    const bin = path.join(root, v, 'bin');
    if (NEEDED.every((tool) => isExecutable(path.join(bin, tool)))) return bin;
  }
  return null;
}

/** Like findPostgresBinDir, but throws (a test must fail, not skip) when PostgreSQL is missing. */
export function requirePostgresBinDir(): string {
  const bin = findPostgresBinDir();
  if (!bin) throw new Error(POSTGRES_MISSING_MESSAGE);
  return bin;
}

export interface PsqlOptions {
  database?: string;
  user?: string;
  password?: string;
  /** Fed to psql's standard input (after -c, if both are given). */
  input?: string;
}

export interface PostgresServer {
  host: '127.0.0.1';
  port: number;
  /** The folder with pg_dump, pg_restore, psql of the same version as the server. */
  binDir: string;
  /** `SHOW server_version`, e.g. "15.18 (Debian 15.18-0+deb12u1)". */
  version: string;
  /** Superuser (SCRAM password auth, like everyone). */
  adminUser: string;
  adminPassword: string;
  /** The server's folder (data directory and log live inside). */
  dir: string;
  logFile: string;
  /** postgres://user@127.0.0.1:port/database, never with a password. */
  url(database: string, user?: string): string;
  /** Runs SQL through psql (as the superuser unless told); returns unaligned, tuples-only output; throws on error. */
  psql(sql: string, options?: PsqlOptions): string;
  /** Like psql, without blocking the event loop (for work that runs alongside the code under test). */
  psqlAsync(sql: string, options?: PsqlOptions): Promise<string>;
  /** Like psql, but returns the outcome instead of throwing. */
  tryPsql(sql: string, options?: PsqlOptions): { status: number; stdout: string; stderr: string };
  createRole(name: string, password: string, attributes?: string): void;
  /** A new database owned by `owner`. */
  createDatabase(name: string, owner: string): void;
  /** Fast shutdown (SIGINT), waits for the server to exit, removes the folder. */
  stop(): Promise<void>;
  /** SIGKILL to the postmaster: the server is gone at once (the folder is removed by stop()). */
  kill(): Promise<void>;
  /** Whether the postmaster is still running. */
  readonly running: boolean;
}

interface RunAs {
  uid: number;
  gid: number;
}

/** Who runs initdb and the server: ourselves, or the `postgres` user when we are root. */
function runAs(): RunAs | null {
  if (process.getuid?.() !== 0) return null;
  const line = fs
    .readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'));
  if (!line) throw new Error('running as root, and there is no "postgres" system user to run PostgreSQL as (PostgreSQL refuses to run as root); install the Debian package "postgresql", which creates it');
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

function asUser(user: RunAs | null, cmd: string, args: string[]): [string, string[]] {
  if (!user) return [cmd, args];
  return ['setpriv', [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', '--', cmd, ...args]];
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

function clientEnv(password: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  return { ...env, PGPASSWORD: password, PGCONNECT_TIMEOUT: '10', LC_ALL: 'C', PGAPPNAME: 'stowage-test' };
}

export interface PostgresServerOptions {
  /** Extra `-c name=value` server settings. */
  settings?: Record<string, string>;
}

export async function startPostgresServer(options: PostgresServerOptions = {}): Promise<PostgresServer> {
  const binDir = requirePostgresBinDir();
  const user = runAs();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stowage-pg-'));
  const dataDir = path.join(dir, 'data');
  const logFile = path.join(dir, 'server.log');
  const adminUser = 'stowage_admin';
  const adminPassword = `admin-${crypto.randomBytes(12).toString('hex')}`;
  const pwFile = path.join(dir, 'admin.pw');
  fs.writeFileSync(pwFile, `${adminPassword}\n`, { mode: 0o600 });
  fs.writeFileSync(logFile, '');
  if (user) {
    for (const p of [dir, pwFile, logFile]) fs.chownSync(p, user.uid, user.gid);
  }

  const [initCmd, initArgs] = asUser(user, path.join(binDir, 'initdb'), [
    `--pgdata=${dataDir}`,
    `--username=${adminUser}`,
    `--pwfile=${pwFile}`,
    '--auth=scram-sha-256',
    '--encoding=UTF8',
    '--locale=C',
    '--no-sync',
  ]);
  const init = spawnSync(initCmd, initArgs, { encoding: 'utf8', cwd: dir, env: { ...process.env, LC_ALL: 'C' } });
  fs.rmSync(pwFile, { force: true });
  if (init.error || init.status !== 0) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw new Error(`initdb failed: ${init.error?.message ?? ''}${init.stderr}${init.stdout}`);
  }

  const settings: Record<string, string> = {
    listen_addresses: '127.0.0.1',
    unix_socket_directories: '',
    password_encryption: 'scram-sha-256',
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    max_connections: '50',
    shared_buffers: '32MB',
    log_min_messages: 'warning',
    ...options.settings,
  };

  let child: ChildProcess | undefined;
  let port = 0;
  let exited: Promise<void> = Promise.resolve();
  let running = false;
  const logFd = fs.openSync(logFile, 'a');
  try {
    for (let attempt = 0; attempt < 5 && !running; attempt++) {
      port = await freePort();
      const args = [`-D`, dataDir, '-p', String(port), ...Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`])];
      const [cmd, argv] = asUser(user, path.join(binDir, 'postgres'), args);
      const proc = spawn(cmd, argv, { cwd: dir, stdio: ['ignore', logFd, logFd], env: { ...process.env, LC_ALL: 'C' } });
      let gone = false;
      exited = new Promise<void>((resolve) => proc.once('exit', () => ((gone = true), (running = false), resolve())));
      proc.once('error', () => {});
      child = proc;
      running = true;
      const deadline = Date.now() + 30_000;
      for (;;) {
        if (gone) {
          running = false;
          break; // port taken in between, or a real failure: retry, then report the log
        }
        const ready = spawnSync(path.join(binDir, 'pg_isready'), ['-q', '-h', '127.0.0.1', '-p', String(port), '-t', '1'], { env: clientEnv(adminPassword) });
        if (ready.status === 0) break;
        if (Date.now() > deadline) {
          proc.kill('SIGKILL');
          await exited;
          throw new Error(`PostgreSQL did not become ready within 30 s:\n${fs.readFileSync(logFile, 'utf8')}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  } finally {
    fs.closeSync(logFd);
  }
  if (!running || !child) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw new Error(`PostgreSQL did not start: ${fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : ''}`);
  }
  const postmaster = child;

  const psqlArgs = (sql: string, o: PsqlOptions): string[] => [
    ...['-X', '-q', '-A', '-t', '-F', '\t', '-v', 'ON_ERROR_STOP=1', '-w', '-h', '127.0.0.1', '-p', String(port)],
    ...['-U', o.user ?? adminUser, '-d', o.database ?? 'postgres'],
    ...(sql ? ['-c', sql] : []),
  ];
  const tryPsql = (sql: string, o: PsqlOptions = {}): { status: number; stdout: string; stderr: string } => {
    const r = spawnSync(path.join(binDir, 'psql'), psqlArgs(sql, o), {
      encoding: 'utf8',
      input: o.input,
      env: clientEnv(o.password ?? adminPassword),
      maxBuffer: 256 * 1024 * 1024,
    });
    if (r.error) throw r.error;
    return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  };
  const psql = (sql: string, o: PsqlOptions = {}): string => {
    const r = tryPsql(sql, o);
    if (r.status !== 0) throw new Error(`psql failed (${r.status}): ${r.stderr}\nSQL: ${sql.slice(0, 500)}`);
    return r.stdout.replace(/\n$/, '');
  };
  const psqlAsync = (sql: string, o: PsqlOptions = {}): Promise<string> =>
    new Promise((resolve, reject) => {
      const child = spawn(path.join(binDir, 'psql'), psqlArgs(sql, o), { env: clientEnv(o.password ?? adminPassword), stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.on('error', reject);
      child.on('close', (code) => (code === 0 ? resolve(stdout.replace(/\n$/, '')) : reject(new Error(`psql failed (${code}): ${stderr}\nSQL: ${sql.slice(0, 500)}`))));
      child.stdin.end(o.input ?? '');
    });
  const ident = (name: string): string => `"${name.replace(/"/g, '""')}"`;
  const literal = (text: string): string => `'${text.replace(/'/g, "''")}'`;

  const version = psql('SHOW server_version');
  let stopped = false;
  const server: PostgresServer = {
    host: '127.0.0.1',
    port,
    binDir,
    version,
    adminUser,
    adminPassword,
    dir,
    logFile,
    get running() {
      return running;
    },
    url: (database, u = adminUser) => `postgres://${encodeURIComponent(u)}@127.0.0.1:${port}/${encodeURIComponent(database)}`,
    psql,
    psqlAsync,
    tryPsql,
    createRole(name, password, attributes = '') {
      psql(`CREATE ROLE ${ident(name)} LOGIN PASSWORD ${literal(password)} ${attributes}`);
    },
    createDatabase(name, owner) {
      psql(`CREATE DATABASE ${ident(name)} OWNER ${ident(owner)}`);
    },
    async kill() {
      if (running) postmaster.kill('SIGKILL');
      await exited;
      // Backends notice the postmaster's death on their own; give them a moment to go.
      await new Promise((r) => setTimeout(r, 200));
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      if (running) {
        postmaster.kill('SIGINT');
        const timer = setTimeout(() => postmaster.kill('SIGKILL'), 15_000);
        await exited;
        clearTimeout(timer);
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return server;
}

/**
 * Every row of each table (ordered), the sequences' positions, and the relations and columns
 * that exist: two databases with equal snapshots hold the same data for a test's purposes.
 */
export function databaseSnapshot(server: PostgresServer, database: string, tables: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const t of tables) out[t] = server.psql(`SELECT * FROM ${t} ORDER BY 1`, { database });
  out.sequences = server.psql(`SELECT sequencename, last_value FROM pg_sequences WHERE schemaname NOT IN ('pg_catalog') ORDER BY 1`, { database });
  out.relations = server.psql(
    `SELECT n.nspname || '.' || c.relname || ':' || c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') ORDER BY 1`,
    { database },
  );
  out.columns = server.psql(`SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2, 3`, { database });
  return out;
}

/**
 * A writer for consistency tests, over tables accounts (id 1-100, balance), ledger (amount),
 * totals (total) and zz_control (stop): until zz_control.stop is true it commits transactions
 * that each add a ledger row and its amount to totals and move money between two accounts, so
 * in any consistent snapshot sum(ledger.amount) = totals.total and sum(balance) is unchanged.
 */
export const INVARIANT_WRITER_SQL = `DO $$
  DECLARE x int; a int; b int;
  BEGIN
    LOOP
      EXIT WHEN (SELECT stop FROM zz_control);
      x := 1 + floor(random() * 100)::int;
      a := 1 + floor(random() * 100)::int;
      b := 1 + floor(random() * 100)::int;
      INSERT INTO ledger (amount) VALUES (x);
      UPDATE totals SET total = total + x;
      UPDATE accounts SET balance = balance - x WHERE id = a;
      UPDATE accounts SET balance = balance + x WHERE id = b;
      COMMIT;
    END LOOP;
  END $$`;
