import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { writeFileAtomicSync } from '../fs/durable.js';
import { utimesSeconds } from '../fs/fd.js';
import { utcStamp } from '../storage/keys.js';
import { failpoint } from './failpoints.js';

/**
 * The restore journal makes the swap crash-safe. It is written (atomically) before anything in
 * a target changes and lists every rename the swap will do. Until it says `committed`, recovery
 * undoes whatever was done, in reverse; once committed, recovery finishes the clean-up. Every
 * step is checked against the filesystem, so running recovery twice is harmless.
 *
 * Invariants:
 * - A rename {from, to} is "done" when `to` exists and `from` does not; undoing it renames back.
 * - SQLite targets are never renamed while in use: new content goes in through SQLite's backup
 *   API (a transaction: readers see the old or the new database), the old content is first
 *   copied to `previous` so it can be put back the same way.
 */
export interface RenameOp {
  from: string;
  to: string;
  /**
   * For carries (an excluded path moved into the staged tree): the mtime of the folder it
   * leaves, which moving changes; undo puts it back. The folder it enters gets the backup's
   * time after the swap (`fixFolderTimes`).
   */
  fromParentMtimeMs?: number;
}

export interface DirSwap {
  name: string;
  target: string;
  /** `<target>/.stowage-restore-<id>`: holds `new/` (staged) and `old/` (moved aside). */
  staging: string;
  createdTarget: boolean;
  ops: RenameOp[];
}

export interface SqliteSwap {
  name: string;
  target: string;
  staged: string;
  /** Copy of the database before the restore; null when the target did not exist. */
  previous: string | null;
  /** pending: untouched; previous-ready: about to write the target; applied: written. */
  state: 'pending' | 'previous-ready' | 'applied';
}

/**
 * A PostgreSQL database restored with pg_restore in one transaction (restore-postgres.ts). It
 * cannot be undone once committed, so the engine restores databases last, after every folder
 * and SQLite swap: a failure before then (or pg_restore's own failure, which PostgreSQL rolls
 * back) undoes the swaps as for any restore; once every database is restored, everything is in
 * its new state and only the commit record is missing, so the restore is finished, not undone.
 */
export interface PostgresSwap {
  name: string;
  /** The database as a URL without its password (for messages). */
  target: string;
  /** The verified dump in the scratch folder. */
  staged: string;
  /** pending: not started; restoring: pg_restore running (commits or rolls back as a whole); restored: committed. */
  state: 'pending' | 'restoring' | 'restored';
}

export interface RestoreJournal {
  version: 1;
  id: string;
  key: string;
  startedAt: string;
  phase: 'staging' | 'swapping' | 'committed';
  keepPrevious: boolean;
  /** Scratch folder in the data folder (SQLite staging, previous copies). */
  scratch: string;
  dirs: DirSwap[];
  sqlite: SqliteSwap[];
  /** PostgreSQL databases, restored after every swap above (absent in journals of older versions). */
  postgres?: PostgresSwap[];
}

/**
 * Whether the journal's restore has nothing left to undo because its databases are restored:
 * they run after every folder and SQLite swap, so once all are committed the data is entirely
 * new and the restore is finished rather than rolled back (which would leave new databases
 * beside old files).
 */
export function databasesCommitted(journal: RestoreJournal): boolean {
  const pg = journal.postgres ?? [];
  return journal.phase === 'swapping' && pg.length > 0 && pg.every((p) => p.state === 'restored');
}

export function journalPath(dataDir: string): string {
  return path.join(dataDir, 'restore-journal.json');
}

