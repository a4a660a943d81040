/**
 * Helpers shared by the encryption tests (the .suite.ts suffix keeps this file out of the build
 * and out of vitest's test list, like storage.suite.ts).
 */
import { Readable, type Transform } from 'node:stream';
import v8 from 'node:v8';
import vm from 'node:vm';
import { expect } from 'vitest';
import { isStowageError, type StowageErrorCode } from '../errors.js';

export interface StreamRun {
  output: Buffer;
  /** The error the stream ended with, or null. */
  error: unknown;
}

/**
 * Writes `input` through `stream` in pieces of `piece` bytes (all at once by default) and collects
 * what comes out, with the error the stream ended with instead of throwing it, so tests can check
 * that nothing was emitted before a failure.
 */
export function runStream(stream: Transform, input: Buffer, piece = input.length || 1): Promise<StreamRun> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    let settled = false;
    const done = (error: unknown): void => {
      if (settled) return;
      settled = true;
      resolve({ output: Buffer.concat(parts), error });
    };
    stream.on('data', (d: Buffer) => parts.push(d));
    stream.on('error', done);
    stream.on('end', () => done(null));
    const pieces: Buffer[] = [];
    for (let i = 0; i < input.length; i += piece) pieces.push(input.subarray(i, i + piece));
    Readable.from(pieces).on('error', done).pipe(stream);
  });
}

/** Runs the stream and expects success: its output. */
export async function through(stream: Transform, input: Buffer, piece?: number): Promise<Buffer> {
  const r = await runStream(stream, input, piece);
  if (r.error) throw r.error;
  return r.output;
}

/** Runs the stream and expects a StowageError with `code` (message matching `pattern`) and no output. */
export async function expectFailure(stream: Transform, input: Buffer, code: StowageErrorCode, pattern?: RegExp, options: { outputAllowed?: boolean } = {}): Promise<Error> {
  const r = await runStream(stream, input);
  expect(r.error, 'the stream should have failed').toBeTruthy();
  if (!isStowageError(r.error, code)) throw new Error(`expected a ${code} StowageError, got: ${String((r.error as Error)?.stack ?? r.error)}`);
  if (pattern) expect(r.error.message).toMatch(pattern);
  if (!options.outputAllowed) expect(r.output.length, 'no plaintext before the error').toBe(0);
  return r.error;
}

/** A copy of `buf` with the byte at `offset` flipped. */
export function flipByte(buf: Buffer, offset: number): Buffer {
  const copy = Buffer.from(buf);
  copy[offset] = (copy[offset] as number) ^ 0x01;
  return copy;
}

/** The plaintext sizes around 64 KiB chunk boundaries that every format must get right. */
export const BOUNDARY_SIZES = [0, 1, 65535, 65536, 65537, 131071, 131072, 131073, 3 * 65536 + 17];

/** V8's collector, exposed at run time (vitest's workers do not start with --expose-gc). */
function collector(): () => void {
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}

export interface MemoryUse {
  /** Peak RSS growth over the run (garbage included: V8 collects it when it likes). */
  rss: number;
  /** Peak of live memory (heap used + buffers) growth, sampled after forced collections. */
  live: number;
}

/**
 * Memory growth while `pump` runs. `pump` gets a `sample` callback to call now and then (every
 * few MB of input): it collects garbage and records live memory, which is what a stream that
 * buffered its input would grow.
 */
export async function memoryGrowth(pump: (sample: () => void) => Promise<void>): Promise<MemoryUse> {
  const gc = collector();
  const liveNow = (): number => {
    const m = process.memoryUsage();
    return m.heapUsed + m.arrayBuffers;
  };
  gc();
  gc();
  const rssBefore = process.memoryUsage().rss;
  const liveBefore = liveNow();
  let rssPeak = rssBefore;
  let livePeak = liveBefore;
  const timer = setInterval(() => {
    rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
  }, 5);
  try {
    await pump(() => {
      gc();
      gc(); // the second collection frees the buffers' backing stores the first one found dead
      livePeak = Math.max(livePeak, liveNow());
    });
  } finally {
    clearInterval(timer);
  }
  rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
  return { rss: rssPeak - rssBefore, live: livePeak - liveBefore };
}

/** A readable of `total` bytes in 1 MiB pieces of a fixed pattern (each piece stamped with its offset). */
export function generated(total: number, onPiece?: () => void): Readable {
  const base = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < base.length; i++) base[i] = (i * 2654435761) >>> 24;
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= total) return void this.push(null);
      const n = Math.min(base.length, total - sent);
      const piece = Buffer.from(base.subarray(0, n));
      piece.writeUInt32BE(sent >>> 0, 0);
      sent += n;
      onPiece?.();
      this.push(piece);
    },
  });
}
