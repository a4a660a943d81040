import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { generateIdentity } from '../src/encryption/index.js';
import { StowageClient } from '../src/sdk/index.js';
import { stowageAsync } from '../src/testing/cli.js';
import { startTestServer } from '../src/testing/server.js';
import { run } from '../src/testing/tmp.js';

const BACKUP_KEY = 'an-export-key-of-at-least-20-chars';

/** Encryption through the API: per-request recipients, restore and download with a key, SysReptor-style exports with aes_key. */
describe('encrypted backups through the API', () => {
  it('creates to a public key the server cannot read, restores and downloads with the identity, refuses a wrong one', async () => {
    const s = await startTestServer();
    const { identity, recipient } = generateIdentity();
    const other = generateIdentity();
    try {
      const created = await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: { name: 'locked', encryption: { recipients: [recipient] } } });
      expect(created.status).toBe(200);
      expect(await created.json()).toMatchObject({ key: 'locked.zip.age', encrypted: true, status: 'completed' });
      const stored = fs.readFileSync(path.join(s.root, 'data/backups/locked.zip.age'));
      expect(stored.subarray(0, 21).toString()).toBe('age-encryption.org/v1');
      expect(stored.includes(Buffer.from('readme.txt'))).toBe(false);

      // The plain download is the age file itself; age decrypts it with the identity.
      const idFile = path.join(s.root, 'id.txt');
      fs.writeFileSync(idFile, `${identity}\n`, { mode: 0o600 });
      const raw = Buffer.from(await (await s.request('/api/backups/locked.zip.age', { token: s.adminToken })).arrayBuffer());
      expect(raw.equals(stored)).toBe(true);

      const wrong = await s.request('/api/backups/locked.zip.age/restore', { method: 'POST', token: s.adminToken, json: { identity: other.identity } });
      expect(wrong.status).toBe(400);
      expect(((await wrong.json()) as { message: string }).message).toMatch(/no identity matches|identity/);
      const missing = await s.request('/api/backups/locked.zip.age/restore', { method: 'POST', token: s.adminToken });
      expect(missing.status).toBe(400);
      expect(((await missing.json()) as { message: string }).message).toMatch(/encrypted: give the identity/);

      fs.writeFileSync(path.join(s.root, 'app/files/readme.txt'), 'changed\n');
      const restore = await s.request('/api/backups/locked.zip.age/restore', { method: 'POST', token: s.adminToken, json: { identity, safetyBackup: false } });
      expect(restore.status).toBe(202);
      for (let i = 0; i < 100 && s.stowage.restoreStatus().status === 'started'; i++) await new Promise((r) => setTimeout(r, 100));
      expect(s.stowage.restoreStatus().status).toBe('completed');
      expect(fs.readFileSync(path.join(s.root, 'app/files/readme.txt'), 'utf8')).toBe('hello\n');

      const client = new StowageClient(s.url, { token: s.tokenWith('backups:download') });
      const plain = await client.backups.downloadDecrypted('locked.zip.age', { identity });
      expect(plain.status).toBe(200);
      const zip = path.join(s.root, 'plain.zip');
      fs.writeFileSync(zip, Buffer.from(await plain.arrayBuffer()));
      expect(run('unzip', ['-tq', zip]).status).toBe(0);
      await expect(client.backups.downloadDecrypted('locked.zip.age', { identity: other.identity })).rejects.toMatchObject({ status: 400 });
      expect((await s.request('/api/backups/locked.zip.age/download-decrypted', { method: 'POST', token: s.tokenWith('backups:read'), json: { identity } })).status).toBe(403);

      // `encryption: false` overrides the configuration; a short passphrase is a field error.
      const open = (await (await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: { name: 'open', encryption: false } })).json()) as { key: string };
      expect(open.key).toBe('open.zip');
      const short = await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: { encryption: { passphrase: 'short' } } });
      expect(short.status).toBe(400);
      const badKey = await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: { encryption: { recipients: ['age1nope'] } } });
      expect(badKey.status).toBe(400);
    } finally {
      await s.close();
    }
  });

  it('exports encrypted with the caller\'s AES key; stowage decrypt opens it and unzip accepts it', async () => {
    const s = await startTestServer({ backupKey: BACKUP_KEY });
    try {
      const aesKey = 'ab'.repeat(32);
      const r = await s.request('/api/backups/export', { method: 'POST', token: s.adminToken, json: { key: BACKUP_KEY, aes_key: aesKey } });
      expect(r.status).toBe(200);
      const sealed = Buffer.from(await r.arrayBuffer());
      expect(sealed.includes(Buffer.from('readme.txt'))).toBe(false);
      const file = path.join(s.root, 'export.bin');
      fs.writeFileSync(file, sealed);
      fs.writeFileSync(path.join(s.root, 'aes.key'), aesKey);
      const dec = await stowageAsync(s.root, ['decrypt', file, '-o', 'export.zip', '--aes-key-file', 'aes.key', '--json']);
      expect(dec.status, dec.stderr).toBe(0);
      expect(run('unzip', ['-tq', path.join(s.root, 'export.zip')]).status).toBe(0);
      expect(execFileSync('unzip', ['-p', path.join(s.root, 'export.zip'), 'files/readme.txt'], { encoding: 'utf8' })).toBe('hello\n');
      fs.writeFileSync(path.join(s.root, 'wrong.key'), 'cd'.repeat(32));
      const wrong = await stowageAsync(s.root, ['decrypt', file, '-o', 'wrong.zip', '--aes-key-file', 'wrong.key', '--json']);
      expect(wrong.status).toBe(1);
      expect(fs.existsSync(path.join(s.root, 'wrong.zip'))).toBe(false);
      const bad = await s.request('/api/backups/export', { method: 'POST', token: s.adminToken, json: { key: BACKUP_KEY, aes_key: 'not-a-key' } });
      expect(bad.status).toBe(400);
      expect(((await bad.json()) as { data: object }).data).toHaveProperty('aes_key');
    } finally {
      await s.close();
    }
  });
});
