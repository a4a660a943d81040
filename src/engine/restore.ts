import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { ManifestSource } from '../archive/manifest.js';
import { ArchiveReader } from '../archive/zip-reader.js';
import type { DecryptionKeys } from '../encryption/archive.js';
import { StowageError, errorMessage, isStowageError } from '../errors.js';
import { progressThrottle, type Progress } from '../events/events.js';
import { syncFilesystem } from '../fs/durable.js';
import { ExcludeRules } from '../sources/fnmatch.js';
import { redactPostgresUrl, type PostgresSourceConfig } from '../sources/postgres.js';
import { resolveAppVersion } from './backup.js';
import type { RestoreStatusRecord, SourceRestoreResult } from './catalogue.js';
import type { EngineContext } from './context.js';
import { failpoint } from './failpoints.js';
import { runAfterHooks, runJobHooks } from './job-hooks.js';
import {
  applyDirSwap,
  databasesCommitted,
  finishJournal,
  removeJournal,
  removeStaleSidecars,
  rollbackJournal,
  sqliteCopyInto,
  sqliteTempPath,
  writeJournal,
  type RestoreJournal,
  type SqliteSwap,
} from './restore-journal.js';
import { checkVersionPolicy, diffDirSource, fixFolderTimes, planDirSwap, type SourcePlan } from './restore-plan.js';
import { stageSourceTree, extractFile } from './restore-stage.js';
import { applyPostgres, dumpEntry, probePostgresTargets, stagePostgres } from './restore-postgres.js';

export interface RestoreOptions {
  /** List what would be added, replaced and removed; change nothing. */
  dryRun?: boolean;
  /** Restore only these sources (default: every source in the backup that is configured). */
  sources?: string[];
  /** Restore despite the version policy. */
  force?: boolean;
  /** Restore into `<targetDir>/<source>` instead of the configured paths (drills, migrations). */
  targetDir?: string;
  /** Override restore.safetyBackup for this run. */
  safetyBackup?: boolean;
  /** Keys for an encrypted backup (else the engine's, else STOWAGE_IDENTITY / STOWAGE_PASSPHRASE). */
  decrypt?: DecryptionKeys;
  /** What started the restore, for the command hooks' STOWAGE_TRIGGER: "manual" (CLI, library; the default), "api", ... */
  trigger?: string;
}

export interface RestoreOutcome {
  status: RestoreStatusRecord;
  /** Present for dry runs. */
  plan?: SourcePlan[];
}

interface Selected {
  source: ManifestSource;
  target: string;
  /** A PostgreSQL source restored into its configured database (with --target its dump is restored as files instead). */
  postgres?: PostgresSourceConfig;
}

/** Env var that turns restore off (for systems that cannot restore safely), as OctoPrint does. */
export const RESTORE_UNSUPPORTED_ENV = 'STOWAGE_RESTORE_UNSUPPORTED';

export function restoreDisabledReason(ctx: Pick<EngineContext, 'config'>): string | null {
  if (/^(1|true|yes)$/i.test(process.env[RESTORE_UNSUPPORTED_ENV] ?? '')) return `restore is turned off on this system (${RESTORE_UNSUPPORTED_ENV}=${process.env[RESTORE_UNSUPPORTED_ENV]})`;
  if (!ctx.config.restore.enabled) return `restore is turned off in ${ctx.config.configPath ?? 'the configuration'} (restore.enabled: false)`;
  return null;
}

