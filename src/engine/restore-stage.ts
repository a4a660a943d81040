import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { checkDigest, type ArchiveEntry, type ArchiveReader } from '../archive/zip-reader.js';
import { StowageError } from '../errors.js';
import { closeFd, openNew, utimesSeconds, writeAll } from '../fs/fd.js';

/**
 * Extraction into a staging folder, verifying every entry's SHA-256 as it is written: a
 * mismatch, a truncated archive or a full disk fails here, before anything of the target has
 * been touched. Several entries are extracted at once (inflate runs on the thread pool).
 */
const PARALLEL_ENTRIES = 4;
/** The synchronous small-file loop yields to the event loop this often. */
const SLICE_MS = 10;

export interface StageResult {
  files: number;
  bytes: number;
  /** Non-fatal: metadata that could not be applied (ownership, times). */
  warnings: string[];
}

/** Read once: files are created with their final mode when the umask would not change it. */
const UMASK = process.umask();

export interface FileMeta {
  /** Restore uid/gid (only meaningful as root). */
  owner: boolean;
  /** New files may not get our own uid/gid (a set-group-ID folder): chown every file. */
  alwaysChown?: boolean;
  /** Where metadata failures go (they do not fail the restore). */
  warnings: string[];
}

/** ENOSPC becomes an error saying what to do; anything else is rethrown as is. */
function writeFailure(err: unknown, dest: string): never {
  if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new StowageError('RESTORE_FAILED', `the disk is full while writing ${dest}; free some space and restore again`, { cause: err });
  throw err;
}

/**
 * Owner, mode and mtime through the open descriptor: no path lookups per file. Synchronous,
 * since these are metadata updates on an open file. Files were created with their final
 * permissions (a read-only mode still gives a writable descriptor), so fchmod runs only when
 * the umask or set-id bits would make them differ, and after chown, which clears set-id bits.
 */