export function readJournal(dataDir: string): RestoreJournal | null {
  try {
    return JSON.parse(fs.readFileSync(journalPath(dataDir), 'utf8')) as RestoreJournal;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

export function writeJournal(dataDir: string, journal: RestoreJournal): void {
  writeFileAtomicSync(journalPath(dataDir), JSON.stringify(journal, null, 2));
}

export function removeJournal(dataDir: string): void {
  fs.rmSync(journalPath(dataDir), { force: true });
}

function exists(p: string): boolean {
  try {
    fs.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

export function renameDone(op: RenameOp): boolean {
  return exists(op.to) && !exists(op.from);
}

/** Performs the swap renames of one target, in order. */
export function applyDirSwap(swap: DirSwap): void {
  for (const op of swap.ops) {
    failpoint('restore.swap');
    if (renameDone(op)) continue;
    fs.mkdirSync(path.dirname(op.to), { recursive: true });
    fs.renameSync(op.from, op.to);
  }
}

export function undoDirSwap(swap: DirSwap): void {
  for (const op of [...swap.ops].reverse()) {
    if (renameDone(op)) {
      fs.mkdirSync(path.dirname(op.from), { recursive: true });
      fs.renameSync(op.to, op.from);
    }
    if (op.fromParentMtimeMs !== undefined) {
      const t = utimesSeconds(op.fromParentMtimeMs);
      try {
        fs.utimesSync(path.dirname(op.from), t, t);
      } catch {
        // the folder is gone or not ours to touch: its contents are what matters
      }
    }
  }
  fs.rmSync(swap.staging, { recursive: true, force: true });
  if (swap.createdTarget) {
    try {
      fs.rmdirSync(swap.target);
    } catch {
      // not empty: something else was put there since; leave it
    }
  }
}

/** How long writing a database waits for other connections to release their locks on it. */
const SQLITE_LOCK_WAIT_MS = 30_000;

function schemaVersion(file: string): number {
  const db = new Database(file, { readonly: true, fileMustExist: true, timeout: SQLITE_LOCK_WAIT_MS });
  try {
    return db.pragma('schema_version', { simple: true }) as number;
  } finally {
    db.close();
  }
}

/** Copies `from` into the database at `to` with SQLite's backup API (transactional for readers of `to`). */
export async function sqliteCopyInto(from: string, to: string): Promise<void> {
  const deadline = Date.now() + SQLITE_LOCK_WAIT_MS;
  for (;;) {
    const before = schemaVersion(to);
    const src = new Database(from, { readonly: true, fileMustExist: true });
    try {
      // All pages in one step: the destination is written in one transaction.
      await src.backup(to, { progress: () => 1_000_000_000 });
    } finally {
      src.close();
    }
    // better-sqlite3 resolves a backup whose step got SQLITE_BUSY (another process holds a
    // write lock on `to`, or in rollback-journal mode a read transaction) as finished, with
    // nothing copied: the restore then reported success and left the old data. A committed
    // backup sets the destination's schema cookie to its previous value + 1: check for that,
    // and retry until the other connection lets go.
    if (schemaVersion(to) === before + 1) return;
    if (Date.now() >= deadline) {
      throw new Error(`the database ${to} stayed locked by another process for ${SQLITE_LOCK_WAIT_MS / 1000} s (is the application still using it?); it was not changed`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Where a database that did not exist before is copied, next to its target, before the rename into place. */
export function sqliteTempPath(target: string, id: string): string {
  return `${target}.stowage-restore-${id}`;
}

export function removeStaleSidecars(dbPath: string): void {
  for (const suffix of ['-wal', '-shm', '-journal']) fs.rmSync(`${dbPath}${suffix}`, { force: true });
}

export async function undoSqliteSwap(swap: SqliteSwap): Promise<void> {
  if (swap.state === 'pending') return;
  if (swap.previous) {
    if (exists(swap.previous)) await sqliteCopyInto(swap.previous, swap.target);
  } else {
    // The target did not exist before: take the restored one away again.
    fs.rmSync(swap.target, { force: true });
    removeStaleSidecars(swap.target);
  }
}

/** After commit: drop (or keep, dated) what was replaced, and remove staging. */
export function finishJournal(journal: RestoreJournal): void {
  const stamp = utcStamp(new Date(journal.startedAt));
  for (const swap of journal.dirs) {
    const old = path.join(swap.staging, 'old');
    if (journal.keepPrevious && exists(old)) {
      const keep = path.join(swap.target, `.stowage-previous-${stamp}`);
      if (!exists(keep)) fs.renameSync(old, keep);
    }
    fs.rmSync(swap.staging, { recursive: true, force: true });
  }
  for (const swap of journal.sqlite) {
    if (journal.keepPrevious && swap.previous && exists(swap.previous)) {
      const keep = `${swap.target}.stowage-previous-${stamp}`;
      if (!exists(keep)) fs.copyFileSync(swap.previous, keep);
    }
  }
  fs.rmSync(journal.scratch, { recursive: true, force: true });
}

/** Undo everything in reverse order: SQLite first (applied last), then folders. */
export async function rollbackJournal(journal: RestoreJournal): Promise<void> {
  for (const swap of [...journal.sqlite].reverse()) {
    await undoSqliteSwap(swap);
    // A crash while copying a new database into place leaves the partial copy next to the
    // target (outside the scratch folder); it is not the user's data, so remove it.
    fs.rmSync(sqliteTempPath(swap.target, journal.id), { force: true });
  }
  for (const swap of [...journal.dirs].reverse()) undoDirSwap(swap);
  fs.rmSync(journal.scratch, { recursive: true, force: true });
}
