import { isUtf8 } from 'node:buffer';
import { readFullySync } from '../fs/fd.js';
import { MAX_U16, MAX_U32, SIG_CENTRAL, SIG_EOCD, SIG_ZIP64_EOCD, SIG_ZIP64_LOCATOR } from './zip-format.js';

/**
 * Reads a ZIP's central directory: end record (and zip64 end record), then the whole directory
 * in one read, parsed in memory into a compact table.
 *
 * Hand-written rather than yauzl's reader: yauzl reads every record with two separate reads, and
 * opening a 25,000-entry backup took 1.6 s of waiting on those reads (see docs/PERFORMANCE.md);
 * this takes one read. Validation of what the records say (names, overlaps, ratios) is the
 * caller's (zip-reader.ts).
 */
export class ZipStructureError extends Error {}

/**
 * The directory as columns: entry i's fields are element i of each array and its name is
 * `names[nameStart[i]..nameStart[i+1])`. An object (and a Buffer) per entry made a restore's
 * peak RSS grow with the number of files; this is ~30 bytes per entry plus its name.
 */
export class CentralDirectory {
  constructor(
    readonly count: number,
    /** Every name's UTF-8 bytes, back to back; invalid UTF-8 is stored as decoded (U+FFFD), so equal bytes mean equal names. */
    readonly names: Buffer,
    readonly nameStart: Uint32Array,
    readonly method: Uint16Array,
    /** `st_mode` from the external attributes when made on Unix, else 0. */
    readonly unixMode: Uint16Array,
    readonly compressedSize: Float64Array,
    readonly size: Float64Array,
    readonly localOffset: Float64Array,
  ) {}

  /** The name as stored (folders end in "/"). */
  name(i: number): string {
    return this.names.toString('utf8', this.nameStart[i], this.nameStart[i + 1]);
  }

  nameLength(i: number): number {
    return this.nameStart[i + 1]! - this.nameStart[i]!;
  }
}

/** The directory of any archive Stowage will read fits easily; beyond this it is not a backup. */
const MAX_CENTRAL_DIRECTORY = 1024 * 1024 * 1024;

function readExactly(fd: number, length: number, position: number): Buffer {
  const buf = readFullySync(fd, length, position);
  if (buf.length < length) throw new ZipStructureError('unexpected end of file');
  return buf;
}

function u64(buf: Buffer, at: number): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ZipStructureError('a zip64 field is larger than any real file');
  return Number(v);
}

