import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startS3Server } from '../src/testing/s3-server.js';
import { startTestServer, type TestServer } from '../src/testing/server.js';

describe('POST /api/settings/test-s3', () => {
  let s3: Awaited<ReturnType<typeof startS3Server>>;
  let s: TestServer;
  beforeAll(async () => {
    s3 = await startS3Server({ buckets: ['probe-bucket'] });
    s = await startTestServer();
  });
  afterAll(async () => {
    await s?.close();
    await s3?.stop();
  });
  const good = () => ({ enabled: true, bucket: 'probe-bucket', prefix: 'stowage/', region: s3.region, endpoint: s3.endpoint, accessKey: s3.accessKeyId, secret: s3.secretAccessKey, forcePathStyle: true });
  const test = async (body: object, token = s.adminToken) => s.request('/api/settings/test-s3', { method: 'POST', token, json: body });

  it('writes, reads back and deletes a probe, leaving nothing behind', async () => {
    const r = await test(good());
    expect(r.status).toBe(200);
    const body = (await r.json()) as { ok: boolean; steps: Array<{ step: string; ok: boolean }> };
    expect(body.ok).toBe(true);
    expect(body.steps.map((x) => `${x.step}:${x.ok}`)).toEqual(['list:true', 'write:true', 'read:true', 'delete:true']);
    const client = new S3Client({ region: s3.region, endpoint: s3.endpoint, forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
    const left = await client.send(new ListObjectsV2Command({ Bucket: 'probe-bucket' }));
    expect(left.Contents ?? []).toEqual([]);
    client.destroy();
  });

  it('says which step failed and what to check, without the secret; uses the stored secret when masked', async () => {
    const wrong = (await (await test({ ...good(), secret: 'not-the-secret' })).json()) as { ok: boolean; steps: Array<{ step: string; ok: boolean; message: string }> };
    expect(wrong.ok).toBe(false);
    expect(wrong.steps[0]).toMatchObject({ step: 'list', ok: false, message: expect.stringMatching(/secretAccessKey|secret/) });
    expect(JSON.stringify(wrong)).not.toContain('not-the-secret');
    const noBucket = (await (await test({ ...good(), bucket: 'missing-bucket' })).json()) as { steps: Array<{ message: string }> };
    expect(noBucket.steps[0]!.message).toMatch(/does not exist/);
    s.stowage.settings.patch({ backups: { s3: good() } });
    const masked = (await (await test({ secret: '******' })).json()) as { ok: boolean };
    expect(masked.ok).toBe(true);
    expect((await test(good(), s.tokenWith('backups:read'))).status).toBe(403);
  });

  it('backups.s3.enabled switches where backups go, without a restart, and back', async () => {
    const server = await startTestServer({ env: { STOWAGE_PUSH_RETRY_DELAYS: '' } });
    try {
      const create = async (name: string) => (await (await server.request('/api/backups', { method: 'POST', token: server.adminToken, json: { name } })).json()) as { key: string; status: string };
      const keys = async () => ((await (await server.request('/api/backups', { token: server.adminToken })).json()) as Array<{ key: string }>).map((b) => b.key);
      expect((await create('local_one')).status).toBe('completed');
      const patched = await server.request('/api/settings', { method: 'PATCH', token: server.adminToken, json: { backups: { s3: { ...good(), prefix: 'switched/' } } } });
      expect(patched.status).toBe(200);
      // The secret is stored sealed (config/secret-box.ts), and reads back as it was given.
      const stored = server.stowage.catalogue.getSetting('settings.overrides')!;
      expect(stored).not.toContain(s3.secretAccessKey);
      expect(JSON.parse(stored).backups.s3.secret).toMatch(/^sbx1:/);
      expect(server.stowage.settings.get().backups.s3.secret).toBe(s3.secretAccessKey);
      expect((await create('in_s3')).status).toBe('completed');
      const client = new S3Client({ region: s3.region, endpoint: s3.endpoint, forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
      const objects = await client.send(new ListObjectsV2Command({ Bucket: 'probe-bucket', Prefix: 'switched/' }));
      client.destroy();
      expect((objects.Contents ?? []).map((o) => o.Key)).toEqual(['switched/in_s3.zip']);
      expect(await keys()).toEqual(['in_s3.zip']); // the list is the bucket's now
      const download = await server.request('/api/backups/in_s3.zip', { token: server.adminToken });
      expect(download.status).toBe(200);
      expect(Buffer.from(await download.arrayBuffer()).subarray(0, 2).toString()).toBe('PK');
      await server.request('/api/settings', { method: 'PATCH', token: server.adminToken, json: { backups: { s3: { enabled: false } } } });
      expect(await keys()).toEqual(['local_one.zip']);
    } finally {
      await server.close();
    }
  });

  it('a backup S3 refuses is kept, shown as pending in /api/health, and uploaded once the settings are fixed', async () => {
    const server = await startTestServer();
    process.env.STOWAGE_PUSH_RETRY_DELAYS = ''; // one attempt: read when the backup pushes
    try {
      await server.request('/api/settings', { method: 'PATCH', token: server.adminToken, json: { backups: { s3: { ...good(), prefix: 'pending/', secret: 'a-wrong-secret-value' } } } });
      const created = (await (await server.request('/api/backups', { method: 'POST', token: server.adminToken, json: { name: 'waiting' } })).json()) as { key: string; status: string; statusMessage: string };
      expect(created).toMatchObject({ key: 'waiting.zip', status: 'uploading' });
      expect(created.statusMessage).toMatch(/secret/);
      const health = (await (await server.request('/api/health')).json()) as { storage: string; backups: { uploadsPending: Array<{ key: string; message: string }> } };
      expect(health.storage).toMatch(/S3 bucket probe-bucket\/pending\//);
      expect(health.backups.uploadsPending.map((u) => u.key)).toEqual(['waiting.zip']);
      expect(JSON.stringify(health)).not.toContain('a-wrong-secret-value');
      // The archive is there to download meanwhile, and listed (from the catalogue, with a Warning).
      expect((await server.request('/api/backups/waiting.zip', { token: server.adminToken })).status).toBe(200);
      const listed = await server.request('/api/backups', { token: server.adminToken });
      expect(listed.status).toBe(200);
      expect(listed.headers.get('warning')).toMatch(/^199 stowage "storage unreachable, listed from the catalogue: listing backups in S3 bucket probe-bucket\/pending\/ .*"$/);
      expect(listed.headers.get('warning')).not.toContain('a-wrong-secret-value');
      expect(((await listed.json()) as Array<{ key: string; status: string }>).map((b) => `${b.key}:${b.status}`)).toEqual(['waiting.zip:uploading']);

      await server.request('/api/settings', { method: 'PATCH', token: server.adminToken, json: { backups: { s3: { secret: s3.secretAccessKey } } } });
      const retried = await server.stowage.retryUploads();
      expect(retried).toEqual({ pushed: ['waiting.zip'], failed: [] });
      const after = (await (await server.request('/api/health')).json()) as { backups: { uploadsPending: unknown[] } };
      expect(after.backups.uploadsPending).toEqual([]);
      const info = (await (await server.request('/api/backups/waiting.zip/info', { token: server.adminToken })).json()) as { status: string };
      expect(info.status).toBe('completed');
    } finally {
      delete process.env.STOWAGE_PUSH_RETRY_DELAYS;
      await server.close();
    }
  });
});

