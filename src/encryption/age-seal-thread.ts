import { Writable } from 'node:stream';
import { Worker } from 'node:worker_threads';
import { Signal } from '../events/signal.js';
import { TAG_BYTES, invalid } from './age-header.js';
import { AGE_CHUNK_BYTES, beginAgeEncryption, type AgeEncryptOptions } from './age.js';
import { MAX_COUNTER } from './chunks.js';

/**
 * age encryption for backups, with the payload sealed on a worker thread and written straight
 * into `dest`. Same file as createAgeEncryptStream (age.ts) writes.
 *
 * Why a thread: the main thread is what limits a backup (it walks the tree and drives every
 * file), so ChaCha20-Poly1305 there added its whole cost to the backup's time: 1.3 s on the
 * medium corpus, +27% (docs/PERFORMANCE.md, Encryption). Here the main thread only copies the
 * archive into 1 MiB batches and writes what comes back.
 *
 * Memory: MAX_BATCHES pairs of buffers (a batch of plaintext, its sealed form), reused: one is
 * filled here while the others are sealed there or written by `dest`. (2 x 512 KiB looked 5 MB
 * smaller in hand-run pairs, but the benchmark had it at 1.16-1.18x of a plain backup against
 * 1.07-1.13x: twice the hand-offs between the threads.) node:crypto allocates each sealed
 * chunk anew; the worker copies it into the batch's output buffer and collects that garbage
 * itself every few batches (a minor GC of a tiny heap). Its isolate allocates almost nothing
 * else, so V8 would collect rarely: the chunks piled up to ~30 MB of RSS before (measured).
 * No more batches are sealed while `dest` is over its buffer.
 *
 * The last-chunk rule: a full batch is sent as "not last" only once more data has arrived, so
 * the file ends with its final chunk flagged, never with an empty chunk after a full one.
 */
const BATCH_BYTES = 16 * AGE_CHUNK_BYTES;
const SEALED_BATCH_BYTES = BATCH_BYTES + (BATCH_BYTES / AGE_CHUNK_BYTES) * TAG_BYTES;
const MAX_BATCHES = 3;

/**
 * The worker: plain JavaScript with node built-ins (runs the same from the sources and the
 * build). `gc` comes from V8's --expose-gc, set at run time and picked up by a new context, the
 * way Node's own tests get it; without it the worker still works, with more garbage.
 */
