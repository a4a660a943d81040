import type { StowageErrorCode } from '../errors.js';
import type { PointMethod } from './url.js';

/**
 * A backup point copies the current contents of one dir source to an external system (a Git
 * repository, an S3 bucket), after a backup or on demand. It is the opposite of restoring: the
 * external system receives a plain copy people can browse, diff and fetch without Stowage.
 *
 * Contracts every method keeps:
 * - `run` sends the source minus its ignore rules, never Stowage's own data folder, never a
 *   `.git` folder. When nothing differs from what the destination already holds, it changes
 *   nothing and says `unchanged`.
 * - Credentials never appear in a process's arguments, in files written in clear, in logs, in
 *   error messages or in `describe()`; URLs shown anywhere carry no userinfo.
 * - Failures are thrown as `StowageError` (`POINT_ERROR_CODE`) whose message says what to check
 *   (credentials, address, repository), with `details.reason` for machines.
 * - The caller holds the data folder's job lock: one run per point at a time.
 */
export interface Point {
  readonly name: string;
  readonly method: PointMethod;
  /** The folder whose contents are sent. */
  readonly source: string;
  /** Checks the configuration without touching the network; throws CONFIG_INVALID. */
  validate(): void;
  /** Sends the source's current contents. */
  run(ctx: PointRunContext): Promise<PointRunResult>;
  /** What to show in the API and logs: no secrets. */
  describe(): PointDescription;
}

export interface PointRunContext {
  /** The backup this run follows (named in commit messages and metadata). */
  backupKey: string;
  /** When that backup was taken. */
  time: Date;
  /** Stops the run (its external commands are killed); the run then throws. */
  signal?: AbortSignal;
  /** One line per step, for the job's log; never holds a secret. */
  log?(line: string): void;
}

export interface PointRunResult {
  /** `updated`: the destination now holds the source; `unchanged`: it already did. */
  status: 'updated' | 'unchanged';
  /** One line for people: what was sent where. */
  message: string;
  /** Git: the commit now at the tip of the branch. */
  commit?: string;
  /** Git: the branch pushed to. */
  branch?: string;
  /** Files added or changed at the destination. */
  objectsWritten?: number;
  /** Files removed at the destination. */
  objectsDeleted?: number;
  /** What was left out (unreadable files, symlinks leaving the source), as with backups. */
  warnings?: Array<{ path: string; reason: string }>;
}

export interface PointDescription {
  name: string;
  method: PointMethod;
  source: string;
  /** Without userinfo or query values. */
  url: string;
  [field: string]: unknown;
}

/**
 * The error code point failures carry. `STORAGE_FAILED` until `errors.ts` grows a dedicated
 * `POINT_FAILED`; callers should use this constant rather than the literal.
 */
export const POINT_ERROR_CODE: StowageErrorCode = 'POINT_FAILED';

/** Machine-readable reasons in `StowageError.details.reason`. */
export type PointFailureReason = 'auth' | 'not-found' | 'unreachable' | 'tls' | 'rejected' | 'source' | 'timeout' | 'aborted' | 'git';
