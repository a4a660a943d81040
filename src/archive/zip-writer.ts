import crypto from 'node:crypto';
import fs from 'node:fs';
import type { Writable, Readable } from 'node:stream';
import zlib from 'node:zlib';
import { CHUNK_BYTES, DICTIONARY_BYTES, deflateChunk } from './deflate-chunks.js';
import { looksIncompressible } from './compressibility.js';
import { Signal } from '../events/signal.js';
import { closeFd, openForRead, readFully } from '../fs/fd.js';
import {
  FLAG_DESCRIPTOR,
  FLAG_UTF8,
  MAX_U32,
  METHOD_DEFLATE,
  METHOD_STORE,
  S_IFDIR,
  S_IFLNK,
  S_IFREG,
  centralRecord,
  dataDescriptor,
  endRecords,
  localHeader,
  type EntryHeader,
} from './zip-format.js';

/**
 * Streaming ZIP writer. Entries are added in archive order; their data is read, hashed and
 * deflated ahead of the writer by a small pool of tasks, and written strictly in order.
 *
 * Memory is bounded by `bufferBytes` (raw bytes read but not yet written) plus a few chunks of
 * the entry being written; the central directory is spooled to a file, so memory does not grow
 * with the number of entries either.
 */

/** Ownership is recorded (not stored in the ZIP itself) so a restore as root can put it back. */
interface Ownership {
  uid?: number;
  gid?: number;
}

export type ArchiveInput =
  | ({ kind: 'file'; name: string; path: string; size: number; mode: number; mtimeMs: number } & Ownership)
  | ({ kind: 'stream'; name: string; stream: Readable; mode: number; mtimeMs: number } & Ownership)
  | ({ kind: 'dir'; name: string; mode: number; mtimeMs: number } & Ownership)
  | ({ kind: 'symlink'; name: string; target: string; mode: number; mtimeMs: number } & Ownership);

export interface WrittenEntry {
  name: string;
  kind: 'file' | 'dir' | 'symlink';
  size: number;
  compressedSize: number;
  method: 'store' | 'deflate';
  crc32: number;
  /** SHA-256 of the content (files and symlink targets), hex. */
  sha256: string | undefined;
  mode: number;
  mtimeMs: number;
  uid: number | undefined;
  gid: number | undefined;
}

export interface SkippedEntry {
  name: string;
  reason: string;
}

export interface ZipWriterOptions {
  /** Deflate level 1..9 (default 6, as zip). */
  level?: number;
  /** Entries prepared ahead of the writer (default 16). */
  concurrency?: number;
  /** Upper bound on raw bytes read ahead of the writer (default 4 MiB; more gained no speed and cost RSS). */
  bufferBytes?: number;
  /** Where the central directory is spooled until the end. */
  spoolPath: string;
  /** Never deflate (tests of the zip64 layout with big sparse files use this). */
  storeOnly?: boolean;
  onEntry?: (entry: WrittenEntry) => void;
  onSkip?: (entry: SkippedEntry) => void;
  /** Raw (uncompressed) bytes consumed, for progress. */
  onProgress?: (rawBytes: number) => void;
}

/** Entries at or above this size get zip64 sizes up front (deflate may add a little). */
const ZIP64_THRESHOLD = MAX_U32 - 64 * 1024 * 1024;
/** How far the entry being written may read ahead of the writer. */
const HEAD_READ_AHEAD = 2 * CHUNK_BYTES;
/**
 * Entries queued (walked, not yet written) per preparing task. Two is enough to keep every task
 * busy; the 64 used before let ~1,000 entries wait, their objects outlived two scavenges and
 * piled up in V8's old space: peak RSS on the medium corpus 172 -> 150 MB, no slower.
 */
const QUEUE_PER_TASK = 2;

interface Piece {
  rawLength: number;
  data: Promise<Buffer>;
  /** Gives a pooled read buffer back once the bytes are written (stored data only). */
  release?: () => void;
}

/**
 * Reused CHUNK_BYTES read buffers. Allocating a fresh 1 MiB buffer per chunk made the kernel
 * map and unmap memory for every megabyte read (half the CPU time went to `sys` on a 4 GiB
 * file); with the pool, steady state allocates nothing.
 */
class ChunkPool {
  private readonly free: Buffer[] = [];
  constructor(private readonly keep: number) {}
  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(CHUNK_BYTES);
  }
  give(buf: Buffer): void {
    if (buf.length === CHUNK_BYTES && this.free.length < this.keep) this.free.push(buf);
  }
}

