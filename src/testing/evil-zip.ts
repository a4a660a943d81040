import crypto from 'node:crypto';
import zlib from 'node:zlib';

/**
 * A ZIP builder for hostile-input tests, written byte by byte and independent of the product's
 * writer: every field that a reader trusts (names, sizes, CRCs, external attributes, offsets,
 * local versus central records) can be set to a lie. PKWARE APPNOTE 6.3.x layouts, no zip64.
 */

export const S_IFREG = 0o100000;
export const S_IFDIR = 0o040000;
export const S_IFLNK = 0o120000;

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const FLAG_UTF8 = 1 << 11;

export interface RawEntry {
  /** The name in the central directory (a string is written as UTF-8). */
  name: string | Buffer;
  /** The name in the local header (default: `name`). */
  localName?: string | Buffer;
  /** Uncompressed content (for a symlink: its target). */
  data?: Buffer | string;
  /** 0 store, 8 deflate (default: deflate when there is data, store otherwise). */
  method?: number;
  /** The bytes written as the entry's data (default: `data` stored or deflated as `method` says). */
  payload?: Buffer;
  /** CRC-32 written to both headers (default: the true CRC of `data`). */
  crc32?: number;
  /** Sizes written to the central directory (default: the true ones). */
  compressedSize?: number;
  uncompressedSize?: number;
  /** Sizes written to the local header (default: as in the central directory). */
  localCompressedSize?: number;
  localUncompressedSize?: number;
  /** Unix st_mode, type bits included (default: 0100644, or 040755 for names ending in "/"). */
  mode?: number;
  /** The raw 32-bit external attributes (default: mode << 16, plus the MS-DOS folder bit for folders). */
  externalAttributes?: number;
  /** Version made by (default: Unix, 3 << 8 | 20, so that the external attributes carry st_mode). */
  versionMadeBy?: number;
  /** General-purpose flags (default: UTF-8 names). */
  flags?: number;
  /** Modification time (default: 2020-01-02T03:04:06Z). */
  mtime?: Date;
  /** Write no local header or data of its own: point the central record at entry #i's local header. */
  shareLocalWith?: number;
  /** The local-header offset written to the central record (default: where its local header is). */
  localOffset?: number;
  /** Write the local header and data but leave the entry out of the central directory. */
  noCentral?: boolean;
}

export interface BuildOptions {
  /** Entry count written to the end record (default: the number of central records). */
  eocdEntryCount?: number;
  /** Archive comment. */
  comment?: string;
}

function bytes(v: string | Buffer | undefined): Buffer {
  if (v === undefined) return Buffer.alloc(0);
  return typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
}

function dosDateTime(d: Date): { time: number; date: number } {
  const time = (d.getUTCHours() << 11) | (d.getUTCMinutes() << 5) | Math.floor(d.getUTCSeconds() / 2);
  const date = ((d.getUTCFullYear() - 1980) << 9) | ((d.getUTCMonth() + 1) << 5) | d.getUTCDate();
  return { time, date };
}

export function crc32(data: Buffer): number {
  return zlib.crc32(data) >>> 0;
}

export function sha256(data: Buffer | string): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}

interface Resolved {
  name: Buffer;
  localName: Buffer;
  method: number;
  payload: Buffer;
  crc: number;
  compressedSize: number;
  uncompressedSize: number;
  localCompressedSize: number;
  localUncompressedSize: number;
  externalAttributes: number;
  versionMadeBy: number;
  flags: number;
  time: number;
  date: number;
}

