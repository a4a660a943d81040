import crypto from 'node:crypto';
import { StowageError, errorMessage } from '../errors.js';
import {
  explainPgFailure,
  findPostgresTool,
  lastErrorLine,
  missingToolMessage,
  parsePgVersion,
  pgMajorNum,
  pgToolVersion,
  probeServer,
  readPgDumpHeader,
  resolvePostgresConnection,
  runPgTool,
  scrubSecret,
  type PgDumpHeader,
  type PgVersion,
  type PostgresConnection,
  type PostgresSourceConfig,
} from './postgres.js';

/**
 * Restoring a PostgreSQL source: `pg_restore --clean --if-exists --single-transaction` into the
 * configured database. One transaction: either every object of the dump is dropped and
 * recreated with its data, or (any error, a cancel, a lost connection) PostgreSQL rolls it all
 * back and the database is exactly as it was. Objects that are not in the dump (other schemas,
 * excluded tables, tables created since) are left alone.
 *
 * checkPostgresRestore() runs first (the engine may run it before anything else moves) and says
 * what to do when the restore cannot work: pg_restore missing or older than the dump's pg_dump,
 * the server unreachable, the credentials refused, the database missing.
 */

export type PostgresRestoreFailure =
  | 'dump-invalid'
  | 'pg_restore-missing'
  | 'pg_restore-too-old'
  | 'psql-missing'
  | 'unreachable'
  | 'auth'
  | 'no-password'
  | 'not-allowed'
  | 'database-missing'
  | 'tls'
  | 'timeout'
  | 'permission'
  | 'lock-timeout'
  | 'restore-failed'
  | 'aborted'
  | 'failed'
  | 'config';

export interface PostgresRestoreCheck {
  dump: PgDumpHeader;
  pgRestorePath: string;
  pgRestoreVersion: string;
  psqlPath: string;
  serverVersion: string;
  serverVersionNum: number;
  /** Not blocking, worth telling (e.g. restoring into an older server than the dump came from). */
  warnings: string[];
}

export interface PostgresRestoreOptions {
  signal?: AbortSignal;
  /** pg_restore's messages, line by line (no secret in them). */
  log?: (line: string) => void;
  /** Where passwordEnv is looked up (default process.env). */
  env?: NodeJS.ProcessEnv;
  /**
   * How long the restore may wait for a lock held by someone else (an application still
   * connected) before it is cancelled and rolled back; default 60 s. 0 waits forever.
   */
  lockTimeoutMs?: number;
  /** Sees every command line (none holds a secret). */
  onCommand?: (argv: readonly string[]) => void;
}

export interface PostgresRestoreResult extends PostgresRestoreCheck {
  durationMs: number;
}

function failure(source: string, reason: PostgresRestoreFailure, message: string, cause?: unknown): StowageError {
  return new StowageError(reason === 'dump-invalid' ? 'ARCHIVE_INVALID' : 'RESTORE_FAILED', message, { cause, details: { source, reason } });
}

/**
 * Everything that can be known before touching the database. Throws RESTORE_FAILED (or
 * ARCHIVE_INVALID for a file that is not a usable dump) with `details.reason` and a message that
 * says what to do; nothing is changed either way.
 */
