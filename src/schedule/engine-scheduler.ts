import type { JobRunner } from '../engine/job-thread.js';
import { describeHolder, isStale, readLock } from '../engine/lock.js';
import type { Stowage } from '../engine/stowage.js';
import { errorMessage, isStowageError } from '../errors.js';
import { Scheduler, type Clock, type TaskName, type TaskRun } from './scheduler.js';

/**
 * The scheduler as the server runs it: scheduled backups on the job runner, retention after
 * each one (even a failed one), verification and drills; the last run of each task kept in
 * the catalogue's settings table, so a restart sees what it missed.
 */
export function createEngineScheduler(
  stowage: Stowage,
  jobs: JobRunner,
  options: { clock?: Clock; log?: (level: 'info' | 'warn' | 'error', message: string) => void; pollMs?: number; reloadMs?: number } = {},
): Scheduler {
  const stateKey = (task: TaskName) => `schedule.lastRun.${task}`;
  const describeRun = (run: TaskRun) =>
    `scheduled for ${run.scheduledFor.toISOString()}` +
    (run.missed ? ', missed while Stowage was down and run at start' : '') +
    (run.delayedMs ? `, delayed ${Math.round(run.delayedMs / 1000)} s while ${run.waitedFor} ran` : '');

  const scheduler = new Scheduler({
    settings: () => stowage.settings.get(),
    events: stowage,
    clock: options.clock,
    log: options.log,
    pollMs: options.pollMs,
    reloadMs: options.reloadMs,
    busy: () => {
      const mine = jobs.runningJob ?? stowage.runningJob;
      if (mine) return `a ${mine.kind}${mine.key ? ` of ${mine.key}` : ''}`;
      const holder = readLock(stowage.config.dataDir);
      return holder && !isStale(holder) ? describeHolder(holder) : null;
    },
    state: {
      get: (task) => stowage.catalogue.getSetting(stateKey(task)),
      set: (task, iso) => stowage.catalogue.setSetting(stateKey(task), iso),
    },
    run: {
      backup: async (run) => {
        try {
          const job = await jobs.startBackup({ trigger: 'schedule', description: describeRun(run) });
          await job.done;
        } catch (err) {
          if (isStowageError(err, 'BUSY')) throw err; // the scheduler waits and tries again
          options.log?.('error', `scheduled backup failed: ${errorMessage(err)}`); // also listed as failed, and backup.failed was emitted
        }
        // Retention runs even after a failed backup; it never removes the last completed one.
        const pruned = await stowage.prune({ trigger: 'schedule' });
        if (pruned.removed.length) options.log?.('info', `retention removed ${pruned.removed.join(', ')}`);
      },
      verify: async () => {
        await jobs.verifyRecorded(undefined, { trigger: 'schedule', sample: stowage.settings.get().verify.sample });
      },
      drill: async () => {
        await jobs.drill(undefined, { trigger: 'schedule' });
      },
    },
  });
  stowage.settings.onChange(() => scheduler.reload());
  return scheduler;
}
