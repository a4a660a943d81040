/**
 * ZIP record layouts (PKWARE APPNOTE 6.3.x), the subset Stowage writes: local file headers,
 * data descriptors, central directory records, the end records, zip64 where needed, and the
 * extended-timestamp extra field (0x5455) so `unzip` restores exact mtimes.
 * See docs/FORMAT.md for which fields are set and why.
 */

export const SIG_LOCAL = 0x04034b50;
export const SIG_CENTRAL = 0x02014b50;
export const SIG_DESCRIPTOR = 0x08074b50;
export const SIG_EOCD = 0x06054b50;
export const SIG_ZIP64_EOCD = 0x06064b50;
export const SIG_ZIP64_LOCATOR = 0x07064b50;

export const METHOD_STORE = 0;
export const METHOD_DEFLATE = 8;

export const FLAG_DESCRIPTOR = 1 << 3;
export const FLAG_UTF8 = 1 << 11;

/** Values at or above this do not fit a 32-bit field and go to the zip64 extra field. */
export const MAX_U32 = 0xffffffff;
export const MAX_U16 = 0xffff;

/** Made by "Unix" (3) so that the external attributes carry st_mode; spec version 4.5 (zip64). */
const VERSION_MADE_BY = (3 << 8) | 45;
const VERSION_NEEDED_PLAIN = 20;
const VERSION_NEEDED_ZIP64 = 45;

export const S_IFMT = 0o170000;
export const S_IFREG = 0o100000;
export const S_IFDIR = 0o040000;
export const S_IFLNK = 0o120000;

/** MS-DOS date and time in local time, 2-second resolution, clamped to 1980..2107. */
export function dosDateTime(mtimeMs: number): { time: number; date: number } {
  const d = new Date(mtimeMs);
  let year = d.getFullYear();
  if (year < 1980) return { time: 0, date: (1 << 5) | 1 };
  if (year > 2107) year = 2107;
  const time = (d.getHours() << 11) | (d.getMinutes() << 5) | Math.floor(d.getSeconds() / 2);
  const date = ((year - 1980) << 9) | ((d.getMonth() + 1) << 5) | d.getDate();
  return { time, date };
}

function unixSeconds(mtimeMs: number): number {
  const s = Math.floor(mtimeMs / 1000);
  // The field is a signed 32-bit Unix time; clamp rather than wrap.
  return Math.max(-0x80000000, Math.min(0x7fffffff, s));
}

export interface EntryHeader {
  nameBytes: Buffer;
  method: number;
  flags: number;
  mtimeMs: number;
  crc32: number;
  compressedSize: number;
  uncompressedSize: number;
  /** Use zip64 sizes for this entry (local extra field + 8-byte descriptor sizes). */
  zip64: boolean;
}

function timestampExtra(mtimeMs: number): Buffer {
  const b = Buffer.alloc(9);
  b.writeUInt16LE(0x5455, 0);
  b.writeUInt16LE(5, 2);
  b.writeUInt8(1, 4); // mtime present
  b.writeInt32LE(unixSeconds(mtimeMs), 5);
  return b;
}

export function localHeader(h: EntryHeader): Buffer {
  const ts = timestampExtra(h.mtimeMs);
  const descriptor = (h.flags & FLAG_DESCRIPTOR) !== 0;
  let zip64Extra = Buffer.alloc(0);
  if (h.zip64) {
    // Sizes live here; with a data descriptor they are zero now and final in the descriptor.
    zip64Extra = Buffer.alloc(20);
    zip64Extra.writeUInt16LE(0x0001, 0);
    zip64Extra.writeUInt16LE(16, 2);
    zip64Extra.writeBigUInt64LE(BigInt(descriptor ? 0 : h.uncompressedSize), 4);
    zip64Extra.writeBigUInt64LE(BigInt(descriptor ? 0 : h.compressedSize), 12);
  }
  const extraLen = ts.length + zip64Extra.length;
  const b = Buffer.alloc(30 + h.nameBytes.length + extraLen);
  const { time, date } = dosDateTime(h.mtimeMs);
  b.writeUInt32LE(SIG_LOCAL, 0);
  b.writeUInt16LE(h.zip64 ? VERSION_NEEDED_ZIP64 : VERSION_NEEDED_PLAIN, 4);
  b.writeUInt16LE(h.flags, 6);
  b.writeUInt16LE(h.method, 8);
  b.writeUInt16LE(time, 10);
  b.writeUInt16LE(date, 12);
  b.writeUInt32LE(descriptor ? 0 : h.crc32, 14);
  b.writeUInt32LE(h.zip64 ? MAX_U32 : descriptor ? 0 : h.compressedSize, 18);
  b.writeUInt32LE(h.zip64 ? MAX_U32 : descriptor ? 0 : h.uncompressedSize, 22);
  b.writeUInt16LE(h.nameBytes.length, 26);
  b.writeUInt16LE(extraLen, 28);
  h.nameBytes.copy(b, 30);
  zip64Extra.copy(b, 30 + h.nameBytes.length);
  ts.copy(b, 30 + h.nameBytes.length + zip64Extra.length);
  return b;
}