function resolve(e: RawEntry): Resolved {
  const name = bytes(e.name);
  const data = bytes(e.data);
  const method = e.method ?? (data.length > 0 ? 8 : 0);
  const payload = e.payload ?? (method === 8 ? zlib.deflateRawSync(data) : data);
  const isDir = name.toString('utf8').endsWith('/');
  const mode = e.mode ?? (isDir ? S_IFDIR | 0o755 : S_IFREG | 0o644);
  const compressedSize = e.compressedSize ?? payload.length;
  const uncompressedSize = e.uncompressedSize ?? data.length;
  const { time, date } = dosDateTime(e.mtime ?? new Date('2020-01-02T03:04:06Z'));
  return {
    name,
    localName: e.localName === undefined ? name : bytes(e.localName),
    method,
    payload,
    crc: e.crc32 ?? crc32(data),
    compressedSize,
    uncompressedSize,
    localCompressedSize: e.localCompressedSize ?? compressedSize,
    localUncompressedSize: e.localUncompressedSize ?? uncompressedSize,
    externalAttributes: (e.externalAttributes ?? ((mode & 0xffff) << 16) | (isDir ? 0x10 : 0)) >>> 0,
    versionMadeBy: e.versionMadeBy ?? ((3 << 8) | 20),
    flags: e.flags ?? FLAG_UTF8,
    time,
    date,
  };
}

function localHeader(r: Resolved): Buffer {
  const b = Buffer.alloc(30 + r.localName.length);
  b.writeUInt32LE(SIG_LOCAL, 0);
  b.writeUInt16LE(20, 4);
  b.writeUInt16LE(r.flags, 6);
  b.writeUInt16LE(r.method, 8);
  b.writeUInt16LE(r.time, 10);
  b.writeUInt16LE(r.date, 12);
  b.writeUInt32LE(r.crc, 14);
  b.writeUInt32LE(r.localCompressedSize >>> 0, 18);
  b.writeUInt32LE(r.localUncompressedSize >>> 0, 22);
  b.writeUInt16LE(r.localName.length, 26);
  b.writeUInt16LE(0, 28);
  r.localName.copy(b, 30);
  return b;
}

function centralRecord(r: Resolved, offset: number): Buffer {
  const b = Buffer.alloc(46 + r.name.length);
  b.writeUInt32LE(SIG_CENTRAL, 0);
  b.writeUInt16LE(r.versionMadeBy, 4);
  b.writeUInt16LE(20, 6);
  b.writeUInt16LE(r.flags, 8);
  b.writeUInt16LE(r.method, 10);
  b.writeUInt16LE(r.time, 12);
  b.writeUInt16LE(r.date, 14);
  b.writeUInt32LE(r.crc, 16);
  b.writeUInt32LE(r.compressedSize >>> 0, 20);
  b.writeUInt32LE(r.uncompressedSize >>> 0, 24);
  b.writeUInt16LE(r.name.length, 28);
  b.writeUInt16LE(0, 30); // extra length
  b.writeUInt16LE(0, 32); // comment length
  b.writeUInt16LE(0, 34); // disk number
  b.writeUInt16LE(0, 36); // internal attributes
  b.writeUInt32LE(r.externalAttributes, 38);
  b.writeUInt32LE(offset >>> 0, 42);
  r.name.copy(b, 46);
  return b;
}

/** Local headers and data in order, then the central directory, then the end record. */
export function buildZip(entries: RawEntry[], options: BuildOptions = {}): Buffer {
  const parts: Buffer[] = [];
  let offset = 0;
  const resolved = entries.map(resolve);
  const localOffsets: number[] = [];
  entries.forEach((e, i) => {
    localOffsets.push(offset);
    if (e.shareLocalWith !== undefined) return;
    const r = resolved[i]!;
    const h = localHeader(r);
    parts.push(h, r.payload);
    offset += h.length + r.payload.length;
  });
  const cdOffset = offset;
  let count = 0;
  entries.forEach((e, i) => {
    if (e.noCentral) return;
    const at = e.localOffset ?? (e.shareLocalWith !== undefined ? localOffsets[e.shareLocalWith]! : localOffsets[i]!);
    const c = centralRecord(resolved[i]!, at);
    parts.push(c);
    offset += c.length;
    count++;
  });
  const comment = bytes(options.comment);
  const eocd = Buffer.alloc(22 + comment.length);
  eocd.writeUInt32LE(SIG_EOCD, 0);
  eocd.writeUInt16LE(0, 4);
  eocd.writeUInt16LE(0, 6);
  eocd.writeUInt16LE(options.eocdEntryCount ?? count, 8);
  eocd.writeUInt16LE(options.eocdEntryCount ?? count, 10);
  eocd.writeUInt32LE(offset - cdOffset, 12);
  eocd.writeUInt32LE(cdOffset, 16);
  eocd.writeUInt16LE(comment.length, 20);
  comment.copy(eocd, 22);
  parts.push(eocd);
  return Buffer.concat(parts);
}

