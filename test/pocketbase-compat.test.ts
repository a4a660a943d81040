import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import PocketBase, { ClientResponseError } from 'pocketbase';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ADMIN_EMAIL, ADMIN_PASSWORD, startTestServer, waitFor, type TestServer } from '../src/testing/server.js';

/**
 * The official PocketBase JS SDK, used as a PocketBase user would, against Stowage: the
 * backup routes, auth and download tokens are compatible, so existing admin UIs and scripts
 * keep working. Only the restore status is Stowage's own route (through `pb.send`).
 */

let ts: TestServer;
let pb: PocketBase;

beforeEach(async () => {
  ts = await startTestServer();
  pb = new PocketBase(ts.url);
});

afterEach(async () => {
  await ts.close();
});

const storedFile = (key: string) => path.join(ts.stowage.config.storage.path, key);
const sha256 = (bytes: Uint8Array) => crypto.createHash('sha256').update(bytes).digest('hex');

describe('the pocketbase SDK against Stowage', () => {
  it('authenticates as a superuser; the auth store holds a valid token', async () => {
    expect(pb.authStore.isValid).toBe(false);
    const auth = await pb.collection('_superusers').authWithPassword(ADMIN_EMAIL, ADMIN_PASSWORD);
    expect(auth.token).toBe(pb.authStore.token);
    expect(auth.record.email).toBe(ADMIN_EMAIL);
    expect(pb.authStore.isValid).toBe(true);
    expect(pb.authStore.isSuperuser).toBe(true);
    expect(pb.authStore.record?.id).toBe(auth.record.id);

    const refreshed = await pb.collection('_superusers').authRefresh();
    expect(refreshed.record.email).toBe(ADMIN_EMAIL);
    expect(pb.authStore.isValid).toBe(true);
  });

  it('rejects a wrong password with ClientResponseError 400', async () => {
    const err = await pb
      .collection('_superusers')
      .authWithPassword(ADMIN_EMAIL, 'not the password')
      .then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(ClientResponseError);
    const cre = err as ClientResponseError;
    expect(cre.status).toBe(400);
    expect(cre.response.message).toMatch(/Failed to authenticate/);
    expect(cre.response.data.identity.code).toBe('validation_invalid_credentials');
    expect(pb.authStore.isValid).toBe(false);
  });

  it('without auth, the backups API answers 401 as a ClientResponseError', async () => {
    const err = await pb.backups.getFullList().then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(ClientResponseError);
    expect((err as ClientResponseError).status).toBe(401);
  });

  it('creates, lists, uploads, downloads by token, restores and deletes backups', async () => {
    await pb.collection('_superusers').authWithPassword(ADMIN_EMAIL, ADMIN_PASSWORD);

    expect(await pb.backups.getFullList()).toEqual([]);
    expect(await pb.backups.create('pb_made')).toBe(true);
    const listed = await pb.backups.getFullList();
    expect(listed.map((b) => b.key)).toEqual(['pb_made.zip']);
    const made = listed[0]!;
    const madeBytes = fs.readFileSync(storedFile('pb_made.zip'));
    expect(made.size).toBe(madeBytes.length);
    expect(Math.abs(Date.parse(made.modified) - fs.statSync(storedFile('pb_made.zip')).mtimeMs)).toBeLessThan(1000);

    // A download URL with a file token works without the Authorization header.
    const token = await pb.files.getToken();
    expect(token).not.toBe('');
    const url = pb.backups.getDownloadURL(token, 'pb_made.zip');
    const downloaded = await fetch(url);
    expect(downloaded.status).toBe(200);
    const bytes = new Uint8Array(await downloaded.arrayBuffer());
    expect(sha256(bytes)).toBe(sha256(madeBytes));
    expect((await fetch(pb.backups.getDownloadURL('not-a-token', 'pb_made.zip'))).status).toBe(403);

    // Upload that archive back under another name, as a File in a plain object.
    expect(await pb.backups.upload({ file: new File([bytes], 'uploaded.zip') })).toBe(true);
    const keys = (await pb.backups.getFullList()).map((b) => b.key).sort();
    expect(keys).toEqual(['pb_made.zip', 'uploaded.zip']);
    expect(sha256(fs.readFileSync(storedFile('uploaded.zip')))).toBe(sha256(madeBytes));

    // A non-archive upload is a 400 on the file field.
    const bad = await pb.backups.upload({ file: new File([new TextEncoder().encode('not a zip')], 'bad.zip') }).then(() => null, (e: unknown) => e);
    expect(bad).toBeInstanceOf(ClientResponseError);
    expect((bad as ClientResponseError).status).toBe(400);
    expect((bad as ClientResponseError).response.data.file.code).toBe('validation_invalid_archive');

    // Restore the uploaded copy over changed data, and wait for the restore status.
    const readme = path.join(ts.root, 'app/files/readme.txt');
    fs.writeFileSync(readme, 'changed by the test\n');
    expect(await pb.backups.restore('uploaded.zip')).toBe(true);
    const status = await waitFor(async () => {
      const s = await pb.send<{ status: string; key: string | null }>('/api/restore-status', {});
      return s.status !== 'started' ? s : null;
    }, 60_000, 'the restore to finish');
    expect(status.status).toBe('completed');
    expect(status.key).toBe('uploaded.zip');
    expect(fs.readFileSync(readme, 'utf8')).toBe('hello\n');

    expect(await pb.backups.delete('uploaded.zip')).toBe(true);
    const after = (await pb.backups.getFullList()).map((b) => b.key);
    expect(after).toContain('pb_made.zip');
    expect(after).not.toContain('uploaded.zip');
    expect(fs.existsSync(storedFile('uploaded.zip'))).toBe(false);

    const missing = await pb.backups.delete('uploaded.zip').then(() => null, (e: unknown) => e);
    expect((missing as ClientResponseError).status).toBe(404);
  });

  it('a second create with the same name is a 400 on the name field', async () => {
    await pb.collection('_superusers').authWithPassword(ADMIN_EMAIL, ADMIN_PASSWORD);
    await pb.backups.create('twice');
    const err = await pb.backups.create('twice').then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(ClientResponseError);
    expect((err as ClientResponseError).status).toBe(400);
    expect((err as ClientResponseError).response.data.name.code).toBe('validation_backup_exists');
  });
});
