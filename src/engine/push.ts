import path from 'node:path';
import { errorMessage, isStowageError, StowageError } from '../errors.js';
import { OutboxStorage, PUSH_DELAYS_MS } from '../storage/outbox.js';
import { UPLOADING_PREFIX, type BackupRecord } from './catalogue.js';
import type { EngineContext } from './context.js';
import { resolveStorage } from './storage-choice.js';

/**
 * Backups on their way from the local outbox to remote storage (storage/outbox.ts). While one
 * is pushed its status is `uploading`; when every attempt fails it stays `uploading` with a
 * message saying where the archive is safe and when it is retried, and `backup.push_failed` is
 * emitted (webhooks, SSE). Retries run after every backup, every few minutes in the server, and
 * on `stowage retry-uploads`.
 */

/** Attempt delays: `STOWAGE_PUSH_RETRY_DELAYS` (ms, comma-separated; "" = one attempt) or the default. */
export function pushDelays(env: NodeJS.ProcessEnv = process.env): number[] {
  const raw = env.STOWAGE_PUSH_RETRY_DELAYS;
  if (raw === undefined) return [...PUSH_DELAYS_MS];
  const delays = raw.split(',').map((v) => v.trim()).filter(Boolean).map(Number);
  if (delays.some((d) => !Number.isFinite(d) || d < 0)) throw new StowageError('CONFIG_INVALID', `STOWAGE_PUSH_RETRY_DELAYS must be milliseconds separated by commas, e.g. 2000,6000,12000 (got "${raw}")`);
  return delays;
}

export type PushOutcome = { ok: true; size: number } | { ok: false; message: string };

/** The final status message of a completed backup: its warnings, if any. */
export function completedMessage(warnings: number): string {
  return warnings ? `completed with ${warnings} warning${warnings === 1 ? '' : 's'}` : '';
}

/** Pushes one backup from the outbox; records `uploading`, then leaves the outcome to the caller's status. */
export async function pushBackup(ctx: EngineContext, storage: OutboxStorage, key: string, delaysMs: readonly number[]): Promise<PushOutcome> {
  ctx.catalogue.updateBackup(key, { status: 'uploading', statusMessage: `${UPLOADING_PREFIX}${storage.description}` });
  let attempts = 1;
  try {
    const stored = await storage.push(key, {
      delaysMs,
      onRetry: (attempt, delay, err) => {
        attempts = attempt + 1;
        ctx.jobLog(`upload of ${key} to ${storage.description}, attempt ${attempt} failed (${errorMessage(err)}); retrying in ${Math.round(delay / 1000)} s`);
      },
    });
    ctx.events.emit('backup.pushed', { key, size: stored.size, storage: storage.description, attempts });
    return { ok: true, size: stored.size };
  } catch (err) {
    const reason = errorMessage(err);
    const message =
      `the upload to ${storage.description} failed after ${attempts} attempt${attempts === 1 ? '' : 's'} (${reason}); ` +
      `the archive is safe in ${path.join(storage.outbox.root, key)} (listed, restorable) and is uploaded again after the next backup, ` +
      'every 5 minutes while the server runs, or now with "stowage retry-uploads"';
    ctx.catalogue.updateBackup(key, { statusMessage: message });
    ctx.jobLog(message);
    ctx.events.emit('backup.push_failed', { key, storage: storage.description, attempts, error: { code: isStowageError(err) ? err.code : 'STORAGE_FAILED', message: reason } });
    return { ok: false, message };
  }
}

export interface RetryResult {
  pushed: string[];
  failed: Array<{ key: string; message: string }>;
}

/**
 * One attempt for every backup waiting in the outbox (oldest first). The caller holds the job
 * lock. A backup that reaches remote storage is `completed` and announced as `backup.created`.
 */
export async function retryPendingPushes(ctx: EngineContext, options: { except?: string } = {}): Promise<RetryResult> {
  const result: RetryResult = { pushed: [], failed: [] };
  const storage = await resolveStorage(ctx.storage);
  if (!(storage instanceof OutboxStorage)) return result;
  for (const object of await storage.pending()) {
    if (object.key === options.except) continue;
    let record: BackupRecord | null = ctx.catalogue.getBackup(object.key);
    const outcome = await pushBackup(ctx, storage, object.key, []);
    if (!outcome.ok) {
      result.failed.push({ key: object.key, message: outcome.message });
      continue;
    }
    if (record) {
      ctx.catalogue.updateBackup(object.key, { status: 'completed', statusMessage: completedMessage(record.warnings.length), size: outcome.size, completedAt: record.completedAt ?? new Date().toISOString() });
      record = ctx.catalogue.getBackup(object.key)!;
      ctx.events.emit('backup.created', { key: object.key, path: null, size: outcome.size, excludes: record.excludes, trigger: record.trigger, backup: record });
    }
    result.pushed.push(object.key);
  }
  return result;
}