export function dataDescriptor(h: EntryHeader): Buffer {
  if (h.zip64) {
    const b = Buffer.alloc(24);
    b.writeUInt32LE(SIG_DESCRIPTOR, 0);
    b.writeUInt32LE(h.crc32, 4);
    b.writeBigUInt64LE(BigInt(h.compressedSize), 8);
    b.writeBigUInt64LE(BigInt(h.uncompressedSize), 16);
    return b;
  }
  const b = Buffer.alloc(16);
  b.writeUInt32LE(SIG_DESCRIPTOR, 0);
  b.writeUInt32LE(h.crc32, 4);
  b.writeUInt32LE(h.compressedSize, 8);
  b.writeUInt32LE(h.uncompressedSize, 12);
  return b;
}

export function centralRecord(h: EntryHeader, mode: number, isDir: boolean, localOffset: number): Buffer {
  const needSizes = h.zip64 || h.uncompressedSize >= MAX_U32 || h.compressedSize >= MAX_U32;
  const needOffset = localOffset >= MAX_U32;
  const z64: Buffer[] = [];
  if (needSizes) {
    const s = Buffer.alloc(16);
    s.writeBigUInt64LE(BigInt(h.uncompressedSize), 0);
    s.writeBigUInt64LE(BigInt(h.compressedSize), 8);
    z64.push(s);
  }
  if (needOffset) {
    const o = Buffer.alloc(8);
    o.writeBigUInt64LE(BigInt(localOffset), 0);
    z64.push(o);
  }
  let zip64Extra = Buffer.alloc(0);
  if (z64.length) {
    const body = Buffer.concat(z64);
    zip64Extra = Buffer.alloc(4 + body.length);
    zip64Extra.writeUInt16LE(0x0001, 0);
    zip64Extra.writeUInt16LE(body.length, 2);
    body.copy(zip64Extra, 4);
  }
  const ts = timestampExtra(h.mtimeMs);
  const extraLen = zip64Extra.length + ts.length;
  const b = Buffer.alloc(46 + h.nameBytes.length + extraLen);
  const { time, date } = dosDateTime(h.mtimeMs);
  b.writeUInt32LE(SIG_CENTRAL, 0);
  b.writeUInt16LE(VERSION_MADE_BY, 4);
  b.writeUInt16LE(needSizes || needOffset || h.zip64 ? VERSION_NEEDED_ZIP64 : VERSION_NEEDED_PLAIN, 6);
  b.writeUInt16LE(h.flags, 8);
  b.writeUInt16LE(h.method, 10);
  b.writeUInt16LE(time, 12);
  b.writeUInt16LE(date, 14);
  b.writeUInt32LE(h.crc32, 16);
  b.writeUInt32LE(needSizes ? MAX_U32 : h.compressedSize, 20);
  b.writeUInt32LE(needSizes ? MAX_U32 : h.uncompressedSize, 24);
  b.writeUInt16LE(h.nameBytes.length, 28);
  b.writeUInt16LE(extraLen, 30);
  b.writeUInt16LE(0, 32); // comment length
  b.writeUInt16LE(0, 34); // disk number start
  b.writeUInt16LE(0, 36); // internal attributes
  b.writeUInt32LE((((mode & 0xffff) << 16) | (isDir ? 0x10 : 0)) >>> 0, 38);
  b.writeUInt32LE(needOffset ? MAX_U32 : localOffset, 42);
  h.nameBytes.copy(b, 46);
  zip64Extra.copy(b, 46 + h.nameBytes.length);
  ts.copy(b, 46 + h.nameBytes.length + zip64Extra.length);
  return b;
}

/** End records; zip64 end record and locator are added only when a count or offset overflows. */
export function endRecords(entryCount: number, cdOffset: number, cdSize: number): Buffer {
  const parts: Buffer[] = [];
  const zip64 = entryCount >= MAX_U16 || cdOffset >= MAX_U32 || cdSize >= MAX_U32;
  if (zip64) {
    const z = Buffer.alloc(56);
    z.writeUInt32LE(SIG_ZIP64_EOCD, 0);
    z.writeBigUInt64LE(44n, 4); // size of the rest of this record
    z.writeUInt16LE(VERSION_MADE_BY, 12);
    z.writeUInt16LE(VERSION_NEEDED_ZIP64, 14);
    z.writeUInt32LE(0, 16);
    z.writeUInt32LE(0, 20);
    z.writeBigUInt64LE(BigInt(entryCount), 24);
    z.writeBigUInt64LE(BigInt(entryCount), 32);
    z.writeBigUInt64LE(BigInt(cdSize), 40);
    z.writeBigUInt64LE(BigInt(cdOffset), 48);
    parts.push(z);
    const loc = Buffer.alloc(20);
    loc.writeUInt32LE(SIG_ZIP64_LOCATOR, 0);
    loc.writeUInt32LE(0, 4);
    loc.writeBigUInt64LE(BigInt(cdOffset + cdSize), 8);
    loc.writeUInt32LE(1, 16);
    parts.push(loc);
  }
  const e = Buffer.alloc(22);
  e.writeUInt32LE(SIG_EOCD, 0);
  e.writeUInt16LE(0, 4);
  e.writeUInt16LE(0, 6);
  e.writeUInt16LE(Math.min(entryCount, MAX_U16), 8);
  e.writeUInt16LE(Math.min(entryCount, MAX_U16), 10);
  e.writeUInt32LE(Math.min(cdSize, MAX_U32), 12);
  e.writeUInt32LE(Math.min(cdOffset, MAX_U32), 16);
  e.writeUInt16LE(0, 20);
  parts.push(e);
  return Buffer.concat(parts);
}
