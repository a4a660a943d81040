import { readFullySync } from '../fs/fd.js';
import { MAX_U16, MAX_U32, SIG_CENTRAL, SIG_EOCD, SIG_ZIP64_EOCD, SIG_ZIP64_LOCATOR } from './zip-format.js';

/**
 * Reads a ZIP's central directory: end record (and zip64 end record), then the whole directory
 * in one read, parsed in memory into compact records.
 *
 * Hand-written rather than yauzl's reader: yauzl reads every record with two separate reads, and
 * opening a 25,000-entry backup took 1.6 s of waiting on those reads (see docs/PERFORMANCE.md);
 * this takes one read. Validation of what the records say (names, overlaps, ratios) is the
 * caller's (zip-reader.ts).
 */
export interface CentralEntry {
  /** Raw name bytes (decoded by the caller, which also validates them). */
  fileName: Buffer;
  versionMadeBy: number;
  flags: number;
  compressionMethod: number;
  crc32: number;
  compressedSize: number;
  uncompressedSize: number;
  externalFileAttributes: number;
  relativeOffsetOfLocalHeader: number;
}

export class ZipStructureError extends Error {}

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

export function readCentralDirectory(fd: number, fileSize: number): CentralEntry[] {
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

  const entries: CentralEntry[] = [];
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== SIG_CENTRAL) throw new ZipStructureError(`central directory record ${i + 1} is damaged`);
    const nameLength = cd.readUInt16LE(p + 28);
    const extraLength = cd.readUInt16LE(p + 30);
    const commentLength = cd.readUInt16LE(p + 32);
    const end = p + 46 + nameLength + extraLength + commentLength;
    if (end > cd.length) throw new ZipStructureError(`central directory record ${i + 1} runs past the directory`);
    const entry: CentralEntry = {
      versionMadeBy: cd.readUInt16LE(p + 4),
      flags: cd.readUInt16LE(p + 8),
      compressionMethod: cd.readUInt16LE(p + 10),
      crc32: cd.readUInt32LE(p + 16),
      compressedSize: cd.readUInt32LE(p + 20),
      uncompressedSize: cd.readUInt32LE(p + 24),
      externalFileAttributes: cd.readUInt32LE(p + 38),
      relativeOffsetOfLocalHeader: cd.readUInt32LE(p + 42),
      // A copy, so the records do not keep the whole directory buffer alive.
      fileName: Buffer.from(cd.subarray(p + 46, p + 46 + nameLength)),
    };
    if (entry.flags & 0x1) throw new ZipStructureError(`entry ${entry.fileName.toString('utf8')} is encrypted with ZIP encryption, which Stowage does not use`);
    if (entry.uncompressedSize === MAX_U32 || entry.compressedSize === MAX_U32 || entry.relativeOffsetOfLocalHeader === MAX_U32) {
      applyZip64(entry, cd.subarray(p + 46 + nameLength, p + 46 + nameLength + extraLength));
    }
    if (entry.relativeOffsetOfLocalHeader + 30 > cdOffset) throw new ZipStructureError(`entry ${entry.fileName.toString('utf8')} points past the data area`);
    entries.push(entry);
    p = end;
  }
  return entries;
}

/** The zip64 extra field holds, in this order, only the values whose 32-bit field is 0xFFFFFFFF. */
function applyZip64(entry: CentralEntry, extra: Buffer): void {
  let q = 0;
  while (q + 4 <= extra.length) {
    const id = extra.readUInt16LE(q);
    const size = extra.readUInt16LE(q + 2);
    if (q + 4 + size > extra.length) break;
    if (id === 0x0001) {
      let r = q + 4;
      const take = (): number => {
        if (r + 8 > q + 4 + size) throw new ZipStructureError(`entry ${entry.fileName.toString('utf8')} has a short zip64 extra field`);
        const v = u64(extra, r);
        r += 8;
        return v;
      };
      if (entry.uncompressedSize === MAX_U32) entry.uncompressedSize = take();
      if (entry.compressedSize === MAX_U32) entry.compressedSize = take();
      if (entry.relativeOffsetOfLocalHeader === MAX_U32) entry.relativeOffsetOfLocalHeader = take();
      return;
    }
    q += 4 + size;
  }
  throw new ZipStructureError(`entry ${entry.fileName.toString('utf8')} needs a zip64 extra field and has none`);
}
