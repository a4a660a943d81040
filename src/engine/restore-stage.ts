import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { checkDigest, type ArchiveEntry, type ArchiveReader } from '../archive/zip-reader.js';
import { StowageError } from '../errors.js';

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

/**
 * Seconds for utimes from a millisecond ISO time. Half a microsecond is added because the
 * double-to-timespec conversion would otherwise turn .504 s into .503999999 s, and the file
 * would read back one millisecond early.
 */
export function utimesSeconds(iso: string): number {
  return Date.parse(iso) / 1000 + 5e-7;
}

function writeAll(fd: number, buf: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (offset: number) => {
      fs.write(fd, buf, offset, buf.length - offset, null, (err, n) => {
        if (err) reject(err);
        else if (offset + n < buf.length) step(offset + n);
        else resolve();
      });
    };
    step(0);
  });
}

function openNew(file: string, mode: number): Promise<number> {
  return new Promise((resolve, reject) => fs.open(file, 'wx', mode, (err, fd) => (err ? reject(err) : resolve(fd))));
}

function closeFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.close(fd, (err) => (err ? reject(err) : resolve())));
}

function fdCall(fn: (cb: (err: NodeJS.ErrnoException | null) => void) => void): Promise<void> {
  return new Promise((resolve, reject) => fn((err) => (err ? reject(err) : resolve())));
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

/**
 * Writes one entry's verified content to `dest` (which must not exist), then its mode, owner
 * and mtime through the open descriptor: no path lookups per file, which matters with tens of
 * thousands of small files.
 */
export async function extractFile(reader: ArchiveReader, entry: ArchiveEntry, dest: string, onBytes: (n: number) => void, meta: FileMeta = { owner: false, warnings: [] }): Promise<void> {
  if (reader.isSmall(entry)) return extractSmallFileSync(reader, entry, dest, onBytes, meta);
  const m = entry.manifest!;
  const mode = parseInt(m.mode, 8);
  // Created with its final permissions (a read-only mode still gives us a writable descriptor);
  // fchmod only when the umask or set-id bits would make them differ.
  const fd = await openNew(dest, mode & 0o777);
  const hash = crypto.createHash('sha256');
  let size = 0;
  try {
    try {
      for await (const buf of reader.readEntry(entry)) {
        hash.update(buf);
        size += buf.length;
        await writeAll(fd, buf);
        onBytes(buf.length);
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new StowageError('RESTORE_FAILED', `the disk is full while writing ${dest}; free some space and restore again`, { cause: err });
      if (err instanceof StowageError) throw err;
      if ((err as NodeJS.ErrnoException).code) throw err;
      throw new StowageError('CHECKSUM_MISMATCH', `${entry.name}: cannot be read back (${(err as Error).message}); the archive is damaged`, { cause: err });
    }
    checkDigest(entry, size, hash.digest('hex'));
    if (meta.owner && m.uid !== undefined && m.gid !== undefined && (meta.alwaysChown || m.uid !== process.getuid?.() || m.gid !== process.getgid?.())) {
      await fdCall((cb) => fs.fchown(fd, m.uid!, m.gid!, cb)).catch((err: NodeJS.ErrnoException) => {
        meta.warnings.push(`${entry.name}: ownership not restored (${err.code ?? String(err)})`);
      });
    }
    // After chown, which clears set-id bits.
    if ((mode & 0o7000) !== 0 || (mode & UMASK) !== 0) await fdCall((cb) => fs.fchmod(fd, mode, cb));
    const t = utimesSeconds(m.mtime);
    await fdCall((cb) => fs.futimes(fd, t, t, cb)).catch((err: NodeJS.ErrnoException) => {
      meta.warnings.push(`${entry.name}: modification time not restored (${err.code ?? String(err)})`);
    });
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
function noteSyncFailure(err: unknown, dest: string): never {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC') throw new StowageError('RESTORE_FAILED', `the disk is full while writing ${dest}; free some space and restore again`, { cause: err });
  throw err;
}

function extractSmallFileSync(reader: ArchiveReader, entry: ArchiveEntry, dest: string, onBytes: (n: number) => void, meta: FileMeta): void {
  const m = entry.manifest!;
  const mode = parseInt(m.mode, 8);
  const data = reader.readWholeSync(entry);
  checkDigest(entry, data.length, crypto.createHash('sha256').update(data).digest('hex'));
  let fd: number;
  try {
    fd = fs.openSync(dest, 'wx', mode & 0o777);
  } catch (err) {
    noteSyncFailure(err, dest);
  }
  try {
    let written = 0;
    while (written < data.length) written += fs.writeSync(fd, data, written, data.length - written);
    if (meta.owner && m.uid !== undefined && m.gid !== undefined && (meta.alwaysChown || m.uid !== process.getuid?.() || m.gid !== process.getgid?.())) {
      try {
        fs.fchownSync(fd, m.uid, m.gid);
      } catch (err) {
        meta.warnings.push(`${entry.name}: ownership not restored (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
      }
    }
    if ((mode & 0o7000) !== 0 || (mode & UMASK) !== 0) fs.fchmodSync(fd, mode);
    const t = utimesSeconds(m.mtime);
    try {
      fs.futimesSync(fd, t, t);
    } catch (err) {
      meta.warnings.push(`${entry.name}: modification time not restored (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    }
  } catch (err) {
    noteSyncFailure(err, dest);
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
    const t = utimesSeconds(m.mtime);
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
