import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeTempDir, removeDir } from '../testing/tmp.js';
import { LocalStorage } from './local.js';
import { OutboxStorage } from './outbox.js';
import { describeStorage, put, read } from './storage.suite.js';
import { IncompleteListing, type Storage, type Upload } from './storage.js';

// The outbox keeps every Storage contract on its own (archives committed there are listed).
describeStorage('outbox in front of a remote', async () => {
  const dir = makeTempDir();
  return {
    storage: new OutboxStorage(new LocalStorage(path.join(dir, 'remote')), path.join(dir, 'outbox')),
    tempDir: dir,
    cleanup: async () => removeDir(dir),
    putForeign: async (name, body) => {
      fs.mkdirSync(path.dirname(path.join(dir, 'outbox', name)), { recursive: true });
      fs.writeFileSync(path.join(dir, 'outbox', name), body);
    },
  };
});

/** A remote whose uploads fail the first `failures` times, like a bucket having a bad minute. */
function flakyRemote(root: string, failures: number): { storage: Storage; attempts: () => number } {
  const inner = new LocalStorage(root);
  let attempts = 0;
  const storage = Object.create(inner) as Storage;
  storage.createUpload = async (key: string): Promise<Upload> => {
    attempts++;
    if (attempts <= failures) throw new Error(`S3 is down (attempt ${attempts})`);
    return inner.createUpload(key);
  };
  return { storage, attempts: () => attempts };
}

describe('OutboxStorage push', () => {
  const body = Buffer.from('archive bytes '.repeat(1000));

  it('lists what the outbox holds, as an IncompleteListing naming the cause, while the remote cannot be listed', async () => {
    const dir = makeTempDir();
    try {
      const remote = new LocalStorage(path.join(dir, 'remote'));
      const s = new OutboxStorage(remote, path.join(dir, 'outbox'));
      await put(remote, 'old.zip', body);
      await put(s, 'waiting.zip', body);
      remote.list = async () => {
        throw new Error('could not reach the bucket (ECONNREFUSED)');
      };
      const err = await s.list().then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(IncompleteListing);
      expect((err as IncompleteListing).message).toMatch(/ECONNREFUSED/);
      expect((err as IncompleteListing).available.map((o) => o.key)).toEqual(['waiting.zip']);
    } finally {
      removeDir(dir);
    }
  });

  it('sends a committed archive to the remote and drops the local copy', async () => {
    const dir = makeTempDir();
    try {
      const remote = new LocalStorage(path.join(dir, 'remote'));
      const s = new OutboxStorage(remote, path.join(dir, 'outbox'));
      await put(s, 'a.zip', body);
      expect((await s.pending()).map((o) => o.key)).toEqual(['a.zip']);
      expect(await remote.stat('a.zip')).toBeNull();
      const stored = await s.push('a.zip', { delaysMs: [] });
      expect(stored.size).toBe(body.length);
      expect(await read(await remote.get('a.zip'))).toEqual(body);
      expect(await s.pending()).toEqual([]);
      expect((await s.list()).map((o) => o.key)).toEqual(['a.zip']);
    } finally {
      removeDir(dir);
    }
  });

  it('retries with the given delays, and keeps the archive when every attempt fails', async () => {
    const dir = makeTempDir();
    try {
      const flaky = flakyRemote(path.join(dir, 'remote'), 2);
      const s = new OutboxStorage(flaky.storage, path.join(dir, 'outbox'));
      await put(s, 'a.zip', body);
      const retries: number[] = [];
      await s.push('a.zip', { delaysMs: [5, 5], onRetry: (n) => retries.push(n) });
      expect(flaky.attempts()).toBe(3);
      expect(retries).toEqual([1, 2]);
      expect(await s.pending()).toEqual([]);

      const down = flakyRemote(path.join(dir, 'remote2'), 99);
      const s2 = new OutboxStorage(down.storage, path.join(dir, 'outbox2'));
      await put(s2, 'b.zip', body);
      await expect(s2.push('b.zip', { delaysMs: [1, 1] })).rejects.toThrow(/S3 is down \(attempt 3\)/);
      expect((await s2.pending()).map((o) => o.key)).toEqual(['b.zip']);
      expect(await read(await s2.get('b.zip'))).toEqual(body); // still readable from the outbox
    } finally {
      removeDir(dir);
    }
  });

  it('finishes a push that died after the remote had it, and refuses to replace a different archive', async () => {
    const dir = makeTempDir();
    try {
      const remote = new LocalStorage(path.join(dir, 'remote'));
      const s = new OutboxStorage(remote, path.join(dir, 'outbox'));
      await put(remote, 'same.zip', body);
      await put(s, 'same.zip', body);
      await s.push('same.zip', { delaysMs: [] });
      expect(await s.pending()).toEqual([]);

      await put(remote, 'other.zip', Buffer.from('something else'));
      await put(s, 'other.zip', body);
      await expect(s.push('other.zip', { delaysMs: [] })).rejects.toThrow(/already holds a different other.zip/);
      expect((await s.pending()).map((o) => o.key)).toEqual(['other.zip']);
      expect(await read(await remote.get('other.zip'))).toEqual(Buffer.from('something else'));
    } finally {
      removeDir(dir);
    }
  });

  it('answers whether a key is taken even when the remote cannot be reached', async () => {
    const dir = makeTempDir();
    try {
      const broken = Object.create(new LocalStorage(path.join(dir, 'remote'))) as Storage;
      broken.stat = async () => {
        throw new Error('unreachable');
      };
      const s = new OutboxStorage(broken, path.join(dir, 'outbox'));
      expect(await s.keyTaken('a.zip')).toBe(false);
      await put(s, 'a.zip', body);
      expect(await s.keyTaken('a.zip')).toBe(true);
      expect(await s.cleanupIncomplete(() => false)).toBe(0);
    } finally {
      removeDir(dir);
    }
  });
});
