import crypto from 'node:crypto';
import fs from 'node:fs';
import { StowageError } from '../errors.js';
import {
  MANIFEST_NAME,
  checkManifestHeader,
  entriesNotArray,
  manifestEntryProblem,
  notJson,
  parseManifest,
  type Manifest,
  type ManifestEntry,
  type ManifestHeader,
} from './manifest.js';
import { ManifestScanner, ManifestSyntaxError } from './manifest-stream.js';
import { S_IFDIR, S_IFLNK, S_IFMT } from './zip-format.js';
import { readCentralDirectory, ZipStructureError, type CentralDirectory } from './zip-central.js';
import { readEntryData, readSmallSync, SYNC_ENTRY_BYTES } from './zip-entry-data.js';

/**
 * Opens a Stowage archive for verify and restore, and refuses anything hostile before a byte is
 * extracted: unsafe names (`..`, absolute, drive letters, backslashes, NUL), duplicates,
 * overlapping entries (the non-recursive zip bomb), impossible compression ratios, sizes that
 * disagree with the manifest, symlinks leaving their source, entries the manifest does not list
 * and the reverse. zip-central.ts parses the directory, manifest-stream.ts the manifest,
 * zip-entry-data.ts reads content; inflate is node:zlib.
 *
 * Entries are numbers (their index in the central directory), and what the manifest says of
 * each is kept in typed arrays beside the directory's: with an object per entry and the parsed
 * manifest, a restore's peak RSS grew with the number of files (175 MB for 25,000 entries,
 * see docs/PERFORMANCE.md).
 */

/** Deflate cannot exceed ~1032:1; an entry claiming more is lying about its size. */
export const MAX_COMPRESSION_RATIO = 1100;

export type EntryType = 'file' | 'dir' | 'symlink';
/** An entry of an open archive: its index in the central directory. */
export type EntryId = number;

const TYPES: readonly EntryType[] = ['file', 'dir', 'symlink'];
const TYPE_CODE: Readonly<Record<string, number>> = { file: 0, dir: 1, symlink: 2 };
const LISTED = 1;
const HAS_SHA256 = 2;
const NO_ID = -1;

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


function entryType(cd: CentralDirectory, i: number, name: string): EntryType {
  const mode = cd.unixMode[i]! & S_IFMT;
  if (name.endsWith('/') || mode === S_IFDIR) return 'dir';
  if (mode === S_IFLNK) return 'symlink';
  return 'file';
}

/** The name without a folder's trailing "/": how entries are matched and looked up. */
function keyEnd(cd: CentralDirectory, i: number): number {
  const end = cd.nameStart[i + 1]!;
  return end > cd.nameStart[i]! && cd.names[end - 1] === 0x2f ? end - 1 : end;
}

/** What the manifest says of each entry, by entry id; filled while the manifest streams in. */
class ManifestColumns {
  readonly flags: Uint8Array;
  readonly type: Uint8Array;
  readonly size: Float64Array;
  readonly mode: Uint16Array;
  readonly mtimeMs: Float64Array;
  /** -1: not recorded. */
  readonly uid: Float64Array;
  readonly gid: Float64Array;
  /** 32 bytes per entry. */
  readonly sha256: Buffer;

  constructor(count: number) {
    this.flags = new Uint8Array(count);
    this.type = new Uint8Array(count);
    this.size = new Float64Array(count);
    this.mode = new Uint16Array(count);
    this.mtimeMs = new Float64Array(count);
    this.uid = new Float64Array(count);
    this.gid = new Float64Array(count);
    this.sha256 = Buffer.alloc(count * 32);
  }

  set(i: number, m: ManifestEntry): void {
    this.flags[i] = LISTED | (m.sha256 ? HAS_SHA256 : 0);
    this.type[i] = TYPE_CODE[m.type]!;
    this.size[i] = m.size;
    this.mode[i] = parseInt(m.mode, 8);
    this.mtimeMs[i] = Date.parse(m.mtime);
    this.uid[i] = m.uid ?? -1;
    this.gid[i] = m.gid ?? -1;
    if (m.sha256) this.sha256.write(m.sha256, i * 32, 32, 'hex');
  }
}

