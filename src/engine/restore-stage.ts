import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { ArchiveReader, EntryId } from '../archive/zip-reader.js';
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
/** Read once too: compared with every file's owner (20,000 calls showed in a restore's profile). */
const OWN_UID = process.getuid?.();
const OWN_GID = process.getgid?.();

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
function applyFileMeta(fd: number, reader: ArchiveReader, entry: EntryId, meta: FileMeta): void {
  const mode = reader.mode(entry);
  const owner = meta.owner ? reader.owner(entry) : undefined;
  if (owner && (meta.alwaysChown || owner.uid !== OWN_UID || owner.gid !== OWN_GID)) {
    try {
      fs.fchownSync(fd, owner.uid, owner.gid);
    } catch (err) {
      meta.warnings.push(`${reader.name(entry)}: ownership not restored (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    }
  }
  if ((mode & 0o7000) !== 0 || (mode & UMASK) !== 0) fs.fchmodSync(fd, mode);
  const t = utimesSeconds(reader.mtimeMs(entry));
  try {
    fs.futimesSync(fd, t, t);
  } catch (err) {
    meta.warnings.push(`${reader.name(entry)}: modification time not restored (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
}

/** Writes one entry's verified content to `dest` (which must not exist), with its metadata. */
export async function extractFile(reader: ArchiveReader, entry: EntryId, dest: string, onBytes: (n: number) => void, meta: FileMeta = { owner: false, warnings: [] }): Promise<void> {
  if (reader.isSmall(entry)) return extractSmallFileSync(reader, entry, dest, onBytes, meta);
  const fd = await openNew(dest, reader.mode(entry) & 0o777).catch((err: unknown) => writeFailure(err, dest));
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
    reader.checkDigest(entry, size, hash.digest());
    applyFileMeta(fd, reader, entry, meta);
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
function extractSmallFileSync(reader: ArchiveReader, entry: EntryId, dest: string, onBytes: (n: number) => void, meta: FileMeta): void {
  const data = reader.readWholeSync(entry);
  reader.checkDigest(entry, data.length, crypto.createHash('sha256').update(data).digest());
  let fd: number;
  try {
    fd = fs.openSync(dest, 'wx', reader.mode(entry) & 0o777);
  } catch (err) {
    writeFailure(err, dest);
  }
  try {
    let written = 0;
    while (written < data.length) written += fs.writeSync(fd, data, written, data.length - written);
    applyFileMeta(fd, reader, entry, meta);
  } catch (err) {
    writeFailure(err, dest);
  } finally {
    fs.closeSync(fd);
  }
  onBytes(data.length);
}

async function readSymlinkTarget(reader: ArchiveReader, entry: EntryId): Promise<string> {
  const parts: Buffer[] = [];
  for await (const chunk of reader.readEntry(entry)) parts.push(chunk);
  const data = Buffer.concat(parts);
  reader.checkDigest(entry, data.length, crypto.createHash('sha256').update(data).digest());
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
  const destOf = (entry: EntryId) => path.join(stagingDir, reader.name(entry).slice(prefix.length));
  const result: StageResult = { files: 0, bytes: 0, warnings: [] };
  await fs.promises.mkdir(stagingDir, { recursive: true });
  const createdDirs = new Set<string>([stagingDir]);
  const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const alwaysChown = (fs.statSync(stagingDir).mode & 0o2000) !== 0;

  const applyMeta = async (dest: string, entry: EntryId, isLink: boolean) => {
    const t = utimesSeconds(reader.mtimeMs(entry));
    const owner = asRoot ? reader.owner(entry) : undefined;
    try {
      if (owner) await fs.promises.lchown(dest, owner.uid, owner.gid);
    } catch (err) {
      result.warnings.push(`${reader.name(entry)}: ownership not restored (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    }
    try {
      if (isLink) await fs.promises.lutimes(dest, t, t);
      else await fs.promises.utimes(dest, t, t);
    } catch (err) {
      result.warnings.push(`${reader.name(entry)}: modification time not restored (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    }
  };

  // Entry ids only (names are decoded when used): lists of objects grew RSS with the file count.
  const dirs: EntryId[] = [];
  // Small regular files go to one synchronous loop, in slices; large ones and symlinks through
  // the async workers meanwhile, so inflate of big files overlaps with the small-file loop.
  const small: EntryId[] = [];
  const rest: EntryId[] = [];
  for (const entry of reader.order) {
    if (!reader.name(entry).startsWith(prefix)) continue;
    const type = reader.type(entry);
    if (type === 'dir') dirs.push(entry);
    else if (type === 'file' && reader.isSmall(entry)) small.push(entry);
    else rest.push(entry);
  }
  // Folders first (they come before their contents in the archive), then files in parallel.
  for (const entry of dirs) {
    const dest = destOf(entry);
    await fs.promises.mkdir(dest, { recursive: true });
    createdDirs.add(dest);
  }
  const fileMeta: FileMeta = { owner: asRoot, alwaysChown, warnings: result.warnings };
  const smallLoop = async () => {
    let sliceStart = Date.now();
    for (const entry of small) {
      const dest = destOf(entry);
      const parent = path.dirname(dest);
      if (!createdDirs.has(parent)) {
        fs.mkdirSync(parent, { recursive: true });
        createdDirs.add(parent);
      }
      extractSmallFileSync(reader, entry, dest, onBytes, fileMeta);
      result.files++;
      result.bytes += reader.size(entry);
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
      const dest = destOf(entry);
      // Folders were all created above (each has its own entry); a foreign archive may lack them.
      const parent = path.dirname(dest);
      if (!createdDirs.has(parent)) {
        await fs.promises.mkdir(parent, { recursive: true });
        createdDirs.add(parent);
      }
      if (reader.type(entry) === 'symlink') {
        const target = await readSymlinkTarget(reader, entry);
        await fs.promises.symlink(target, dest);
        await applyMeta(dest, entry, true);
      } else {
        await extractFile(reader, entry, dest, onBytes, fileMeta);
        result.files++;
        result.bytes += reader.size(entry);
        onFile();
      }
    }
  };
  const workers = [smallLoop(), ...Array.from({ length: Math.min(PARALLEL_ENTRIES, rest.length) }, worker)];
  const settled = await Promise.allSettled(workers);
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) throw failed.reason;
  // Folder modes and times last, deepest first, since writing into a folder changes its mtime.
  for (const entry of dirs.reverse()) {
    const dest = destOf(entry);
    await fs.promises.chmod(dest, reader.mode(entry)).catch((err: NodeJS.ErrnoException) => {
      result.warnings.push(`${reader.name(entry)}: mode not restored (${err.code ?? String(err)})`);
    });
    await applyMeta(dest, entry, false);
  }
  return result;
}