/* ---------------------------------------------------------------------------------------- */
/* Stowage-shaped archives: a tree, a manifest that describes it, and the manifest entry.    */

export interface TreeItem {
  /** Archive path: `files/a.txt`, `files/sub/` (folders end in "/"). */
  path: string;
  type?: 'file' | 'dir' | 'symlink';
  /** File content, or a symlink's target. */
  data?: Buffer | string;
  /** Permission bits (default 0644 for files, 0755 for folders, 0777 for symlinks). */
  perm?: number;
}

export const MANIFEST_NAME = 'stowage.json';
const MTIME = '2020-01-02T03:04:06.000Z';

function typeOf(item: TreeItem): 'file' | 'dir' | 'symlink' {
  return item.type ?? (item.path.endsWith('/') ? 'dir' : 'file');
}

function permOf(item: TreeItem): number {
  const type = typeOf(item);
  return item.perm ?? (type === 'dir' ? 0o755 : type === 'symlink' ? 0o777 : 0o644);
}

export interface ManifestEntryJson {
  path: string;
  type: 'file' | 'dir' | 'symlink';
  size: number;
  mode: string;
  mtime: string;
  sha256?: string;
}

/** The manifest record of a tree item, as Stowage writes it. */
export function manifestEntry(item: TreeItem): ManifestEntryJson {
  const type = typeOf(item);
  const data = bytes(item.data);
  const out: ManifestEntryJson = { path: item.path, type, size: type === 'dir' ? 0 : data.length, mode: `0${permOf(item).toString(8).padStart(3, '0')}`, mtime: MTIME };
  if (type !== 'dir') out.sha256 = sha256(data);
  return out;
}

export interface SourceJson {
  name: string;
  kind: string;
  path: string;
  files: number;
  dirs: number;
  symlinks: number;
  bytes: number;
  excludes: string[];
}

export interface ManifestJson {
  format: string;
  formatVersion: number;
  id: string;
  key: string;
  name: string;
  description: string;
  createdAt: string;
  trigger: string;
  hostname: string;
  app: { name: string; version: string; labels: Record<string, string> };
  stowage: { version: string };
  sources: SourceJson[];
  excludes: string[];
  warnings: Array<{ path: string; reason: string }>;
  entries: ManifestEntryJson[];
}

/** A valid manifest (format 1) for `items`, all in one `dir` source named `files` unless told. */
export function validManifest(items: TreeItem[], sources: string[] = ['files']): ManifestJson {
  const entries = items.map(manifestEntry);
  return {
    format: 'stowage-backup',
    formatVersion: 1,
    id: '00000000-0000-4000-8000-000000000000',
    key: 'hostile.zip',
    name: 'hostile',
    description: 'built by hand for a test',
    createdAt: MTIME,
    trigger: 'manual',
    hostname: 'test',
    app: { name: 't', version: '1.0.0', labels: {} },
    stowage: { version: '0.1.0' },
    sources: sources.map((name) => {
      const mine = entries.filter((e) => e.path.startsWith(`${name}/`));
      return {
        name,
        kind: 'dir',
        path: `/original/${name}`,
        files: mine.filter((e) => e.type === 'file').length,
        dirs: mine.filter((e) => e.type === 'dir').length,
        symlinks: mine.filter((e) => e.type === 'symlink').length,
        bytes: mine.reduce((a, e) => a + (e.type === 'file' ? e.size : 0), 0),
        excludes: [],
      };
    }),
    excludes: [],
    warnings: [],
    entries,
  };
}

