import fs from 'node:fs';
import type { ManifestSource } from '../archive/manifest.js';
import type { ArchiveReader } from '../archive/zip-reader.js';
import { StowageError, errorMessage } from '../errors.js';
import {
  findPostgresTool,
  lastErrorLine,
  missingToolMessage,
  parsePgVersion,
  pgMajorNum,
  pgToolVersion,
  POSTGRES_DUMP_ENTRY,
  probeServer,
  readPgDumpHeader,
  resolvePostgresConnection,
  runPgTool,
  type PostgresSourceConfig,
} from '../sources/postgres.js';
import { checkPostgresRestore, restorePostgres, type PostgresRestoreCheck } from '../sources/postgres-restore.js';
import type { EngineContext } from './context.js';
import { failpoint } from './failpoints.js';
import { writeJournal, type PostgresSwap, type RestoreJournal } from './restore-journal.js';
import { checkPostgresVersionPolicy, type VersionPolicy } from './restore-plan.js';
import { extractFile } from './restore-stage.js';

/**
 * The engine's side of restoring a PostgreSQL source (the tools' side is
 * src/sources/postgres-restore.ts): the target server probed and the version policy applied
 * before anything else happens, the dump extracted and verified into the scratch folder and
 * checked by checkPostgresRestore before the safety backup, then pg_restore (one transaction)
 * as the last step before the journal's commit; see restore.ts for why there.
 */

export interface PostgresTarget {
  source: ManifestSource;
  config: PostgresSourceConfig;
}

/** The archive entry of a source's dump, or -1. */
export function dumpEntry(reader: ArchiveReader, sourceName: string): number {
  const id = reader.find(`${sourceName}/${POSTGRES_DUMP_ENTRY}`);
  return id >= 0 && reader.type(id) === 'file' ? id : -1;
}

/**
 * Connects to the server of every selected PostgreSQL source: a server that is down, refused
 * credentials or a missing database stop the restore here, with the tools' explained message,
 * before anything is staged. Unless `force`, applies restore.versionPolicy to the server
 * version the backup recorded and the one running now. Returns each target's server version
 * and database name, by source name.
 */
export async function probePostgresTargets(targets: PostgresTarget[], policy: VersionPolicy, force: boolean): Promise<Map<string, { version: string; database: string }>> {
  const versions = new Map<string, { version: string; database: string }>();
  for (const { source, config } of targets) {
    const what = `source "${config.name}"`;
    const conn = resolvePostgresConnection(config, process.env, 'RESTORE_FAILED');
    const psql = findPostgresTool('psql', config.binDir);
    if (!psql) throw new StowageError('RESTORE_FAILED', `${what}: ${missingToolMessage('psql', config.binDir)}`, { details: { source: config.name, reason: 'psql-missing' } });
    let info;
    try {
      info = await probeServer(psql, conn, what, 'RESTORE_FAILED');
    } catch (err) {
      if (err instanceof StowageError) throw new StowageError(err.code, err.message, { cause: err, details: { source: config.name, ...err.details } });
      throw err;
    }
    versions.set(config.name, { version: info.version.text, database: conn.database });
    if (!force && source.postgres) checkPostgresVersionPolicy(policy, config.name, source.postgres.serverVersion, info.version.text, conn.display);
  }
  return versions;
}

/**
 * Extracts the source's dump into `swap.staged` (its SHA-256 checked as it is written) and runs
 * checkPostgresRestore on it: pg_restore present and new enough, the dump readable, the server
 * reachable with these credentials, the database there. Nothing of the database changes. A
 * backup whose manifest did not record the server version (written by hand) gets the version
 * policy here, from the dump's own header.
 */
export async function stagePostgres(
  reader: ArchiveReader,
  swap: PostgresSwap,
  target: PostgresTarget,
  policy: VersionPolicy,
  force: boolean,
  onBytes: (n: number) => void,
): Promise<{ bytes: number; check: PostgresRestoreCheck }> {
  const entry = dumpEntry(reader, swap.name);
  if (entry < 0) throw new StowageError('ARCHIVE_INVALID', `source "${swap.name}" has no database dump (${swap.name}/${POSTGRES_DUMP_ENTRY}) in the archive`);
  await extractFile(reader, entry, swap.staged, onBytes);
  const check = await checkPostgresRestore(target.config, swap.staged);
  if (!force && !target.source.postgres && check.dump.serverVersion && parsePgVersion(check.dump.serverVersion)) {
    checkPostgresVersionPolicy(policy, swap.name, check.dump.serverVersion, check.serverVersion, swap.target);
  }
  return { bytes: reader.size(entry), check };
}

/**
 * Replaces the database with the staged dump: `pg_restore --clean --if-exists
 * --single-transaction`, so a failure (or a crash of this process, which ends pg_restore's
 * connection) leaves the database as it was. The journal says `restoring` while it runs and
 * `restored` once it has committed.
 */
export async function applyPostgres(ctx: EngineContext, journal: RestoreJournal, swap: PostgresSwap, config: PostgresSourceConfig): Promise<void> {
  swap.state = 'restoring';
  writeJournal(ctx.config.dataDir, journal);
  failpoint('restore.postgres');
  ctx.jobLog(`source ${swap.name}: pg_restore into ${swap.target} (one transaction)`);
  await restorePostgres(config, swap.staged, {
    // pg_restore --verbose names every object; the job log keeps what matters.
    log: (line) => {
      if (/error|warning|FATAL/i.test(line)) ctx.jobLog(`source ${swap.name}: ${line}`);
    },
  });
  swap.state = 'restored';
  writeJournal(ctx.config.dataDir, journal);
  failpoint('restore.postgres-restored');
  await fs.promises.rm(swap.staged, { force: true });
}

/**
 * A drill's check of a restored dump, without any database: a restore drill must never touch the
 * real one, and restoring into a scratch database would need CREATEDB on the production server
 * and run the dump's SQL there. So: the header is a pg_dump custom-format archive, a pg_restore
 * is here that can read it (not older than the dump's pg_dump), and `pg_restore --list` reads
 * its whole table of contents. Returns the problems (empty when fine).
 */
export async function postgresDumpProblems(file: string, binDir: string | undefined): Promise<string[]> {
  let header;
  try {
    header = await readPgDumpHeader(file);
  } catch (err) {
    return [`the database dump cannot be read (${errorMessage(err)})`];
  }
  if (!header || header.format !== 'custom') return [`${POSTGRES_DUMP_ENTRY} is not a pg_dump custom-format archive${header ? ` (format: ${header.format})` : ''}`];
  const dumpedBy = header.pgDumpVersion ? parsePgVersion(header.pgDumpVersion) : null;
  const pgRestore = findPostgresTool('pg_restore', binDir);
  if (!pgRestore) return [`the dump cannot be checked, and would not restore here: ${missingToolMessage('pg_restore', binDir, dumpedBy?.major)}`];
  const version = await pgToolVersion(pgRestore);
  if (!version) return [`${pgRestore} does not run (pg_restore --version failed); the dump could not be checked`];
  if (dumpedBy && pgMajorNum(version) < pgMajorNum(dumpedBy)) {
    return [`pg_restore ${version.text} (${pgRestore}) is older than the pg_dump ${dumpedBy.text} that made the dump and cannot read it; install the PostgreSQL client ${dumpedBy.major} or newer`];
  }
  const list = await runPgTool(pgRestore, ['--list', file], { timeoutMs: 300_000 });
  if (list.code !== 0) return [`pg_restore cannot read the dump's table of contents (${lastErrorLine(list.stderr, undefined)}); the dump is damaged`];
  return [];
}
