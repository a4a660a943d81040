import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { isStowageError } from '../errors.js';
import { processTag } from '../fs/process.js';
import type { Storage } from './storage.js';

/**
 * The conformance suite every Storage implementation runs (restic's backend test suite is the
 * model). A new backend is done when this passes against it.
 */
export function describeStorage(name: string, make: () => Promise<{ storage: Storage; tempDir: string; cleanup: () => Promise<void> }>): void {
  describe(`Storage conformance: ${name}`, () => {
    async function withStorage(fn: (s: Storage, tempDir: string) => Promise<void>) {
      const { storage, tempDir, cleanup } = await make();
      try {
        await fn(storage, tempDir);
      } finally {
        await cleanup();
      }
    }

    async function put(s: Storage, key: string, body: Buffer) {
      const upload = await s.createUpload(key);
      await pipeline(Readable.from([body]), upload.stream, { end: false });
      return upload.commit();
    }

    async function read(stream: Readable): Promise<Buffer> {
      const parts: Buffer[] = [];
      for await (const c of stream) parts.push(c as Buffer);
      return Buffer.concat(parts);
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
        await new Promise((r) => setTimeout(r, 20));
        await put(s, 'new.zip', Buffer.from('new'));
        expect((await s.list()).map((o) => o.key)).toEqual(['new.zip', 'old.zip']);
        const copy = await s.localCopy('new.zip', tempDir);
        const { readFileSync } = await import('node:fs');
        expect(readFileSync(copy.path, 'utf8')).toBe('new');
        await copy.release();
      }));
  });
}
