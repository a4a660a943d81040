import fs from 'node:fs';

/**
 * Descriptor-level file I/O shared by the archive writer, the archive reader and restore.
 * The callback fs API, not fs.promises: on 20,000 small files the FileHandle machinery cost
 * more main-thread time than the I/O itself (docs/PERFORMANCE.md).
 */

function done<T>(resolve: (v: T) => void, reject: (e: unknown) => void) {
  return (err: NodeJS.ErrnoException | null, value: T) => (err ? reject(err) : resolve(value));
}

/** Opens for reading without following a final symlink (a file swapped for a link mid-backup). */
export function openForRead(file: string): Promise<number> {
  return new Promise((resolve, reject) => fs.open(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW, done(resolve, reject)));
}

/** Creates a file that must not exist yet. */
export function openNew(file: string, mode: number): Promise<number> {
  return new Promise((resolve, reject) => fs.open(file, 'wx', mode, done(resolve, reject)));
}

export function closeFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.close(fd, (err) => (err ? reject(err) : resolve())));
}

export function readAt(fd: number, buf: Buffer, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => fs.read(fd, buf, offset, length, position, done(resolve, reject)));
}

/** Fills `buf` (or a new buffer of `length`) from `position`; shorter only at end of file. */
export async function readFully(fd: number, length: number, position: number, buf: Buffer = Buffer.allocUnsafe(length)): Promise<Buffer> {
  let filled = 0;
  while (filled < length) {
    const n = await readAt(fd, buf, filled, length - filled, position + filled);
    if (n === 0) break;
    filled += n;
  }
  return filled === buf.length ? buf : buf.subarray(0, filled);
}

/** The synchronous twin of readFully. */
export function readFullySync(fd: number, length: number, position: number, buf: Buffer = Buffer.allocUnsafe(length)): Buffer {
  let filled = 0;
  while (filled < length) {
    const n = fs.readSync(fd, buf, filled, length - filled, position + filled);
    if (n === 0) break;
    filled += n;
  }
  return filled === buf.length ? buf : buf.subarray(0, filled);
}

export function writeAll(fd: number, buf: Buffer): Promise<void> {
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

/**
 * Seconds for utimes from milliseconds. Half a microsecond is added because the
 * double-to-timespec conversion would otherwise turn .504 s into .503999999 s, and the file
 * would read back one millisecond early.
 */
export function utimesSeconds(ms: number): number {
  return ms / 1000 + 5e-7;
}