export async function checkPostgresRestore(
  config: PostgresSourceConfig,
  dumpFile: string,
  options: Pick<PostgresRestoreOptions, 'env' | 'signal' | 'onCommand'> = {},
): Promise<PostgresRestoreCheck> {
  const what = `source "${config.name}"`;
  let conn: PostgresConnection;
  try {
    conn = resolvePostgresConnection(config, options.env ?? process.env, 'RESTORE_FAILED');
  } catch (err) {
    throw failure(config.name, 'config', errorMessage(err), err);
  }

  // 1. The dump: a pg_dump custom-format archive, and which pg_dump wrote it.
  let dump: PgDumpHeader | null;
  try {
    dump = await readPgDumpHeader(dumpFile);
  } catch (err) {
    throw failure(config.name, 'dump-invalid', `${what}: cannot read the database dump ${dumpFile}: ${errorMessage(err)}`, err);
  }
  if (!dump || dump.format !== 'custom') {
    throw failure(config.name, 'dump-invalid', `${what}: ${dumpFile} is not a pg_dump custom-format archive${dump ? ` (format: ${dump.format})` : ''}; the backup is damaged or not from a PostgreSQL source`);
  }
  const dumpedBy = dump.pgDumpVersion ? parsePgVersion(dump.pgDumpVersion) : null;
  const dumpedFrom = dump.serverVersion ? parsePgVersion(dump.serverVersion) : null;

  // 2. pg_restore: present, and of a major version at least the dump's pg_dump. (Minor releases
  // never change the archive format; a newer major pg_dump writes formats an older pg_restore
  // refuses with "unsupported version in file header".)
  const pgRestorePath = findPostgresTool('pg_restore', config.binDir);
  if (!pgRestorePath) {
    throw failure(config.name, 'pg_restore-missing', `${what}: ${missingToolMessage('pg_restore', config.binDir, dumpedBy?.major)}`);
  }
  const restoreVersion: PgVersion | null = await pgToolVersion(pgRestorePath);
  if (!restoreVersion) {
    throw failure(config.name, 'pg_restore-missing', `${what}: ${pgRestorePath} does not run (pg_restore --version failed); reinstall the PostgreSQL client${dumpedBy ? ` ${dumpedBy.major} or newer` : ''} or set binDir`);
  }
  if (dumpedBy && pgMajorNum(restoreVersion) < pgMajorNum(dumpedBy)) {
    throw failure(
      config.name,
      'pg_restore-too-old',
      `${what}: pg_restore ${restoreVersion.text} (${pgRestorePath}) is older than the pg_dump ${dumpedBy.text} that made this backup and cannot read it; install the PostgreSQL client ${dumpedBy.major} or newer (Debian: apt-get install postgresql-client-${dumpedBy.major}) or set binDir to its bin folder`,
    );
  }
  // pg_restore must be able to read the table of contents (a truncated or damaged dump fails here).
  const toc = await runPgTool(pgRestorePath, ['--list', dumpFile], { signal: options.signal, timeoutMs: 120_000, onCommand: options.onCommand });
  if (toc.code !== 0) {
    throw failure(config.name, 'dump-invalid', `${what}: pg_restore cannot read the dump in the backup (${lastErrorLine(toc.stderr, conn.password)}); the backup is damaged`);
  }

  // 3. The server: reachable, the credentials accepted, the database there (one connection tells
  // all three; the message says which failed).
  const psqlPath = findPostgresTool('psql', config.binDir);
  if (!psqlPath) throw failure(config.name, 'psql-missing', `${what}: ${missingToolMessage('psql', config.binDir, dumpedBy?.major)}`);
  let server;
  try {
    server = await probeServer(psqlPath, conn, what, 'RESTORE_FAILED', { signal: options.signal, onCommand: options.onCommand });
  } catch (err) {
    if (err instanceof StowageError) {
      const reason = (err.details?.reason as PostgresRestoreFailure | undefined) ?? 'failed';
      let message = err.message;
      if (reason === 'database-missing') {
        message = `${message}. A restore goes into an existing database: create it first (e.g. createdb -O ${conn.user ?? '<owner>'} ${conn.database}), then restore`;
      }
      throw failure(config.name, reason, message, err);
    }
    throw err;
  }

  const warnings: string[] = [];
  if (dumpedFrom && pgMajorNum(server.version) < pgMajorNum(dumpedFrom)) {
    warnings.push(
      `the backup comes from PostgreSQL ${dumpedFrom.text} and the target server runs ${server.version.text}; restoring into an older major version may fail on newer features (the restore then rolls back and changes nothing)`,
    );
  }
  return {
    dump,
    pgRestorePath,
    pgRestoreVersion: restoreVersion.text,
    psqlPath,
    serverVersion: server.version.text,
    serverVersionNum: server.version.num,
    warnings,
  };
}

/**
 * Polls the restore's session (found by its application name) and, once it has waited for a lock
 * for `timeoutMs` without a break, cancels its statement (a role may cancel its own sessions);
 * pg_restore then fails and the transaction rolls back. Resolves with who held the lock, or null
 * if the restore never waited that long.
 */
async function watchLockWaits(
  psqlPath: string,
  conn: PostgresConnection,
  appName: string,
  timeoutMs: number,
  stop: AbortSignal,
  onCommand?: (argv: readonly string[]) => void,
): Promise<{ blockers: string } | null> {
  const interval = Math.min(1000, Math.max(50, Math.floor(timeoutMs / 4)));
  const sql = `SELECT a.pid, coalesce(a.wait_event_type, ''), coalesce((SELECT string_agg(format('pid %s, user %s, application %s', b.pid, b.usename, coalesce(nullif(b.application_name, ''), '-')), '; ') FROM pg_stat_activity b WHERE b.pid = ANY (pg_blocking_pids(a.pid))), '') FROM pg_stat_activity a WHERE a.application_name = '${appName}'`;
  const query = (text: string): Promise<{ code: number | null; stdout: string }> =>
    runPgTool(psqlPath, ['-X', '-w', '-A', '-t', '-q', '-F', '\t', '-c', text, `--dbname=${conn.conninfo}`], { conn, signal: stop, timeoutMs: 30_000, onCommand }).catch(() => ({ code: null, stdout: '' }));
  let waitingSince: number | undefined;
  while (!stop.aborted) {
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, interval);
      stop.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
    });
    if (stop.aborted) break;
    const r = await query(sql);
    const [pid = '', waitType = '', blockers = ''] = r.code === 0 ? r.stdout.trim().split('\t') : [];
    if (waitType !== 'Lock') {
      waitingSince = undefined;
      continue;
    }
    waitingSince ??= Date.now() - interval;
    if (Date.now() - waitingSince >= timeoutMs && /^\d+$/.test(pid)) {
      const cancel = await runPgTool(psqlPath, ['-X', '-w', '-A', '-t', '-q', '-c', `SELECT pg_cancel_backend(${pid})`, `--dbname=${conn.conninfo}`], { conn, timeoutMs: 30_000, onCommand }).catch(() => null);
      if (cancel?.code === 0) return { blockers: blockers ? `held by ${blockers}` : '' };
    }
  }
  return null;
}