interface HeaderInfo {
  method: number;
  /** Known before the header is written: sizes and CRC go in the local header, no descriptor. */
  complete: boolean;
  zip64: boolean;
}

class EntryTask {
  /** Fired when this task has a header, a new piece, or has finished. */
  readonly changed = new Signal();
  pieces: Piece[] = [];
  piecesTaken = 0;
  pendingRaw = 0;
  started = false;
  finished = false;
  header: HeaderInfo | undefined;
  skipped: string | undefined;
  error: unknown;
  size = 0;
  crc = 0;
  sha256: string | undefined;
  constructor(readonly input: ArchiveInput) {}
}

export class ZipWriter {
  private readonly level: number;
  private readonly concurrency: number;
  private readonly bufferBytes: number;
  private readonly queue: EntryTask[] = [];
  private buffered = 0;
  private running = 0;
  /** Raw bytes were written (read-ahead budget freed) or the head moved. */
  private readonly budgetFreed = new Signal();
  /** The writer took an entry off the queue (room for add()), or the queue got work. */
  private readonly queueMoved = new Signal();
  private offset = 0;
  private entryCount = 0;
  private spool: fs.WriteStream;
  private spoolBytes = 0;
  private writerLoop: Promise<void>;
  private closed = false;
  private failure: unknown;
  private readonly names = new Set<string>();
  private readonly pool: ChunkPool;

  constructor(private readonly output: Writable, private readonly options: ZipWriterOptions) {
    this.level = options.level ?? 6;
    this.concurrency = options.concurrency ?? 16;
    this.bufferBytes = options.bufferBytes ?? 4 * 1024 * 1024;
    // Reads reserve their bytes before they start (see readChunks), so no more chunks than this
    // are ever in hand, plus the one or two the output still holds.
    this.pool = new ChunkPool(Math.ceil(this.bufferBytes / CHUNK_BYTES) + HEAD_READ_AHEAD / CHUNK_BYTES + 2);
    this.spool = fs.createWriteStream(options.spoolPath, { flags: 'wx', highWaterMark: 256 * 1024 });
    this.spool.on('error', (err) => this.fail(err));
    output.on('error', (err) => this.fail(err));
    this.writerLoop = this.runWriter();
    this.writerLoop.catch(() => {});
  }

  /** Queues an entry. Resolves once accepted; waits while the read-ahead queue is full. */
  async add(input: ArchiveInput): Promise<void> {
    this.throwIfFailed();
    if (this.closed) throw new Error('ZipWriter: add() after finish()');
    if (this.names.has(input.name)) throw new Error(`duplicate archive entry name: ${input.name}`);
    this.names.add(input.name);
    while (this.failure === undefined && this.queue.length >= this.concurrency * QUEUE_PER_TASK) await this.queueMoved.wait();
    this.throwIfFailed();
    this.queue.push(new EntryTask(input));
    this.startTasks();
    this.queueMoved.fire();
  }

  /** Resolves once every entry added so far has been written (and reported through onEntry). */
  async flushed(): Promise<void> {
    while (this.failure === undefined && this.queue.length > 0) await this.queueMoved.wait();
    this.throwIfFailed();
  }

  /** Writes the central directory and end records; resolves with the archive size. */
  async finish(): Promise<{ size: number; entries: number }> {
    this.closed = true;
    this.queueMoved.fire();
    await this.writerLoop;
    this.throwIfFailed();
    await new Promise<void>((resolve, reject) => this.spool.end((err?: Error | null) => (err ? reject(err) : resolve())));
    const cdOffset = this.offset;
    const spoolStream = fs.createReadStream(this.options.spoolPath, { highWaterMark: 1024 * 1024 });
    for await (const chunk of spoolStream) await this.write(chunk as Buffer);
    await this.write(endRecords(this.entryCount, cdOffset, this.spoolBytes));
    await fs.promises.rm(this.options.spoolPath, { force: true });
    return { size: this.offset, entries: this.entryCount };
  }

  /** Stops everything; the output is left as is for the caller to discard. */
  async abort(reason: unknown): Promise<void> {
    this.fail(reason);
    await this.writerLoop.catch(() => {});
    this.spool.destroy();
    await fs.promises.rm(this.options.spoolPath, { force: true });
  }