function selectSources(ctx: EngineContext, reader: ArchiveReader, sources: ManifestSource[], options: RestoreOptions): { selected: Selected[]; skipped: SourceRestoreResult[] } {
  const wanted = options.sources?.length ? options.sources : null;
  if (wanted) {
    const missing = wanted.filter((n) => !sources.some((s) => s.name === n));
    if (missing.length) throw new StowageError('USAGE', `the backup has no source ${missing.join(', ')}; it has: ${sources.map((s) => s.name).join(', ')}`);
  }
  const selected: Selected[] = [];
  const skipped: SourceRestoreResult[] = [];
  for (const source of sources) {
    if (wanted && !wanted.includes(source.name)) continue;
    if (source.kind !== 'dir' && source.kind !== 'sqlite' && source.kind !== 'postgres') {
      skipped.push({ name: source.name, kind: source.kind, target: '', status: 'skipped', files: 0, bytes: 0, errors: [`source kind "${source.kind}" cannot be restored by this version of Stowage`] });
      continue;
    }
    if (source.kind === 'postgres' && dumpEntry(reader, source.name) < 0 && !source.postgres) {
      // The empty archive of a factory reset: no dump, and no server recorded.
      skipped.push({ name: source.name, kind: source.kind, target: source.path, status: 'skipped', files: 0, bytes: 0, errors: [`the backup holds no database dump for this source, so its database was left as it is (a factory reset does not empty PostgreSQL databases)`] });
      continue;
    }
    if (options.targetDir) {
      // With --target a PostgreSQL source's files (its dump and postgres.json) go into <target>/<name>,
      // like a folder: the database is not touched (pg_restore them by hand, e.g. into another database).
      const base = path.resolve(options.targetDir, source.name);
      selected.push({ source, target: source.kind === 'sqlite' ? path.join(base, path.basename(source.path)) : base });
      continue;
    }
    const configured = ctx.config.sources.find((s) => s.name === source.name);
    if (!configured || configured.kind !== source.kind) {
      skipped.push({
        name: source.name,
        kind: source.kind,
        target: '',
        status: 'skipped',
        files: 0,
        bytes: 0,
        errors: [`no ${source.kind} source named "${source.name}" is configured, so there is no target; add it to stowage.yaml or use --target DIR`],
      });
      continue;
    }
    if (configured.kind === 'postgres') selected.push({ source, target: redactPostgresUrl(configured.url), postgres: configured });
    else selected.push({ source, target: configured.path });
  }
  return { selected, skipped };
}

function rulesFor(source: ManifestSource): ExcludeRules {
  return new ExcludeRules(source.excludes);
}

async function checkFreeSpace(selected: Selected[], scratchRoot: string): Promise<void> {
  const byDevice = new Map<string, { need: number; free: number }>();
  for (const { source, target, postgres } of selected) {
    // A database dump is staged in the scratch folder (the database itself is the server's business).
    let probe = postgres ? scratchRoot : target;
    while (!fs.existsSync(probe)) probe = path.dirname(probe);
    const st = await fs.promises.statfs(probe);
    const dev = String(fs.statSync(probe).dev);
    const entry = byDevice.get(dev) ?? { need: 0, free: st.bavail * st.bsize };
    entry.need += source.bytes;
    byDevice.set(dev, entry);
  }
  for (const { need, free } of byDevice.values()) {
    if (need > free) {
      throw new StowageError('RESTORE_FAILED', `not enough free space: the restore needs ${need} bytes next to the targets and only ${free} are free; free some space first. Nothing was changed`);
    }
  }
}

/**
 * Runs a restore. The caller holds the data-folder lock; `safetyBackup` runs a pre-restore
 * backup (null when there is nothing of the configured data to protect, e.g. with --target).
 */
