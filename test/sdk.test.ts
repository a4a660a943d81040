import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SseParser, StowageApiError, StowageClient, StowageError, type Scope, type ServerEvent, type SseMessage } from '../src/sdk/index.js';
import { ADMIN_EMAIL, ADMIN_PASSWORD, startTestServer, waitFor, type TestServer } from '../src/testing/server.js';
import { hasCommand, makeTempDir, removeDir, run } from '../src/testing/tmp.js';

/**
 * The SDK end to end against a real server on a loopback port: every call goes through fetch,
 * HTTP and the real engine, and the bytes that come back are compared with the archives on disk.
 */

let ts: TestServer;
let client: StowageClient;
let scratch: string;

beforeEach(async () => {
  ts = await startTestServer();
  client = new StowageClient(ts.url);
  await client.auth.login(ADMIN_EMAIL, ADMIN_PASSWORD);
  scratch = makeTempDir('stowage-sdk-');
});

afterEach(async () => {
  await ts.close();
  removeDir(scratch);
});

const storedFile = (key: string) => path.join(ts.stowage.config.storage.path, key);
const sha256 = (bytes: Uint8Array) => crypto.createHash('sha256').update(bytes).digest('hex');

/** The rejection of `promise`, which must be a StowageApiError. */
async function apiError(promise: Promise<unknown>): Promise<StowageApiError> {
  const err = await promise.then(
    () => {
      throw new Error('expected the call to fail');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(StowageApiError);
  return err as StowageApiError;
}

/** `unzip -t` on the bytes; unzip judges the archive, not our reader. */
function expectZipTestsOk(bytes: Uint8Array, name = 'check.zip'): void {
  if (!hasCommand('unzip')) return;
  const file = path.join(scratch, name);
  fs.writeFileSync(file, bytes);
  const r = run('unzip', ['-t', file]);
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/No errors detected/);
}

async function waitForRestore(c: StowageClient) {
  return waitFor(async () => {
    const s = await c.restoreStatus();
    return s.status !== 'started' ? s : null;
  }, 60_000, 'the restore to finish');
}

describe('auth', () => {
  it('logs in, stores the token, refreshes it and logs out', async () => {
    const fresh = new StowageClient(`${ts.url}/`);
    expect(fresh.token).toBeNull();
    const result = await fresh.auth.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    expect(result.record.email).toBe(ADMIN_EMAIL);
    expect(result.record.collectionName).toBe('_superusers');
    expect(fresh.token).toBe(result.token);
    expect(fresh.auth.record?.email).toBe(ADMIN_EMAIL);
    expect(await fresh.backups.list()).toEqual([]);

    const refreshed = await fresh.auth.refresh();
    expect(fresh.token).toBe(refreshed.token);
    expect(refreshed.record.id).toBe(result.record.id);
    expect((await fresh.tokens.list()).length).toBe(0); // superuser-only route: the new token is a session

    fresh.auth.logout();
    expect(fresh.token).toBeNull();
    expect(fresh.auth.isLoggedIn).toBe(false);
    const err = await apiError(fresh.backups.list());
    expect(err.status).toBe(401);
    expect(err.message).toMatch(/requires authorization/);

    // The token setter: a token given by hand is sent.
    fresh.token = ts.adminToken;
    expect(await fresh.backups.list()).toEqual([]);
  });

  it('rejects a wrong password with 400 and a field error, without storing anything', async () => {
    const fresh = new StowageClient(ts.url);
    const err = await apiError(fresh.auth.login(ADMIN_EMAIL, 'wrong password!'));
    expect(err.status).toBe(400);
    expect(err.data.identity?.code).toBe('validation_invalid_credentials');
    expect(fresh.token).toBeNull();
    expect(err).toBeInstanceOf(StowageError); // the alias is the same class
  });
});

describe('backups', () => {
  it('creates, lists and describes a backup whose size is the archive on disk', async () => {
    const created = await client.backups.create({ name: 'sdk_first', description: 'from the SDK' });
    expect(created.key).toBe('sdk_first.zip');
    expect(created.status).toBe('completed');
    expect(created.description).toBe('from the SDK');
    expect(created.trigger).toBe('api');
    const onDisk = fs.statSync(storedFile('sdk_first.zip')).size;
    expect(created.size).toBe(onDisk);

    const list = await client.backups.list();
    expect(list.map((b) => b.key)).toEqual(['sdk_first.zip']);
    expect(list[0]!.size).toBe(onDisk);
    expect(Number.isNaN(Date.parse(list[0]!.modified))).toBe(false);

    const info = await client.backups.get('sdk_first.zip');
    expect(info.key).toBe('sdk_first.zip');
    expect(info.sources.map((s) => s.name).sort()).toEqual(['db', 'files']);
    expect(info.labels).toEqual({ model: 'm1', serial: 'S1' });
    expect(Array.isArray(info.excludes)).toBe(true);

    const jobs = await client.jobs({ limit: 10 });
    expect(jobs.some((j) => j.kind === 'backup' && j.key === 'sdk_first.zip' && j.status === 'completed')).toBe(true);
    const health = await client.health();
    expect(health.status).toBe('ok');
    expect(health.canBackup).toBe(true);
  });

  it('pages through the manifest, and every page agrees with the whole', async () => {
    await client.backups.create({ name: 'paged' });
    const whole = await client.backups.manifest('paged.zip', { perPage: 5000 });
    expect(whole.key).toBe('paged.zip');
    expect(whole.app.name).toBe('testapp');
    const all = whole.entries.items;
    expect(whole.entries.totalItems).toBe(all.length);
    expect(all.length).toBeGreaterThanOrEqual(4);

    // readme.txt is in the manifest with the SHA-256 of its content.
    const readme = all.find((e) => e.path.endsWith('readme.txt'));
    expect(readme?.sha256).toBe(sha256(Buffer.from('hello\n')));
    expect(readme?.size).toBe(6);

    const perPage = 2;
    const first = await client.backups.manifest('paged.zip', { page: 1, perPage });
    expect(first.entries.totalPages).toBe(Math.ceil(all.length / perPage));
    const collected = [...first.entries.items];
    for (let page = 2; page <= first.entries.totalPages; page++) {
      const p = await client.backups.manifest('paged.zip', { page, perPage });
      expect(p.entries.page).toBe(page);
      expect(p.entries.items.length).toBeLessThanOrEqual(perPage);
      collected.push(...p.entries.items);
    }
    expect(collected).toEqual(all);
    const beyond = await client.backups.manifest('paged.zip', { page: first.entries.totalPages + 1, perPage });
    expect(beyond.entries.items).toEqual([]);

    const err = await apiError(client.backups.manifest('paged.zip', { perPage: 0 }));
    expect(err.status).toBe(400);
    expect(Object.keys(err.data)).toEqual(['perPage']);
  });

  it('downloads the exact stored bytes, as a stream, a Blob and a range', async () => {
    await client.backups.create({ name: 'down' });
    const onDisk = fs.readFileSync(storedFile('down.zip'));

    const response = await client.backups.download('down.zip');
    expect(response.headers.get('content-type')).toBe('application/zip');
    expect(Number(response.headers.get('content-length'))).toBe(onDisk.length);
    const chunks: Uint8Array[] = [];
    const reader = response.body!.getReader();
    for (let r = await reader.read(); !r.done; r = await reader.read()) chunks.push(r.value);
    const streamed = Buffer.concat(chunks);
    expect(sha256(streamed)).toBe(sha256(onDisk));
    expectZipTestsOk(streamed);

    const blob = await client.backups.downloadBlob('down.zip');
    expect(sha256(new Uint8Array(await blob.arrayBuffer()))).toBe(sha256(onDisk));

    const part = await client.backups.download('down.zip', { range: 'bytes=0-3' });
    expect(part.status).toBe(206);
    expect(Buffer.from(await part.arrayBuffer())).toEqual(onDisk.subarray(0, 4));
  });

  it('gives a download URL that works without the Authorization header, for that key only', async () => {
    await client.backups.create({ name: 'linked' });
    await client.backups.create({ name: 'other' });
    const url = await client.backups.getDownloadURL('linked.zip');
    expect(url.startsWith(`${ts.url}/api/backups/linked.zip?token=`)).toBe(true);

    const plain = await fetch(url); // no Authorization header
    expect(plain.status).toBe(200);
    expect(sha256(new Uint8Array(await plain.arrayBuffer()))).toBe(sha256(fs.readFileSync(storedFile('linked.zip'))));

    const token = new URL(url).searchParams.get('token')!;
    const elsewhere = await fetch(`${ts.url}/api/backups/other.zip?token=${encodeURIComponent(token)}`);
    expect(elsewhere.status).toBe(403);
    expect(((await elsewhere.json()) as { status: number }).status).toBe(403);
  });

  it('uploads a downloaded backup under new names as a File, bytes and a stream; the copies are byte-identical', async () => {
    await client.backups.create({ name: 'original' });
    const blob = await client.backups.downloadBlob('original.zip');
    const bytes = new Uint8Array(await blob.arrayBuffer());

    const asFile = await client.backups.upload(new File([bytes], 'as_file.zip'));
    expect(asFile.key).toBe('as_file.zip');
    expect(asFile.trigger).toBe('upload');
    expect(asFile.status).toBe('completed');

    const named = await client.backups.upload(blob, { name: 'blob_named' });
    expect(named.key).toBe('blob_named.zip');

    const raw = await client.backups.upload(bytes, { name: 'raw_bytes' });
    expect(raw.key).toBe('raw_bytes.zip');

    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        // Uneven chunks, as a network would deliver them.
        for (let i = 0; i < bytes.length; i += 777) controller.enqueue(bytes.slice(i, i + 777));
        controller.close();
      },
    });
    const streamed = await client.backups.upload(stream, { name: 'streamed' });
    expect(streamed.key).toBe('streamed.zip');

    for (const key of ['as_file.zip', 'blob_named.zip', 'raw_bytes.zip', 'streamed.zip']) {
      expect(sha256(fs.readFileSync(storedFile(key)))).toBe(sha256(bytes));
    }
    const keys = (await client.backups.list()).map((b) => b.key).sort();
    expect(keys).toEqual(['as_file.zip', 'blob_named.zip', 'original.zip', 'raw_bytes.zip', 'streamed.zip']);

    // The same name again: refused, on the file field.
    const dup = await apiError(client.backups.upload(new File([bytes], 'as_file.zip')));
    expect(dup.status).toBe(400);
    expect(dup.data.file?.code).toBe('validation_backup_exists');
  });

  it('refuses a file that is not a Stowage archive with 400 and data.file, and lists nothing', async () => {
    const err = await apiError(client.backups.upload(new File([new TextEncoder().encode('this is not a zip file at all')], 'fake.zip')));
    expect(err.status).toBe(400);
    expect(err.data.file?.code).toBe('validation_invalid_archive');
    expect(err.message).toMatch(/Not a usable Stowage backup/);
    const raw = await apiError(client.backups.upload(new Uint8Array([0x50, 0x4b, 0x03, 0x04, 1, 2, 3]), { name: 'broken' }));
    expect(raw.status).toBe(400);
    expect(raw.data.file).toBeDefined();
    expect(await client.backups.list()).toEqual([]);
  });

  it('restores a backup: changed files and the database come back, the status says completed', async () => {
    await client.backups.create({ name: 'before' });
    const readme = path.join(ts.root, 'app/files/readme.txt');
    fs.writeFileSync(readme, 'changed\n');
    fs.writeFileSync(path.join(ts.root, 'app/files/added.txt'), 'new file\n');
    const db = new Database(path.join(ts.root, 'app/app.db'));
    db.exec("INSERT INTO notes (body) VALUES ('three')");
    db.close();

    const started = await client.backups.restore('before.zip');
    expect(started.status).toBe('started');
    expect(started.key).toBe('before.zip');
    const done = await waitForRestore(client);
    expect(done.statusMessage).toBeDefined();
    expect(done.status).toBe('completed');
    expect(done.key).toBe('before.zip');
    expect(done.safetyBackupKey).toMatch(/\.zip$/);
    expect(done.sources.map((s) => [s.name, s.status]).sort()).toEqual([
      ['db', 'restored'],
      ['files', 'restored'],
    ]);

    expect(fs.readFileSync(readme, 'utf8')).toBe('hello\n');
    expect(fs.existsSync(path.join(ts.root, 'app/files/added.txt'))).toBe(false);
    const after = new Database(path.join(ts.root, 'app/app.db'), { readonly: true });
    expect(after.prepare('SELECT body FROM notes ORDER BY id').all()).toEqual([{ body: 'one' }, { body: 'two' }]);
    after.close();
    // The safety backup holds what was there before.
    expect((await client.backups.list()).map((b) => b.key)).toContain(done.safetyBackupKey);
  });

  it('deletes a backup; it is gone from the list, the disk and info (404)', async () => {
    await client.backups.create({ name: 'doomed' });
    await client.backups.create({ name: 'kept' });
    await client.backups.delete('doomed.zip');
    expect((await client.backups.list()).map((b) => b.key)).toEqual(['kept.zip']);
    expect(fs.existsSync(storedFile('doomed.zip'))).toBe(false);
    const err = await apiError(client.backups.get('doomed.zip'));
    expect(err.status).toBe(404);
    const again = await apiError(client.backups.delete('doomed.zip'));
    expect(again.status).toBe(404);
  });

  it('factory reset: a safety backup, then the sources are emptied', async () => {
    const started = await client.backups.resetFactory();
    expect(started.key).toBe('factory-reset');
    const done = await waitForRestore(client);
    expect(done.status).toBe('completed');
    expect(fs.existsSync(path.join(ts.root, 'app/files/readme.txt'))).toBe(false);
    expect(done.safetyBackupKey).toMatch(/\.zip$/);
    // The safety backup holds the data: restore it.
    await client.backups.restore(done.safetyBackupKey!);
    expect((await waitForRestore(client)).status).toBe('completed');
    expect(fs.readFileSync(path.join(ts.root, 'app/files/readme.txt'), 'utf8')).toBe('hello\n');
  });
});