  private fail(err: unknown): void {
    if (this.failure === undefined) this.failure = err ?? new Error('archive writer failed');
    this.notify();
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  /** Wakes every waiter (used on failure, so that all of them notice and stop). */
  private notify(): void {
    this.budgetFreed.fire();
    this.queueMoved.fire();
    for (const t of this.queue) t.changed.fire();
  }

  private startTasks(): void {
    for (const task of this.queue) {
      if (this.running >= this.concurrency) break;
      if (task.started) continue;
      task.started = true;
      this.running++;
      this.prepare(task)
        .catch((err) => {
          task.error = err;
        })
        .finally(() => {
          task.finished = true;
          this.running--;
          this.startTasks();
          task.changed.fire();
        });
    }
  }

  /** May this task read `n` more bytes now? The head always may (within its own read-ahead). */
  private mayRead(task: EntryTask, n: number): boolean {
    if (this.failure !== undefined) return true; // let it notice and stop
    if (this.queue[0] === task) return task.pendingRaw < HEAD_READ_AHEAD;
    return this.buffered + n <= this.bufferBytes;
  }

  private async prepare(task: EntryTask): Promise<void> {
    const input = task.input;
    if (input.kind === 'dir') {
      task.header = { method: METHOD_STORE, complete: true, zip64: false };
      return;
    }
    if (input.kind === 'symlink') {
      const data = Buffer.from(input.target, 'utf8');
      task.size = data.length;
      task.crc = zlib.crc32(data);
      task.sha256 = crypto.createHash('sha256').update(data).digest('hex');
      task.pieces.push({ rawLength: data.length, data: Promise.resolve(data) });
      task.header = { method: METHOD_STORE, complete: true, zip64: false };
      return;
    }
    let chunks: AsyncIterator<Buffer>;
    let close: () => Promise<void>;
    let expectedSize: number | undefined;
    if (input.kind === 'file') {
      let fd: number;
      try {
        fd = await openForRead(input.path);
      } catch (err) {
        task.skipped = describeReadError(err);
        return;
      }
      expectedSize = input.size;
      chunks = readFileChunks(fd, input.size, this.pool);
      close = () => closeFd(fd).catch(() => {});
    } else {
      chunks = rechunk(input.stream)[Symbol.asyncIterator]();
      close = async () => {
        input.stream.destroy();
      };
    }
    try {
      await this.readChunks(task, chunks, expectedSize);
    } catch (err) {
      if (!task.header && input.kind === 'file') task.skipped = describeReadError(err);
      else throw err;
    } finally {
      await close().catch(() => {});
    }
  }

  private async readChunks(task: EntryTask, chunks: AsyncIterator<Buffer>, expectedSize: number | undefined): Promise<void> {
    const hash = crypto.createHash('sha256');
    let crc = 0;
    let previous: Buffer | undefined;
    let method: number | undefined;
    let lastSubmitted = false;
    const storeOnly = this.options.storeOnly === true;
    const zip64 = expectedSize === undefined || expectedSize >= ZIP64_THRESHOLD;
    for (;;) {
      // The bytes are reserved before the read, not counted after it: 16 tasks checking the
      // budget at once would otherwise all pass and read 16 chunks into a budget of 4.
      const reserve = expectedSize === undefined ? CHUNK_BYTES : Math.min(CHUNK_BYTES, Math.max(0, expectedSize - task.size));
      while (!this.mayRead(task, reserve)) await (this.queue[0] === task ? task.changed.wait() : this.budgetFreed.wait());
      this.throwIfFailed();
      this.account(task, reserve);
      let next: IteratorResult<Buffer>;
      try {
        next = await chunks.next();
      } catch (err) {
        this.unreserve(task, reserve);
        throw err;
      }
      if (next.done) {
        this.unreserve(task, reserve);
        break;
      }
      const chunk = next.value;
      // A stream's piece, or a file that grew or shrank, is not the size reserved.
      if (chunk.length > reserve) this.account(task, chunk.length - reserve);
      else if (chunk.length < reserve) this.unreserve(task, reserve - chunk.length);
      hash.update(chunk);
      crc = zlib.crc32(chunk, crc);
      task.size += chunk.length;
      const isLast = expectedSize !== undefined && task.size >= expectedSize;
      if (method === undefined) {
        method = storeOnly || looksIncompressible(chunk) ? METHOD_STORE : METHOD_DEFLATE;
        if (isLast) {
          // The whole entry is in hand: try deflate, keep it only if it actually saves bytes.
          task.crc = crc;
          task.sha256 = hash.digest('hex');
          let data = chunk;
          if (method === METHOD_DEFLATE) {
            const deflated = await deflateChunk(chunk, this.level, undefined, true);
            if (deflated.length < chunk.length) data = deflated;
            else method = METHOD_STORE;
          }
          task.pieces.push({ rawLength: chunk.length, data: Promise.resolve(data) });
          task.header = { method, complete: true, zip64 };
          task.changed.fire();
          return;
        }
        task.header = { method, complete: false, zip64 };
        task.changed.fire();
      }
      const pooled = chunk.length === CHUNK_BYTES ? () => this.pool.give(chunk) : undefined;
      let piece: Piece;
      if (method === METHOD_DEFLATE) {
        const data = deflateChunk(chunk, this.level, previous, isLast);
        // The raw chunk is free once deflated; the next chunk's dictionary is a copy of its tail.
        data.then(pooled, () => {});
        previous = isLast ? undefined : Buffer.from(chunk.subarray(Math.max(0, chunk.length - DICTIONARY_BYTES)));
        piece = { rawLength: chunk.length, data };
      } else {
        piece = { rawLength: chunk.length, data: Promise.resolve(chunk), release: pooled };
      }
      lastSubmitted = isLast;
      task.pieces.push(piece);
      task.changed.fire();
      if (isLast) break;
    }
    if (method === undefined) {
      // Empty file (or stream): no data, stored.
      task.header = { method: METHOD_STORE, complete: true, zip64: false };
    } else if (method === METHOD_DEFLATE && !lastSubmitted) {
      // The source ended before the size we expected (or is a stream): close the deflate stream.
      const data = deflateChunk(Buffer.alloc(0), this.level, undefined, true);
      task.pieces.push({ rawLength: 0, data });
    }
    task.crc = crc;
    task.sha256 = hash.digest('hex');
  }

  private account(task: EntryTask, n: number): void {
    task.pendingRaw += n;
    this.buffered += n;
  }

  /** Gives back a reservation that was not used (end of data, or a read error). */
  private unreserve(task: EntryTask, n: number): void {
    if (n === 0) return;
    this.account(task, -n);
    this.budgetFreed.fire();
  }

  private async runWriter(): Promise<void> {
    for (;;) {
      while (this.failure === undefined && this.queue.length === 0 && !this.closed) await this.queueMoved.wait();
      this.throwIfFailed();
      const task = this.queue[0];
      if (!task) return; // closed and drained
      this.budgetFreed.fire();
      task.changed.fire();
      await this.writeEntry(task);
      this.queue.shift();
      this.startTasks();
      this.queueMoved.fire();
    }
  }

  private async writeEntry(task: EntryTask): Promise<void> {
    const input = task.input;
    while (this.failure === undefined && task.header === undefined && !task.finished) await task.changed.wait();
    this.throwIfFailed();
    if (task.error !== undefined && !task.header) throw task.error;
    if (task.skipped !== undefined || !task.header) {
      this.options.onSkip?.({ name: input.name, reason: task.skipped ?? 'could not be read' });
      return;
    }
    const info = task.header;
    const nameBytes = Buffer.from(input.kind === 'dir' && !input.name.endsWith('/') ? `${input.name}/` : input.name, 'utf8');
    let header: EntryHeader;
    const localOffset = this.offset;
    if (info.complete) {
      // Everything is known: await the single piece so sizes and CRC go in the local header.
      const data = task.pieces[0] ? await task.pieces[0].data : Buffer.alloc(0);
      header = {
        nameBytes,
        method: info.method,
        flags: FLAG_UTF8,
        mtimeMs: input.mtimeMs,
        crc32: task.crc,
        compressedSize: data.length,
        uncompressedSize: task.size,
        zip64: info.zip64,
      };
      await this.write(localHeader(header));
      if (data.length) await this.write(data);
      this.release(task, task.size);
    } else {
      header = {
        nameBytes,
        method: info.method,
        flags: FLAG_UTF8 | FLAG_DESCRIPTOR,
        mtimeMs: input.mtimeMs,
        crc32: 0,
        compressedSize: 0,
        uncompressedSize: 0,
        zip64: info.zip64,
      };
      await this.write(localHeader(header));
      let compressed = 0;
      for (;;) {
        while (this.failure === undefined && task.piecesTaken >= task.pieces.length && !task.finished) await task.changed.wait();
        this.throwIfFailed();
        const piece = task.pieces[task.piecesTaken];
        if (!piece) {
          if (task.error !== undefined) throw task.error;
          break;
        }
        task.pieces[task.piecesTaken] = undefined as unknown as Piece; // let the chunk be collected
        task.piecesTaken++;
        const data = await piece.data;
        compressed += data.length;
        await this.write(data, piece.release);
        this.release(task, piece.rawLength);
      }
      header.crc32 = task.crc;
      header.compressedSize = compressed;
      header.uncompressedSize = task.size;
      if (!header.zip64 && (compressed >= MAX_U32 || task.size >= MAX_U32)) {
        throw new Error(`${input.name}: grew past 4 GiB while being archived; retry the backup`);
      }
      await this.write(dataDescriptor(header));
    }
    const typeBits = input.kind === 'dir' ? S_IFDIR : input.kind === 'symlink' ? S_IFLNK : S_IFREG;
    const mode = typeBits | (input.mode & 0o7777);
    this.spoolRecord(centralRecord(header, mode, input.kind === 'dir', localOffset));
    this.entryCount++;
    this.options.onEntry?.({
      name: input.name,
      kind: input.kind === 'stream' ? 'file' : input.kind,
      size: task.size,
      compressedSize: header.compressedSize,
      method: header.method === METHOD_DEFLATE ? 'deflate' : 'store',
      crc32: task.crc,
      sha256: task.sha256,
      mode: input.mode & 0o7777,
      mtimeMs: input.mtimeMs,
      uid: input.uid,
      gid: input.gid,
    });
  }

  private release(task: EntryTask, n: number): void {
    task.pendingRaw -= n;
    this.buffered -= n;
    if (n > 0) this.options.onProgress?.(n);
    this.budgetFreed.fire();
    task.changed.fire();
  }

  private spoolRecord(record: Buffer): void {
    this.spoolBytes += record.length;
    this.spool.write(record);
  }

  /** `written` runs once the output is done with `buf` (so a pooled buffer can be reused). */
  private async write(buf: Buffer, written?: () => void): Promise<void> {
    this.throwIfFailed();
    this.offset += buf.length;
    if (!this.output.write(buf, written ? (err) => !err && written() : undefined)) {
      await this.waitForDrain();
    }
  }

  private waitForDrain(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onDrain = () => {
        cleanup();
        resolve();
      };
      const onError = (err: unknown) => {
        cleanup();
        reject(err);
      };
      const onClose = () => {
        cleanup();
        reject(this.failure ?? new Error('archive output closed before the archive was complete'));
      };
      const cleanup = () => {
        this.output.off('drain', onDrain);
        this.output.off('error', onError);
        this.output.off('close', onClose);
      };
      this.output.on('drain', onDrain);
      this.output.on('error', onError);
      this.output.on('close', onClose);
    });
  }
}