export async function runRestore(
  ctx: EngineContext,
  archive: { file: string; key: string },
  options: RestoreOptions,
  safetyBackup: (() => Promise<string>) | null,
): Promise<RestoreOutcome> {
  const { config, catalogue } = ctx;
  const disabled = restoreDisabledReason(ctx);
  if (disabled) throw new StowageError('RESTORE_DISABLED', `${disabled}; nothing was changed`);
  const reader = await ArchiveReader.open(archive.file);
  try {
    const manifest = reader.header;
    if (!options.force) checkVersionPolicy(config.restore.versionPolicy, manifest.app.version, resolveAppVersion(config.app));
    const { selected, skipped } = selectSources(ctx, reader, manifest.sources, options);
    if (selected.length === 0) throw new StowageError('RESTORE_FAILED', `nothing to restore: ${skipped.map((s) => `${s.name}: ${s.errors.join('; ')}`).join('; ') || 'no sources selected'}`);
    const neverInclude = [config.dataDir, config.storage.path];
    // Databases: their servers reachable with these credentials, and the version policy, before anything is staged.
    const pgTargets = selected.flatMap((s) => (s.postgres ? [{ source: s.source, config: s.postgres }] : []));
    const pgServers = await probePostgresTargets(pgTargets, config.restore.versionPolicy, options.force === true);

    if (options.dryRun) {
      const plan: SourcePlan[] = [];
      for (const { source, target, postgres } of selected) {
        if (postgres) {
          const server = pgServers.get(source.name)!;
          plan.push({
            name: source.name,
            kind: source.kind,
            target,
            added: [],
            replaced: [`database ${server.database}`],
            removed: [],
            unchanged: 0,
            note: `the database would be replaced by the backup's (pg_restore --clean --if-exists in one transaction: every object in the backup dropped and recreated with its data; objects not in the backup left alone); backup from PostgreSQL ${source.postgres?.serverVersion ?? 'unknown'}, the server runs ${server.version}`,
          });
        } else if (source.kind === 'sqlite') plan.push({ name: source.name, kind: source.kind, target, added: fs.existsSync(target) ? [] : [path.basename(target)], replaced: fs.existsSync(target) ? [path.basename(target)] : [], removed: [], unchanged: 0 });
        else plan.push(await diffDirSource(reader, source.name, target, rulesFor(source), neverInclude));
      }
      const status: RestoreStatusRecord = { ...catalogue.getRestoreStatus() };
      return { status, plan };
    }
    return await restoreSelected(ctx, reader, archive, selected, skipped, options, safetyBackup, neverInclude);
  } finally {
    reader.close();
  }
}