describe('events', () => {
  it('receives backup.started, backup.progress and backup.created during an async create', async () => {
    const events: ServerEvent[] = [];
    const errors: unknown[] = [];
    const subscription = client.events.subscribe((e) => events.push(e), { onError: (e) => errors.push(e) });
    await subscription.ready;
    await waitFor(() => events.some((e) => e.type === 'hello'), 10_000, 'the hello event');

    const accepted = await client.backups.create({ name: 'evented' }, { async: true });
    expect(accepted.key).toBe('evented.zip');
    expect(accepted.status).toBe('started');
    await waitFor(() => events.some((e) => e.type === 'backup.created'), 60_000, 'backup.created');

    const forKey = events.filter((e) => e.data.key === 'evented.zip');
    const types = forKey.map((e) => e.type);
    expect(types[0]).toBe('backup.started');
    expect(types).toContain('backup.progress');
    expect(types[types.length - 1]).toBe('backup.created');
    const created = forKey[forKey.length - 1]!.data as { size: number };
    expect(created.size).toBe(fs.statSync(storedFile('evented.zip')).size);
    const progress = forKey.find((e) => e.type === 'backup.progress')!.data as { phase: string; bytesTotal: number };
    expect(typeof progress.phase).toBe('string');

    subscription();
    await subscription.closed;
    expect(errors).toEqual([]);
    // After unsubscribing nothing more arrives.
    const count = events.length;
    await client.backups.create({ name: 'unheard' });
    expect(events.length).toBe(count);
  });

  it('rejects ready when the stream cannot open (401), and ends on an aborted signal', async () => {
    const anonymous = new StowageClient(ts.url);
    const sub = anonymous.events.subscribe(() => {});
    const err = await apiError(sub.ready);
    expect(err.status).toBe(401);
    await sub.closed;

    const controller = new AbortController();
    const events: ServerEvent[] = [];
    const live = client.events.subscribe((e) => events.push(e), { signal: controller.signal });
    await live.ready;
    controller.abort();
    await live.closed; // resolves: the stream ended
  });
});

