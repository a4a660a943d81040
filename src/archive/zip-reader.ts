import crypto from 'node:crypto';
import fs from 'node:fs';
import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import { StowageError } from '../errors.js';
import { MANIFEST_NAME, parseManifest, type Manifest, type ManifestEntry } from './manifest.js';
import { S_IFDIR, S_IFLNK, S_IFMT } from './zip-format.js';
import { readCentralDirectory, ZipStructureError, type CentralEntry } from './zip-central.js';
import { readFully, readFullySync } from '../fs/fd.js';

/**
 * Opens a Stowage archive for verify and restore, and refuses anything hostile before a byte is
 * extracted: unsafe names (`..`, absolute, drive letters, backslashes, NUL), duplicates,
 * overlapping entries (the non-recursive zip bomb), impossible compression ratios, sizes that
 * disagree with the manifest, symlinks leaving their source, entries the manifest does not list
 * and the reverse. zip-central.ts parses the directory; inflate is node:zlib.
 */

/** Deflate cannot exceed ~1032:1; an entry claiming more is lying about its size. */
export const MAX_COMPRESSION_RATIO = 1100;

export interface ArchiveEntry {
  name: string;
  type: 'file' | 'dir' | 'symlink';
  size: number;
  compressedSize: number;
  /** The manifest's record of it (undefined only for the manifest itself). */
  manifest: ManifestEntry | undefined;
  raw: CentralEntry;
}

function unsafe(message: string): StowageError {
  return new StowageError('ARCHIVE_UNSAFE', `refusing this archive: ${message}. Nothing was changed`);
}

/** A path inside the archive that is safe to join under a target folder. */
export function checkEntryName(name: string): void {
  if (name.length === 0) throw unsafe('an entry has an empty name');
  if (name.includes('\0')) throw unsafe(`entry name contains a NUL byte: ${JSON.stringify(name)}`);
  if (name.includes('\\')) throw unsafe(`entry "${name}" contains a backslash (Windows separator or an escape attempt)`);
  if (name.startsWith('/')) throw unsafe(`entry "${name}" is an absolute path`);
  if (/^[a-zA-Z]:/.test(name)) throw unsafe(`entry "${name}" starts with a drive letter`);
  const parts = name.replace(/\/$/, '').split('/');
  for (const part of parts) {
    if (part === '..') throw unsafe(`entry "${name}" climbs out of its folder with ".."`);
    if (part === '.' || part === '') throw unsafe(`entry "${name}" has an empty or "." path segment`);
  }
}

function isPlainSegment(name: string): boolean {
  return name.length > 0 && name !== '.' && name !== '..' && !/[/\\\0]/.test(name) && !/^[a-zA-Z]:/.test(name);
}

function entryType(e: CentralEntry, name: string): 'file' | 'dir' | 'symlink' {
  const madeBy = e.versionMadeBy >> 8;
  const mode = madeBy === 3 ? (e.externalFileAttributes >>> 16) & S_IFMT : 0;
  if (name.endsWith('/') || mode === S_IFDIR) return 'dir';
  if (mode === S_IFLNK) return 'symlink';
  return 'file';
}

function decodeName(e: CentralEntry): string {
  return e.fileName.toString('utf8');
}

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
    zlib.inflateRaw(data, { maxOutputLength: expected + 1 }, (err, out) => (err ? reject(err) : resolve(out)));
  });
}

export class ArchiveReader {
  private constructor(
    private readonly fd: number,
    readonly manifest: Manifest,
    readonly entries: ArchiveEntry[],
    readonly archiveSize: number,
  ) {}

