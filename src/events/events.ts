import { EventEmitter } from 'node:events';
import type { BackupRecord, RestoreStatusRecord } from '../engine/catalogue.js';

/**
 * The events the engine emits. One bus feeds library users, and later the server's SSE stream
 * and webhooks, so payloads are plain JSON-serialisable objects.
 */
export interface Progress {
  /** What is happening now: scanning, archiving, verifying, staging, swapping, ... */
  phase: string;
  files: number;
  filesTotal: number;
  bytes: number;
  bytesTotal: number;
  /** ms since the job started. */
  elapsedMs: number;
}

export interface StowageEvents {
  'backup.started': { key: string; trigger: string; sources: string[] };
  'backup.progress': { key: string } & Progress;
  'backup.created': { key: string; path: string | null; size: number; excludes: string[]; trigger: string; backup: BackupRecord };
  'backup.failed': { key: string; trigger: string; error: { code: string; message: string } };
  'backup.deleted': { key: string };
  /** An archive uploaded from elsewhere, checked and now listed. */
  'backup.uploaded': { key: string; size: number; backup: BackupRecord };
  /** A backup kept in the local outbox reached remote storage (S3): it is now `completed` there. */
  'backup.pushed': { key: string; size: number; storage: string; attempts: number };
  /** Remote storage could not take a backup; it stays in the local outbox, `uploading`, and is retried. */
  'backup.push_failed': { key: string; storage: string; attempts: number; error: { code: string; message: string } };
  /** A backup streamed to a client and not stored (backup-key export). */
  'export.progress': Progress;
  'restore.started': { key: string; sources: string[]; dryRun: boolean };
  'restore.progress': { key: string } & Progress;
  'restore.completed': { key: string; status: RestoreStatusRecord };
  'restore.failed': { key: string; error: { code: string; message: string }; status: RestoreStatusRecord };
  'verify.progress': { key: string } & Progress;
  /** A scheduled verification re-read every entry of a backup and every checksum matched. */
  'verify.completed': { key: string; trigger: string; files: number; bytes: number };
  'verify.failed': { key: string; trigger: string; error: { code: string; message: string }; errors: Array<{ path: string; message: string }> };
  /** A restore drill: the backup restored into a scratch folder and compared with its manifest. */
  'drill.completed': { key: string; trigger: string; files: number; bytes: number; durationMs: number };
  'drill.failed': { key: string; trigger: string; error: { code: string; message: string } };
  /** Retention ran: what was removed and why the rest was kept. */
  'prune.completed': { dryRun: boolean; removed: string[]; kept: number; trigger: string };
  /** A scheduled run was missed while Stowage was down (and is run now if runMissed). */
  'schedule.missed': { job: string; scheduledFor: string; runNow: boolean };
  /** A backup point copied a source elsewhere (or found it already there). */
  'point.completed': { point: string; backupKey: string | null; status: 'updated' | 'unchanged'; message: string };
  'point.failed': { point: string; backupKey: string | null; error: { code: string; message: string } };
  /** A scheduled run had to wait for another job. */
  'schedule.delayed': { job: string; scheduledFor: string; waitingFor: string };
}

export type StowageEventName = keyof StowageEvents;

type AnyListener = (event: StowageEventName, payload: unknown) => void;

/** A typed EventEmitter: listeners get the payload type of the event they subscribe to. */
export class StowageEmitter {
  private readonly emitter = new EventEmitter();
  private readonly anyListeners = new Set<AnyListener>();

  on<E extends StowageEventName>(event: E, listener: (payload: StowageEvents[E]) => void): this {
    this.emitter.on(event, listener);
    return this;
  }

  once<E extends StowageEventName>(event: E, listener: (payload: StowageEvents[E]) => void): this {
    this.emitter.once(event, listener);
    return this;
  }

  off<E extends StowageEventName>(event: E, listener: (payload: StowageEvents[E]) => void): this {
    this.emitter.off(event, listener);
    return this;
  }

  /** Every event, with its name (the server's event stream); returns a function that unsubscribes. */
  onAny(listener: <E extends StowageEventName>(event: E, payload: StowageEvents[E]) => void): () => void {
    this.anyListeners.add(listener as AnyListener);
    return () => this.anyListeners.delete(listener as AnyListener);
  }

  /** Listener errors are reported, never allowed to break a backup or restore. */
  emit<E extends StowageEventName>(event: E, payload: StowageEvents[E]): void {
    for (const listener of this.anyListeners) {
      try {
        listener(event, payload);
      } catch (err) {
        process.emitWarning(`stowage: an event listener threw on ${event}: ${(err as Error).message}`);
      }
    }
    for (const listener of this.emitter.listeners(event)) {
      try {
        (listener as (p: StowageEvents[E]) => void)(payload);
      } catch (err) {
        process.emitWarning(`stowage: a listener for ${event} threw: ${(err as Error).message}`);
      }
    }
  }
}

/** Computes a throttled progress reporter: at most one event per interval, plus the final one. */
export function progressThrottle(emit: (p: Progress) => void, intervalMs = 200): (p: Progress, force?: boolean) => void {
  let last = 0;
  return (p, force = false) => {
    const now = Date.now();
    if (!force && now - last < intervalMs) return;
    last = now;
    emit(p);
  };
}