export function readCentralDirectory(fd: number, fileSize: number): CentralDirectory {
  if (fileSize < 22) throw new ZipStructureError('too short to be a ZIP archive');
  // The end record is the last 22 bytes plus a comment of up to 65,535 bytes.
  const tailLength = Math.min(fileSize, 22 + MAX_U16);
  const tail = readExactly(fd, tailLength, fileSize - tailLength);
  let eocd = -1;
  for (let i = tail.length - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === SIG_EOCD && i + 22 + tail.readUInt16LE(i + 20) === tail.length) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new ZipStructureError('no end of central directory record (truncated, or not a ZIP archive)');
  const eocdPosition = fileSize - tailLength + eocd;
  if (tail.readUInt16LE(eocd + 4) !== 0 || tail.readUInt16LE(eocd + 6) !== 0) throw new ZipStructureError('multi-disk (split) archives are not supported');
  let count = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  let cdEndLimit = eocdPosition;
  if (count === MAX_U16 || cdSize === MAX_U32 || cdOffset === MAX_U32) {
    if (eocdPosition < 20) throw new ZipStructureError('zip64 end of central directory locator missing');
    const locator = readExactly(fd, 20, eocdPosition - 20);
    if (locator.readUInt32LE(0) !== SIG_ZIP64_LOCATOR) throw new ZipStructureError('zip64 end of central directory locator missing');
    const z64Position = u64(locator, 8);
    if (z64Position + 56 > eocdPosition - 20) throw new ZipStructureError('zip64 end of central directory record out of place');
    const z64 = readExactly(fd, 56, z64Position);
    if (z64.readUInt32LE(0) !== SIG_ZIP64_EOCD) throw new ZipStructureError('zip64 end of central directory record missing');
    count = u64(z64, 32);
    cdSize = u64(z64, 40);
    cdOffset = u64(z64, 48);
    cdEndLimit = z64Position;
  }
  if (cdOffset + cdSize > cdEndLimit) throw new ZipStructureError('central directory runs past its end record (truncated or damaged)');
  if (cdSize > MAX_CENTRAL_DIRECTORY) throw new ZipStructureError('central directory is implausibly large');
  if (count * 46 > cdSize) throw new ZipStructureError(`central directory is too small for the ${count} entries it claims`);
  const cd = cdSize > 0 ? readExactly(fd, cdSize, cdOffset) : Buffer.alloc(0);

  const nameStart = new Uint32Array(count + 1);
  const method = new Uint16Array(count);
  const unixMode = new Uint16Array(count);
  const compressedSize = new Float64Array(count);
  const size = new Float64Array(count);
  const localOffset = new Float64Array(count);
  // Names are at most the directory's size; copied out so the directory buffer can go.
  const names = Buffer.allocUnsafe(cdSize);
  let namesEnd = 0;
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== SIG_CENTRAL) throw new ZipStructureError(`central directory record ${i + 1} is damaged`);
    const nameLength = cd.readUInt16LE(p + 28);
    const extraLength = cd.readUInt16LE(p + 30);
    const commentLength = cd.readUInt16LE(p + 32);
    const end = p + 46 + nameLength + extraLength + commentLength;
    if (end > cd.length) throw new ZipStructureError(`central directory record ${i + 1} runs past the directory`);
    let nameBytes = cd.subarray(p + 46, p + 46 + nameLength);
    const displayName = () => nameBytes.toString('utf8');
    if (!isUtf8(nameBytes)) nameBytes = Buffer.from(displayName(), 'utf8');
    if (namesEnd + nameBytes.length > names.length) throw new ZipStructureError('entry names do not fit the central directory');
    nameBytes.copy(names, namesEnd);
    nameStart[i] = namesEnd;
    namesEnd += nameBytes.length;
    if (cd.readUInt16LE(p + 8) & 0x1) throw new ZipStructureError(`entry ${displayName()} is encrypted with ZIP encryption, which Stowage does not use`);
    method[i] = cd.readUInt16LE(p + 10);
    unixMode[i] = cd.readUInt16LE(p + 4) >> 8 === 3 ? cd.readUInt32LE(p + 38) >>> 16 : 0;
    let csize = cd.readUInt32LE(p + 20);
    let usize = cd.readUInt32LE(p + 24);
    let offset = cd.readUInt32LE(p + 42);
    if (usize === MAX_U32 || csize === MAX_U32 || offset === MAX_U32) {
      // The zip64 extra field holds, in this order, only the values whose 32-bit field is 0xFFFFFFFF.
      const take = zip64Values(cd.subarray(p + 46 + nameLength, p + 46 + nameLength + extraLength), displayName);
      if (usize === MAX_U32) usize = take();
      if (csize === MAX_U32) csize = take();
      if (offset === MAX_U32) offset = take();
    }
    if (offset + 30 > cdOffset) throw new ZipStructureError(`entry ${displayName()} points past the data area`);
    compressedSize[i] = csize;
    size[i] = usize;
    localOffset[i] = offset;
    p = end;
  }
  nameStart[count] = namesEnd;
  // A copy of just the names: the whole-directory buffer is not kept alive by a view into it.
  return new CentralDirectory(count, Buffer.from(names.subarray(0, namesEnd)), nameStart, method, unixMode, compressedSize, size, localOffset);
}

/** Reads the zip64 extra field's 64-bit values one by one. */
function zip64Values(extra: Buffer, name: () => string): () => number {
  let q = 0;
  while (q + 4 <= extra.length) {
    const id = extra.readUInt16LE(q);
    const size = extra.readUInt16LE(q + 2);
    if (q + 4 + size > extra.length) break;
    if (id === 0x0001) {
      let r = q + 4;
      const end = q + 4 + size;
      return () => {
        if (r + 8 > end) throw new ZipStructureError(`entry ${name()} has a short zip64 extra field`);
        const v = u64(extra, r);
        r += 8;
        return v;
      };
    }
    q += 4 + size;
  }
  throw new ZipStructureError(`entry ${name()} needs a zip64 extra field and has none`);
}
