import type { ArchiveInput } from '../archive/zip-writer.js';
import type { ExcludeRules } from './fnmatch.js';

/**
 * A Source is one named thing to back up (a folder, a SQLite database, later PostgreSQL). It
 * yields archive entries named relative to its own folder in the archive; the engine adds the
 * `<source name>/` prefix. Restoring is the engine's job, per kind (see engine/restore-*.ts).
 */
export interface BackupContext {
  /** Rules in force for this source (its own, the global ones, and those added by hooks). */
  excludes: ExcludeRules;
  /** Absolute paths never to enter (Stowage's data folder and storage folder). */
  neverInclude: string[];
  /** Scratch space on the data folder's filesystem (snapshots are written here). */
  tempDir: string;
  /** Something was left out: the backup goes on and lists it. */
  warn(path: string, reason: string): void;
}

export interface SourceEstimate {
  files: number;
  bytes: number;
}

export interface Source {
  readonly name: string;
  readonly kind: 'dir' | 'sqlite' | 'postgres';
  /** The original absolute path, recorded in the manifest. */
  readonly path: string;
  /** A quick walk for progress totals; no data is read. */
  estimate(ctx: BackupContext): Promise<SourceEstimate>;
  /** The entries, in archive order, names relative to the source. */
  entries(ctx: BackupContext): AsyncIterable<ArchiveInput>;
  /** Removes snapshots and other temporary files; called whatever happened. */
  release(): Promise<void>;
}

/** Staging folders of an interrupted restore are never backed up. */
export const RESTORE_STAGING_PREFIX = '.stowage-restore-';
