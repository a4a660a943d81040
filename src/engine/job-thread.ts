import { Worker } from 'node:worker_threads';
import { StowageError, type StowageErrorCode } from '../errors.js';
import type { StowageEventName, StowageEvents } from '../events/events.js';
import type { BackupOptions } from './backup.js';
import type { BackupSample, DrillOptions, DrillResult, RecordedVerifyResult } from './drill.js';
import type { RestoreOptions, RestoreOutcome } from './restore.js';
import type { BackupInfo, Job, JobKind, Stowage } from './stowage.js';

/**
 * Backups, restores and resets on a worker thread, for a long-running host (the server). A
 * 20,000-file backup keeps the thread it runs on ~70% busy (bench/README.md, API load); on the
 * server's main thread that delayed every request by hundreds of milliseconds. The worker has
 * its own engine on the same data folder, so the lock, catalogue and storage rules are the
 * same as for a CLI process; its events are re-emitted on the host's engine (SSE, listeners).
 *
 * Library hooks (addExcludeHook) are functions and cannot cross threads: a host that uses them
 * runs jobs in-process (the `Stowage` methods) instead.
 */
export interface JobRunner {
  startBackup(options?: BackupOptions): Promise<Job<BackupInfo> & { started: Promise<BackupInfo> }>;
  startRestore(keyOrFile: string, options?: Omit<RestoreOptions, 'dryRun'>): Promise<Job<RestoreOutcome>>;
  startFactoryReset(): Promise<Job<RestoreOutcome>>;
  /** A restore drill (see drill.ts); resolves with its result when it has run. */
  drill(key?: string, options?: Omit<DrillOptions, 'onProgress'>): Promise<DrillResult>;
  /** A recorded verification (see drill.ts). */
  verifyRecorded(key?: string, options?: { trigger?: string; sample?: BackupSample }): Promise<RecordedVerifyResult>;
  /** The job running now, if this runner started it. */
  readonly runningJob: { kind: JobKind; key: string | null } | null;
  close(): Promise<void>;
}

/** Jobs run by the engine on the calling thread (library use; hosts that add hooks). */
export function inlineJobs(stowage: Stowage): JobRunner {
  return {
    startBackup: (options) => stowage.startBackup(options),
    startRestore: (key, options) => stowage.startRestore(key, options),
    startFactoryReset: () => stowage.startFactoryReset(),
    drill: (key, options) => stowage.drill(key, options),
    verifyRecorded: (key, options) => stowage.verifyRecorded(key, options),
    get runningJob() {
      const job = stowage.runningJob;
      return job ? { kind: job.kind, key: job.key } : null;
    },
    close: async () => {
      while (stowage.runningJob) await new Promise((r) => setTimeout(r, 50));
    },
  };
}

type Request =
  | { type: 'backup'; id: number; options: Omit<BackupOptions, 'onStarted' | 'output'> }
  | { type: 'restore'; id: number; key: string; options: Omit<RestoreOptions, 'dryRun'> }
  | { type: 'reset'; id: number }
  | { type: 'drill'; id: number; key?: string; options: Omit<DrillOptions, 'onProgress'> }
  | { type: 'verify'; id: number; key?: string; options: { trigger?: string; sample?: BackupSample } };

export type WorkerRequest = Request;
type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;

export type WorkerMessage =
  | { type: 'event'; name: StowageEventName; payload: unknown }
  | { type: 'running'; id: number; job: { id: string; kind: JobKind; key: string | null } }
  | { type: 'refused'; id: number; error: SerializedError }
  | { type: 'backup-started'; id: number; record: BackupInfo }
  | { type: 'done'; id: number; result: unknown }
  | { type: 'failed'; id: number; error: SerializedError };

export interface SerializedError {
  code: StowageErrorCode;
  message: string;
  details?: Record<string, unknown>;
}

export function serializeError(err: unknown, fallback: StowageErrorCode): SerializedError {
  if (err instanceof StowageError) return { code: err.code, message: err.message, ...(err.details ? { details: err.details } : {}) };
  return { code: fallback, message: err instanceof Error ? err.message : String(err) };
}

function toError(e: SerializedError): StowageError {
  return new StowageError(e.code, e.message, e.details ? { details: e.details } : undefined);
}

interface Pending {
  kind: JobKind;
  onRunning: (job: { id: string; kind: JobKind; key: string | null }) => void;
  onRefused: (err: StowageError) => void;
  onStarted?: (record: BackupInfo) => void;
  onDone: (result: unknown) => void;
  onFailed: (err: StowageError) => void;
}

/** The worker's module: next to this file when built; the built copy when tests run sources. */
function workerModuleUrl(): string {
  const here = import.meta.url;
  if (here.endsWith('.js')) return new URL('./job-thread-worker.js', here).href;
  return new URL('../../dist/engine/job-thread-worker.js', here).href;
}

export class JobThread implements JobRunner {
  private worker: Worker | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private current: { kind: JobKind; key: string | null } | null = null;

  constructor(private readonly host: Stowage) {}

  get runningJob(): { kind: JobKind; key: string | null } | null {
    return this.current;
  }

