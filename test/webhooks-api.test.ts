import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Stowage } from '../src/engine/stowage.js';
import { verifyWebhookSignature, type WebhookPayload } from '../src/events/webhooks.js';
import { StowageApiError, StowageClient } from '../src/sdk/index.js';
import type { Scope, Webhook, WebhookDelivery } from '../src/server/schemas.js';
import { buildServer } from '../src/server/server.js';
import { startTestServer, waitFor, type TestServer } from '../src/testing/server.js';
import { makeTempDir, removeDir } from '../src/testing/tmp.js';

interface Received {
  path: string;
  headers: http.IncomingHttpHeaders;
  raw: string;
  body: WebhookPayload<Record<string, unknown>>;
  signatureValid: boolean;
}

/**
 * A real receiver on a loopback port. Each path is one webhook: the secret it verifies
 * signatures with, and the status it answers (200 unless told otherwise).
 */
class Receiver {
  readonly received: Received[] = [];
  readonly secrets = new Map<string, string>();
  readonly statuses = new Map<string, number>();
  url = '';
  private readonly server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const p = new URL(req.url ?? '/', 'http://x').pathname;
      const header = req.headers['stowage-signature'];
      this.received.push({
        path: p,
        headers: req.headers,
        raw,
        body: JSON.parse(raw) as Received['body'],
        // Verified on the raw bytes, before parsing, as a receiver must.
        signatureValid: verifyWebhookSignature(this.secrets.get(p) ?? '', typeof header === 'string' ? header : undefined, raw),
      });
      const status = this.statuses.get(p) ?? 200;
      res.writeHead(status, { 'Content-Type': 'text/plain' }).end(status === 200 ? 'ok' : `receiver says no (${status})`);
    });
  });

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  at(p: string): Received[] {
    return this.received.filter((r) => r.path === p);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

const json = async <T>(r: Response): Promise<T> => (await r.json()) as T;

let receiver: Receiver;
beforeAll(async () => {
  receiver = new Receiver();
  await receiver.listen();
});
afterAll(async () => receiver?.close());

describe('webhooks through the API', () => {
  let s: TestServer;
  const logLines: string[] = [];

  beforeAll(async () => {
    s = await startTestServer({ logLines, jobs: 'thread' });
  });
  afterAll(async () => s?.close());

  async function create(body: Record<string, unknown>, token = s.adminToken): Promise<Webhook> {
    const r = await s.request('/api/webhooks', { method: 'POST', token, json: body });
    expect(r.status, await r.clone().text()).toBe(200);
    return json<Webhook>(r);
  }

  it('every route: 401 without auth, 403 without the settings scope, ok with it', async () => {
    const hook = await create({ url: `${receiver.url}/matrix`, events: ['backup.failed'] });
    const victim = await create({ url: `${receiver.url}/matrix-delete`, events: ['backup.failed'] });
    const cases: Array<{ method: string; path: string; json?: unknown; ok: number }> = [
      { method: 'GET', path: '/api/webhooks', ok: 200 },
      { method: 'POST', path: '/api/webhooks', json: { url: `${receiver.url}/matrix-2`, events: ['*'] }, ok: 200 },
      { method: 'GET', path: `/api/webhooks/${hook.id}`, ok: 200 },
      { method: 'PATCH', path: `/api/webhooks/${hook.id}`, json: { description: 'changed' }, ok: 200 },
      { method: 'GET', path: `/api/webhooks/${hook.id}/deliveries`, ok: 200 },
      { method: 'POST', path: `/api/webhooks/${hook.id}/test`, ok: 200 },
      { method: 'DELETE', path: `/api/webhooks/${victim.id}`, ok: 204 },
    ];
    const other: Scope = 'backups:read';
    for (const c of cases) {
      const what = `${c.method} ${c.path}`;
      const none = await s.request(c.path, { method: c.method, json: c.json });
      expect(none.status, what).toBe(401);
      expect(await json(none), what).toMatchObject({ status: 401, data: {} });
      const wrong = await s.request(c.path, { method: c.method, json: c.json, token: s.tokenWith(other, 'backups:create') });
      expect(wrong.status, what).toBe(403);
      expect((await json<{ message: string }>(wrong)).message, what).toContain('"settings" scope');
      const good = await s.request(c.path, { method: c.method, json: c.json, token: s.tokenWith('settings') });
      expect(good.status, what).toBe(c.ok);
    }
    // A superuser always passes.
    expect((await s.request(`/api/webhooks/${hook.id}`, { token: s.adminToken })).status).toBe(200);
    expect((await s.request(`/api/webhooks/${hook.id}`, { token: `Bearer ${s.adminToken}` })).status).toBe(200);
  });

  it('CRUD: the secret is shown once, masked after, kept by a PATCH without one', async () => {
    const created = await create({ url: `${receiver.url}/crud`, events: ['backup.created', 'backup.failed'], description: 'ops channel' });
    expect(created).toMatchObject({ url: `${receiver.url}/crud`, events: ['backup.created', 'backup.failed'], enabled: true, description: 'ops channel', origin: 'api' });
    expect(created.secret).toMatch(/^[0-9a-f]{64}$/); // generated, shown this once
    receiver.secrets.set('/crud', created.secret);

    const listed = await json<Webhook[]>(await s.request('/api/webhooks', { token: s.adminToken }));
    expect(listed.find((w) => w.id === created.id)).toEqual({ ...created, secret: '******' });
    expect(JSON.stringify(listed)).not.toContain(created.secret);
    const got = await json<Webhook>(await s.request(`/api/webhooks/${created.id}`, { token: s.adminToken }));
    expect(got.secret).toBe('******');

    // PATCH without a secret, and with the masked value sent back: the secret stays.
    const patched = await s.request(`/api/webhooks/${created.id}`, { method: 'PATCH', token: s.adminToken, json: { events: ['*'], enabled: false } });
    expect(patched.status).toBe(200);
    expect(await json(patched)).toMatchObject({ id: created.id, events: ['*'], enabled: false, secret: '******', description: 'ops channel' });
    expect((await s.request(`/api/webhooks/${created.id}`, { method: 'PATCH', token: s.adminToken, json: { secret: '******', enabled: true } })).status).toBe(200);
    const test1 = await json<WebhookDelivery>(await s.request(`/api/webhooks/${created.id}/test`, { method: 'POST', token: s.adminToken }));
    expect(test1).toMatchObject({ webhookId: created.id, event: 'webhook.test', status: 'delivered', attempts: 1, lastStatus: 200, lastError: '' });
    const arrived = receiver.at('/crud').find((r) => r.body.id === test1.id)!;
    expect(arrived.signatureValid).toBe(true); // signed with the original secret
    expect(arrived.headers['stowage-delivery-id']).toBe(test1.id);
    expect(arrived.headers['stowage-event']).toBe('webhook.test');

    // A new secret signs from then on.
    const secret = 'a-new-secret-of-32-characters-xx';
    expect((await s.request(`/api/webhooks/${created.id}`, { method: 'PATCH', token: s.adminToken, json: { secret } })).status).toBe(200);
    const test2 = await json<WebhookDelivery>(await s.request(`/api/webhooks/${created.id}/test`, { method: 'POST', token: s.adminToken }));
    const second = receiver.at('/crud').find((r) => r.body.id === test2.id)!;
    expect(second.signatureValid).toBe(false);
    expect(verifyWebhookSignature(secret, second.headers['stowage-signature'] as string, second.raw)).toBe(true);

    // Invalid input: 400 with PocketBase field errors.
    const bad = await s.request('/api/webhooks', { method: 'POST', token: s.adminToken, json: { url: 'ftp://example.com/x', events: ['backup.created'] } });
    expect(bad.status).toBe(400);
    expect(await json(bad)).toMatchObject({ status: 400, message: expect.stringContaining('only http and https'), data: { url: { code: 'validation_invalid_value' } } });
    const badEvent = await s.request(`/api/webhooks/${created.id}`, { method: 'PATCH', token: s.adminToken, json: { events: ['backup.exploded'] } });
    expect(badEvent.status).toBe(400);
    expect((await json<{ data: Record<string, { message: string }> }>(badEvent)).data.events!.message).toContain('unknown event "backup.exploded"');
    const creds = await s.request('/api/webhooks', { method: 'POST', token: s.adminToken, json: { url: 'https://user:pw@example.com/x', events: ['*'] } });
    expect(creds.status).toBe(400);
    expect(Object.keys((await json<{ data: object }>(creds)).data)).toEqual(['url']);
    const extra = await s.request('/api/webhooks', { method: 'POST', token: s.adminToken, json: { url: 'https://example.com/x', events: ['*'], colour: 'red' } });
    expect(extra.status).toBe(400);
    expect(await json(extra)).toMatchObject({ data: { colour: { code: 'validation_additionalProperties' } } });
    const shortSecret = await s.request('/api/webhooks', { method: 'POST', token: s.adminToken, json: { url: 'https://example.com/x', events: ['*'], secret: 'short' } });
    expect(shortSecret.status).toBe(400);
    expect(await json(shortSecret)).toMatchObject({ data: { secret: { code: 'validation_invalid_value' } } });

    // Delete: 204, then 404 everywhere.
    const del = await s.request(`/api/webhooks/${created.id}`, { method: 'DELETE', token: s.adminToken });
    expect(del.status).toBe(204);
    expect(await del.text()).toBe('');
    for (const [method, p] of [['GET', ''], ['PATCH', ''], ['DELETE', ''], ['GET', '/deliveries'], ['POST', '/test']] as const) {
      const r = await s.request(`/api/webhooks/${created.id}${p}`, { method, token: s.adminToken, json: method === 'PATCH' ? { enabled: true } : undefined });
      expect(r.status, `${method} ${p}`).toBe(404);
      expect(await json(r)).toMatchObject({ status: 404, message: expect.stringContaining(created.id) });
    }
  });

  it('a backup through the API (on the job thread) reaches the receiver as a signed backup.created', async () => {
    const hook = await create({ url: `${receiver.url}/backups`, events: ['backup.created'], secret: 'backup-hook-secret-0123456789' });
    expect(hook.secret).toBe('backup-hook-secret-0123456789'); // a given secret is echoed once too
    receiver.secrets.set('/backups', hook.secret);
    const r = await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: { name: 'hooked' } });
    expect(r.status).toBe(200);
    const { key } = await json<{ key: string }>(r);
    expect(key).toBe('hooked.zip');

    const arrived = await waitFor(() => receiver.at('/backups').find((x) => x.body.type === 'backup.created'), 10_000, 'the backup.created delivery');
    expect(arrived.signatureValid).toBe(true);
    expect(arrived.body.data).toMatchObject({ key: 'hooked.zip', trigger: 'api', backup: { key: 'hooked.zip', status: 'completed' } });
    expect(arrived.headers['stowage-webhook-id']).toBe(hook.id);
    expect(arrived.headers['user-agent']).toMatch(/^Stowage-Webhook\//);
    expect(receiver.at('/backups').every((x) => x.body.type === 'backup.created')).toBe(true); // not subscribed to the rest

    const log = await waitFor(async () => {
      const list = await json<WebhookDelivery[]>(await s.request(`/api/webhooks/${hook.id}/deliveries`, { token: s.adminToken }));
      return list[0]?.status === 'delivered' ? list : null;
    }, 10_000, 'the delivery log');
    expect(log).toHaveLength(1);
    expect(log[0]).toMatchObject({ id: arrived.body.id, event: 'backup.created', status: 'delivered', attempts: 1, lastStatus: 200, nextAttemptAt: null });
    expect(log[0]!.payload).toEqual(arrived.body);
  });

  it('a failing receiver: attempts, last status and error in the delivery log, a retry scheduled', async () => {
    receiver.statuses.set('/failing', 503);
    const hook = await create({ url: `${receiver.url}/failing?token=query-secret-123`, events: ['backup.created', 'backup.failed'] });
    receiver.secrets.set('/failing', hook.secret);
    // A backup that fails (its SQLite source is not a database) emits backup.failed.
    const dbFile = path.join(s.root, 'app/app.db');
    const good = fs.readFileSync(dbFile);
    fs.writeFileSync(dbFile, 'not a database, not at all, really not');
    try {
      const r = await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: { name: 'broken' } });
      expect(r.status).toBe(500);
    } finally {
      fs.writeFileSync(dbFile, good);
    }

    const [d] = await waitFor(async () => {
      const list = await json<WebhookDelivery[]>(await s.request(`/api/webhooks/${hook.id}/deliveries?limit=5`, { token: s.adminToken }));
      return list[0]?.attempts ? list : null;
    }, 10_000, 'a failed attempt');
    expect(d).toMatchObject({ event: 'backup.failed', status: 'pending', attempts: 1, lastStatus: 503 });
    expect(d!.lastError).toBe('HTTP 503 Service Unavailable: receiver says no (503)');
    expect(Date.parse(d!.nextAttemptAt!)).toBeGreaterThan(Date.now());
    expect(d!.payload.data).toMatchObject({ key: 'broken.zip', trigger: 'api', error: { code: 'SOURCE_FAILED', message: expect.stringContaining('not a database') } });
    const arrived = receiver.at('/failing')[0]!;
    expect(arrived.signatureValid).toBe(true);
    expect(arrived.body.type).toBe('backup.failed');

    // The test endpoint answers with the failed outcome (200: the call worked, the delivery did not).
    const t = await s.request(`/api/webhooks/${hook.id}/test`, { method: 'POST', token: s.adminToken });
    expect(t.status).toBe(200);
    expect(await json(t)).toMatchObject({ event: 'webhook.test', status: 'failed', attempts: 1, lastStatus: 503, nextAttemptAt: null });

    // Bad limits are 400s; a good one limits.
    expect((await s.request(`/api/webhooks/${hook.id}/deliveries?limit=0`, { token: s.adminToken })).status).toBe(400);
    expect((await s.request(`/api/webhooks/${hook.id}/deliveries?limit=abc`, { token: s.adminToken })).status).toBe(400);
    const one = await json<WebhookDelivery[]>(await s.request(`/api/webhooks/${hook.id}/deliveries?limit=1`, { token: s.adminToken }));
    expect(one).toHaveLength(1);
    expect(one[0]!.event).toBe('webhook.test'); // newest first
  });

  it('a test delivery to an unreachable URL reports the network error', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const hook = await create({ url: `http://127.0.0.1:${port}/nobody`, events: ['backup.created'] });
    const outcome = await json<WebhookDelivery>(await s.request(`/api/webhooks/${hook.id}/test`, { method: 'POST', token: s.adminToken }));
    expect(outcome).toMatchObject({ status: 'failed', attempts: 1, lastStatus: null });
    expect(outcome.lastError).toMatch(/^network error: .*ECONNREFUSED/);
  });

  it('the SDK: client.webhooks covers every route', async () => {
    const client = new StowageClient(s.url, { token: s.tokenWith('settings') });
    const created = await client.webhooks.create({ url: `${receiver.url}/sdk`, events: ['backup.deleted'] });
    receiver.secrets.set('/sdk', created.secret);
    expect(created.secret).toHaveLength(64);
    expect((await client.webhooks.list()).map((w) => w.id)).toContain(created.id);
    expect((await client.webhooks.get(created.id)).secret).toBe('******');
    expect(await client.webhooks.update(created.id, { description: 'from the SDK' })).toMatchObject({ description: 'from the SDK', secret: '******' });
    const outcome = await client.webhooks.test(created.id);
    expect(outcome.status).toBe('delivered');
    expect(receiver.at('/sdk').find((r) => r.body.id === outcome.id)?.signatureValid).toBe(true);
    expect(await client.webhooks.deliveries(created.id, { limit: 10 })).toHaveLength(1);
    await client.webhooks.delete(created.id);
    const err = await client.webhooks.get(created.id).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StowageApiError);
    expect((err as StowageApiError).status).toBe(404);
  });

  it('no log line carries a webhook secret or a URL query', async () => {
    await waitFor(() => logLines.some((l) => l.includes('webhook delivery failed, will retry')), 10_000, 'the retry log line');
    const text = logLines.join('\n');
    expect(text).toContain('/failing'); // the URL is logged, without its query
    expect(text).not.toContain('query-secret-123');
    expect(text).not.toContain('backup-hook-secret-0123456789');
    expect(text).not.toContain('a-new-secret-of-32-characters-xx');
    for (const w of await json<Webhook[]>(await s.request('/api/webhooks', { token: s.adminToken }))) expect(w.secret).toBe('******');
  });
});

