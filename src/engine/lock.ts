import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { StowageError } from '../errors.js';
import { isProcessAlive, processStartTime } from '../fs/process.js';

/**
 * One backup or restore at a time per data folder, across processes (a CLI run and a server
 * may share one). The lock file records who holds it; a lock whose process is gone from this
 * host is cleared automatically, because stuck locks are the most common complaint about
 * restic and Borg. A lock from another host is never cleared automatically.
 */
export interface LockInfo {
  pid: number;
  host: string;
  job: string;
  /** The backup key the job reads or writes, if any (delete refuses it while the job runs). */
  key?: string;
  startedAt: string;
  /** Linux process start time (clock ticks since boot): tells a reused pid from the holder. */
  procStart?: string;
}

export interface HeldLock {
  info: LockInfo;
  release(): void;
}

export function lockPath(dataDir: string): string {
  return path.join(dataDir, 'stowage.lock');
}

export function readLock(dataDir: string): LockInfo | null {
  try {
    return JSON.parse(fs.readFileSync(lockPath(dataDir), 'utf8')) as LockInfo;
  } catch {
    return null;
  }
}

/** True if the holder recorded in the lock is certainly gone (same host, process dead or pid reused). */
export function isStale(info: LockInfo): boolean {
  if (info.host !== os.hostname()) return false;
  if (!isProcessAlive(info.pid)) return true;
  const now = processStartTime(info.pid);
  return info.procStart !== undefined && now !== undefined && now !== info.procStart;
}

export function describeHolder(info: LockInfo): string {
  const since = new Date(info.startedAt);
  const mins = Math.max(0, Math.round((Date.now() - since.getTime()) / 60000));
  return `${info.job} by pid ${info.pid} on ${info.host}, started ${since.toISOString()} (${mins} min ago)`;
}

export function acquireLock(dataDir: string, job: string, key?: string): HeldLock {
  fs.mkdirSync(dataDir, { recursive: true });
  const file = lockPath(dataDir);
  const info: LockInfo = { pid: process.pid, host: os.hostname(), job, ...(key ? { key } : {}), startedAt: new Date().toISOString(), procStart: processStartTime(process.pid) };
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      const fd = fs.openSync(file, 'wx');
      try {
        fs.writeFileSync(fd, JSON.stringify(info));
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      let released = false;
      return {
        info,
        release() {
          if (released) return;
          released = true;
          const current = readLock(dataDir);
          if (current && current.pid === info.pid && current.startedAt === info.startedAt) fs.rmSync(file, { force: true });
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const holder = readLock(dataDir);
    if (holder === null) {
      // Being written this instant, or garbage left by a crash between open and write.
      const age = Date.now() - (fs.statSync(file, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
      if (age > 5000) removeStale(file, null);
      continue;
    }
    if (isStale(holder)) {
      removeStale(file, holder);
      continue;
    }
    throw new StowageError(
      'BUSY',
      `busy, held by ${describeHolder(holder)} (lock ${file}). Wait for it to finish` +
        (holder.host === os.hostname() ? '' : `; if that host is gone for good, delete ${file}`),
      { details: { holder } },
    );
  }
  throw new StowageError('BUSY', `busy: could not take ${file} after several attempts; another job is starting`);
}

/**
 * Rename first, then check that what was moved is the stale lock we judged: two processes
 * clearing the same stale lock must not remove the fresh one a third just took.
 */
function removeStale(file: string, judged: LockInfo | null): void {
  const aside = `${file}.stale-${process.pid}-${Date.now()}`;
  try {
    fs.renameSync(file, aside);
  } catch {
    return; // someone else cleared it first
  }
  let moved: LockInfo | null = null;
  try {
    moved = JSON.parse(fs.readFileSync(aside, 'utf8')) as LockInfo;
  } catch {
    moved = null;
  }
  const same = judged === null ? moved === null : moved !== null && moved.pid === judged.pid && moved.startedAt === judged.startedAt;
  if (!same) {
    try {
      fs.linkSync(aside, file); // put the live lock back (fails if yet another one exists)
    } catch {
      // nothing to restore over
    }
  }
  fs.rmSync(aside, { force: true });
}