  private ensureWorker(): Worker {
    if (this.worker) return this.worker;
    // eval'd ESM entry: works whether the engine runs from dist or (in tests) from sources.
    const worker = new Worker(`import(${JSON.stringify(workerModuleUrl())});`, {
      eval: true,
      workerData: { config: this.host.config },
      // Same V8 flag as the CLI: many short-lived buffers, bounded young generation.
      resourceLimits: { maxYoungGenerationSizeMb: 8 },
    });
    worker.on('message', (msg: WorkerMessage) => this.onMessage(msg));
    worker.on('error', (err) => this.failAll(new StowageError('BACKUP_FAILED', `the job thread crashed: ${err.message}`)));
    worker.on('exit', (code) => {
      this.worker = null;
      if (this.pending.size) this.failAll(new StowageError('BACKUP_FAILED', `the job thread exited (code ${code}) during a job; the next job's recovery finishes or rolls it back`));
    });
    worker.unref();
    this.worker = worker;
    return worker;
  }

  private failAll(err: StowageError): void {
    for (const p of this.pending.values()) {
      p.onRefused(err);
      p.onFailed(err);
    }
    this.pending.clear();
    this.current = null;
  }

  private onMessage(msg: WorkerMessage): void {
    if (msg.type === 'event') {
      this.host.emit(msg.name, msg.payload as StowageEvents[typeof msg.name]);
      return;
    }
    const p = this.pending.get(msg.id);
    if (!p) return;
    switch (msg.type) {
      case 'running':
        this.current = { kind: msg.job.kind, key: msg.job.key };
        p.onRunning(msg.job);
        break;
      case 'refused':
        this.pending.delete(msg.id);
        p.onRefused(toError(msg.error));
        break;
      case 'backup-started':
        p.onStarted?.(msg.record);
        break;
      case 'done':
        this.pending.delete(msg.id);
        this.current = null;
        p.onDone(msg.result);
        break;
      case 'failed':
        this.pending.delete(msg.id);
        this.current = null;
        p.onFailed(toError(msg.error));
        break;
    }
  }

  /** Sends a job; resolves when the worker holds the lock (or rejects: BUSY, not found...). */
  private start<T>(request: WithoutId<Request>, withStarted = false): Promise<Job<T> & { started: Promise<BackupInfo> }> {
    // Refused here, not by the worker: a busy worker may not read its messages for a while,
    // and a 409 must not wait for it.
    if (this.pending.size) {
      const running = [...this.pending.values()][0]!;
      return Promise.reject(new StowageError('BUSY', `busy: a ${running.kind}${this.current?.key ? ` of ${this.current.key}` : ''} is already running in this server; wait for it to finish`));
    }
    const id = this.nextId++;
    let resolveDone!: (v: T) => void;
    let rejectDone!: (e: Error) => void;
    const done = new Promise<T>((res, rej) => {
      resolveDone = res;
      rejectDone = rej;
    });
    done.catch(() => {});
    let resolveStarted!: (r: BackupInfo) => void;
    const started = new Promise<BackupInfo>((res) => (resolveStarted = res));
    const startedOrFailed = Promise.race([started, done.then(() => started)]);
    startedOrFailed.catch(() => {});
    return new Promise((resolve, reject) => {
      this.pending.set(id, {
        kind: request.type,
        onRunning: (job) => resolve({ ...job, done, started: startedOrFailed }),
        onRefused: reject,
        onStarted: withStarted ? resolveStarted : undefined,
        onDone: (r) => resolveDone(r as T),
        onFailed: rejectDone,
      });
      this.ensureWorker().postMessage({ ...request, id } as Request);
    });
  }

  async startBackup(options: BackupOptions = {}): Promise<Job<BackupInfo> & { started: Promise<BackupInfo> }> {
    const { onStarted, output, ...plain } = options;
    if (output) throw new StowageError('USAGE', 'exports run in-process (Stowage.exportBackup), not on the job thread');
    const job = await this.start<BackupInfo>({ type: 'backup', options: plain }, true);
    if (onStarted) void job.started.then((r) => onStarted(r), () => {});
    return job;
  }

  startRestore(keyOrFile: string, options: Omit<RestoreOptions, 'dryRun'> = {}): Promise<Job<RestoreOutcome>> {
    return this.start<RestoreOutcome>({ type: 'restore', key: keyOrFile, options });
  }

  startFactoryReset(): Promise<Job<RestoreOutcome>> {
    return this.start<RestoreOutcome>({ type: 'reset' });
  }

  async drill(key?: string, options: Omit<DrillOptions, 'onProgress'> = {}): Promise<DrillResult> {
    return (await this.start<DrillResult>({ type: 'drill', key, options })).done;
  }

  async verifyRecorded(key?: string, options: { trigger?: string; sample?: BackupSample } = {}): Promise<RecordedVerifyResult> {
    return (await this.start<RecordedVerifyResult>({ type: 'verify', key, options })).done;
  }

  /** Waits for a running job, then stops the thread. */
  async close(): Promise<void> {
    while (this.pending.size) await new Promise((r) => setTimeout(r, 50));
    await this.worker?.terminate();
    this.worker = null;
  }
}
