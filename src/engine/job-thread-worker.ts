import { parentPort, workerData } from 'node:worker_threads';
import type { StowageConfig } from '../config/load.js';
import { serializeError, type WorkerMessage, type WorkerRequest } from './job-thread.js';
import { Stowage, type Job } from './stowage.js';

/**
 * The job thread's side (see job-thread.ts): its own engine on the host's configuration; runs
 * one request at a time and reports each step and every engine event to the host.
 */
const port = parentPort!;
const post = (msg: WorkerMessage) => port.postMessage(msg);
const stowage = await Stowage.open({ config: (workerData as { config: StowageConfig }).config, skipRecovery: true });
stowage.onAny((name, payload) => post({ type: 'event', name, payload }));

port.on('message', (request: WorkerRequest) => {
  void run(request);
});

async function run(request: WorkerRequest): Promise<void> {
  const fallback = request.type === 'backup' ? 'BACKUP_FAILED' : 'RESTORE_FAILED';
  if (request.type === 'drill' || request.type === 'verify') {
    // These run to the end inside the engine; BUSY (or an unknown key) is a refusal.
    try {
      const result = request.type === 'drill' ? await stowage.drill(request.key, request.options) : await stowage.verifyRecorded(request.key, request.options);
      post({ type: 'running', id: request.id, job: { id: '', kind: request.type, key: result.key } });
      post({ type: 'done', id: request.id, result });
    } catch (err) {
      post({ type: 'refused', id: request.id, error: serializeError(err, 'RESTORE_FAILED') });
    }
    return;
  }
  let job: Job<unknown>;
  try {
    if (request.type === 'backup') {
      const started = await stowage.startBackup(request.options);
      started.started.then((record) => post({ type: 'backup-started', id: request.id, record }), () => {});
      job = started;
    } else if (request.type === 'restore') {
      job = await stowage.startRestore(request.key, request.options);
    } else {
      job = await stowage.startFactoryReset();
    }
  } catch (err) {
    post({ type: 'refused', id: request.id, error: serializeError(err, fallback) });
    return;
  }
  post({ type: 'running', id: request.id, job: { id: job.id, kind: job.kind, key: job.key } });
  try {
    post({ type: 'done', id: request.id, result: await job.done });
  } catch (err) {
    post({ type: 'failed', id: request.id, error: serializeError(err, fallback) });
  }
}