/** Reads a file in CHUNK_BYTES pieces, never more than `size` bytes (the size the walk saw). */
async function* readFileChunks(fd: number, size: number, pool: ChunkPool): AsyncGenerator<Buffer> {
  let position = 0;
  while (position < size) {
    const want = Math.min(CHUNK_BYTES, size - position);
    const buf = want === CHUNK_BYTES ? pool.take() : Buffer.allocUnsafe(want);
    const data = await readFully(fd, want, position, buf);
    if (data.length === 0) return; // the file shrank
    position += data.length;
    yield data;
    if (data.length < want) return;
  }
}

/** Re-cuts a stream into CHUNK_BYTES pieces so deflate work units stay the same size. */
async function* rechunk(stream: Readable): AsyncGenerator<Buffer> {
  let parts: Buffer[] = [];
  let length = 0;
  for await (const part of stream) {
    const buf = Buffer.isBuffer(part) ? part : Buffer.from(part as string);
    parts.push(buf);
    length += buf.length;
    while (length >= CHUNK_BYTES) {
      const all = Buffer.concat(parts, length);
      yield all.subarray(0, CHUNK_BYTES);
      const rest = all.subarray(CHUNK_BYTES);
      parts = rest.length ? [rest] : [];
      length = rest.length;
    }
  }
  if (length > 0) yield Buffer.concat(parts, length);
}

function describeReadError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied (not readable by this user)';
  if (code === 'ENOENT') return 'vanished while the backup ran';
  if (code === 'ELOOP') return 'became a symlink while the backup ran';
  return err instanceof Error ? err.message : String(err);
}