const SEAL_WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const crypto = require('node:crypto');
let collect = null;
try {
  require('node:v8').setFlagsFromString('--expose-gc');
  collect = require('node:vm').runInNewContext('gc');
} catch {}
const key = Buffer.from(workerData.key);
const CHUNK = ${AGE_CHUNK_BYTES}, TAG = ${TAG_BYTES};
const nonce = Buffer.alloc(12);
let batches = 0;
parentPort.on('message', ({ input, output, length, counter, last }) => {
  const data = Buffer.from(input, 0, length);
  const out = Buffer.from(output);
  const n = Math.max(1, Math.ceil(length / CHUNK));
  let o = 0;
  for (let i = 0; i < n; i++) {
    nonce.fill(0);
    nonce.writeUIntBE(counter + i, 5, 6);
    nonce[11] = last && i === n - 1 ? 1 : 0;
    const c = crypto.createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG });
    o += c.update(data.subarray(i * CHUNK, Math.min(length, (i + 1) * CHUNK))).copy(out, o);
    c.final();
    o += c.getAuthTag().copy(out, o);
  }
  if (collect && ++batches % 4 === 0) collect({ type: 'minor' });
  parentPort.postMessage({ input, output, length: o }, [input, output]);
});
`;

/** A batch's buffers: plaintext in, sealed chunks out. */
interface Batch {
  input: ArrayBuffer;
  output: ArrayBuffer;
}

interface Sealed extends Batch {
  length: number;
}

/**
 * A Writable that age-encrypts into `dest` (recipients or a passphrase, checked here as by
 * createAgeEncryptStream). Ending it finishes the age file; `dest` itself is not ended.
 */
export function createAgeEncryptWriter(dest: Writable, options: AgeEncryptOptions): Writable {
  return new AgeSealWriter(dest, options);
}

class AgeSealWriter extends Writable {
  private readonly worker: Worker;
  private readonly started: Promise<void>;
  private readonly free: Batch[] = [];
  /** A batch came back, `dest` drained, or something failed. */
  private readonly changed = new Signal();
  private allocated = 0;
  private staging: { batch: Batch; buf: Buffer } | undefined;
  private fill = 0;
  private counter = 0;
  /** Batches sent to the worker and not yet written by `dest`. */
  private inFlight = 0;
  private destFull = false;
  private failure: Error | undefined;

  constructor(
    private readonly dest: Writable,
    options: AgeEncryptOptions,
  ) {
    super({ highWaterMark: BATCH_BYTES });
    const start = beginAgeEncryption(options);
    this.worker = new Worker(SEAL_WORKER_SOURCE, {
      eval: true,
      workerData: { key: start.payloadKey },
      // A loop over node:crypto: keep the isolate small.
      resourceLimits: { maxYoungGenerationSizeMb: 1, maxOldGenerationSizeMb: 16 },
    });
    this.worker.on('message', (m: Sealed) => this.written(m));
    this.worker.on('error', (err) => this.fail(err));
    this.worker.on('exit', (code) => {
      if (this.inFlight > 0) this.fail(new Error(`the encryption thread stopped (exit code ${code}) with data still to seal`));
    });
    dest.on('error', (err) => this.fail(err));
    this.started = start.header.then((header) => {
      this.writeOut(header);
      this.writeOut(start.nonce);
    });
    this.started.catch(() => undefined); // reported by the first write or by end()
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.consume(chunk).then(() => cb(), cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.finish().then(() => cb(), cb);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    // Also runs after a clean finish (autoDestroy); only a stop before it is a failure.
    this.failure ??= err ?? (this.writableFinished ? undefined : new Error('encryption stopped before the end of the archive'));
    this.changed.fire();
    void this.worker.terminate();
    cb(err);
  }

  private async consume(chunk: Buffer): Promise<void> {
    await this.started;
    let off = 0;
    while (off < chunk.length) {
      if (this.fill === BATCH_BYTES) this.send(false); // more data follows a full batch: not the last
      this.staging ??= await this.takeBatch();
      const take = Math.min(BATCH_BYTES - this.fill, chunk.length - off);
      chunk.copy(this.staging.buf, this.fill, off, off + take);
      this.fill += take;
      off += take;
    }
  }

  private async finish(): Promise<void> {
    await this.started;
    this.staging ??= await this.takeBatch(); // an empty payload is one empty, final chunk
    this.send(true);
    while (this.inFlight > 0 || this.destFull) {
      this.throwIfFailed();
      await this.changed.wait();
    }
    this.throwIfFailed();
    await this.worker.terminate();
  }

  private async takeBatch(): Promise<{ batch: Batch; buf: Buffer }> {
    for (;;) {
      this.throwIfFailed();
      if (!this.destFull) {
        let batch = this.free.pop();
        if (!batch && this.allocated < MAX_BATCHES) {
          this.allocated++;
          batch = { input: new ArrayBuffer(BATCH_BYTES), output: new ArrayBuffer(SEALED_BATCH_BYTES) };
        }
        if (batch) return { batch, buf: Buffer.from(batch.input) };
      }
      await this.changed.wait();
    }
  }

  private send(last: boolean): void {
    const staging = this.staging;
    if (!staging) throw new Error('age writer: no batch to send');
    const length = this.fill;
    const chunks = Math.max(1, Math.ceil(length / AGE_CHUNK_BYTES));
    if (this.counter + chunks - 1 > MAX_COUNTER) throw invalid('the age payload has more chunks than this implementation counts (2^48)');
    const { input, output } = staging.batch;
    this.worker.postMessage({ input, output, length, counter: this.counter, last }, [input, output]);
    this.counter += chunks;
    this.inFlight++;
    this.staging = undefined;
    this.fill = 0;
  }

  /** A sealed batch is back (batches come back in the order sent): write it, then reuse its buffers. */
  private written(m: Sealed): void {
    if (this.failure) return;
    this.writeOut(Buffer.from(m.output, 0, m.length), () => {
      this.free.push({ input: m.input, output: m.output });
      this.inFlight--;
      this.changed.fire();
    });
  }

  /** Writes to `dest` (`done` once it has), noting when it asks to wait. */
  private writeOut(buf: Buffer, done?: () => void): void {
    if (this.dest.write(buf, done && ((err) => !err && done())) || this.destFull) return;
    this.destFull = true;
    this.dest.once('drain', () => {
      this.destFull = false;
      this.changed.fire();
    });
  }

  private fail(err: unknown): void {
    this.failure ??= err instanceof Error ? err : new Error(String(err));
    this.changed.fire();
    this.destroy(this.failure);
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure;
  }
}
