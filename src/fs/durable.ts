import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';

/** fsync a folder so that names created or renamed in it survive a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await fs.promises.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Write to a temporary name, fsync, rename, fsync the folder: the file is old or new, never torn. */
export async function writeFileAtomic(file: string, data: string | Buffer): Promise<void> {
  const temp = `${file}.${crypto.randomBytes(4).toString('hex')}.tmp`;
  const handle = await fs.promises.open(temp, 'wx');
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await fs.promises.rename(temp, file);
  } catch (err) {
    await fs.promises.rm(temp, { force: true });
    throw err;
  }
  await fsyncDir(path.dirname(file));
}

export function writeFileAtomicSync(file: string, data: string | Buffer): void {
  const temp = `${file}.${crypto.randomBytes(4).toString('hex')}.tmp`;
  const fd = fs.openSync(temp, 'wx');
  try {
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(temp, file);
  const dfd = fs.openSync(path.dirname(file), 'r');
  try {
    fs.fsyncSync(dfd);
  } finally {
    fs.closeSync(dfd);
  }
}

/**
 * Flushes everything written to the filesystem holding `dir` with one syncfs(2) (`sync -f`),
 * instead of one fsync per file: a restore of 20,000 files would otherwise spend most of its
 * time waiting on the disk. Returns false if `sync -f` is unavailable.
 */
export function syncFilesystem(dir: string): boolean {
  const r = spawnSync('sync', ['-f', dir], { stdio: 'ignore' });
  return r.status === 0;
}