describe('API tokens and errors', () => {
  it('a token without the scope gets 403; with it, the call works; revoked, 401', async () => {
    const readOnly = new StowageClient(ts.url, { token: ts.tokenWith('backups:read') });
    expect(await readOnly.backups.list()).toEqual([]);
    const denied = await apiError(readOnly.backups.create({ name: 'nope' }));
    expect(denied.status).toBe(403);
    expect(denied.message).toMatch(/backups:create/);
    expect((await apiError(readOnly.backups.getDownloadURL('x.zip'))).status).toBe(403);
    expect((await apiError(readOnly.tokens.list())).status).toBe(403); // superusers only
    expect(await client.backups.list()).toEqual([]);

    const made = await client.tokens.create({ name: 'ci', scopes: ['backups:read', 'backups:create'] });
    expect(made.token).toMatch(/^stw_/);
    expect(made.record.scopes).toEqual(['backups:read', 'backups:create']);
    const ci = new StowageClient(ts.url, { token: made.token });
    expect((await ci.backups.create({ name: 'by_ci' })).key).toBe('by_ci.zip');
    expect((await client.tokens.list()).map((t) => t.id)).toContain(made.record.id);

    await client.tokens.revoke(made.record.id);
    expect((await apiError(ci.backups.list())).status).toBe(401);
    expect((await client.tokens.list()).map((t) => t.id)).not.toContain(made.record.id);
    expect((await apiError(client.tokens.revoke(made.record.id))).status).toBe(404);
  });

  it('errors carry status, message and field data; keys are encoded in paths', async () => {
    const missing = await apiError(client.backups.get('missing.zip'));
    expect(missing.status).toBe(404);
    expect(missing.data).toEqual({});

    // "../x.zip" is sent as one encoded segment and refused as a key, not resolved as a path.
    const traversal = await apiError(client.backups.get('../x.zip'));
    expect(traversal.status).toBe(400);
    expect(traversal.data.key?.code).toBe('validation_invalid_key');

    const invalid = await apiError(client.backups.create({ name: 'x', unknown: 1 } as never));
    expect(invalid.status).toBe(400);
    expect(invalid.data.unknown?.code).toBe('validation_additionalProperties');

    const badScope = await apiError(client.tokens.create({ name: 'x', scopes: [] }));
    expect(badScope.status).toBe(400);
    expect(Object.keys(badScope.data)).toEqual(['scopes']);
    const unknownScope = await apiError(client.tokens.create({ name: 'x', scopes: ['root' as Scope] }));
    expect(unknownScope.status).toBe(400);
    expect(Object.keys(unknownScope.data)).toEqual(['scopes.0']);

    await client.backups.create({ name: 'twice' });
    const dup = await apiError(client.backups.create({ name: 'twice' }));
    expect(dup.status).toBe(400);
    expect(dup.data.name?.code).toBe('validation_backup_exists');
    expect(JSON.parse(JSON.stringify(dup))).toMatchObject({ status: 400, data: { name: { code: 'validation_backup_exists' } }, isAbort: false });
  });

  it('wraps aborts and network failures (status 0)', async () => {
    const controller = new AbortController();
    controller.abort();
    const aborted = await apiError(client.backups.list({ signal: controller.signal }));
    expect(aborted.isAbort).toBe(true);
    expect(aborted.status).toBe(0);

    // A port nothing listens on: the server's, after it closed.
    const gone = new StowageClient(ts.url, { token: ts.adminToken });
    await ts.server.close();
    const network = await apiError(gone.health());
    expect(network.status).toBe(0);
    expect(network.isAbort).toBe(false);
    expect(network.message).toMatch(/Could not reach/);
  });

  it('passes requests through a custom fetch', async () => {
    const seen: string[] = [];
    const custom = new StowageClient(ts.url, {
      token: ts.adminToken,
      fetch: (input, init) => {
        seen.push(`${init?.method ?? 'GET'} ${String(input)} ${new Headers(init?.headers).get('authorization') === ts.adminToken}`);
        return fetch(input, init);
      },
    });
    await custom.backups.list();
    await custom.backups.manifest('a b.zip').catch(() => undefined);
    expect(seen).toEqual([`GET ${ts.url}/api/backups true`, `GET ${ts.url}/api/backups/a%20b.zip/manifest true`]);
  });
});

