import crypto from 'node:crypto';
import fs from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { isStowageError } from '../errors.js';
import { processTag } from '../fs/process.js';
import type { Storage } from './storage.js';

export interface StorageUnderTest {
  storage: Storage;
  tempDir: string;
  cleanup: () => Promise<void>;
  /**
   * Puts an object with these bytes at `name` relative to where the storage keeps its archives,
   * bypassing the Storage API: how a foreign file ("notes.txt", "sub/x.zip") gets there.
   */
  putForeign: (name: string, body: Buffer) => Promise<void>;
}

export interface StorageSuiteOptions {
  /** Resolution of `modified` (S3: one second), so that "newest first" is tested across it. */
  timestampResolutionMs?: number;
}

/** Stores `body` under `key` through an upload (as a backup would). */
export async function put(s: Storage, key: string, body: Buffer) {
  const upload = await s.createUpload(key);
  await pipeline(Readable.from([body]), upload.stream, { end: false });
  return upload.commit();
}

export async function read(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/**
 * The conformance suite every Storage implementation runs (restic's backend test suite is the
 * model). A new backend is done when this passes against it.
 */
export function describeStorage(name: string, make: () => Promise<StorageUnderTest>, options: StorageSuiteOptions = {}): void {
  describe(`Storage conformance: ${name}`, () => {
    async function withStorage(fn: (s: Storage, tempDir: string, under: StorageUnderTest) => Promise<void>) {
      const under = await make();
      try {
        await fn(under.storage, under.tempDir, under);
      } finally {
        await under.cleanup();
      }
    }


    it('stores, stats, reads (whole and ranges), lists and deletes', () =>
      withStorage(async (s) => {
        const body = Buffer.from('0123456789'.repeat(1000));
        const stored = await put(s, 'a.zip', body);
        expect(stored.size).toBe(body.length);
        expect((await s.stat('a.zip'))?.size).toBe(body.length);
        expect((await read(await s.get('a.zip'))).equals(body)).toBe(true);
        expect((await read(await s.get('a.zip', { start: 5, end: 14 }))).toString()).toBe('5678901234');
        expect((await s.list()).map((o) => o.key)).toEqual(['a.zip']);
        await s.delete('a.zip');
        expect(await s.stat('a.zip')).toBeNull();
        await s.delete('a.zip'); // deleting twice is fine
      }));

    it('shows nothing under a key until commit, and nothing after abort', () =>
      withStorage(async (s) => {
        const upload = await s.createUpload('pending.zip');
        upload.stream.write(Buffer.alloc(1000, 1));
        expect(await s.stat('pending.zip')).toBeNull();
        expect(await s.list()).toEqual([]);
        await upload.abort();
        expect(await s.stat('pending.zip')).toBeNull();
        expect(await s.list()).toEqual([]);
      }));

    it('never replaces an existing key', () =>
      withStorage(async (s) => {
        await put(s, 'same.zip', Buffer.from('first'));
        const err = await put(s, 'same.zip', Buffer.from('second')).catch((e: unknown) => e);
        expect(isStowageError(err, 'BACKUP_EXISTS')).toBe(true);
        expect((await read(await s.get('same.zip'))).toString()).toBe('first');
      }));

    it('reports missing keys as not found', () =>
      withStorage(async (s) => {
        expect(await s.stat('missing.zip')).toBeNull();
        const err = await s.get('missing.zip').catch((e: unknown) => e);
        expect(isStowageError(err, 'BACKUP_NOT_FOUND')).toBe(true);
      }));

    it('refuses keys that are not valid backup keys', () =>
      withStorage(async (s) => {
        for (const key of ['../x.zip', 'a/b.zip', 'UPPER.zip', 'noext', '.hidden.zip']) {
          const err = await s.createUpload(key).catch((e: unknown) => e);
          expect(isStowageError(err, 'INVALID_KEY')).toBe(true);
        }
      }));

    it('cleans up uploads that never committed (a crash)', () =>
      withStorage(async (s) => {
        const upload = await s.createUpload('crashed.zip');
        await new Promise<void>((resolve) => upload.stream.write(Buffer.alloc(10), () => resolve()));
        // While its writer (this process) lives, the upload is left alone...
        expect(await s.cleanupIncomplete((owner) => owner === processTag())).toBe(0);
        // ...once the writer is gone (a crash: never committed or aborted), it is removed.
        expect(await s.cleanupIncomplete(() => false)).toBeGreaterThanOrEqual(1);
        expect(await s.list()).toEqual([]);
      }));

    it('lists newest first and gives a local copy for random access', () =>
      withStorage(async (s, tempDir) => {
        await put(s, 'old.zip', Buffer.from('old'));
        await new Promise((r) => setTimeout(r, Math.max(20, (options.timestampResolutionMs ?? 0) + 50)));
        await put(s, 'new.zip', Buffer.from('new'));
        expect((await s.list()).map((o) => o.key)).toEqual(['new.zip', 'old.zip']);
        const copy = await s.localCopy('new.zip', tempDir);
        expect(fs.readFileSync(copy.path, 'utf8')).toBe('new');
        await copy.release();
      }));

    it('commit refuses an existing key and leaves no temporary object behind', () =>
      withStorage(async (s) => {
        await put(s, 'taken.zip', Buffer.from('first'));
        const upload = await s.createUpload('taken.zip');
        await pipeline(Readable.from([Buffer.from('second, longer')]), upload.stream, { end: false });
        const err = await upload.commit().catch((e: unknown) => e);
        expect(isStowageError(err, 'BACKUP_EXISTS')).toBe(true);
        await upload.abort(); // after a failed commit: safe
        expect(await s.cleanupIncomplete(() => false)).toBe(0);
        expect((await s.list()).map((o) => [o.key, o.size])).toEqual([['taken.zip', 5]]);
        expect((await read(await s.get('taken.zip'))).toString()).toBe('first');
      }));

    it('reads ranges: inclusive ends, open ends, single bytes, past the end', () =>
      withStorage(async (s) => {
        const body = crypto.randomBytes(70_000);
        await put(s, 'r.zip', body);
        expect((await read(await s.get('r.zip', { start: 0, end: 0 }))).equals(body.subarray(0, 1))).toBe(true);
        expect((await read(await s.get('r.zip', { start: 65_530 }))).equals(body.subarray(65_530))).toBe(true);
        expect((await read(await s.get('r.zip', { start: 1000, end: 68_999 }))).equals(body.subarray(1000, 69_000))).toBe(true);
        expect((await read(await s.get('r.zip', { start: 69_999, end: 69_999 }))).equals(body.subarray(69_999))).toBe(true);
        // An end past the last byte stops at the last byte.
        expect((await read(await s.get('r.zip', { start: 69_990, end: 80_000 }))).equals(body.subarray(69_990))).toBe(true);
        expect((await read(await s.get('r.zip', { start: 70_000 }))).length).toBe(0);
      }));

    it('stores binary data byte for byte, written in many small writes with backpressure', () =>
      withStorage(async (s) => {
        const body = crypto.randomBytes(3 * 1024 * 1024 + 17);
        const upload = await s.createUpload('big.zip');
        const chunks = function* () {
          for (let i = 0; i < body.length; i += 10_000) yield body.subarray(i, i + 10_000);
        };
        await pipeline(Readable.from(chunks()), upload.stream, { end: false });
        expect((await upload.commit()).size).toBe(body.length);
        expect((await read(await s.get('big.zip'))).equals(body)).toBe(true);
      }));

    it('stores an empty archive', () =>
      withStorage(async (s) => {
        expect((await put(s, 'empty.zip', Buffer.alloc(0))).size).toBe(0);
        expect((await s.stat('empty.zip'))?.size).toBe(0);
        expect((await read(await s.get('empty.zip'))).length).toBe(0);
      }));

    it('lists only valid keys: foreign names, other folders and temporary uploads are hidden', () =>
      withStorage(async (s, _tempDir, under) => {
        for (const foreign of ['notes.txt', 'UPPER.ZIP', '.hidden.zip', 'sub/inner.zip', 'x.zip.part', 'sub/deeper/y.zip']) {
          await under.putForeign(foreign, Buffer.from('foreign'));
        }
        const pending = await s.createUpload('pending.zip');
        await put(s, 'mine.zip', Buffer.from('mine'));
        expect((await s.list()).map((o) => o.key)).toEqual(['mine.zip']);
        await pending.abort();
        // Clean-up removes only what an upload left, never a foreign object.
        await s.cleanupIncomplete(() => false);
        expect((await s.list()).map((o) => o.key)).toEqual(['mine.zip']);
      }));

    it('deleting a missing key is a no-op; deleting leaves other keys alone', () =>
      withStorage(async (s) => {
        await s.delete('never-existed.zip');
        await put(s, 'keep.zip', Buffer.from('keep'));
        await put(s, 'drop.zip', Buffer.from('drop'));
        await s.delete('drop.zip');
        await s.delete('drop.zip');
        expect((await s.list()).map((o) => o.key)).toEqual(['keep.zip']);
        const err = await s.get('drop.zip').catch((e: unknown) => e);
        expect(isStowageError(err, 'BACKUP_NOT_FOUND')).toBe(true);
      }));

    it('checks keys before any access: get, stat, delete and localCopy refuse invalid keys', () =>
      withStorage(async (s, tempDir) => {
        for (const key of ['../x.zip', 'a/b.zip', '.stowage-upload-x.zip']) {
          for (const attempt of [() => s.get(key), () => s.stat(key), () => s.delete(key), () => s.localCopy(key, tempDir)]) {
            const err = await attempt().catch((e: unknown) => e);
            expect(isStowageError(err, 'INVALID_KEY')).toBe(true);
          }
        }
      }));

    it('gives a local copy with exactly the stored bytes; release keeps the archive', () =>
      withStorage(async (s, tempDir) => {
        const body = crypto.randomBytes(300_001);
        await put(s, 'copy.zip', body);
        const copy = await s.localCopy('copy.zip', tempDir);
        expect(fs.readFileSync(copy.path).equals(body)).toBe(true);
        await copy.release();
        await copy.release();
        expect((await read(await s.get('copy.zip'))).equals(body)).toBe(true);
        const err = await s.localCopy('absent.zip', tempDir).catch((e: unknown) => e);
        expect(isStowageError(err, 'BACKUP_NOT_FOUND')).toBe(true);
      }));

    it('abort is safe more than once, and a committed upload leaves nothing to clean', () =>
      withStorage(async (s) => {
        const upload = await s.createUpload('twice.zip');
        upload.stream.write(Buffer.alloc(100, 7));
        await upload.abort();
        await upload.abort();
        await put(s, 'done.zip', Buffer.from('done'));
        expect(await s.cleanupIncomplete(() => false)).toBe(0);
        expect((await s.list()).map((o) => o.key)).toEqual(['done.zip']);
      }));
  });
}
