import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { ManifestSource } from '../archive/manifest.js';
import { ArchiveReader } from '../archive/zip-reader.js';
import { StowageError, errorMessage, isStowageError } from '../errors.js';
import { progressThrottle, type Progress } from '../events/events.js';
import { syncFilesystem } from '../fs/durable.js';
import { ExcludeRules } from '../sources/fnmatch.js';
import { resolveAppVersion } from './backup.js';
import type { RestoreStatusRecord, SourceRestoreResult } from './catalogue.js';
import type { EngineContext } from './context.js';
import { failpoint } from './failpoints.js';
import { runAfterHooks, runJobHooks } from './job-hooks.js';
import {
  applyDirSwap,
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
}

/** Env var that turns restore off (for systems that cannot restore safely), as OctoPrint does. */
export const RESTORE_UNSUPPORTED_ENV = 'STOWAGE_RESTORE_UNSUPPORTED';

export function restoreDisabledReason(ctx: Pick<EngineContext, 'config'>): string | null {
  if (/^(1|true|yes)$/i.test(process.env[RESTORE_UNSUPPORTED_ENV] ?? '')) return `restore is turned off on this system (${RESTORE_UNSUPPORTED_ENV}=${process.env[RESTORE_UNSUPPORTED_ENV]})`;
  if (!ctx.config.restore.enabled) return `restore is turned off in ${ctx.config.configPath ?? 'the configuration'} (restore.enabled: false)`;
  return null;
}

function selectSources(ctx: EngineContext, sources: ManifestSource[], options: RestoreOptions): { selected: Selected[]; skipped: SourceRestoreResult[] } {
  const wanted = options.sources?.length ? options.sources : null;
  if (wanted) {
    const missing = wanted.filter((n) => !sources.some((s) => s.name === n));
    if (missing.length) throw new StowageError('USAGE', `the backup has no source ${missing.join(', ')}; it has: ${sources.map((s) => s.name).join(', ')}`);
  }
  const selected: Selected[] = [];
  const skipped: SourceRestoreResult[] = [];
  for (const source of sources) {
    if (wanted && !wanted.includes(source.name)) continue;
    if (source.kind !== 'dir' && source.kind !== 'sqlite') {
      skipped.push({ name: source.name, kind: source.kind, target: '', status: 'skipped', files: 0, bytes: 0, errors: [`source kind "${source.kind}" cannot be restored by this version of Stowage`] });
      continue;
    }
    if (options.targetDir) {
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
    selected.push({ source, target: configured.path });
  }
  return { selected, skipped };
}

function rulesFor(source: ManifestSource): ExcludeRules {
  return new ExcludeRules(source.excludes);
}

async function checkFreeSpace(selected: Selected[]): Promise<void> {
  const byDevice = new Map<string, { need: number; free: number }>();
  for (const { source, target } of selected) {
    let probe = target;
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
    const { selected, skipped } = selectSources(ctx, manifest.sources, options);
    if (selected.length === 0) throw new StowageError('RESTORE_FAILED', `nothing to restore: ${skipped.map((s) => `${s.name}: ${s.errors.join('; ')}`).join('; ') || 'no sources selected'}`);
    const neverInclude = [config.dataDir, config.storage.path];

    if (options.dryRun) {
      const plan: SourcePlan[] = [];
      for (const { source, target } of selected) {
        if (source.kind === 'dir') plan.push(await diffDirSource(reader, source.name, target, rulesFor(source), neverInclude));
        else plan.push({ name: source.name, kind: source.kind, target, added: fs.existsSync(target) ? [] : [path.basename(target)], replaced: fs.existsSync(target) ? [path.basename(target)] : [], removed: [], unchanged: 0 });
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
  const journal: RestoreJournal = { version: 1, id, key, startedAt, phase: 'staging', keepPrevious: config.restore.keepPrevious, scratch, dirs: [], sqlite: [] };
  const warnings: string[] = [];
  // STOWAGE_BACKUP_PATH is the archive this restore reads, on local disk while the hooks run (the
  // stored file for local storage or a FILE given by path; a temporary copy for S3).
  const hookContext = { backupKey: key, backupPath: archive.file, trigger: options.trigger ?? 'manual', sources: selected.map((s) => s.source.name) };
  let hooksStarted = false;
  try {
    await checkFreeSpace(selected);
    // Record where staging goes before creating it, so a crash while staging is cleaned up.
    for (const { source, target } of selected) {
      if (source.kind === 'dir') {
        journal.dirs.push({ name: source.name, target, staging: path.join(target, `.stowage-restore-${id}`), createdTarget: !fs.existsSync(target), ops: [] });
      } else {
        journal.sqlite.push({ name: source.name, target, staged: path.join(scratch, `${source.name}.db`), previous: null, state: 'pending' });
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
    try {
      if (journal.phase === 'committed') {
        finishJournal(journal);
        rolledBack = 'the restore had been committed; clean-up failed';
      } else {
        await rollbackJournal(journal);
        if (journal.phase === 'swapping') rolledBack = 'the swap was rolled back; the data is as it was before';
      }
      removeJournal(config.dataDir);
    } catch (rollbackErr) {
      rolledBack = `ROLLBACK FAILED (${errorMessage(rollbackErr)}); the journal ${config.dataDir}/restore-journal.json is kept and the next stowage command will retry`;
    }
    const reason = isStowageError(err) ? err.message : errorMessage(err);
    // The application was stopped for the restore: start it again whatever happened.
    if (hooksStarted) await runAfterHooks(ctx, 'afterRestore', { ...hookContext, event: 'restore.after', status: 'failed', error: reason });
    for (const r of results) if (r.status === 'pending') r.status = journal.phase === 'swapping' ? 'rolled_back' : 'failed';
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

