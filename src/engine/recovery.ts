import fs from 'node:fs';
import path from 'node:path';
import { isProcessTagAlive } from '../fs/process.js';
import { OutboxStorage } from '../storage/outbox.js';
import type { EngineContext } from './context.js';
import { resolveStorage } from './storage-choice.js';
import { databasesCommitted, finishJournal, readJournal, removeJournal, rollbackJournal } from './restore-journal.js';

export interface RecoveryReport {
  /** What happened to an interrupted restore, for the user to read; null if there was none. */
  restore: string | null;
  /** Backups left "started" by a dead process, now marked failed. */
  failedBackups: string[];
  /** Temporary uploads removed from storage. */
  removedUploads: number;
}

/**
 * Runs at the start of every command that takes the lock: finishes or rolls back a restore a
 * crash interrupted, marks backups a dead process left behind as failed, and clears leftovers.
 * The caller holds the lock, so no live job owns any of this.
 */
export async function recover(ctx: EngineContext): Promise<RecoveryReport> {
  const report: RecoveryReport = { restore: null, failedBackups: [], removedUploads: 0 };
  const journal = readJournal(ctx.config.dataDir);
  if (journal) {
    const status = ctx.catalogue.getRestoreStatus();
    if (journal.phase === 'committed' || databasesCommitted(journal)) {
      // Databases are restored last, after every swap: once all have committed, the data is all new.
      finishJournal(journal);
      report.restore = `the restore of ${journal.key} (started ${journal.startedAt}) was interrupted after its data was in place; its clean-up has now been finished, the restore is complete`;
      ctx.catalogue.setRestoreStatus({ ...status, key: journal.key, status: 'completed', lastRestoreTime: new Date().toISOString(), message: report.restore, sources: status.sources.map((s) => (s.status === 'pending' ? { ...s, status: 'restored' } : s)) });
    } else {
      await rollbackJournal(journal);
      report.restore =
        journal.phase === 'swapping'
          ? `the restore of ${journal.key} (started ${journal.startedAt}) was interrupted while swapping data in; it has been rolled back and the data is as it was before the restore`
          : `the restore of ${journal.key} (started ${journal.startedAt}) was interrupted before any data was changed; its staging files have been removed`;
      const pg = journal.phase === 'swapping' ? (journal.postgres ?? []) : [];
      const committed = pg.filter((p) => p.state === 'restored').map((p) => p.name);
      const running = pg.filter((p) => p.state === 'restoring').map((p) => p.name);
      if (committed.length) report.restore += `, except the database of ${committed.join(', ')}: it had been restored (pg_restore had committed) and cannot be rolled back`;
      if (running.length) {
        report.restore += `; the database of ${running.join(', ')} was being restored: pg_restore ends with Stowage and PostgreSQL rolls back a transaction whose connection ends, so it is as it was too (unless pg_restore had committed in the instant before); if in doubt, check it or restore again`;
      }
      ctx.catalogue.setRestoreStatus({ ...status, key: journal.key, status: 'failed', message: report.restore, sources: status.sources.map((s) => (s.status === 'pending' ? { ...s, status: journal.phase === 'swapping' ? 'rolled_back' : 'failed' } : s)) });
    }
    removeJournal(ctx.config.dataDir);
  } else {
    const status = ctx.catalogue.getRestoreStatus();
    if (status.status === 'started') {
      report.restore = `the restore of ${status.key} was interrupted before any data was changed`;
      ctx.catalogue.setRestoreStatus({ ...status, status: 'failed', message: report.restore });
    }
  }
  // We hold the lock: a backup still marked in progress belongs to a process that is gone.
  const storage = await resolveStorage(ctx.storage);
  const pending = storage instanceof OutboxStorage ? new Set((await storage.pending()).map((o) => o.key)) : new Set<string>();
  report.failedBackups = ctx.catalogue.failInterrupted((pid) => pid === process.pid, (key) => pending.has(key));
  ctx.catalogue.failInterruptedJobs((pid) => pid === process.pid);
  report.removedUploads = await ctx.storage.cleanupIncomplete(isProcessTagAlive);
  await removeAbandonedTempDirs(path.dirname(ctx.tempDir));
  return report;
}

/**
 * Each process has its own scratch folder, `<dataDir>/tmp/<process tag>`: work that runs without the
 * lock (a server receiving an upload) must survive another process's recovery. Folders of
 * processes that are gone are removed, and so is anything else left in tmp.
 */
async function removeAbandonedTempDirs(tmpRoot: string): Promise<void> {
  const names = await fs.promises.readdir(tmpRoot).catch(() => [] as string[]);
  for (const name of names) {
    if (isProcessTagAlive(name)) continue;
    await fs.promises.rm(path.join(tmpRoot, name), { recursive: true, force: true });
  }
}
