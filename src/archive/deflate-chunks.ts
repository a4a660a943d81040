import zlib from 'node:zlib';

/**
 * Parallel deflate in the manner of pigz: an entry's data is cut into chunks that are deflated
 * independently on libuv's thread pool (so both cores work), each primed with the previous 32 KiB
 * as a dictionary so the ratio stays that of one stream. Every chunk but the last ends with a
 * sync flush (byte aligned, not final); the last ends the stream. Their concatenation is one valid
 * raw deflate stream that any inflater reads.
 *
 * Hand-written because yazl (the usual choice) deflates one entry at a time on a single stream;
 * on the medium corpus that left one core idle (see docs/PERFORMANCE.md).
 */
export const CHUNK_BYTES = 1024 * 1024;
/** Deflate's window: the most a chunk can refer back into the previous one. */
export const DICTIONARY_BYTES = 32 * 1024;

export function deflateChunk(data: Buffer, level: number, previous: Buffer | undefined, last: boolean): Promise<Buffer> {
  const options: zlib.ZlibOptions = {
    level,
    finishFlush: last ? zlib.constants.Z_FINISH : zlib.constants.Z_SYNC_FLUSH,
    // One output buffer that fits the whole result (deflate never grows data by more than a few
    // bytes per 16 KiB block): zlib's default of 16 KiB pieces made a 1 MiB chunk go back and
    // forth between the main thread and the thread pool ~25 times, and joined the pieces after.
    chunkSize: Math.max(64, data.length + (data.length >> 7) + 1024),
    // The largest hash table for big pieces: 2-9% faster at level 1 on the corpus's logs, SQL
    // dump and SQLite file, same ratio (~0.5 MB more per deflate in progress, one per pool
    // thread); smaller ones keep zlib's default, the table is cleared for every call.
    memLevel: data.length >= 256 * 1024 ? 9 : 8,
  };
  if (!previous && last && data.length < DICTIONARY_BYTES) {
    // A whole small entry: a window and hash table sized to it. zlib would otherwise allocate
    // and clear ~300 kB per call on the main thread; for 16,000 small files that halved the
    // time spent deflating them (for 0.2% more bytes). Inflaters do not care what window was used.
    const windowBits = Math.min(15, Math.max(9, Math.ceil(Math.log2(data.length + 262))));
    options.windowBits = windowBits;
    options.memLevel = Math.min(8, Math.max(1, windowBits - 7));
  }
  if (previous && previous.length > 0) {
    options.dictionary = previous.length > DICTIONARY_BYTES ? previous.subarray(previous.length - DICTIONARY_BYTES) : previous;
  }
  return new Promise((resolve, reject) => {
    zlib.deflateRaw(data, options, (err, out) => (err ? reject(err) : resolve(out)));
  });
}