async function restoreSelected(
  ctx: EngineContext,
  reader: ArchiveReader,
  archive: { file: string; key: string },
  selected: Selected[],
  skipped: SourceRestoreResult[],
  options: RestoreOptions,
  safetyBackup: (() => Promise<string>) | null,
  neverInclude: string[],
): Promise<RestoreOutcome> {
  const { config, catalogue, events } = ctx;
  const { key } = archive;
  const id = crypto.randomBytes(6).toString('hex');
  const startedAt = new Date().toISOString();
  const results: SourceRestoreResult[] = [
    ...selected.map(({ source, target }): SourceRestoreResult => ({ name: source.name, kind: source.kind, target, status: 'pending', files: 0, bytes: 0, errors: [] })),
    ...skipped,
  ];
  const status: RestoreStatusRecord = { status: 'started', key, startedAt, lastRestoreTime: catalogue.getRestoreStatus().lastRestoreTime, message: `restoring ${key}`, safetyBackupKey: null, sources: results };
  catalogue.setRestoreStatus(status);
  events.emit('restore.started', { key, sources: selected.map((s) => s.source.name), dryRun: false });

  const t0 = Date.now();
  const progress: Omit<Progress, 'elapsedMs'> = {
    phase: 'verifying',
    files: 0,
    filesTotal: selected.reduce((a, s) => a + s.source.files, 0),
    bytes: 0,
    bytesTotal: selected.reduce((a, s) => a + s.source.bytes, 0),
  };
  const report = progressThrottle((p) => events.emit('restore.progress', { key, ...p }));
  const emitProgress = (force = false) => report({ ...progress, elapsedMs: Date.now() - t0 }, force);

  const scratch = path.join(ctx.tempDir, `restore-${id}`);
  const journal: RestoreJournal = { version: 1, id, key, startedAt, phase: 'staging', keepPrevious: config.restore.keepPrevious, scratch, dirs: [], sqlite: [], postgres: [] };
  const pgJournal = journal.postgres!;
  const warnings: string[] = [];
  // STOWAGE_BACKUP_PATH is the archive this restore reads, on local disk while the hooks run (the
  // stored file for local storage or a FILE given by path; a temporary copy for S3).
  const hookContext = { backupKey: key, backupPath: archive.file, trigger: options.trigger ?? 'manual', sources: selected.map((s) => s.source.name) };
  let hooksStarted = false;
  try {
    await checkFreeSpace(selected, ctx.tempDir);
    // Record where staging goes before creating it, so a crash while staging is cleaned up.
    for (const { source, target, postgres } of selected) {
      if (postgres) {
        pgJournal.push({ name: source.name, target, staged: path.join(scratch, `${source.name}.pgdump`), state: 'pending' });
      } else if (source.kind === 'sqlite') {
        journal.sqlite.push({ name: source.name, target, staged: path.join(scratch, `${source.name}.db`), previous: null, state: 'pending' });
      } else {
        // A folder, or (with --target) the files of a PostgreSQL source.
        journal.dirs.push({ name: source.name, target, staging: path.join(target, `.stowage-restore-${id}`), createdTarget: !fs.existsSync(target), ops: [] });
      }
    }
    await fs.promises.mkdir(scratch, { recursive: true });
    writeJournal(config.dataDir, journal);

    // 1. Stage and verify every selected source: nothing in any target changes yet.
    for (const swap of journal.dirs) {
      await fs.promises.mkdir(swap.target, { recursive: true });
      const r = await stageSourceTree(reader, swap.name, path.join(swap.staging, 'new'), (n) => {
        progress.bytes += n;
        emitProgress();
      }, () => progress.files++);
      warnings.push(...r.warnings);
      const res = results.find((x) => x.name === swap.name)!;
      res.files = r.files;
      res.bytes = r.bytes;
      res.errors.push(...r.warnings);
    }
    for (const swap of journal.sqlite) {
      const entry = reader.order.find((e) => reader.type(e) === 'file' && reader.name(e).startsWith(`${swap.name}/`));
      if (entry === undefined) throw new StowageError('ARCHIVE_INVALID', `source "${swap.name}" has no database file in the archive`);
      await extractFile(reader, entry, swap.staged, (n) => {
        progress.bytes += n;
        emitProgress();
      });
      checkSqliteIntegrity(swap.staged, swap.name);
      const res = results.find((x) => x.name === swap.name)!;
      res.files = 1;
      res.bytes = reader.size(entry);
      progress.files++;
    }
    // Databases: the dump extracted and verified, then checkPostgresRestore (pg_restore, the dump,
    // the server, the database): before the hooks stop the application and before the safety backup.
    for (const swap of pgJournal) {
      const sel = selected.find((s) => s.source.name === swap.name)!;
      const staged = await stagePostgres(reader, swap, { source: sel.source, config: sel.postgres! }, config.restore.versionPolicy, options.force === true, (n) => {
        progress.bytes += n;
        emitProgress();
      });
      const res = results.find((x) => x.name === swap.name)!;
      res.files = 1;
      res.bytes = staged.bytes;
      for (const w of staged.check.warnings) {
        warnings.push(`${swap.name}: ${w}`);
        res.errors.push(w);
      }
      progress.files++;
    }
    failpoint('restore.after-stage');

    // Everything is staged and verified: now stop the application (beforeRestore hooks).
    hooksStarted = true;
    for (const w of await runJobHooks(ctx, 'beforeRestore', { ...hookContext, event: 'restore.before' })) warnings.push(w);

    // 2. A safety backup of the current state, so that a wrong restore can be undone.
    if (safetyBackup && (options.safetyBackup ?? config.restore.safetyBackup)) {
      progress.phase = 'safety-backup';
      emitProgress(true);
      try {
        status.safetyBackupKey = await safetyBackup();
      } catch (err) {
        throw new StowageError('RESTORE_FAILED', `the safety backup of the current data failed (${errorMessage(err)}); fix that, or restore without one (--no-safety-backup)`, { cause: err });
      }
      catalogue.setRestoreStatus(status);
    }

    // 3. Plan the swap, make the staged data durable, write the journal, then swap.
    progress.phase = 'swapping';
    emitProgress(true);
    for (const swap of journal.dirs) {
      const src = selected.find((s) => s.source.name === swap.name)!.source;
      swap.ops = planDirSwap(swap.target, path.join(swap.staging, 'new'), path.join(swap.staging, 'old'), rulesFor(src), neverInclude);
      syncFilesystem(swap.staging);
    }
    for (const swap of journal.sqlite) {
      if (fs.existsSync(swap.target)) swap.previous = path.join(scratch, `${swap.name}.previous.db`);
    }
    syncFilesystem(scratch);
    catalogue.setRestoreStatus(status); // with the staged counts, in case recovery has to finish it
    journal.phase = 'swapping';
    writeJournal(config.dataDir, journal);
    failpoint('restore.before-swap');
    for (const swap of journal.dirs) {
      applyDirSwap(swap);
      fixFolderTimes(swap.ops, path.join(swap.staging, 'new'), swap.target, (rel) => {
        const dir = reader.find(`${swap.name}/${rel}`);
        return dir >= 0 && reader.type(dir) === 'dir' ? reader.mtimeMs(dir) : undefined;
      });
    }
    for (const swap of journal.sqlite) await applySqlite(config.dataDir, journal, swap);
    // Databases last, after every folder and SQLite swap, and before the commit. A swap can be
    // undone; a committed pg_restore cannot. So everything undoable goes first, and pg_restore,
    // all or nothing in its own transaction, decides: if it fails, PostgreSQL has rolled the
    // database back and the catch below undoes the swaps, so the whole restore changed nothing;
    // once it has committed, every source is in its new state and the journal commits. A crash
    // while it runs ends its connection (PostgreSQL rolls back) and recovery undoes the swaps; a
    // crash after it has committed is finished by recovery (databasesCommitted).
    if (pgJournal.length) {
      progress.phase = 'restoring-database';
      emitProgress(true);
    }
    for (const swap of pgJournal) await applyPostgres(ctx, journal, swap, selected.find((s) => s.source.name === swap.name)!.postgres!);
    failpoint('restore.before-commit');
    journal.phase = 'committed';
    writeJournal(config.dataDir, journal);
    failpoint('restore.after-commit');
    finishJournal(journal);
    removeJournal(config.dataDir);

    for (const r of results) if (r.status === 'pending') r.status = 'restored';
    const afterProblems = await runAfterHooks(ctx, 'afterRestore', { ...hookContext, event: 'restore.after', status: 'completed' });
    const problems = results.filter((r) => r.status !== 'restored' || r.errors.length);
    const hookProblems = [...warnings.filter((w) => w.startsWith('beforeRestore')), ...afterProblems];
    status.status = problems.length || hookProblems.length ? 'completed_with_errors' : 'completed';
    status.lastRestoreTime = new Date().toISOString();
    status.message = problems.length
      ? `restored ${key} with problems: ${problems.map((p) => `${p.name}: ${p.errors.slice(0, 3).join('; ')}${p.errors.length > 3 ? ` (+${p.errors.length - 3} more)` : ''}`).join(' | ')}`
      : `restored ${key}`;
    if (hookProblems.length) status.message += `; hooks: ${hookProblems.join('; ')}`;
    catalogue.setRestoreStatus(status);
    progress.phase = 'completed';
    emitProgress(true);
    events.emit('restore.completed', { key, status });
    return { status };
  } catch (err) {
    let rolledBack = 'nothing was changed';
    // Databases whose pg_restore had committed: those cannot be rolled back.
    const pgRestored = pgJournal.filter((p) => p.state === 'restored');
    const allRestored = databasesCommitted(journal);
    try {
      if (journal.phase === 'committed' || allRestored) {
        finishJournal(journal);
        rolledBack = allRestored ? 'every database had been restored and every file swapped in, so the restore was finished; clean-up failed' : 'the restore had been committed; clean-up failed';
      } else {
        await rollbackJournal(journal);
        if (journal.phase === 'swapping') rolledBack = 'the swap was rolled back; the data is as it was before';
        if (journal.phase === 'swapping' && pgRestored.length) {
          const names = pgRestored.map((p) => p.name).join(', ');
          rolledBack = `the files were rolled back, but the database of ${names} had already been restored and cannot be rolled back (pg_restore had committed)${status.safetyBackupKey ? `; backup ${status.safetyBackupKey} holds it as it was` : ''}`;
        }
      }
      removeJournal(config.dataDir);
    } catch (rollbackErr) {
      rolledBack = `ROLLBACK FAILED (${errorMessage(rollbackErr)}); the journal ${config.dataDir}/restore-journal.json is kept and the next stowage command will retry`;
    }
    const reason = isStowageError(err) ? err.message : errorMessage(err);
    // The application was stopped for the restore: start it again whatever happened.
    if (hooksStarted) await runAfterHooks(ctx, 'afterRestore', { ...hookContext, event: 'restore.after', status: 'failed', error: reason });
    for (const p of pgJournal) {
      const r = results.find((x) => x.name === p.name)!;
      if (p.state === 'restored') {
        r.status = 'restored';
        if (!allRestored) r.errors.push('the database was restored and cannot be rolled back; the other sources were');
      } else if (p.state === 'restoring') {
        // pg_restore failed: PostgreSQL rolled its transaction back (the reason says so).
        r.status = 'rolled_back';
        r.errors.push(reason);
      }
    }
    for (const r of results) if (r.status === 'pending') r.status = allRestored ? 'restored' : journal.phase === 'swapping' ? 'rolled_back' : 'failed';
    status.status = 'failed';
    status.message = `restore of ${key} failed: ${reason}; ${rolledBack}`;
    catalogue.setRestoreStatus(status);
    const error = isStowageError(err) ? err : new StowageError('RESTORE_FAILED', status.message, { cause: err });
    events.emit('restore.failed', { key, error: { code: error.code, message: status.message }, status });
    throw new StowageError(error.code, status.message, { cause: err });
  }
}

