import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { ArchiveInput } from '../archive/zip-writer.js';
import { StowageError, type StowageErrorCode } from '../errors.js';
import type { BackupContext, Source, SourceEstimate } from './source.js';

/**
 * A PostgreSQL database, backed up with `pg_dump --format=custom` streamed straight into the
 * archive as `<source>/database.pgdump` (no temporary file: the archive takes a stream entry whose
 * size is not known up front), next to `<source>/postgres.json` with the server and pg_dump
 * versions. pg_dump reads everything inside one repeatable-read transaction, so the dump is a
 * consistent snapshot while the application keeps writing. Restoring is in postgres-restore.ts.
 *
 * Secrets: the password never goes on a command line (where `ps` shows it) nor into a message.
 * The URL given to the tools (`--dbname=`) has its password removed; the password reaches them
 * through `PGPASSWORD` in their environment only, and every message shows the URL redacted and
 * has the password scrubbed out.
 */

export const POSTGRES_DUMP_ENTRY = 'database.pgdump';
export const POSTGRES_METADATA_ENTRY = 'postgres.json';

/** The source as stowage.yaml describes it (the config schema maps onto this). */
export interface PostgresSourceConfig {
  name: string;
  kind: 'postgres';
  /**
   * `postgres://user@host:5432/database?sslmode=require` (or `postgresql://`). Better without a
   * password: give `passwordEnv`. A password in it is still honoured, and still kept off command
   * lines and out of messages.
   */
  url: string;
  /** Name of the environment variable holding the password (e.g. `APP_DB_PASSWORD`). */
  passwordEnv?: string;
  /** Only these schemas (pg_dump `--schema` patterns). */
  schemas?: string[];
  /** Not these schemas (`--exclude-schema`). */
  excludeSchemas?: string[];
  /** Only these tables (`--table` patterns, e.g. `public.users`, `app.*`). */
  tables?: string[];
  /** Not these tables (`--exclude-table`). */
  excludeTables?: string[];
  /**
   * The folder with pg_dump, pg_restore and psql. Default: the newest
   * `/usr/lib/postgresql/<N>/bin` that has the tool, else `PATH`.
   */
  binDir?: string;
}

/** What a backup recorded about the database, for a version policy at restore time. */
export interface PostgresBackupMetadata {
  format: 'pg_dump-custom';
  /** `SHOW server_version` at backup time, e.g. "15.18 (Debian 15.18-0+deb12u1)". */
  serverVersion: string;
  /** `server_version_num`, e.g. 150018. */
  serverVersionNum: number;
  /** `pg_dump --version`, e.g. "15.18 (Debian 15.18-0+deb12u1)". */
  pgDumpVersion: string;
  database: string;
  /** The URL, password removed. */
  url: string;
  schemas: string[];
  excludeSchemas: string[];
  tables: string[];
  excludeTables: string[];
  startedAt: string;
}

// ---------------------------------------------------------------------------------------------
// Connection

export interface PostgresConnection {
  /** The URL without any password: safe for argv (`--dbname=`) and messages. */
  conninfo: string;
  /** The same, for messages (identical to conninfo; kept separate for clarity at call sites). */
  display: string;
  database: string;
  user: string | undefined;
  /** From passwordEnv or the URL; undefined means libpq's own defaults (PGPASSWORD, ~/.pgpass). */
  password: string | undefined;
  /** Where the password comes from, for messages that say what to fix. */
  passwordOrigin: string;
}

function configError(code: StowageErrorCode, name: string, message: string, reason = 'config'): StowageError {
  return new StowageError(code, `source "${name}": ${message}`, { details: { source: name, reason } });
}

/**
 * Parses the source's URL and finds its password. `code` is the error code to throw with
 * (SOURCE_FAILED for a backup, RESTORE_FAILED for a restore).
 */