/** The ZIP entry of a tree item: Unix external attributes with the right type bits. */
export function rawEntry(item: TreeItem): RawEntry {
  const type = typeOf(item);
  const typeBits = type === 'dir' ? S_IFDIR : type === 'symlink' ? S_IFLNK : S_IFREG;
  return { name: item.path, data: item.data ?? '', method: type === 'file' && bytes(item.data).length > 0 ? 8 : 0, mode: typeBits | permOf(item) };
}

/** The manifest as the last entry (deflated, as Stowage writes it). */
export function manifestRawEntry(manifest: ManifestJson | string | Buffer): RawEntry {
  const text = typeof manifest === 'string' || Buffer.isBuffer(manifest) ? manifest : JSON.stringify(manifest, null, 2);
  return { name: MANIFEST_NAME, data: text, method: 8 };
}

/** Entries of a complete, valid Stowage archive of `items` (manifest last); tests then corrupt them. */
export function stowageEntries(items: TreeItem[], manifest: ManifestJson | string | Buffer = validManifest(items)): RawEntry[] {
  return [...items.map(rawEntry), manifestRawEntry(manifest)];
}

/* ---------------------------------------------------------------------------------------- */
/* Reading a real archive's central directory, to damage a product-written backup precisely. */

export interface CentralInfo {
  name: string;
  method: number;
  compressedSize: number;
  uncompressedSize: number;
  localOffset: number;
  /** Where the entry's data starts (after its local header). */
  dataStart: number;
}

export function listCentralDirectory(zip: Buffer): CentralInfo[] {
  let eocd = -1;
  for (let i = zip.length - 22; i >= Math.max(0, zip.length - 22 - 0xffff); i--) {
    if (zip.readUInt32LE(i) === SIG_EOCD) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new Error('no end of central directory record');
  const count = zip.readUInt16LE(eocd + 10);
  let p = zip.readUInt32LE(eocd + 16);
  const out: CentralInfo[] = [];
  for (let i = 0; i < count; i++) {
    if (zip.readUInt32LE(p) !== SIG_CENTRAL) throw new Error(`no central record at ${p}`);
    const method = zip.readUInt16LE(p + 10);
    let compressedSize = zip.readUInt32LE(p + 20);
    let uncompressedSize = zip.readUInt32LE(p + 24);
    const nameLen = zip.readUInt16LE(p + 28);
    const extraLen = zip.readUInt16LE(p + 30);
    const commentLen = zip.readUInt16LE(p + 32);
    let localOffset = zip.readUInt32LE(p + 42);
    const name = zip.subarray(p + 46, p + 46 + nameLen).toString('utf8');
    // zip64 extended information, in the order the fields overflowed.
    let x = p + 46 + nameLen;
    const xEnd = x + extraLen;
    while (x + 4 <= xEnd) {
      const id = zip.readUInt16LE(x);
      const len = zip.readUInt16LE(x + 2);
      if (id === 0x0001) {
        let q = x + 4;
        if (uncompressedSize === 0xffffffff) {
          uncompressedSize = Number(zip.readBigUInt64LE(q));
          q += 8;
        }
        if (compressedSize === 0xffffffff) {
          compressedSize = Number(zip.readBigUInt64LE(q));
          q += 8;
        }
        if (localOffset === 0xffffffff) localOffset = Number(zip.readBigUInt64LE(q));
      }
      x += 4 + len;
    }
    const dataStart = localOffset + 30 + zip.readUInt16LE(localOffset + 26) + zip.readUInt16LE(localOffset + 28);
    out.push({ name, method, compressedSize, uncompressedSize, localOffset, dataStart });
    p = xEnd + commentLen;
  }
  return out;
}