function applyFileMeta(fd: number, entry: ArchiveEntry, meta: FileMeta): void {
  const m = entry.manifest!;
  const mode = parseInt(m.mode, 8);
  if (meta.owner && m.uid !== undefined && m.gid !== undefined && (meta.alwaysChown || m.uid !== process.getuid?.() || m.gid !== process.getgid?.())) {
    try {
      fs.fchownSync(fd, m.uid, m.gid);
    } catch (err) {
      meta.warnings.push(`${entry.name}: ownership not restored (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    }
  }
  if ((mode & 0o7000) !== 0 || (mode & UMASK) !== 0) fs.fchmodSync(fd, mode);
  const t = utimesSeconds(Date.parse(m.mtime));
  try {
    fs.futimesSync(fd, t, t);
  } catch (err) {
    meta.warnings.push(`${entry.name}: modification time not restored (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
}

/** Writes one entry's verified content to `dest` (which must not exist), with its metadata. */
export async function extractFile(reader: ArchiveReader, entry: ArchiveEntry, dest: string, onBytes: (n: number) => void, meta: FileMeta = { owner: false, warnings: [] }): Promise<void> {
  if (reader.isSmall(entry)) return extractSmallFileSync(reader, entry, dest, onBytes, meta);
  const fd = await openNew(dest, parseInt(entry.manifest!.mode, 8) & 0o777).catch((err: unknown) => writeFailure(err, dest));
  const hash = crypto.createHash('sha256');
  let size = 0;
  try {
    // readEntry reports damaged data as CHECKSUM_MISMATCH naming the entry; only writes fail here.
    for await (const buf of reader.readEntry(entry)) {
      hash.update(buf);
      size += buf.length;
      await writeAll(fd, buf).catch((err: unknown) => writeFailure(err, dest));
      onBytes(buf.length);
    }
    checkDigest(entry, size, hash.digest('hex'));
    applyFileMeta(fd, entry, meta);
  } finally {
    await closeFd(fd);
  }
}

/**
 * Small files are read, inflated and verified whole, then written, all with direct calls:
 * creating, writing and closing a small file lands in the page cache in microseconds, while
 * the same calls through the thread pool cost more in hand-offs than the work (20,000 files:
 * see docs/PERFORMANCE.md). Nothing unverified is ever written. Callers run these in short
 * slices so that the event loop (and large entries on the thread pool) keep moving.
 */
function extractSmallFileSync(reader: ArchiveReader, entry: ArchiveEntry, dest: string, onBytes: (n: number) => void, meta: FileMeta): void {
  const data = reader.readWholeSync(entry);
  checkDigest(entry, data.length, crypto.createHash('sha256').update(data).digest('hex'));
  let fd: number;
  try {
    fd = fs.openSync(dest, 'wx', parseInt(entry.manifest!.mode, 8) & 0o777);
  } catch (err) {
    writeFailure(err, dest);
  }
  try {
    let written = 0;
    while (written < data.length) written += fs.writeSync(fd, data, written, data.length - written);
    applyFileMeta(fd, entry, meta);
  } catch (err) {
    writeFailure(err, dest);
  } finally {
    fs.closeSync(fd);
  }
  onBytes(data.length);
}

async function readSymlinkTarget(reader: ArchiveReader, entry: ArchiveEntry): Promise<string> {
  const parts: Buffer[] = [];
  for await (const chunk of reader.readEntry(entry)) parts.push(chunk);
  const data = Buffer.concat(parts);
  checkDigest(entry, data.length, crypto.createHash('sha256').update(data).digest('hex'));
  return data.toString('utf8');
}

/**
 * Extracts the entries of one source (archive names `<source>/...`) under `stagingDir`.
 * Ownership is restored when running as root; times and modes always.
 */
export async function stageSourceTree(
  reader: ArchiveReader,
  sourceName: string,
  stagingDir: string,
  onBytes: (n: number) => void,
  onFile: () => void,
): Promise<StageResult> {
  const prefix = `${sourceName}/`;
  const entries = reader.entries.filter((e) => e.name.startsWith(prefix));
  const result: StageResult = { files: 0, bytes: 0, warnings: [] };
  await fs.promises.mkdir(stagingDir, { recursive: true });
  const dirs: Array<{ dest: string; entry: ArchiveEntry }> = [];
  const createdDirs = new Set<string>([stagingDir]);
  const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const alwaysChown = (fs.statSync(stagingDir).mode & 0o2000) !== 0;

  const applyMeta = async (dest: string, entry: ArchiveEntry, isLink: boolean) => {
    const m = entry.manifest!;
    const t = utimesSeconds(Date.parse(m.mtime));
    try {
      if (asRoot && m.uid !== undefined && m.gid !== undefined) await fs.promises.lchown(dest, m.uid, m.gid);
    } catch (err) {
      result.warnings.push(`${entry.name}: ownership not restored (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    }
    try {
      if (isLink) await fs.promises.lutimes(dest, t, t);
      else await fs.promises.utimes(dest, t, t);
    } catch (err) {
      result.warnings.push(`${entry.name}: modification time not restored (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    }
  };

  // Folders first (they come before their contents in the archive), then files in parallel.
  for (const entry of entries) {
    if (entry.type !== 'dir') continue;
    const rel = entry.name.slice(prefix.length);
    const dest = rel ? path.join(stagingDir, rel) : stagingDir;
    await fs.promises.mkdir(dest, { recursive: true });
    createdDirs.add(dest);
    dirs.push({ dest, entry });
  }
  const files = entries.filter((e) => e.type !== 'dir');
  // Small regular files in one synchronous loop, in slices; large ones and symlinks through
  // the async workers meanwhile, so inflate of big files overlaps with the small-file loop.
  const small = files.filter((e) => e.type === 'file' && reader.isSmall(e));
  const rest = files.filter((e) => !(e.type === 'file' && reader.isSmall(e)));
  const fileMeta: FileMeta = { owner: asRoot, alwaysChown, warnings: result.warnings };
  const smallLoop = async () => {
    let sliceStart = Date.now();
    for (const entry of small) {
      const dest = path.join(stagingDir, entry.name.slice(prefix.length));
      const parent = path.dirname(dest);
      if (!createdDirs.has(parent)) {
        fs.mkdirSync(parent, { recursive: true });
        createdDirs.add(parent);
      }
      extractSmallFileSync(reader, entry, dest, onBytes, fileMeta);
      result.files++;
      result.bytes += entry.size;
      onFile();
      if (Date.now() - sliceStart >= SLICE_MS) {
        await new Promise((resolve) => setImmediate(resolve));
        sliceStart = Date.now();
      }
    }
  };
  let next = 0;
  const worker = async () => {
    while (next < rest.length) {
      const entry = rest[next++]!;
      const dest = path.join(stagingDir, entry.name.slice(prefix.length));
      // Folders were all created above (each has its own entry); a foreign archive may lack them.
      const parent = path.dirname(dest);
      if (!createdDirs.has(parent)) {
        await fs.promises.mkdir(parent, { recursive: true });
        createdDirs.add(parent);
      }
      if (entry.type === 'symlink') {
        const target = await readSymlinkTarget(reader, entry);
        await fs.promises.symlink(target, dest);
        await applyMeta(dest, entry, true);
      } else {
        await extractFile(reader, entry, dest, onBytes, fileMeta);
        result.files++;
        result.bytes += entry.size;
        onFile();
      }
    }
  };
  const workers = [smallLoop(), ...Array.from({ length: Math.min(PARALLEL_ENTRIES, rest.length) }, worker)];
  const settled = await Promise.allSettled(workers);
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) throw failed.reason;
  // Folder modes and times last, deepest first, since writing into a folder changes its mtime.
  for (const { dest, entry } of dirs.reverse()) {
    const rel = entry.name.slice(prefix.length);
    if (rel === '') continue; // the target folder itself keeps its own metadata (it may be a mount point)
    await fs.promises.chmod(dest, parseInt(entry.manifest!.mode, 8)).catch((err: NodeJS.ErrnoException) => {
      result.warnings.push(`${entry.name}: mode not restored (${err.code ?? String(err)})`);
    });
    await applyMeta(dest, entry, false);
  }
  return result;
}