export function resolvePostgresConnection(config: PostgresSourceConfig, env: NodeJS.ProcessEnv = process.env, code: StowageErrorCode = 'SOURCE_FAILED'): PostgresConnection {
  const raw = config.url.trim();
  const example = 'postgres://user@host:5432/database';
  if (!/^postgres(ql)?:\/\//i.test(raw)) {
    throw configError(code, config.name, `the url must be a PostgreSQL URL like ${example}, not "${redactPostgresUrl(raw)}"`);
  }
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw configError(code, config.name, `"${redactPostgresUrl(raw)}" is not a valid URL; write it like ${example}`);
  }
  let password: string | undefined = u.password ? safeDecode(u.password) : undefined;
  const queryPassword = u.searchParams.get('password');
  if (queryPassword !== null) password ??= queryPassword;
  if (u.searchParams.has('sslpassword')) {
    throw configError(code, config.name, 'sslpassword in the url is not supported (it would be visible on the command line of pg_dump); use a client key without a passphrase, readable only by Stowage');
  }
  u.password = '';
  u.searchParams.delete('password');
  const database = safeDecode(u.pathname.replace(/^\//, '')) || u.searchParams.get('dbname') || '';
  if (!database) throw configError(code, config.name, `the url names no database; write it like ${example}`);
  const user = u.username ? safeDecode(u.username) : (u.searchParams.get('user') ?? undefined);
  let passwordOrigin = 'the url';
  if (config.passwordEnv !== undefined) {
    const value = env[config.passwordEnv];
    if (value === undefined || value === '') {
      throw configError(code, config.name, `environment variable ${config.passwordEnv} (passwordEnv) is not set; set it to the database password of ${user ? `user "${user}"` : 'the user'}`);
    }
    password = value;
    passwordOrigin = `environment variable ${config.passwordEnv}`;
  } else if (password === undefined) {
    passwordOrigin = 'passwordEnv (none is configured)';
  }
  let conninfo = u.toString();
  // URL keeps "?" when the last parameter was removed.
  conninfo = conninfo.replace(/\?$/, '');
  return { conninfo, display: conninfo, database, user, password, passwordOrigin };
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** A PostgreSQL URL safe to show: password (in userinfo or the query) removed. */
export function redactPostgresUrl(raw: string): string {
  let out = raw.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/?#@]*?):[^/?#@]*@/i, '$1:***@');
  out = out.replace(/([?&](?:ssl)?password=)[^&#]*/gi, '$1***');
  return out;
}

/** Removes the password (and any URL password) from text that came from a tool. */
export function scrubSecret(text: string, password: string | undefined): string {
  let out = text.replace(/(postgres(?:ql)?:\/\/[^/?#@\s:]*):[^/?#@\s]*@/gi, '$1:***@');
  out = out.replace(/([?&\s](?:ssl)?password=)[^&#\s]*/gi, '$1***');
  if (password && password.length >= 3) out = out.split(password).join('***');
  return out;
}

// ---------------------------------------------------------------------------------------------
// Tools

export type PostgresTool = 'pg_dump' | 'pg_restore' | 'psql';

/** Where a tool is: binDir, else the newest /usr/lib/postgresql/<N>/bin, else PATH. Null if nowhere. */
export function findPostgresTool(tool: PostgresTool, binDir?: string): string | null {
  if (binDir !== undefined) {
    const p = path.join(binDir, tool);
    return isExecutable(p) ? p : null;
  }
  try {
    const versions = fs
      .readdirSync('/usr/lib/postgresql')
      .filter((v) => /^\d+(\.\d+)?$/.test(v))
      .sort((a, b) => Number(b) - Number(a));
    for (const v of versions) {
      const p = path.join('/usr/lib/postgresql', v, 'bin', tool);
      if (isExecutable(p)) return p;
    }
  } catch {
    // not Debian's layout
  }
  for (const dir of (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':')) {
    if (!dir) continue;
    const p = path.join(dir, tool);
    if (isExecutable(p)) return p;
  }
  return null;
}

/** A regular file we may execute. */
export function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

export interface PgVersion {
  /** As the tool prints it after "(PostgreSQL) ", e.g. "15.18 (Debian 15.18-0+deb12u1)". */
  text: string;
  /** Like server_version_num: 150018, 90624. */
  num: number;
  /** The major version: "15", "9.6". */
  major: string;
}

/** Reads "15.18 (Debian ...)", "16beta2", "9.6.24" (optionally preceded by "tool (PostgreSQL) "). */
export function parsePgVersion(raw: string): PgVersion | null {
  const text = raw.trim().replace(/^.*?\(PostgreSQL\)\s*/s, '').split('\n')[0]!.trim();
  const m = /^(\d+)(?:\.(\d+))?(?:\.(\d+))?/.exec(text);
  if (!m) return null;
  const a = Number(m[1]);
  const b = m[2] === undefined ? 0 : Number(m[2]);
  const c = m[3] === undefined ? 0 : Number(m[3]);
  if (a >= 10) return { text, num: a * 10000 + b, major: String(a) };
  return { text, num: a * 10000 + b * 100 + c, major: `${a}.${b}` };
}

/** Comparable major version: 150000 for 15.x, 90600 for 9.6.x. */
export function pgMajorNum(v: PgVersion): number {
  return v.num >= 100000 ? Math.floor(v.num / 10000) * 10000 : Math.floor(v.num / 100) * 100;
}

export interface PgRunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface PgRunOptions {
  conn?: PostgresConnection;
  signal?: AbortSignal;
  timeoutMs?: number;
  /** Extra environment (e.g. PGOPTIONS). */
  env?: Record<string, string>;
  /** Sees every command line (which never holds a secret): for tests and debugging. */
  onCommand?: (argv: readonly string[]) => void;
  /** Each line of stderr as it arrives, scrubbed. */
  onStderrLine?: (line: string) => void;
  /**
   * Kill the tool when this process dies (Linux: `setpriv --pdeathsig KILL`, when setpriv is
   * there), so that a pg_restore cannot go on and commit after a crash of the restore that
   * started it: its connection ends and PostgreSQL rolls its transaction back.
   */
  endWithParent?: boolean;
}

/** util-linux's setpriv, if this is Linux and it is installed. */
function findSetpriv(): string | null {
  if (process.platform !== 'linux') return null;
  for (const p of ['/usr/bin/setpriv', '/bin/setpriv']) if (isExecutable(p)) return p;
  return null;
}

/** Passed through from Stowage's environment besides libpq's own PG* variables. */
const PASSED_THROUGH = ['PATH', 'HOME', 'TMPDIR', 'TZ', 'USER', 'LOGNAME'];

/**
 * The environment of a PostgreSQL tool: libpq's PG* variables and a few basics from ours (so
 * PGSSLMODE, PGSSLROOTCERT, ~/.pgpass keep working as they do for psql), nothing else of ours
 * (no other secret of Stowage's reaches the tools); the password in PGPASSWORD when one is
 * configured, C messages (they are matched below), a connect timeout and an application name.
 */
export function pgChildEnv(conn: PostgresConnection | undefined, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (k.startsWith('PG') || PASSED_THROUGH.includes(k)) env[k] = v;
  env.PATH ??= '/usr/local/bin:/usr/bin:/bin';
  Object.assign(env, { LC_ALL: 'C', LC_MESSAGES: 'C', LANG: 'C' });
  env.PGCONNECT_TIMEOUT ??= '15';
  env.PGAPPNAME ??= 'stowage';
  if (conn?.password !== undefined) env.PGPASSWORD = conn.password;
  Object.assign(env, extra);
  return env;
}

/** Runs a tool to the end and collects its output. Rejects only if it cannot start or is aborted. */
export function runPgTool(file: string, args: string[], options: PgRunOptions = {}): Promise<PgRunResult> {
  options.onCommand?.([file, ...args]);
  return new Promise((resolve, reject) => {
    if (options.signal?.aborted) {
      reject(abortError(options.signal));
      return;
    }
    // setpriv sets the parent-death signal and execs the tool (same pid), so signals reach the tool.
    const setpriv = options.endWithParent ? findSetpriv() : null;
    const [cmd, argv] = setpriv ? [setpriv, ['--pdeathsig', 'KILL', '--', file, ...args]] : [file, args];
    const child = spawn(cmd, argv, { env: pgChildEnv(options.conn, options.env), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let partial = '';
    let aborted = false;
    let timedOut = false;
    const stop = (): void => {
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 5000).unref();
    };
    const onAbort = (): void => {
      aborted = true;
      stop();
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const timer = options.timeoutMs ? setTimeout(() => ((timedOut = true), stop()), options.timeoutMs) : undefined;
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      if (options.onStderrLine) {
        partial += d;
        const lines = partial.split('\n');
        partial = lines.pop() ?? '';
        for (const l of lines) if (l.trim()) options.onStderrLine(scrubSecret(l, options.conn?.password));
      }
    });
    const done = (): void => {
      if (timer) clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
    };
    child.on('error', (err) => {
      done();
      reject(err);
    });
    child.on('close', (code, signal) => {
      done();
      if (partial.trim() && options.onStderrLine) options.onStderrLine(scrubSecret(partial, options.conn?.password));
      if (aborted && options.signal) reject(abortError(options.signal));
      else if (timedOut) resolve({ code: null, signal, stdout, stderr: `${stderr}\ntimeout expired after ${options.timeoutMs} ms` });
      else resolve({ code, signal, stdout, stderr });
    });
  });
}

function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : new Error('aborted');
}

/** Runs `<tool> --version`; null if it does not run or prints something else. */
export async function pgToolVersion(file: string): Promise<PgVersion | null> {
  try {
    const r = await runPgTool(file, ['--version'], { timeoutMs: 15_000 });
    return r.code === 0 ? parsePgVersion(r.stdout) : null;
  } catch {
    return null;
  }
}

export type PgFailureReason = 'unreachable' | 'auth' | 'no-password' | 'not-allowed' | 'database-missing' | 'tls' | 'version' | 'permission' | 'timeout' | 'failed';

/** The last meaningful line of a tool's stderr, scrubbed and without the tool's prefix. */
export function lastErrorLine(stderr: string, password: string | undefined): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !/^(DETAIL|HINT|CONTEXT|LINE \d+):/.test(l) && !/^Command was:/.test(l) && !/^\^$/.test(l));
  const errorLines = lines.filter((l) => /error|FATAL|ERROR/i.test(l));
  const line = (errorLines[errorLines.length - 1] ?? lines[lines.length - 1] ?? '').replace(/^(pg_dump|pg_restore|psql):\s*(error:\s*)?/, '');
  return scrubSecret(line, password).slice(0, 500);
}

/**
 * Turns a connection or query failure of psql / pg_dump / pg_restore into a reason and a sentence
 * that says what to do. `what` names the source; the URL is shown without its password.
 */
export function explainPgFailure(stderr: string, conn: PostgresConnection, what: string): { reason: PgFailureReason; message: string } {
  const where = conn.display;
  const user = conn.user ? `user "${conn.user}"` : 'the user';
  const e = stderr;
  if (/password authentication failed|SCRAM authentication|authentication failed for user|role "[^"]*" does not exist|peer authentication failed|Ident authentication failed/i.test(e)) {
    return { reason: 'auth', message: `${what}: ${where} refused the credentials of ${user}; check the user in the url and the password in ${conn.passwordOrigin}` };
  }
  if (/fe_sendauth: no password supplied|no password supplied/i.test(e)) {
    return { reason: 'no-password', message: `${what}: ${where} asks for a password and none was given; set passwordEnv to the name of an environment variable holding the password of ${user}` };
  }
  if (/no pg_hba\.conf entry/i.test(e)) {
    return { reason: 'not-allowed', message: `${what}: ${where} does not accept connections from this machine for ${user} (no pg_hba.conf entry); add one on the server, or check the sslmode` };
  }
  const missing = /database "([^"]*)" does not exist/i.exec(e);
  if (missing) {
    return { reason: 'database-missing', message: `${what}: database "${missing[1]}" does not exist on the server of ${where}; check the database name in the url, or create it (createdb -O <owner> ${missing[1]})` };
  }
  if (/could not translate host name|Name or service not known|nodename nor servname/i.test(e)) {
    return { reason: 'unreachable', message: `${what}: the host of ${where} cannot be resolved; check the host in the url and this machine's DNS` };
  }
  if (/timeout expired/i.test(e)) {
    return { reason: 'timeout', message: `${what}: ${where} did not answer in time; check that the server is running and reachable from this machine (firewall, network)` };
  }
  if (/Connection refused|could not connect to server|Is the server running|No route to host|Network is unreachable|server closed the connection unexpectedly|Connection reset|the database system is (starting up|shutting down)|could not receive data from server/i.test(e)) {
    return { reason: 'unreachable', message: `${what}: cannot reach the PostgreSQL server at ${where}; check that it is running and accepts TCP connections on that host and port` };
  }
  if (/SSL|certificate/i.test(e)) {
    return { reason: 'tls', message: `${what}: the TLS connection to ${where} failed (${lastErrorLine(e, conn.password)}); check sslmode and the certificates` };
  }
  const mismatch = /server version: ([^;]+); pg_dump version: ([^\n]+)/i.exec(e);
  if (mismatch) {
    const server = parsePgVersion(mismatch[1]!);
    return {
      reason: 'version',
      message: `${what}: pg_dump ${mismatch[2]!.trim()} is older than the server (${mismatch[1]!.trim()}) and cannot dump it; install the PostgreSQL client ${server?.major ?? 'of the server version'} or newer (Debian: postgresql-client-${server?.major ?? 'N'}), or set binDir`,
    };
  }
  if (/permission denied/i.test(e)) {
    return { reason: 'permission', message: `${what}: ${user} lacks a privilege on ${where}: ${lastErrorLine(e, conn.password)}; grant it, or narrow schemas/tables to what the user may read` };
  }
  return { reason: 'failed', message: `${what}: ${lastErrorLine(e, conn.password) || 'the PostgreSQL tool failed'} (${where})` };
}

export interface PgServerInfo {
  version: PgVersion;
  /** pg_database_size(current_database()). */
  databaseBytes: number;
}

/** Connects with psql and reads the server version: also proves reachability, auth and that the database exists. */
export async function probeServer(
  psqlPath: string,
  conn: PostgresConnection,
  what: string,
  code: StowageErrorCode,
  options: { signal?: AbortSignal; onCommand?: (argv: readonly string[]) => void } = {},
): Promise<PgServerInfo> {
  const sql = "SELECT current_setting('server_version'), current_setting('server_version_num'), pg_database_size(current_database())";
  const r = await runPgTool(psqlPath, ['-X', '-w', '-A', '-t', '-q', '-F', '\t', '-v', 'ON_ERROR_STOP=1', '-c', sql, `--dbname=${conn.conninfo}`], {
    conn,
    signal: options.signal,
    timeoutMs: 60_000,
    onCommand: options.onCommand,
  });
  if (r.code !== 0) {
    const { reason, message } = explainPgFailure(r.stderr, conn, what);
    throw new StowageError(code, message, { details: { reason } });
  }
  const [versionText = '', num = '', size = '0'] = r.stdout.trim().split('\t');
  const version = parsePgVersion(versionText);
  if (!version) throw new StowageError(code, `${what}: unexpected answer from the server of ${conn.display}: ${scrubSecret(r.stdout.slice(0, 200), conn.password)}`, { details: { reason: 'failed' } });
  if (Number(num) > 0) version.num = Number(num);
  return { version, databaseBytes: Number(size) || 0 };
}

export function missingToolMessage(tool: PostgresTool, binDir: string | undefined, minimumMajor?: string): string {
  const where = binDir !== undefined ? `in binDir ${binDir}` : 'in /usr/lib/postgresql/<N>/bin or on PATH';
  const version = minimumMajor ? ` ${minimumMajor} or newer` : '';
  const pkg = minimumMajor && !minimumMajor.includes('.') ? `postgresql-client-${minimumMajor}` : 'postgresql-client';
  return `${tool} was not found ${where}; install the PostgreSQL client${version} (Debian/Ubuntu: apt-get install ${pkg}) or set binDir to the folder holding ${tool}`;
}

// ---------------------------------------------------------------------------------------------
// The source

export interface PostgresSourceOptions {
  /** Where passwordEnv is looked up (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Sees every command line run (never holding a secret). */
  onCommand?: (argv: readonly string[]) => void;
}

export class PostgresSource implements Source {
  readonly kind = 'postgres' as const;
  readonly name: string;
  /** The URL without its password (recorded in the manifest as the source's path). */
  readonly path: string;
  /** Filled by entries(): what the backup recorded (also archived as postgres.json). */
  metadata: PostgresBackupMetadata | undefined;
  private readonly children = new Set<ChildProcess>();

  constructor(
    readonly config: PostgresSourceConfig,
    private readonly options: PostgresSourceOptions = {},
  ) {
    this.name = config.name;
    this.path = redactPostgresUrl(config.url);
  }

  private get what(): string {
    return `source "${this.name}"`;
  }

  private connection(): PostgresConnection {
    return resolvePostgresConnection(this.config, this.options.env ?? process.env, 'SOURCE_FAILED');
  }

  private tool(tool: PostgresTool): string {
    const p = findPostgresTool(tool, this.config.binDir);
    if (!p) throw new StowageError('SOURCE_FAILED', `${this.what}: ${missingToolMessage(tool, this.config.binDir)}`, { details: { source: this.name, reason: `${tool}-missing` } });
    return p;
  }

  private fail(reason: string, message: string, cause?: unknown): StowageError {
    return new StowageError('SOURCE_FAILED', message, { cause, details: { source: this.name, reason } });
  }

  /** The database's size on the server (the dump is usually smaller: no indexes, no bloat). */
  async estimate(_ctx?: BackupContext): Promise<SourceEstimate> {
    try {
      const info = await probeServer(this.tool('psql'), this.connection(), this.what, 'SOURCE_FAILED', { onCommand: this.options.onCommand });
      return { files: 2, bytes: info.databaseBytes };
    } catch {
      return { files: 2, bytes: 0 };
    }
  }

  /** pg_dump's arguments (no secret among them). */
  dumpArgs(conn: PostgresConnection): string[] {
    const c = this.config;
    const args = ['--format=custom', '--no-password'];
    // The archive deflates in parallel (ZipWriter); pg_dump's own zlib is single-threaded.
    args.push('--compress=0');
    if ((c.schemas?.length ?? 0) + (c.tables?.length ?? 0) > 0) args.push('--strict-names');
    for (const s of c.schemas ?? []) args.push(`--schema=${s}`);
    for (const s of c.excludeSchemas ?? []) args.push(`--exclude-schema=${s}`);
    for (const t of c.tables ?? []) args.push(`--table=${t}`);
    for (const t of c.excludeTables ?? []) args.push(`--exclude-table=${t}`);
    args.push(`--dbname=${conn.conninfo}`);
    return args;
  }

  async *entries(_ctx: BackupContext): AsyncGenerator<ArchiveInput> {
    const conn = this.connection();
    const pgDump = this.tool('pg_dump');
    const psql = this.tool('psql');
    const info = await probeServer(psql, conn, this.what, 'SOURCE_FAILED', { onCommand: this.options.onCommand });
    const dumpVersion = await pgToolVersion(pgDump);
    if (!dumpVersion) throw this.fail('pg_dump-missing', `${this.what}: ${pgDump} does not run (--version failed); reinstall the PostgreSQL client or set binDir`);
    if (pgMajorNum(dumpVersion) < pgMajorNum(info.version)) {
      throw this.fail(
        'version',
        `${this.what}: pg_dump ${dumpVersion.text} is older than the server (PostgreSQL ${info.version.text}) and cannot dump it; install the PostgreSQL client ${info.version.major} or newer (Debian: postgresql-client-${info.version.major}), or set binDir`,
      );
    }
    const now = Date.now();
    this.metadata = {
      format: 'pg_dump-custom',
      serverVersion: info.version.text,
      serverVersionNum: info.version.num,
      pgDumpVersion: dumpVersion.text,
      database: conn.database,
      url: conn.display,
      schemas: [...(this.config.schemas ?? [])],
      excludeSchemas: [...(this.config.excludeSchemas ?? [])],
      tables: [...(this.config.tables ?? [])],
      excludeTables: [...(this.config.excludeTables ?? [])],
      startedAt: new Date(now).toISOString(),
    };
    yield { kind: 'dir', name: '', mode: 0o700, mtimeMs: now };
    yield { kind: 'stream', name: POSTGRES_METADATA_ENTRY, stream: Readable.from([Buffer.from(`${JSON.stringify(this.metadata, null, 2)}\n`)]), mode: 0o600, mtimeMs: now };
    yield { kind: 'stream', name: POSTGRES_DUMP_ENTRY, stream: this.dumpStream(pgDump, conn), mode: 0o600, mtimeMs: now };
  }

  /**
   * pg_dump's standard output as a stream that starts pg_dump when first read (so its snapshot is
   * taken when the archive gets to it, not while earlier entries are written), follows the
   * archive's pace (pg_dump waits on a full pipe), ends only if pg_dump exited 0, and fails with
   * pg_dump's explained error otherwise. Destroying it (the backup failed) stops pg_dump.
   */
  dumpStream(pgDump: string, conn: PostgresConnection): Readable {
    const args = this.dumpArgs(conn);
    let child: ChildProcess | undefined;
    let stderr = '';
    let stdoutEnded = false;
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    const source = this;
    const finish = (stream: Readable): void => {
      if (!stdoutEnded || !exit || stream.destroyed) return;
      if (exit.code === 0) {
        stream.push(null);
        return;
      }
      const explained = explainPgFailure(stderr, conn, source.what);
      const tail = exit.signal ? ` (pg_dump was killed by ${exit.signal})` : '';
      stream.destroy(source.fail(explained.reason, `${explained.message.replace(/^source "[^"]*": /, `${source.what}: pg_dump failed: `)}${tail}`));
    };
    return new Readable({
      highWaterMark: 1024 * 1024,
      read() {
        if (child) {
          child.stdout?.resume();
          return;
        }
        source.options.onCommand?.([pgDump, ...args]);
        const proc = spawn(pgDump, args, { env: pgChildEnv(conn), stdio: ['ignore', 'pipe', 'pipe'] });
        child = proc;
        source.children.add(proc);
        proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
          // Only the tail matters (for the error message).
          stderr = (stderr + d).slice(-64 * 1024);
        });
        proc.stdout!.on('data', (chunk: Buffer) => {
          if (!this.push(chunk)) proc.stdout!.pause();
        });
        proc.stdout!.on('end', () => {
          stdoutEnded = true;
          finish(this);
        });
        proc.on('error', (err) => {
          source.children.delete(proc);
          this.destroy(source.fail('pg_dump-missing', `${source.what}: cannot run pg_dump (${(err as NodeJS.ErrnoException).code ?? err.message}); install the PostgreSQL client or set binDir`, err));
        });
        proc.on('close', (code, signal) => {
          source.children.delete(proc);
          exit = { code, signal };
          stdoutEnded = true;
          finish(this);
        });
      },
      destroy(err, callback) {
        if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
        callback(err);
      },
    });
  }

  async release(): Promise<void> {
    const waits: Promise<void>[] = [];
    for (const child of this.children) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      waits.push(new Promise<void>((resolve) => child.once('close', () => resolve())));
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 5000).unref();
    }
    await Promise.all(waits);
    this.children.clear();
  }
}