  static async open(file: string): Promise<ArchiveReader> {
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (err) {
      throw new StowageError('BACKUP_NOT_FOUND', `cannot open ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    try {
      const size = fs.fstatSync(fd).size;
      let raws: CentralEntry[];
      try {
        raws = readCentralDirectory(fd, size);
      } catch (err) {
        if (!(err instanceof ZipStructureError)) throw err;
        throw new StowageError('ARCHIVE_INVALID', `${file} is not a readable ZIP archive (${err.message}); it may be truncated, damaged, or not a backup at all`);
      }
      const { manifest, entries } = await checkStructure(fd, size, raws);
      return new ArchiveReader(fd, manifest, entries, size);
    } catch (err) {
      fs.closeSync(fd);
      if (err instanceof StowageError) throw err;
      throw new StowageError('ARCHIVE_INVALID', `${file} cannot be read as a Stowage backup: ${(err as Error).message}`);
    }
  }

  close(): void {
    fs.closeSync(this.fd);
  }

  /**
   * The entry's content, inflated, in chunks. The size is enforced: more or fewer bytes than
   * declared is an error, as is damaged deflate data; every such error is CHECKSUM_MISMATCH
   * naming the entry.
   *
   * Hand-written rather than yauzl's openReadStream: that reads 16 KiB at a time, with two
   * more reads per entry for the local header, and a restore of 20,000 files spent more time
   * in those reads than unzip took for the whole job. Here a small entry is one read and one
   * inflate call; a large one is read 1 MiB at a time.
   */
  readEntry(entry: ArchiveEntry): AsyncGenerator<Buffer> {
    return readEntryData(this.fd, this.archiveSize, entry.raw, entry.name);
  }

  /** True if `readWholeSync` may be used for this entry. */
  isSmall(entry: ArchiveEntry): boolean {
    return entry.raw.compressedSize <= SYNC_ENTRY_BYTES && entry.raw.uncompressedSize <= SYNC_ENTRY_BYTES;
  }

  /** A small entry's whole content, synchronously (size enforced, errors as in readEntry); valid until the next call. */
  readWholeSync(entry: ArchiveEntry): Buffer {
    return readSmallSync(this.fd, this.archiveSize, entry.raw, entry.name);
  }

  /** Reads an entry completely and checks its SHA-256 against the manifest. */
  async verifyEntry(entry: ArchiveEntry, onBytes?: (n: number) => void): Promise<void> {
    if (entry.type === 'dir' || !entry.manifest) return;
    if (this.isSmall(entry)) {
      const data = this.readWholeSync(entry);
      onBytes?.(data.length);
      checkDigest(entry, data.length, crypto.createHash('sha256').update(data).digest('hex'));
      return;
    }
    const hash = crypto.createHash('sha256');
    let size = 0;
    for await (const chunk of this.readEntry(entry)) {
      hash.update(chunk);
      size += chunk.length;
      onBytes?.(chunk.length);
    }
    checkDigest(entry, size, hash.digest('hex'));
  }
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
export function readSmallSync(fd: number, archiveSize: number, raw: CentralEntry, name: string): Buffer {
  const csize = raw.compressedSize;
  const expected = raw.uncompressedSize;
  if (csize > SYNC_ENTRY_BYTES || expected > SYNC_ENTRY_BYTES) throw new Error(`${name} is too large to read whole`);
  try {
    const offset = raw.relativeOffsetOfLocalHeader;
    const want = Math.min(LOCAL_HEADER_SLACK + raw.fileName.length + csize, archiveSize - offset);
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
      out = raw.compressionMethod === 8 ? zlib.inflateRawSync(data, { maxOutputLength: expected + 1, chunkSize: Math.max(64, expected + 1) }) : data;
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

async function* readEntryData(fd: number, archiveSize: number, raw: CentralEntry, name: string): AsyncGenerator<Buffer> {
  const csize = raw.compressedSize;
  const expected = raw.uncompressedSize;
  try {
    const offset = raw.relativeOffsetOfLocalHeader;
    // Whole in memory only when both sides are small: a 1 MB deflate stream can inflate to 1 GB.
    const whole = csize <= WHOLE_ENTRY_BYTES && expected <= WHOLE_ENTRY_BYTES;
    const want = Math.min(LOCAL_HEADER_SLACK + raw.fileName.length + (whole ? csize : 0), archiveSize - offset);
    let head = await readFully(fd, want, offset);
    if (head.length < 30 || head.readUInt32LE(0) !== 0x04034b50) throw new Error('local file header not found where the central directory says');
    const dataStart = 30 + head.readUInt16LE(26) + head.readUInt16LE(28);
    if (offset + dataStart + csize > archiveSize) throw new Error('entry data runs past the end of the archive (truncated)');
    if (whole) {
      if (head.length < dataStart + csize) head = await readFully(fd, dataStart + csize, offset);
      const data = head.subarray(dataStart, dataStart + csize);
      const out = raw.compressionMethod === 8 ? await inflateWhole(data, expected).catch(tooMany) : data;
      if (out.length !== expected) throw new Error(out.length > expected ? 'too many bytes in the stream' : 'not enough bytes in the stream');
      if (out.length) yield out;
      return;
    }
    let produced = 0;
    const chunks = readRange(fd, offset + dataStart, csize);
    const source = raw.compressionMethod === 8 ? Readable.from(chunks, { highWaterMark: 1 }).pipe(zlib.createInflateRaw({ chunkSize: 256 * 1024 })) : chunks;
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

export function checkDigest(entry: ArchiveEntry, size: number, digest: string): void {
  const m = entry.manifest!;
  if (size !== m.size) throw new StowageError('CHECKSUM_MISMATCH', `${entry.name}: ${size} bytes in the archive, ${m.size} in the manifest; the archive is damaged`);
  if (m.sha256 && digest !== m.sha256) throw new StowageError('CHECKSUM_MISMATCH', `${entry.name}: SHA-256 does not match the manifest; the archive is damaged or was altered`);
}

async function readSmallEntry(fd: number, archiveSize: number, entry: CentralEntry, limit: number): Promise<Buffer> {
  if (entry.uncompressedSize > limit) throw unsafe(`${decodeName(entry)} declares ${entry.uncompressedSize} bytes, more than the ${limit} allowed`);
  const parts: Buffer[] = [];
  for await (const chunk of readEntryData(fd, archiveSize, entry, decodeName(entry))) parts.push(chunk);
  return Buffer.concat(parts);
}

/** The manifest may list millions of entries, but not gigabytes of JSON. */
const MAX_MANIFEST_BYTES = 1024 * 1024 * 1024;

async function checkStructure(fd: number, archiveSize: number, raws: CentralEntry[]): Promise<{ manifest: Manifest; entries: ArchiveEntry[] }> {
  const byName = new Map<string, CentralEntry>();
  for (const e of raws) {
    const name = decodeName(e);
    checkEntryName(name);
    const key = name.replace(/\/$/, '');
    if (byName.has(key)) throw unsafe(`two entries are named "${key}"`);
    byName.set(key, e);
    if (e.compressionMethod !== 0 && e.compressionMethod !== 8) throw unsafe(`entry "${name}" uses compression method ${e.compressionMethod}; only stored and deflate are read`);
    if (e.compressionMethod === 0 && e.compressedSize !== e.uncompressedSize) {
      throw new StowageError('ARCHIVE_INVALID', `stored entry "${name}" has different compressed and uncompressed sizes; the archive is damaged`);
    }
    if (e.compressedSize > 0 && e.uncompressedSize / e.compressedSize > MAX_COMPRESSION_RATIO) {
      throw unsafe(`entry "${name}" claims a ${Math.round(e.uncompressedSize / e.compressedSize)}:1 compression ratio (limit ${MAX_COMPRESSION_RATIO}:1); this is what zip bombs look like`);
    }
  }
  checkNoOverlap(raws);

  const manifestRaw = byName.get(MANIFEST_NAME);
  if (!manifestRaw) throw new StowageError('ARCHIVE_INVALID', `not a Stowage backup: the archive has no ${MANIFEST_NAME} manifest (a ZIP made by another tool, or a damaged backup)`);
  const manifest = parseManifest((await readSmallEntry(fd, archiveSize, manifestRaw, MAX_MANIFEST_BYTES)).toString('utf8'));

  // A restore with --target writes each source to <target>/<source name> (a SQLite one to
  // <target>/<name>/<basename of its path>): a source named ".." emptied the folder above the
  // target, so names must be one plain path segment, and unique.
  const sourceNames = new Set<string>();
  for (const s of manifest.sources) {
    if (!isPlainSegment(s.name)) throw unsafe(`the manifest has a source name "${s.name}", which is not a plain folder name`);
    if (sourceNames.has(s.name)) throw unsafe(`the manifest lists source "${s.name}" twice`);
    sourceNames.add(s.name);
    const base = s.path.split(/[/\\]/).filter((p) => p !== '').pop() ?? '';
    if (s.kind === 'sqlite' && !isPlainSegment(base)) throw unsafe(`the manifest's SQLite source "${s.name}" has the path "${s.path}", which does not end in a file name`);
  }
  const listed = new Map<string, ManifestEntry>();
  for (const m of manifest.entries) {
    checkEntryName(m.path);
    const key = m.path.replace(/\/$/, '');
    if (listed.has(key)) throw unsafe(`the manifest lists "${key}" twice`);
    listed.set(key, m);
  }
  const entries: ArchiveEntry[] = [];
  const links = new Map<string, string>();
  for (const [key, raw] of byName) {
    const name = decodeName(raw);
    if (key === MANIFEST_NAME) continue;
    const m = listed.get(key);
    if (!m) throw unsafe(`entry "${name}" is not listed in the manifest`);
    const top = key.split('/')[0]!;
    if (!sourceNames.has(top)) throw unsafe(`entry "${name}" belongs to no source of this backup`);
    const type = entryType(raw, name);
    if (type !== m.type) throw unsafe(`entry "${name}" is a ${type} in the archive but a ${m.type} in the manifest`);
    if (raw.uncompressedSize !== m.size) throw unsafe(`entry "${name}" is ${raw.uncompressedSize} bytes in the archive but ${m.size} in the manifest`);
    if (type === 'symlink') links.set(key, (await readSmallEntry(fd, archiveSize, raw, 4096)).toString('utf8'));
    entries.push({ name: key, type, size: raw.uncompressedSize, compressedSize: raw.compressedSize, manifest: m, raw });
  }
  // Symlinks are checked once all are known: a lexical check of each alone let "a/l1 -> ../.."
  // plus "a/l2 -> l1/../../.." out of the source, and an entry "link/x" below a symlink entry
  // was written through the link (to wherever it pointed) or failed with EEXIST.
  if (links.size) {
    for (const e of entries) {
      const parts = e.name.split('/');
      for (let i = parts.length - 1; i > 0; i--) {
        const parent = parts.slice(0, i).join('/');
        if (links.has(parent)) throw unsafe(`entry "${e.name}" is inside symlink "${parent}"; extracting it would write through the link`);
      }
    }
    for (const [key, target] of links) {
      if (!symlinkTargetInside(key, target, links)) throw unsafe(`symlink "${key}" points to "${target}", outside its source`);
    }
  }
  for (const key of listed.keys()) {
    if (!byName.has(key)) throw new StowageError('ARCHIVE_INVALID', `the manifest lists "${key}" but the archive does not contain it; the archive is damaged`);
  }
  // Archive order: each folder before its contents, as written.
  entries.sort((a, b) => a.raw.relativeOffsetOfLocalHeader - b.raw.relativeOffsetOfLocalHeader);
  return { manifest, entries };
}

/** Local data ranges must not overlap: overlapping entries are how a 42 kB file inflates to 4 GB. */
function checkNoOverlap(raws: CentralEntry[]): void {
  const sorted = [...raws].sort((a, b) => a.relativeOffsetOfLocalHeader - b.relativeOffsetOfLocalHeader);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    // 30 bytes of local header at least, then the compressed data.
    if (cur.relativeOffsetOfLocalHeader < prev.relativeOffsetOfLocalHeader + 30 + prev.compressedSize) {
      throw unsafe(`entries "${decodeName(prev)}" and "${decodeName(cur)}" overlap in the file (a known zip-bomb construction)`);
    }
  }
}

/**
 * `link` is the archive path of the symlink (source/...); the target must resolve inside that
 * source. `links` (archive path -> target) are the archive's other symlinks: a path that goes
 * on through one of them is resolved through its target, as the kernel will, since "l1/.."
 * is not where "l1" is once l1 is a link.
 */
export function symlinkTargetInside(link: string, target: string, links: ReadonlyMap<string, string> = new Map()): boolean {
  const parts = link.split('/');
  const source = parts[0]!;
  if (source.length === 0) return false;
  const stack = parts.slice(1, -1);
  const badTarget = (t: string) => t.length === 0 || t.startsWith('/') || t.includes('\\') || t.includes('\0') || /^[a-zA-Z]:/.test(t);
  if (badTarget(target)) return false;
  // Segments still to walk, next one last.
  const pending = target.split('/').reverse();
  let hops = 0;
  while (pending.length) {
    const seg = pending.pop()!;
    if (seg === '' || seg === '.') continue;
    if (seg === '..') {
      if (stack.length === 0) return false;
      stack.pop();
      continue;
    }
    stack.push(seg);
    const through = pending.some((p) => p !== '' && p !== '.') ? links.get(`${source}/${stack.join('/')}`) : undefined;
    if (through === undefined) continue;
    // An intermediate link: continue from its folder with its target (a loop is refused, as ELOOP).
    if (++hops > 40 || badTarget(through)) return false;
    stack.pop();
    pending.push(...through.split('/').reverse());
  }
  return true;
}
