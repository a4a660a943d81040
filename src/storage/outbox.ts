import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { LocalStorage } from './local.js';
import { IncompleteListing, type LocalCopy, type Storage, type StoredObject, type Upload } from './storage.js';

/** Waits between the attempts of one push (the first is at once): about 20 s in all. */
export const PUSH_DELAYS_MS = [2_000, 6_000, 12_000];

export interface PushOptions {
  /** Delays before the 2nd, 3rd, ... attempt; [] = one attempt. */
  delaysMs?: readonly number[];
  /** Told before each retry, with the failure that caused it. */
  onRetry?(attempt: number, delayMs: number, error: unknown): void;
  signal?: AbortSignal;
}

/**
 * A remote storage (S3) with a local outbox in front of it. An archive is first written and
 * committed in `<dataDir>/outbox` (same atomic rules as local storage), then pushed to the
 * remote; only once the remote has it is the local copy removed. So a backup is never lost
 * because the bucket had a bad minute: it stays in the outbox, listed, restorable and
 * downloadable, until a later push succeeds (`pending()` lists what waits).
 *
 * Reads prefer the outbox (the bytes are local); listing merges both. The cost: local disk for
 * one archive while it uploads, which a restore needs anyway (ZIP readers want random access).
 */
export class OutboxStorage implements Storage {
  readonly outbox: LocalStorage;
  private merged: { remote: readonly StoredObject[]; local: readonly StoredObject[]; result: readonly StoredObject[] } | null = null;

  constructor(
    readonly remote: Storage,
    outboxDir: string,
  ) {
    this.outbox = new LocalStorage(outboxDir);
  }

  get description(): string {
    return this.remote.description;
  }

  /** Writes into the outbox; `push(key)` sends the committed archive on. */
  createUpload(key: string): Promise<Upload> {
    return this.outbox.createUpload(key);
  }

  /** Archives committed locally that the remote does not have yet, oldest first. */
  async pending(): Promise<StoredObject[]> {
    return [...(await this.outbox.list())].reverse();
  }

  async isPending(key: string): Promise<boolean> {
    return (await this.outbox.stat(key)) !== null;
  }

  /**
   * Sends an archive from the outbox to the remote, retrying with the given delays, then removes
   * the local copy. Throws the last error when every attempt failed (the archive stays local).
   * A key the remote already holds (a push that died after its commit) only drops the copy.
   */
  async push(key: string, options: PushOptions = {}): Promise<StoredObject> {
    const delays = options.delaysMs ?? PUSH_DELAYS_MS;
    const local = await this.outbox.stat(key);
    if (!local) {
      const there = await this.remote.stat(key);
      if (there) return there;
      throw new Error(`${key} is neither waiting in ${this.outbox.root} nor in ${this.remote.description}`);
    }
    for (let attempt = 1; ; attempt++) {
      try {
        const stored = await this.pushOnce(key, local);
        await this.outbox.delete(key);
        return stored;
      } catch (err) {
        if (options.signal?.aborted || attempt > delays.length) throw err;
        const delay = delays[attempt - 1]!;
        options.onRetry?.(attempt, delay, err);
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  private async pushOnce(key: string, local: StoredObject): Promise<StoredObject> {
    const there = await this.remote.stat(key);
    // Pushed before, and the process stopped before it removed the local copy.
    if (there) {
      if (there.size === local.size) return there;
      throw new Error(`${this.remote.description} already holds a different ${key} (${there.size} bytes, ${local.size} here); rename one of them`);
    }
    const upload = await this.remote.createUpload(key);
    try {
      await pipeline(fs.createReadStream(path.join(this.outbox.root, key)), upload.stream);
      return await upload.commit();
    } catch (err) {
      await upload.abort().catch(() => {});
      throw err;
    }
  }

  async get(key: string, range?: { start: number; end?: number }): Promise<Readable> {
    if (await this.outbox.stat(key)) return this.outbox.get(key, range);
    return this.remote.get(key, range);
  }

  async stat(key: string): Promise<StoredObject | null> {
    return (await this.outbox.stat(key)) ?? this.remote.stat(key);
  }

  /**
   * Whether a new backup may take `key`, without needing the remote: an unreachable bucket must
   * not stop a backup into the outbox. If the remote does hold the key after all, the push
   * refuses to replace it and says so.
   */
  async keyTaken(key: string): Promise<boolean> {
    if (await this.outbox.stat(key)) return true;
    try {
      return (await this.remote.stat(key)) !== null;
    } catch {
      return false;
    }
  }

  /** Both sides, newest first; an archive in both (pushed, copy not yet removed) once. */
  /** Both sides merged; while the remote cannot be listed, IncompleteListing with the outbox's. */
  async list(): Promise<readonly StoredObject[]> {
    const [remote, local] = await Promise.all([this.remote.list().catch((err: unknown) => err as Error), this.outbox.list()]);
    if (remote instanceof Error) throw new IncompleteListing(local, remote);
    if (this.merged && this.merged.remote === remote && this.merged.local === local) return this.merged.result;
    let result: readonly StoredObject[] = remote;
    if (local.length) {
      const inRemote = new Set(remote.map((o) => o.key));
      result = [...remote, ...local.filter((o) => !inRemote.has(o.key))].sort((a, b) => b.modified.getTime() - a.modified.getTime() || (a.key < b.key ? 1 : -1));
    }
    this.merged = { remote, local, result };
    return result;
  }

  async delete(key: string): Promise<void> {
    await this.outbox.delete(key);
    await this.remote.delete(key);
  }

  async localCopy(key: string, tempDir: string): Promise<LocalCopy> {
    if (await this.outbox.stat(key)) return this.outbox.localCopy(key);
    return this.remote.localCopy(key, tempDir);
  }

  async cleanupIncomplete(isWriterAlive: (owner: string) => boolean): Promise<number> {
    const local = await this.outbox.cleanupIncomplete(isWriterAlive);
    try {
      return local + (await this.remote.cleanupIncomplete(isWriterAlive));
    } catch {
      // The bucket being unreachable must not stop local work (a backup into the outbox, a
      // restore from it). The next command cleans up; a push reports what is wrong with S3.
      return local;
    }
  }
}