// ---------------------------------------------------------------------------------------------
// The dump's header

export interface PgDumpHeader {
  /** Archive format version, e.g. "1.14.0". */
  formatVersion: string;
  /** 'custom' for -Fc (what Stowage writes); others are reported as they are. */
  format: 'custom' | 'files' | 'tar' | 'null' | 'directory' | `unknown(${number})`;
  database: string | null;
  /** "Dumped from database version". */
  serverVersion: string | null;
  /** "Dumped by pg_dump version". */
  pgDumpVersion: string | null;
  /** Local time of the dumping machine, as pg_dump recorded it (no time zone). */
  createdAt: string | null;
}

/**
 * Reads the header of a custom-format dump (pg_backup_archiver.c, WriteHead): "PGDMP", format
 * version bytes, int and offset sizes, format, compression, creation time, then the database
 * name, the server version and the pg_dump version as length-prefixed strings. Read here rather
 * than through `pg_restore -l` because the case that matters most, a pg_restore too old for the
 * dump, is exactly when pg_restore cannot read it. Null if the file is not a pg_dump archive.
 */
export function parsePgDumpHeader(buf: Buffer): PgDumpHeader | null {
  if (buf.length < 11 || buf.subarray(0, 5).toString('latin1') !== 'PGDMP') return null;
  const vmaj = buf[5]!;
  const vmin = buf[6]!;
  const vrev = buf[7]!;
  const version = (vmaj * 256 + vmin) * 256 + vrev;
  const v = (a: number, b: number): number => (a * 256 + b) * 256;
  let pos = 8;
  let intSize = 4;
  if (version >= v(1, 7)) {
    intSize = buf[pos++]!;
    pos++; // offSize
  }
  const fmtByte = buf[pos++]!;
  const formats = ['unknown', 'custom', 'files', 'tar', 'null', 'directory'] as const;
  const format = (fmtByte >= 1 && fmtByte <= 5 ? formats[fmtByte] : `unknown(${fmtByte})`) as PgDumpHeader['format'];
  if (intSize < 1 || intSize > 8) return null;
  const readInt = (): number | null => {
    if (pos + 1 + intSize > buf.length) return null;
    const negative = buf[pos++]! !== 0;
    let value = 0;
    for (let i = 0; i < intSize; i++) value += buf[pos + i]! * 2 ** (8 * i);
    pos += intSize;
    return negative ? -value : value;
  };
  const readStr = (): string | null => {
    const len = readInt();
    if (len === null || len < 0) return null;
    if (pos + len > buf.length) throw new RangeError('header truncated');
    const s = buf.subarray(pos, pos + len).toString('utf8');
    pos += len;
    return s;
  };
  const header: PgDumpHeader = { formatVersion: `${vmaj}.${vmin}.${vrev}`, format, database: null, serverVersion: null, pgDumpVersion: null, createdAt: null };
  try {
    if (version >= v(1, 15)) pos++; // compression algorithm (one byte)
    else if (version >= v(1, 4)) readInt(); // compression level
    if (version >= v(1, 4)) {
      const t: number[] = [];
      for (let i = 0; i < 7; i++) t.push(readInt() ?? 0);
      const [sec, min, hour, mday, mon, year] = t as [number, number, number, number, number, number];
      const pad = (n: number): string => String(n).padStart(2, '0');
      header.createdAt = `${year + 1900}-${pad(mon + 1)}-${pad(mday)} ${pad(hour)}:${pad(min)}:${pad(sec)}`;
      header.database = readStr();
    }
    if (version >= v(1, 10)) {
      header.serverVersion = readStr();
      header.pgDumpVersion = readStr();
    }
  } catch {
    return header;
  }
  return header;
}

/** Reads the first 64 KiB of a dump file and parses its header. */
export async function readPgDumpHeader(file: string): Promise<PgDumpHeader | null> {
  const fh = await fs.promises.open(file, 'r');
  try {
    const buf = Buffer.alloc(64 * 1024);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return parsePgDumpHeader(buf.subarray(0, bytesRead));
  } finally {
    await fh.close();
  }
}
