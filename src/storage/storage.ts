import type { Readable, Writable } from 'node:stream';

/**
 * Where archives live. Small on purpose (restic's Backend is the model): engine code never
 * knows whether it talks to a folder or a bucket. Every implementation runs the conformance
 * suite in storage.suite.ts.
 *
 * Contracts every implementation keeps:
 * - An object appears under its key only through `Upload.commit()`, atomically and durably: a
 *   crash before commit leaves nothing under the key (at most a temporary object that
 *   `cleanupIncomplete()` removes once its writer is gone), a crash after it leaves the whole
 *   object. Temporary objects carry the writing process's tag (src/fs/process.ts), because a CLI job's clean-up
 *   must not remove an upload the server is still writing.
 * - `list()` returns only keys that pass `isValidKey` (temporary and foreign objects are hidden).
 * - `get`/`stat`/`delete` of a missing key: `get` and `stat` report not found (`null` /
 *   `BACKUP_NOT_FOUND`), `delete` is a no-op, so retries are safe.
 */
export interface StoredObject {
  key: string;
  size: number;
  modified: Date;
}

export interface Upload {
  /** Write the archive here; backpressure is honoured. */
  readonly stream: Writable;
  /** Flushes, makes the object durable and visible under its key. Fails if the key exists. */
  commit(): Promise<StoredObject>;
  /** Discards everything written. Safe to call after a failure, and more than once. */
  abort(): Promise<void>;
}

export interface LocalCopy {
  path: string;
  /** Removes the copy if it was a temporary download; no-op for local storage. */
  release(): Promise<void>;
}

export interface Storage {
  /** For messages: "local folder /var/backups". */
  readonly description: string;
  createUpload(key: string): Promise<Upload>;
  get(key: string, range?: { start: number; end?: number }): Promise<Readable>;
  stat(key: string): Promise<StoredObject | null>;
  /**
   * Newest first. May be a cached, shared array: callers must not modify it. A storage that can
   * list only part of what it holds (the outbox while its bucket is unreachable) throws
   * `IncompleteListing` with that part.
   */
  list(): Promise<readonly StoredObject[]>;
  delete(key: string): Promise<void>;
  /** A file on local disk with the archive's bytes (ZIP readers need random access). */
  localCopy(key: string, tempDir: string): Promise<LocalCopy>;
  /**
   * Removes temporary objects left by uploads that never committed and whose writer process
   * is gone: `isWriterAlive(owner)` is false for the owner tag in the object's name.
   */
  cleanupIncomplete(isWriterAlive: (owner: string) => boolean): Promise<number>;
}

/** `list()` could not see everything: `available` is what it could list, `cause` why not the rest. */
export class IncompleteListing extends Error {
  constructor(
    readonly available: readonly StoredObject[],
    override readonly cause: unknown,
  ) {
    super(cause instanceof Error ? cause.message : String(cause));
    this.name = 'IncompleteListing';
  }
}