function checkSqliteIntegrity(file: string, name: string): void {
  let db: Database.Database | undefined;
  try {
    db = new Database(file, { readonly: true, fileMustExist: true });
    const rows = db.pragma('integrity_check') as Array<{ integrity_check: string }>;
    if (rows[0]?.integrity_check !== 'ok') throw new Error(rows.map((r) => r.integrity_check).slice(0, 3).join('; '));
  } catch (err) {
    throw new StowageError('ARCHIVE_INVALID', `the SQLite database of source "${name}" in the backup fails its integrity check (${errorMessage(err)}); nothing was changed`);
  } finally {
    db?.close();
  }
}

async function applySqlite(dataDir: string, journal: RestoreJournal, swap: SqliteSwap): Promise<void> {
  if (swap.previous) {
    // Keep a consistent copy of the current database to roll back to.
    const live = new Database(swap.target, { readonly: true, fileMustExist: true, timeout: 30_000 });
    try {
      live.prepare('VACUUM INTO ?').run(swap.previous);
    } finally {
      live.close();
    }
  }
  swap.state = 'previous-ready';
  writeJournal(dataDir, journal);
  failpoint('restore.sqlite');
  if (swap.previous) {
    await sqliteCopyInto(swap.staged, swap.target);
  } else {
    // New database: stale -wal/-shm of a deleted one would be replayed into it; remove them first.
    await fs.promises.mkdir(path.dirname(swap.target), { recursive: true });
    removeStaleSidecars(swap.target);
    const temp = sqliteTempPath(swap.target, journal.id);
    await fs.promises.copyFile(swap.staged, temp);
    const fh = await fs.promises.open(temp, 'r+');
    await fh.sync();
    await fh.close();
    await fs.promises.rename(temp, swap.target);
  }
  swap.state = 'applied';
  writeJournal(dataDir, journal);
}

