import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import { StowageError } from '../errors.js';
import { readFully, readFullySync } from '../fs/fd.js';
import type { CentralDirectory } from './zip-central.js';

/**
 * Reading one entry's content back: local header, then the data, inflated, with the declared
 * size enforced. Callers (zip-reader.ts) have already checked the central directory.
 */

/** Entries up to this compressed size are read with one read and inflated in one call. */
const WHOLE_ENTRY_BYTES = 1024 * 1024;
const READ_CHUNK_BYTES = 1024 * 1024;
/** Room for the local header's name and extra fields, so a small entry takes a single read. */
const LOCAL_HEADER_SLACK = 30 + 512;

/** zlib's "Cannot create a Buffer larger than N" (maxOutputLength) means the data is longer than declared. */
function tooMany(err: NodeJS.ErrnoException): never {
  if (err.code === 'ERR_BUFFER_TOO_LARGE') throw new Error('too many bytes in the stream');
  throw err;
}

function inflateWhole(data: Buffer, expected: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    // One more byte than declared is allowed through so that "longer than declared" is seen.
    // chunkSize = the size: one output buffer instead of 16 KiB pieces joined into another.
    zlib.inflateRaw(data, { maxOutputLength: expected + 1, chunkSize: Math.max(64, expected + 1) }, (err, out) => (err ? reject(err) : resolve(out)));
  });
}

/** Entries small enough for `readSmallSync` (both compressed and inflated size). */
export const SYNC_ENTRY_BYTES = 256 * 1024;

/**
 * One scratch buffer for synchronous reads: with a fresh buffer per entry, tens of megabytes of
 * dead buffers waited for V8's external-memory GC trigger and showed up as peak RSS.
 */
let scratch = Buffer.allocUnsafeSlow(LOCAL_HEADER_SLACK + 1024 + SYNC_ENTRY_BYTES);

/**
 * A small entry's content, read and inflated with synchronous calls. For many small files this
 * is what unzip does, and it beats thread-pool round trips: the archive is read in order (the
 * kernel reads ahead) and the work per entry is microseconds.
 *
 * The returned buffer may be shared scratch space: it is valid until the next call, so use it
 * (hash, write) before calling again, or copy it.
 */
export function readSmallSync(fd: number, archiveSize: number, cd: CentralDirectory, i: number, name: string): Buffer {
  const csize = cd.compressedSize[i]!;
  const expected = cd.size[i]!;
  if (csize > SYNC_ENTRY_BYTES || expected > SYNC_ENTRY_BYTES) throw new Error(`${name} is too large to read whole`);
  try {
    const offset = cd.localOffset[i]!;
    const want = Math.min(LOCAL_HEADER_SLACK + cd.nameLength(i) + csize, archiveSize - offset);
    if (scratch.length < want) scratch = Buffer.allocUnsafeSlow(want);
    let head = readFullySync(fd, want, offset, scratch);
    if (head.length < 30 || head.readUInt32LE(0) !== 0x04034b50) throw new Error('local file header not found where the central directory says');
    const dataStart = 30 + head.readUInt16LE(26) + head.readUInt16LE(28);
    if (offset + dataStart + csize > archiveSize) throw new Error('entry data runs past the end of the archive (truncated)');
    if (head.length < dataStart + csize) head = readFullySync(fd, dataStart + csize, offset, Buffer.allocUnsafe(dataStart + csize));
    const data = head.subarray(dataStart, dataStart + csize);
    let out: Buffer;
    try {
      // chunkSize = the size: one output allocation instead of 16 KiB pieces joined.
      out = cd.method[i] === 8 ? zlib.inflateRawSync(data, { maxOutputLength: expected + 1, chunkSize: Math.max(64, expected + 1) }) : data;
    } catch (err) {
      tooMany(err as NodeJS.ErrnoException);
    }
    if (out.length !== expected) throw new Error(out.length > expected ? 'too many bytes in the stream' : 'not enough bytes in the stream');
    return out;
  } catch (err) {
    if (err instanceof StowageError) throw err;
    throw damaged(name, err as Error);
  }
}

/** An entry's content, inflated, in chunks, with its declared size enforced. */
export async function* readEntryData(fd: number, archiveSize: number, cd: CentralDirectory, i: number, name: string): AsyncGenerator<Buffer> {
  const csize = cd.compressedSize[i]!;
  const expected = cd.size[i]!;
  try {
    const offset = cd.localOffset[i]!;
    // Whole in memory only when both sides are small: a 1 MB deflate stream can inflate to 1 GB.
    const whole = csize <= WHOLE_ENTRY_BYTES && expected <= WHOLE_ENTRY_BYTES;
    const want = Math.min(LOCAL_HEADER_SLACK + cd.nameLength(i) + (whole ? csize : 0), archiveSize - offset);
    let head = await readFully(fd, want, offset);
    if (head.length < 30 || head.readUInt32LE(0) !== 0x04034b50) throw new Error('local file header not found where the central directory says');
    const dataStart = 30 + head.readUInt16LE(26) + head.readUInt16LE(28);
    if (offset + dataStart + csize > archiveSize) throw new Error('entry data runs past the end of the archive (truncated)');
    if (whole) {
      if (head.length < dataStart + csize) head = await readFully(fd, dataStart + csize, offset);
      const data = head.subarray(dataStart, dataStart + csize);
      const out = cd.method[i] === 8 ? await inflateWhole(data, expected).catch(tooMany) : data;
      if (out.length !== expected) throw new Error(out.length > expected ? 'too many bytes in the stream' : 'not enough bytes in the stream');
      if (out.length) yield out;
      return;
    }
    let produced = 0;
    const chunks = readRange(fd, offset + dataStart, csize);
    const source = cd.method[i] === 8 ? Readable.from(chunks, { highWaterMark: 1 }).pipe(zlib.createInflateRaw({ chunkSize: 256 * 1024 })) : chunks;
    for await (const chunk of source) {
      const buf = chunk as Buffer;
      produced += buf.length;
      if (produced > expected) throw new Error('too many bytes in the stream');
      yield buf;
    }
    if (produced !== expected) throw new Error('not enough bytes in the stream');
  } catch (err) {
    if (err instanceof StowageError) throw err;
    throw damaged(name, err as Error);
  }
}

async function* readRange(fd: number, position: number, length: number): AsyncGenerator<Buffer> {
  let done = 0;
  while (done < length) {
    const buf = await readFully(fd, Math.min(READ_CHUNK_BYTES, length - done), position + done);
    if (buf.length === 0) throw new Error('unexpected end of the archive (truncated)');
    done += buf.length;
    yield buf;
  }
}

function damaged(name: string, err: Error): StowageError {
  return new StowageError('CHECKSUM_MISMATCH', `${name}: cannot be read back (${err.message}); the archive is damaged`, { cause: err });
}