describe('webhooks from stowage.yaml', () => {
  const yaml = (webhooks: string) => `dataDir: ./data
app: { name: testapp, version: "1.0.0" }
sources:
  - { name: files, kind: dir, path: ./app/files }
server:
  http: 127.0.0.1:0
webhooks:
${webhooks}`;
  const servers: TestServer[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.close();
  });

  it('are listed with origin config, read-only (409), and deliver signed with the configured secret', async () => {
    const secret = 'config-secret-abcdefghijklmnop';
    receiver.secrets.set('/from-config', secret);
    const s = await startTestServer({ yaml: yaml(`  - { url: "${receiver.url}/from-config", events: [backup.created], secret: "${secret}", description: from yaml }\n`) });
    servers.push(s);
    const list = await json<Webhook[]>(await s.request('/api/webhooks', { token: s.adminToken }));
    expect(list).toHaveLength(1);
    const hook = list[0]!;
    expect(hook).toMatchObject({ url: `${receiver.url}/from-config`, events: ['backup.created'], origin: 'config', secret: '******', description: 'from yaml', enabled: true });

    const patch = await s.request(`/api/webhooks/${hook.id}`, { method: 'PATCH', token: s.adminToken, json: { enabled: false } });
    expect(patch.status).toBe(409);
    expect((await json<{ message: string }>(patch)).message).toContain('comes from stowage.yaml and is read-only');
    const del = await s.request(`/api/webhooks/${hook.id}`, { method: 'DELETE', token: s.adminToken });
    expect(del.status).toBe(409);
    expect((await s.request(`/api/webhooks/${hook.id}`, { token: s.adminToken })).status).toBe(200);

    // Readable and testable like any other.
    const outcome = await json<WebhookDelivery>(await s.request(`/api/webhooks/${hook.id}/test`, { method: 'POST', token: s.adminToken }));
    expect(outcome.status).toBe('delivered');
    expect(receiver.at('/from-config').find((r) => r.body.id === outcome.id)?.signatureValid).toBe(true);

    const r = await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: { name: 'from-config' } });
    expect(r.status).toBe(200);
    const arrived = await waitFor(() => receiver.at('/from-config').find((x) => x.body.type === 'backup.created'), 10_000, 'backup.created');
    expect(arrived.signatureValid).toBe(true);
    expect(arrived.body.data.key).toBe('from-config.zip');
  });

  it('an invalid entry fails start, naming the file and the field', async () => {
    const root = makeTempDir('stowage-webhooks-');
    try {
      fs.mkdirSync(path.join(root, 'app/files'), { recursive: true });
      fs.writeFileSync(path.join(root, 'stowage.yaml'), yaml(`  - { url: "${receiver.url}/ok", events: ["*"] }\n  - { url: "${receiver.url}/bad", events: [backup.exploded] }\n`));
      const stowage = await Stowage.open({ configPath: path.join(root, 'stowage.yaml') });
      try {
        const err = await buildServer(stowage, { logger: false, jobs: 'inline' }).catch((e: unknown) => e);
        expect(err).toMatchObject({ code: 'CONFIG_INVALID' });
        expect((err as Error).message).toContain(path.join(root, 'stowage.yaml'));
        expect((err as Error).message).toContain('webhooks[1].events: unknown event "backup.exploded"');
      } finally {
        stowage.close();
      }
    } finally {
      removeDir(root);
    }
  });
});
