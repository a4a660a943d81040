import crypto from 'node:crypto';
import { PassThrough, type Readable } from 'node:stream';
import yauzl from 'yauzl';
import { StowageError } from '../errors.js';
import { MANIFEST_NAME, parseManifest, type Manifest, type ManifestEntry } from './manifest.js';
import { S_IFDIR, S_IFLNK, S_IFMT } from './zip-format.js';

/**
 * Opens a Stowage archive for verify and restore, and refuses anything hostile before a byte is
 * extracted: unsafe names (`..`, absolute, drive letters, backslashes, NUL), duplicates,
 * overlapping entries (the non-recursive zip bomb), impossible compression ratios, sizes that
 * disagree with the manifest, symlinks leaving their source, entries the manifest does not list
 * and the reverse. yauzl (central directory, zip64, inflate, size checks) does the ZIP work.
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
  raw: yauzl.Entry;
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

function entryType(e: yauzl.Entry, name: string): 'file' | 'dir' | 'symlink' {
  const madeBy = e.versionMadeBy >> 8;
  const mode = madeBy === 3 ? (e.externalFileAttributes >>> 16) & S_IFMT : 0;
  if (name.endsWith('/') || mode === S_IFDIR) return 'dir';
  if (mode === S_IFLNK) return 'symlink';
  return 'file';
}

function openZip(file: string): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject) => {
    yauzl.open(file, { lazyEntries: true, autoClose: false, decodeStrings: false, validateEntrySizes: true, strictFileNames: true }, (err, zip) => {
      if (err) reject(err);
      else resolve(zip);
    });
  });
}

function decodeName(e: yauzl.Entry): string {
  const raw = e.fileName as unknown as Buffer;
  return raw.toString('utf8');
}

export class ArchiveReader {
  private constructor(
    private readonly zip: yauzl.ZipFile,
    readonly manifest: Manifest,
    readonly entries: ArchiveEntry[],
    readonly archiveSize: number,
  ) {}

  static async open(file: string): Promise<ArchiveReader> {
    let zip: yauzl.ZipFile;
    try {
      zip = await openZip(file);
    } catch (err) {
      throw new StowageError('ARCHIVE_INVALID', `${file} is not a readable ZIP archive (${(err as Error).message}); it may be truncated, damaged, or not a backup at all`);
    }
    try {
      const raws = await readCentralDirectory(zip);
      const { manifest, entries } = await checkStructure(zip, raws);
      return new ArchiveReader(zip, manifest, entries, zip.fileSize);
    } catch (err) {
      zip.close();
      if (err instanceof StowageError) throw err;
      throw new StowageError('ARCHIVE_INVALID', `${file} cannot be read as a Stowage backup: ${(err as Error).message}`);
    }
  }

  close(): void {
    this.zip.close();
  }

  /** The entry's content, inflated; yauzl stops it with an error if it is longer or shorter than declared. */
  async openEntry(entry: ArchiveEntry): Promise<Readable> {
    const raw = await openStream(this.zip, entry.raw);
    // Damaged data fails as zlib's "invalid code lengths set" (with a `code` that callers take
    // for an I/O error, so a restore reported RESTORE_FAILED naming no entry) or yauzl's "too
    // many bytes": give every such failure one stable code that names the entry.
    const out = new PassThrough();
    raw.on('error', (err: Error) => out.destroy(err instanceof StowageError ? err : damaged(entry.name, err)));
    out.on('close', () => {
      if (!raw.readableEnded) raw.destroy();
    });
    raw.pipe(out);
    return out;
  }

  /** Reads an entry completely and checks its SHA-256 against the manifest. */
  async verifyEntry(entry: ArchiveEntry, onBytes?: (n: number) => void): Promise<void> {
    if (entry.type === 'dir' || !entry.manifest) return;
    const hash = crypto.createHash('sha256');
    const stream = await this.openEntry(entry);
    let size = 0;
    try {
      for await (const chunk of stream) {
        hash.update(chunk as Buffer);
        size += (chunk as Buffer).length;
        onBytes?.((chunk as Buffer).length);
      }
    } catch (err) {
      if (err instanceof StowageError) throw err;
      throw damaged(entry.name, err as Error);
    }
    checkDigest(entry, size, hash.digest('hex'));
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

function openStream(zip: yauzl.ZipFile, entry: yauzl.Entry): Promise<Readable> {
  return new Promise((resolve, reject) => zip.openReadStream(entry, (err, stream) => (err ? reject(err) : resolve(stream))));
}

function readCentralDirectory(zip: yauzl.ZipFile): Promise<yauzl.Entry[]> {
  return new Promise((resolve, reject) => {
    const out: yauzl.Entry[] = [];
    zip.on('entry', (e: yauzl.Entry) => {
      out.push(e);
      zip.readEntry();
    });
    zip.on('end', () => resolve(out));
    zip.on('error', reject);
    zip.readEntry();
  });
}

async function readSmallEntry(zip: yauzl.ZipFile, entry: yauzl.Entry, limit: number): Promise<Buffer> {
  if (entry.uncompressedSize > limit) throw unsafe(`${decodeName(entry)} declares ${entry.uncompressedSize} bytes, more than the ${limit} allowed`);
  const stream = await openStream(zip, entry);
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of stream) {
    n += (chunk as Buffer).length;
    if (n > limit) throw unsafe(`${decodeName(entry)} is larger than declared`);
    parts.push(chunk as Buffer);
  }
  return Buffer.concat(parts);
}

/** The manifest may list millions of entries, but not gigabytes of JSON. */
const MAX_MANIFEST_BYTES = 1024 * 1024 * 1024;

async function checkStructure(zip: yauzl.ZipFile, raws: yauzl.Entry[]): Promise<{ manifest: Manifest; entries: ArchiveEntry[] }> {
  const byName = new Map<string, yauzl.Entry>();
  for (const e of raws) {
    const name = decodeName(e);
    checkEntryName(name);
    const key = name.replace(/\/$/, '');
    if (byName.has(key)) throw unsafe(`two entries are named "${key}"`);
    byName.set(key, e);
    if (e.compressedSize > 0 && e.uncompressedSize / e.compressedSize > MAX_COMPRESSION_RATIO) {
      throw unsafe(`entry "${name}" claims a ${Math.round(e.uncompressedSize / e.compressedSize)}:1 compression ratio (limit ${MAX_COMPRESSION_RATIO}:1); this is what zip bombs look like`);
    }
    if (e.compressionMethod !== 0 && e.compressionMethod !== 8) throw unsafe(`entry "${name}" uses compression method ${e.compressionMethod}; only stored and deflate are read`);
    if (e.compressionMethod === 0 && e.compressedSize !== e.uncompressedSize) throw unsafe(`stored entry "${name}" has different compressed and uncompressed sizes`);
  }
  checkNoOverlap(raws);

  const manifestRaw = byName.get(MANIFEST_NAME);
  if (!manifestRaw) throw new StowageError('ARCHIVE_INVALID', `not a Stowage backup: the archive has no ${MANIFEST_NAME} manifest (a ZIP made by another tool, or a damaged backup)`);
  const manifest = parseManifest((await readSmallEntry(zip, manifestRaw, MAX_MANIFEST_BYTES)).toString('utf8'));

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
    if (type === 'symlink') links.set(key, (await readSmallEntry(zip, raw, 4096)).toString('utf8'));
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
function checkNoOverlap(raws: yauzl.Entry[]): void {
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