export class ArchiveReader {
  private constructor(
    private readonly fd: number,
    readonly archiveSize: number,
    private readonly cd: CentralDirectory,
    private readonly listed: ManifestColumns,
    /** Entry ids sorted by name key, for `find`. */
    private readonly byName: Uint32Array,
    private readonly manifestId: EntryId,
    /** The manifest without its entries. */
    readonly header: ManifestHeader,
    /** Every entry but the manifest, in archive order: each folder before its contents. */
    readonly order: Uint32Array,
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
      let cd: CentralDirectory;
      try {
        cd = readCentralDirectory(fd, size);
      } catch (err) {
        if (!(err instanceof ZipStructureError)) throw err;
        throw new StowageError('ARCHIVE_INVALID', `${file} is not a readable ZIP archive (${err.message}); it may be truncated, damaged, or not a backup at all`);
      }
      const c = await checkStructure(fd, size, cd);
      return new ArchiveReader(fd, size, cd, c.listed, c.byName, c.manifestId, c.header, c.order);
    } catch (err) {
      fs.closeSync(fd);
      if (err instanceof StowageError) throw err;
      throw new StowageError('ARCHIVE_INVALID', `${file} cannot be read as a Stowage backup: ${(err as Error).message}`);
    }
  }

  close(): void {
    fs.closeSync(this.fd);
  }

  /** The entry's path in the archive (`<source>/...`; folders without their trailing "/"). */
  name(id: EntryId): string {
    return this.cd.names.toString('utf8', this.cd.nameStart[id], keyEnd(this.cd, id));
  }

  type(id: EntryId): EntryType {
    return TYPES[this.listed.type[id]!]!;
  }

  size(id: EntryId): number {
    return this.cd.size[id]!;
  }

  /** Permission bits (0o7777). */
  mode(id: EntryId): number {
    return this.listed.mode[id]!;
  }

  mtimeMs(id: EntryId): number {
    return this.listed.mtimeMs[id]!;
  }

  /** The recorded owner, if the manifest has one. */
  owner(id: EntryId): { uid: number; gid: number } | undefined {
    const uid = this.listed.uid[id]!;
    const gid = this.listed.gid[id]!;
    return uid >= 0 && gid >= 0 ? { uid, gid } : undefined;
  }

  /** The entry named `name` (a folder with or without its "/"), or -1. */
  find(name: string): EntryId | -1 {
    const id = findKey(this.cd, this.byName, Buffer.from(name.replace(/\/$/, ''), 'utf8'));
    return id === this.manifestId ? NO_ID : id;
  }

  /** The whole manifest, entries included, parsed into objects (for `show`; restore and verify do not need it). */
  async readManifest(): Promise<Manifest> {
    return parseManifest((await readWhole(this.fd, this.archiveSize, this.cd, this.manifestId, MAX_MANIFEST_BYTES)).toString('utf8'));
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
  readEntry(id: EntryId): AsyncGenerator<Buffer> {
    return readEntryData(this.fd, this.archiveSize, this.cd, id, this.name(id));
  }

  /** True if `readWholeSync` may be used for this entry. */
  isSmall(id: EntryId): boolean {
    return this.cd.compressedSize[id]! <= SYNC_ENTRY_BYTES && this.cd.size[id]! <= SYNC_ENTRY_BYTES;
  }

  /** A small entry's whole content, synchronously (size enforced, errors as in readEntry); valid until the next call. */
  readWholeSync(id: EntryId): Buffer {
    return readSmallSync(this.fd, this.archiveSize, this.cd, id, this.name(id));
  }

  /** Throws CHECKSUM_MISMATCH unless `size` and `digest` (a SHA-256) are what the manifest records. */
  checkDigest(id: EntryId, size: number, digest: Buffer): void {
    if (size !== this.listed.size[id]) throw new StowageError('CHECKSUM_MISMATCH', `${this.name(id)}: ${size} bytes in the archive, ${this.listed.size[id]} in the manifest; the archive is damaged`);
    if (this.listed.flags[id]! & HAS_SHA256 && digest.compare(this.listed.sha256, id * 32, id * 32 + 32) !== 0) {
      throw new StowageError('CHECKSUM_MISMATCH', `${this.name(id)}: SHA-256 does not match the manifest; the archive is damaged or was altered`);
    }
  }

  /** Reads an entry completely and checks its SHA-256 against the manifest. */
  async verifyEntry(id: EntryId, onBytes?: (n: number) => void): Promise<void> {
    if (this.type(id) === 'dir') return;
    if (this.isSmall(id)) {
      const data = this.readWholeSync(id);
      onBytes?.(data.length);
      this.checkDigest(id, data.length, crypto.createHash('sha256').update(data).digest());
      return;
    }
    const hash = crypto.createHash('sha256');
    let size = 0;
    for await (const chunk of this.readEntry(id)) {
      hash.update(chunk);
      size += chunk.length;
      onBytes?.(chunk.length);
    }
    this.checkDigest(id, size, hash.digest());
  }
}