describe('settings and setup', () => {
  it('reads, patches (merge, null resets, secrets kept), previews a cron and tests S3 through client.settings', async () => {
    const initial = await client.settings.get();
    expect(initial.backups.cron).toBe('');
    const patched = await client.settings.update({ backups: { cron: '0 3 * * *', cronMaxKeep: 4, retention: { keepDaily: 7 }, s3: { bucket: 'offsite', secret: 's3-secret-value' } } });
    expect(patched.backups).toMatchObject({ cron: '0 3 * * *', cronMaxKeep: 4, retention: { keepDaily: 7 }, s3: { bucket: 'offsite', secret: '******' } });
    expect(await client.settings.get()).toEqual(patched);
    // The mask sent back keeps the stored secret; null puts a field back to its default.
    await client.settings.update({ backups: { s3: { secret: '******' } } });
    expect(ts.stowage.settings.get().backups.s3.secret).toBe('s3-secret-value');
    expect((await client.settings.update({ backups: { cron: null, retention: { keepDaily: null } } })).backups).toMatchObject({ cron: '', retention: {} });

    const bad = await apiError(client.settings.update({ backups: { cron: 'every night' } }));
    expect(bad.status).toBe(400);
    expect(bad.data['backups.cron']?.message).toMatch(/5 fields/);
    expect((await client.settings.get()).backups.cron).toBe('');

    const preview = await client.settings.cronPreview('0 3 * * *', 'Europe/Berlin');
    expect(preview).toMatchObject({ cron: '0 3 * * *', timezone: 'Europe/Berlin', description: expect.stringContaining('03:00') });
    expect(preview.next).toHaveLength(5);
    expect((await client.settings.cronPreview('@daily')).timezone).toBe(initial.backups.timezone);
    expect((await apiError(client.settings.cronPreview('nonsense'))).status).toBe(400);

    // Nothing listens on port 9: the failed step is in the answer, not a rejection.
    const probe = await client.settings.testS3({ endpoint: 'http://127.0.0.1:9', forcePathStyle: true, accessKey: 'a', secret: 'b' });
    expect(probe.ok).toBe(false);
    expect(probe.steps[0]).toMatchObject({ step: 'list', ok: false });
    await client.settings.update({ backups: { s3: { bucket: '' } } });
    expect((await apiError(client.settings.testS3())).data.bucket?.code).toBe('validation_required');

    const readOnly = new StowageClient(ts.url, { token: ts.tokenWith('backups:read') });
    expect((await apiError(readOnly.settings.get())).status).toBe(403);
  });

  it('completes the first-run setup with the one-time token, once', async () => {
    const link = ts.notices.find((l) => l.includes('/setup?token='))!;
    const setupToken = new URL(link.trim()).searchParams.get('token')!;
    ts.auth.deleteSuperuser(ADMIN_EMAIL); // startTestServer made one after printing the link
    const anonymous = new StowageClient(ts.url);
    const wrong = await apiError(anonymous.auth.completeSetup({ token: 'not-the-token', email: 'first@example.com', password: 'a long password' }));
    expect(wrong.status).toBe(400);
    expect(wrong.data.token?.code).toBe('validation_invalid_token');
    const user = await anonymous.auth.completeSetup({ token: setupToken, email: 'first@example.com', password: 'a long password' });
    expect(user).toMatchObject({ email: 'first@example.com', collectionName: '_superusers' });
    expect(anonymous.token).toBeNull(); // it logs nobody in
    expect((await apiError(anonymous.auth.completeSetup({ token: setupToken, email: 'second@example.com', password: 'a long password' }))).status).toBe(400);
    await anonymous.auth.login('first@example.com', 'a long password');
    expect(await anonymous.backups.list()).toEqual([]);
  });
});

