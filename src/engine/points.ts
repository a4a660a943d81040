import crypto from 'node:crypto';
import type { PointConfig } from '../config/schema.js';
import { StowageError, errorMessage, isStowageError } from '../errors.js';
import type { Point } from '../points/point.js';
import type { PointRunRecord } from './catalogue.js';
import type { EngineContext } from './context.js';

/** The implementation of a point's method. The S3 one loads the AWS SDK, so only when used. */
async function createPoint(ctx: EngineContext, point: PointConfig, sourcePath: string): Promise<Point> {
  const options = { dataDir: ctx.config.dataDir, neverInclude: [ctx.config.storage.path] };
  if (point.method === 'git') {
    const { GitPoint } = await import('../points/git.js');
    return new GitPoint({ name: point.name, source: sourcePath, url: point.url, ignore: point.ignore, username: point.username, password: point.password, branch: point.branch }, options);
  }
  const { S3Point } = await import('../points/s3.js');
  return new S3Point(
    { name: point.name, source: sourcePath, url: point.url, ignore: point.ignore, accessKeyId: point.accessKeyId, secretAccessKey: point.secretAccessKey, region: point.region, archive: point.archive, prune: point.prune },
    options,
  );
}

/**
 * Runs one backup point: copies its source's current files to the destination, records the
 * run (kept per point, newest 100) and emits point.completed or point.failed. A failure is
 * returned, not thrown: a point that cannot push never undoes the backup it followed.
 */
export async function runPoint(ctx: EngineContext, point: PointConfig, backupKey: string | null): Promise<PointRunRecord> {
  const started = new Date();
  const run: PointRunRecord = { id: crypto.randomUUID(), point: point.name, backupKey, status: 'failed', message: '', result: {}, startedAt: started.toISOString(), finishedAt: null };
  try {
    const source = ctx.config.sources.find((s): s is Extract<typeof s, { kind: 'dir' }> => s.name === point.source && s.kind === 'dir');
    if (!source) throw new StowageError('POINT_FAILED', `its source "${point.source}" is no longer a dir source in ${ctx.config.configPath ?? 'the configuration'}; point it at another source or delete it`);
    const impl = await createPoint(ctx, point, source.path);
    impl.validate();
    const result = await impl.run({ backupKey: backupKey ?? 'manual run', time: started, log: (line) => ctx.jobLog(`point ${point.name}: ${line}`) });
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