/** pg_restore's arguments (no secret among them). */
export function restoreArgs(conn: PostgresConnection, dumpFile: string): string[] {
  // --verbose: the job log says what is being restored (and where a failure happened).
  return ['--clean', '--if-exists', '--single-transaction', '--exit-on-error', '--no-password', '--verbose', `--dbname=${conn.conninfo}`, dumpFile];
}

/**
 * Restores `dumpFile` (a custom-format dump from a backup of this source) into the configured
 * database, after checkPostgresRestore. All or nothing: on any failure, or a cancel through
 * `signal`, the transaction is rolled back and the error says the database is unchanged.
 */
export async function restorePostgres(config: PostgresSourceConfig, dumpFile: string, options: PostgresRestoreOptions = {}): Promise<PostgresRestoreResult> {
  const started = Date.now();
  const what = `source "${config.name}"`;
  const check = await checkPostgresRestore(config, dumpFile, options);
  for (const w of check.warnings) options.log?.(`warning: ${w}`);
  const conn = resolvePostgresConnection(config, options.env ?? process.env, 'RESTORE_FAILED');
  const lockTimeout = Math.max(0, options.lockTimeoutMs ?? 60_000);
  // pg_restore sets lock_timeout = 0 in its session (the dump's preamble says so), so a server
  // setting cannot bound the wait: a watchdog cancels the restore's statement instead. A name
  // of its own finds the restore's session.
  const appName = `stowage-restore-${crypto.randomBytes(6).toString('hex')}`;
  const target = new URL(conn.conninfo);
  target.searchParams.set('application_name', appName);
  const restoreConn: PostgresConnection = { ...conn, conninfo: target.toString() };
  const watchdogStop = new AbortController();
  const watchdog =
    lockTimeout > 0 ? watchLockWaits(check.psqlPath, conn, appName, lockTimeout, watchdogStop.signal, options.onCommand) : Promise.resolve(null);

  let r;
  try {
    r = await runPgTool(check.pgRestorePath, restoreArgs(restoreConn, dumpFile), {
      conn,
      endWithParent: true,
      signal: options.signal,
      onCommand: options.onCommand,
      onStderrLine: options.log,
    });
  } catch (err) {
    if (options.signal?.aborted) {
      throw failure(config.name, 'aborted', `${what}: the restore was cancelled; PostgreSQL rolled it back, the database ${conn.database} is as it was`, err);
    }
    throw failure(config.name, 'failed', `${what}: cannot run pg_restore (${scrubSecret(errorMessage(err), conn.password)})`, err);
  } finally {
    watchdogStop.abort();
  }
  const blocked = await watchdog;
  if (r.code !== 0) {
    const unchanged = `the restore was rolled back, database ${conn.database} is as it was`;
    if (blocked) {
      const seconds = lockTimeout >= 1000 ? `${Math.round(lockTimeout / 1000)} s` : `${lockTimeout} ms`;
      throw failure(
        config.name,
        'lock-timeout',
        `${what}: the restore waited more than ${seconds} for a lock held by another connection to ${conn.database}${blocked.blockers ? ` (${blocked.blockers})` : ' (an application still using it)'}; ${unchanged}. Stop the application (or its connections) and restore again`,
      );
    }
    const query = /(?:could not execute query|COPY failed for table "[^"]*"): (.*)/.exec(r.stderr);
    const connectLike = /connection to server|could not connect|authentication|no pg_hba|does not exist/.test(r.stderr) && !query;
    if (connectLike) {
      const { reason, message } = explainPgFailure(r.stderr, conn, what);
      throw failure(config.name, reason as PostgresRestoreFailure, `${message}; nothing was restored`);
    }
    const command = /Command was: (.*)/.exec(r.stderr)?.[1]?.trim();
    const detail = scrubSecret(query?.[0]?.replace(/^could not execute query: /, '').trim() ?? lastErrorLine(r.stderr, conn.password), conn.password);
    const at = command ? ` (at: ${scrubSecret(command, conn.password).slice(0, 200)})` : '';
    const dependency = /cannot drop .* because other objects depend on it/i.test(r.stderr)
      ? '; objects that are not in the backup depend on objects in it: drop them (or take the backup with them included) and restore again'
      : '';
    throw failure(config.name, 'restore-failed', `${what}: the restore into ${conn.display} failed: ${detail}${at}; ${unchanged}${dependency}`);
  }
  return { ...check, durationMs: Date.now() - started };
}