describe('export', () => {
  it('streams a fresh archive with the backup key; a wrong key is 403 on data.key', async () => {
    await ts.close();
    const backupKey = 'an export key of enough length';
    ts = await startTestServer({ backupKey });
    const c = new StowageClient(ts.url, { token: ts.adminToken });
    const response = await c.backups.export(backupKey);
    expect(response.headers.get('content-type')).toBe('application/zip');
    const bytes = new Uint8Array(await response.arrayBuffer());
    expect(Buffer.from(bytes.subarray(0, 4))).toEqual(Buffer.from([0x50, 0x4b, 0x03, 0x04]));
    expectZipTestsOk(bytes, 'export.zip');
    if (hasCommand('unzip')) expect(run('unzip', ['-p', path.join(scratch, 'export.zip'), 'files/readme.txt']).stdout).toBe('hello\n');
    expect(await c.backups.list()).toEqual([]); // nothing stored

    const wrong = await apiError(c.backups.export('not the key at all, but long'));
    expect(wrong.status).toBe(403);
    expect(wrong.data.key?.code).toBe('invalid_backup_key');
  });
});

describe('SseParser', () => {
  it('parses messages split anywhere, with CRLF, CR and LF, comments and multi-line data', () => {
    const text = '\ufeff: comment\r\nevent: a\r\ndata: {"x":1}\r\n\r\nevent:b\ndata: line1\ndata: line2\nid: 7\n\n: keep-alive\n\ndata: plain\r\rdata: unterminated';
    for (const size of [1, 2, 3, 5, text.length]) {
      const got: SseMessage[] = [];
      const parser = new SseParser((m) => got.push(m));
      for (let i = 0; i < text.length; i += size) parser.push(text.slice(i, i + size));
      parser.end();
      expect(got).toEqual([
        { event: 'a', data: '{"x":1}', id: '' },
        { event: 'b', data: 'line1\nline2', id: '7' },
        { event: 'message', data: 'plain', id: '7' },
      ]);
    }
  });
});