/** Binary search of `byName` for `key` (name bytes without a trailing "/"); -1 if absent. */
function findKey(cd: CentralDirectory, byName: Uint32Array, key: Buffer): number {
  let lo = 0;
  let hi = byName.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const id = byName[mid]!;
    const c = key.compare(cd.names, cd.nameStart[id], keyEnd(cd, id));
    if (c === 0) return id;
    if (c > 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return NO_ID;
}

async function readWhole(fd: number, archiveSize: number, cd: CentralDirectory, i: number, limit: number): Promise<Buffer> {
  if (cd.size[i]! > limit) throw unsafe(`${cd.name(i)} declares ${cd.size[i]} bytes, more than the ${limit} allowed`);
  const parts: Buffer[] = [];
  for await (const chunk of readEntryData(fd, archiveSize, cd, i, cd.name(i))) parts.push(chunk);
  return Buffer.concat(parts);
}

/** The manifest may list millions of entries, but not gigabytes of JSON. */
const MAX_MANIFEST_BYTES = 1024 * 1024 * 1024;

/** Ids 0..count-1 sorted by `compare`, ties in id order. */
function sortedIds(count: number, compare: (a: number, b: number) => number): Uint32Array {
  const ids = new Uint32Array(count);
  for (let i = 0; i < count; i++) ids[i] = i;
  return ids.sort((a, b) => compare(a, b) || a - b);
}

/**
 * Every check of section 5 of docs/FORMAT.md, in the order the messages take precedence: the
 * directory's own records, then the manifest's header, its entries' shape, its sources, its
 * names, then each entry against its manifest record, symlinks, and what the manifest lists
 * that the archive lacks. Problems found while the manifest streams in are held until then.
 */
async function checkStructure(fd: number, archiveSize: number, cd: CentralDirectory) {
  const n = cd.count;
  const names = cd.names;
  const byName = sortedIds(n, (a, b) => names.compare(names, cd.nameStart[b], keyEnd(cd, b), cd.nameStart[a], keyEnd(cd, a)));
  // In a run of equal names, every one after the first (in directory order) is a duplicate.
  const duplicate = new Uint8Array(n);
  for (let k = 1; k < n; k++) {
    const a = byName[k - 1]!;
    const b = byName[k]!;
    if (names.compare(names, cd.nameStart[b], keyEnd(cd, b), cd.nameStart[a], keyEnd(cd, a)) === 0) duplicate[b] = 1;
  }
  for (let i = 0; i < n; i++) {
    const name = cd.name(i);
    checkEntryName(name);
    if (duplicate[i]) throw unsafe(`two entries are named "${name.replace(/\/$/, '')}"`);
    const method = cd.method[i]!;
    if (method !== 0 && method !== 8) throw unsafe(`entry "${name}" uses compression method ${method}; only stored and deflate are read`);
    const csize = cd.compressedSize[i]!;
    const size = cd.size[i]!;
    if (method === 0 && csize !== size) {
      throw new StowageError('ARCHIVE_INVALID', `stored entry "${name}" has different compressed and uncompressed sizes; the archive is damaged`);
    }
    if (csize > 0 && size / csize > MAX_COMPRESSION_RATIO) {
      throw unsafe(`entry "${name}" claims a ${Math.round(size / csize)}:1 compression ratio (limit ${MAX_COMPRESSION_RATIO}:1); this is what zip bombs look like`);
    }
  }
  const byOffset = sortedIds(n, (a, b) => cd.localOffset[a]! - cd.localOffset[b]!);
  checkNoOverlap(cd, byOffset);

  const manifestId = findKey(cd, byName, Buffer.from(MANIFEST_NAME));
  if (manifestId === NO_ID) throw new StowageError('ARCHIVE_INVALID', `not a Stowage backup: the archive has no ${MANIFEST_NAME} manifest (a ZIP made by another tool, or a damaged backup)`);
  if (cd.size[manifestId]! > MAX_MANIFEST_BYTES) throw unsafe(`${cd.name(manifestId)} declares ${cd.size[manifestId]} bytes, more than the ${MAX_MANIFEST_BYTES} allowed`);

  const listed = new ManifestColumns(n);
  let shapeProblem: StowageError | null = null;
  let listingProblem: StowageError | null = null;
  let firstMissing: string | undefined;
  // Paths the manifest lists that the archive lacks (only damaged archives have any).
  const missing = new Set<string>();
  const scanner = new ManifestScanner((value, index) => {
    if (shapeProblem) return;
    shapeProblem = manifestEntryProblem(value, index);
    if (shapeProblem || listingProblem) return;
    const m = value as ManifestEntry;
    try {
      checkEntryName(m.path);
    } catch (err) {
      listingProblem = err as StowageError;
      return;
    }
    const key = m.path.replace(/\/$/, '');
    const id = findKey(cd, byName, Buffer.from(key, 'utf8'));
    const twice = id === NO_ID ? missing.has(key) : (listed.flags[id]! & LISTED) !== 0;
    if (twice) listingProblem = unsafe(`the manifest lists "${key}" twice`);
    else if (id === NO_ID) {
      missing.add(key);
      firstMissing ??= key;
    } else listed.set(id, m);
  });
  try {
    for await (const chunk of readEntryData(fd, archiveSize, cd, manifestId, MANIFEST_NAME)) scanner.push(chunk);
  } catch (err) {
    if (err instanceof ManifestSyntaxError) throw notJson(err);
    throw err;
  }
  let scanned;
  try {
    scanned = scanner.end();
  } catch (err) {
    throw err instanceof ManifestSyntaxError ? notJson(err) : err;
  }
  const header = checkManifestHeader(scanned.top);
  if (!scanned.entriesStreamed) throw entriesNotArray();
  if (shapeProblem) throw shapeProblem;

  // A restore with --target writes each source to <target>/<source name> (a SQLite one to
  // <target>/<name>/<basename of its path>): a source named ".." emptied the folder above the
  // target, so names must be one plain path segment, and unique.
  const sourceNames = new Set<string>();
  for (const s of header.sources) {
    if (!isPlainSegment(s.name)) throw unsafe(`the manifest has a source name "${s.name}", which is not a plain folder name`);
    if (sourceNames.has(s.name)) throw unsafe(`the manifest lists source "${s.name}" twice`);
    sourceNames.add(s.name);
    const base = s.path.split(/[/\\]/).filter((p) => p !== '').pop() ?? '';
    if (s.kind === 'sqlite' && !isPlainSegment(base)) throw unsafe(`the manifest's SQLite source "${s.name}" has the path "${s.path}", which does not end in a file name`);
  }
  if (listingProblem) throw listingProblem;

  const links = new Map<string, string>();
  for (let i = 0; i < n; i++) {
    if (i === manifestId) continue;
    const name = cd.name(i);
    const key = name.replace(/\/$/, '');
    if (!(listed.flags[i]! & LISTED)) throw unsafe(`entry "${name}" is not listed in the manifest`);
    const top = key.split('/')[0]!;
    if (!sourceNames.has(top)) throw unsafe(`entry "${name}" belongs to no source of this backup`);
    const type = entryType(cd, i, name);
    const listedType = TYPES[listed.type[i]!]!;
    if (type !== listedType) throw unsafe(`entry "${name}" is a ${type} in the archive but a ${listedType} in the manifest`);
    if (cd.size[i] !== listed.size[i]) throw unsafe(`entry "${name}" is ${cd.size[i]} bytes in the archive but ${listed.size[i]} in the manifest`);
    if (type === 'symlink') links.set(key, (await readWhole(fd, archiveSize, cd, i, 4096)).toString('utf8'));
  }
  // Symlinks are checked once all are known: a lexical check of each alone let "a/l1 -> ../.."
  // plus "a/l2 -> l1/../../.." out of the source, and an entry "link/x" below a symlink entry
  // was written through the link (to wherever it pointed) or failed with EEXIST.
  if (links.size) {
    for (let i = 0; i < n; i++) {
      if (i === manifestId) continue;
      const key = cd.name(i).replace(/\/$/, '');
      const parts = key.split('/');
      for (let k = parts.length - 1; k > 0; k--) {
        const parent = parts.slice(0, k).join('/');
        if (links.has(parent)) throw unsafe(`entry "${key}" is inside symlink "${parent}"; extracting it would write through the link`);
      }
    }
    for (const [key, target] of links) {
      if (!symlinkTargetInside(key, target, links)) throw unsafe(`symlink "${key}" points to "${target}", outside its source`);
    }
  }
  if (firstMissing !== undefined) throw new StowageError('ARCHIVE_INVALID', `the manifest lists "${firstMissing}" but the archive does not contain it; the archive is damaged`);
  // Archive order: each folder before its contents, as written.
  const order = byOffset.filter((id) => id !== manifestId);
  return { header, listed, byName, manifestId, order };
}

/** Local data ranges must not overlap: overlapping entries are how a 42 kB file inflates to 4 GB. */
function checkNoOverlap(cd: CentralDirectory, byOffset: Uint32Array): void {
  for (let k = 1; k < byOffset.length; k++) {
    const prev = byOffset[k - 1]!;
    const cur = byOffset[k]!;
    // 30 bytes of local header at least, then the compressed data.
    if (cd.localOffset[cur]! < cd.localOffset[prev]! + 30 + cd.compressedSize[prev]!) {
      throw unsafe(`entries "${cd.name(prev)}" and "${cd.name(cur)}" overlap in the file (a known zip-bomb construction)`);
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
