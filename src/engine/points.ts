import crypto from 'node:crypto';
import { errorMessage, isStowageError } from '../errors.js';
import { GitPoint } from '../points/git.js';
import type { PointRunRecord } from './catalogue.js';
import type { EngineContext } from './context.js';

export type PointConfig = EngineContext['config']['points'][number];

/**
 * Runs one backup point: copies its source's current files to the destination, records the
 * run (kept per point, newest 100) and emits point.completed or point.failed. A failure is
 * returned, not thrown: a point that cannot push never undoes the backup it followed.
 */
export async function runPoint(ctx: EngineContext, point: PointConfig, backupKey: string | null): Promise<PointRunRecord> {
  const source = ctx.config.sources.find((s) => s.name === point.source)!;
  const started = new Date();
  const run: PointRunRecord = { id: crypto.randomUUID(), point: point.name, backupKey, status: 'failed', message: '', result: {}, startedAt: started.toISOString(), finishedAt: null };
  try {
    const git = new GitPoint(
      { name: point.name, source: source.path, url: point.url, ignore: point.ignore, username: point.username, password: point.password, branch: point.branch },
      { dataDir: ctx.config.dataDir, neverInclude: [ctx.config.storage.path] },
    );
    git.validate();
    const result = await git.run({ backupKey: backupKey ?? 'manual run', time: started, log: (line) => ctx.jobLog(`point ${point.name}: ${line}`) });
    Object.assign(run, { status: result.status, message: result.message, result: { ...result } });
    ctx.events.emit('point.completed', { point: point.name, backupKey, status: result.status, message: result.message });
  } catch (err) {
    run.message = errorMessage(err);
    ctx.events.emit('point.failed', { point: point.name, backupKey, error: { code: isStowageError(err) ? err.code : 'POINT_FAILED', message: run.message } });
  }
  run.finishedAt = new Date().toISOString();
  ctx.catalogue.recordPointRun(run);
  ctx.jobLog(`point ${point.name}: ${run.status}: ${run.message}`);
  return run;
}
