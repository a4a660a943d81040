import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_EMAIL, ADMIN_PASSWORD, oneSourceYaml, startTestServer, waitFor, type TestServer } from '../src/testing/server.js';
import { stowage } from '../src/testing/cli.js';
import { makeTempDir, run } from '../src/testing/tmp.js';
import type { Scope } from '../src/server/schemas.js';

const BACKUP_KEY = 'k'.repeat(24);

/** Flips one byte inside the stored data of entry `name` (found through its local header). */
function flipInsideEntry(archive: Buffer, name: string): Buffer {
  const out = Buffer.from(archive);
  const at = out.indexOf(Buffer.from(name));
  const header = at - 30;
  expect(out.readUInt32LE(header)).toBe(0x04034b50);
  const data = at + out.readUInt16LE(header + 26) + out.readUInt16LE(header + 28);
  out[data + 10] = out[data + 10]! ^ 0xff;
  return out;
}

/**
 * Every route against a real server on a loopback port: {no auth, a token without the scope,
 * a valid one}, then the behaviour of each route.
 */
describe('the API, route by route and caller by caller', () => {
  let s: TestServer;
  let seedKey: string;

  beforeAll(async () => {
    s = await startTestServer({ backupKey: BACKUP_KEY });
    const r = await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: { name: 'seed' } });
    expect(r.status).toBe(200);
    seedKey = ((await r.json()) as { key: string }).key;
  });
  afterAll(async () => s?.close());

  type Case = { name: string; method: string; path: () => string; scope: Scope | 'superuser'; json?: unknown; ok: number; headers?: Record<string, string> };
  const cases: Case[] = [
    { name: 'list', method: 'GET', path: () => '/api/backups', scope: 'backups:read', ok: 200 },
    { name: 'info', method: 'GET', path: () => `/api/backups/${seedKey}/info`, scope: 'backups:read', ok: 200 },
    { name: 'manifest', method: 'GET', path: () => `/api/backups/${seedKey}/manifest`, scope: 'backups:read', ok: 200 },
    { name: 'download', method: 'GET', path: () => `/api/backups/${seedKey}`, scope: 'backups:download', ok: 200 },
    { name: 'download token', method: 'POST', path: () => `/api/backups/${seedKey}/download-token`, scope: 'backups:download', ok: 200 },
    { name: 'file token', method: 'POST', path: () => '/api/files/token', scope: 'backups:download', ok: 200 },
    { name: 'restore status', method: 'GET', path: () => '/api/restore-status', scope: 'backups:read', ok: 200 },
    { name: 'jobs', method: 'GET', path: () => '/api/jobs', scope: 'backups:read', ok: 200 },
    { name: 'job', method: 'GET', path: () => '/api/jobs/nope', scope: 'backups:read', ok: 404 },
    // An event stream never ends: only 401/403 here (the stream itself is tested with the job thread).
    { name: 'events', method: 'GET', path: () => '/api/events', scope: 'backups:read', ok: 0 },
    { name: 'tokens list', method: 'GET', path: () => '/api/tokens', scope: 'superuser', ok: 200 },
    { name: 'tokens create', method: 'POST', path: () => '/api/tokens', scope: 'superuser', json: { name: 'x', scopes: ['backups:read'] }, ok: 200 },
    { name: 'auth refresh', method: 'POST', path: () => '/api/collections/_superusers/auth-refresh', scope: 'superuser', ok: 200 },
    // Mutating routes: the "valid" call is checked in their own tests; here only 401/403.
    { name: 'create', method: 'POST', path: () => '/api/backups', scope: 'backups:create', json: {}, ok: 0 },
    { name: 'upload', method: 'POST', path: () => '/api/backups/upload?name=x', scope: 'backups:create', ok: 0, headers: { 'content-type': 'application/octet-stream' } },
    { name: 'delete', method: 'DELETE', path: () => `/api/backups/${seedKey}`, scope: 'backups:delete', ok: 0 },
    { name: 'restore', method: 'POST', path: () => `/api/backups/${seedKey}/restore`, scope: 'backups:restore', json: {}, ok: 0 },
    { name: 'reset', method: 'POST', path: () => '/api/backups/reset-factory', scope: 'backups:restore', json: { confirm: 'reset' }, ok: 0 },
    { name: 'export', method: 'POST', path: () => '/api/backups/export', scope: 'backups:export', json: { key: BACKUP_KEY }, ok: 0 },
    { name: 'token revoke', method: 'DELETE', path: () => '/api/tokens/000000000000', scope: 'superuser', ok: 0 },
  ];

  for (const c of cases) {
    it(`${c.name}: 401 without auth, 403 without the scope${c.ok ? `, ${c.ok} with it` : ''}`, async () => {
      const init = (token: string | null) => ({ method: c.method, token, json: c.json, headers: c.headers, body: c.headers ? 'x' : undefined });
      const none = await s.request(c.path(), init(null));
      expect(none.status).toBe(401);
      const body = (await none.json()) as { status: number; message: string; data: object };
      expect(body).toMatchObject({ status: 401, data: {} });
      expect(body.message).toMatch(/Authorization/);
      const bogus = await s.request(c.path(), init('Bearer not-a-token'));
      expect(bogus.status).toBe(401);
      const other: Scope = c.scope === 'settings' ? 'backups:read' : 'settings';
      const wrong = await s.request(c.path(), init(s.tokenWith(other)));
      expect(wrong.status).toBe(403);
      if (c.ok) {
        const token = c.scope === 'superuser' ? s.adminToken : s.tokenWith(c.scope);
        const good = await s.request(c.path(), init(token));
        expect(good.status).toBe(c.ok);
        // The superuser token works with and without "Bearer ".
        const viaBearer = await s.request(c.path(), init(`Bearer ${s.adminToken}`));
        expect(viaBearer.status).toBe(c.ok);
      }
    });
  }

  it('public routes: health and the OpenAPI document', async () => {
    const health = (await (await s.request('/api/health')).json()) as Record<string, unknown>;
    expect(health).toMatchObject({ status: 'ok', canBackup: true, restoreEnabled: true, demo: { enabled: false } });
    const doc = (await (await s.request('/api/openapi.json')).json()) as { openapi: string; paths: Record<string, Record<string, { responses: object; security?: unknown }>> };
    expect(doc.openapi).toBe('3.1.0');
    const expected = [
      'get /api/backups', 'post /api/backups', 'get /api/backups/{key}', 'delete /api/backups/{key}', 'get /api/backups/{key}/info',
      'get /api/backups/{key}/manifest', 'post /api/backups/{key}/restore', 'post /api/backups/{key}/download-token', 'post /api/files/token',
      'post /api/backups/upload', 'post /api/backups/export', 'post /api/backups/reset-factory', 'get /api/restore-status', 'get /api/health',
      'get /api/events', 'get /api/jobs', 'post /api/collections/_superusers/auth-with-password', 'post /api/collections/_superusers/auth-refresh',
      'post /api/setup', 'get /api/tokens', 'post /api/tokens', 'delete /api/tokens/{id}',
      'get /api/jobs/{id}', 'get /api/settings', 'patch /api/settings', 'get /api/settings/cron-preview', 'post /api/backups/prune',
      'get /api/webhooks', 'post /api/webhooks', 'get /api/webhooks/{id}', 'patch /api/webhooks/{id}', 'delete /api/webhooks/{id}',
      'get /api/webhooks/{id}/deliveries', 'post /api/webhooks/{id}/test',
    ];
    const documented = Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m} ${p}`));
    for (const route of expected) expect(documented, route).toContain(route);
    for (const [p, ops] of Object.entries(doc.paths)) for (const [m, op] of Object.entries(ops)) expect(Object.keys(op.responses).length, `${m} ${p}`).toBeGreaterThan(0);
  });

  it('the OpenAPI document describes every request body: each POST/PATCH/PUT has one with its fields, unless it takes none', async () => {
    type Media = { schema?: { type?: string | string[]; properties?: Record<string, unknown>; format?: string; required?: string[] } };
    type Op = { requestBody?: { content?: Record<string, Media> } };
    const doc = (await (await s.request('/api/openapi.json')).json()) as { paths: Record<string, Record<string, Op>> };
    // These act on the path and the caller alone.
    const bodiless = new Set([
      'post /api/collections/_superusers/auth-refresh',
      'post /api/backups/{key}/download-token',
      'post /api/files/token',
      'post /api/webhooks/{id}/test',
      'post /api/points/{name}/run',
    ]);
    const checked: string[] = [];
    for (const [p, ops] of Object.entries(doc.paths)) {
      for (const [m, op] of Object.entries(ops)) {
        if (!['post', 'patch', 'put'].includes(m)) continue;
        const route = `${m} ${p}`;
        if (bodiless.has(route)) {
          expect(op.requestBody, `${route} takes no body`).toBeUndefined();
          continue;
        }
        const content = op.requestBody?.content ?? {};
        expect(Object.keys(content).length, `${route} has no requestBody`).toBeGreaterThan(0);
        const json = content['application/json'];
        // A JSON body names its fields: a bare "object of anything" documents nothing.
        if (json) expect(Object.keys(json.schema?.properties ?? {}).length, `${route}: its JSON body lists no fields`).toBeGreaterThan(0);
        checked.push(route);
      }
    }
    expect(checked).toEqual(expect.arrayContaining(['patch /api/settings', 'post /api/settings/test-s3', 'post /api/backups/upload', 'post /api/backups']));
    const upload = doc.paths['/api/backups/upload']!.post!.requestBody!.content!;
    expect(upload['multipart/form-data']?.schema).toMatchObject({ type: 'object', required: ['file'], properties: { file: { type: 'string', format: 'binary' } } });
    expect(upload['application/octet-stream']?.schema).toMatchObject({ type: 'string', format: 'binary' });
    const settings = doc.paths['/api/settings']!.patch!.requestBody!.content!['application/json']!.schema!;
    expect(Object.keys(settings.properties!)).toEqual(['backups', 'verify', 'drill']);
    expect(settings.properties!.backups).toMatchObject({ type: ['object', 'null'], properties: { cron: { type: ['string', 'null'] }, s3: { properties: { secret: { type: ['string', 'null'] } } } } });
    const s3 = doc.paths['/api/settings/test-s3']!.post!.requestBody!.content!['application/json']!.schema!;
    expect(Object.keys(s3.properties!)).toEqual(expect.arrayContaining(['bucket', 'region', 'endpoint', 'accessKey', 'secret', 'forcePathStyle', 'prefix']));
    // The download's HEAD is documented next to its GET.
    expect(Object.keys(doc.paths['/api/backups/{key}']!)).toEqual(expect.arrayContaining(['get', 'head', 'delete']));
  });

  it('sets security headers and no CORS headers unless configured', async () => {
    const r = await s.request('/api/health', { headers: { Origin: 'https://evil.example' } });
    expect(r.headers.get('x-content-type-options')).toBe('nosniff');
    expect(r.headers.get('x-frame-options')).toBe('DENY');
    expect(r.headers.get('content-security-policy')).toContain("default-src 'none'");
    expect(r.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('lists backups newest first with the PocketBase fields and ours', async () => {
    const list = (await (await s.request('/api/backups', { token: s.adminToken })).json()) as Array<Record<string, unknown>>;
    const seed = list.find((b) => b.key === seedKey)!;
    expect(seed).toMatchObject({ key: seedKey, status: 'completed', trigger: 'api', appVersion: '1.0.0', labels: { model: 'm1', serial: 'S1' }, encrypted: false });
    expect(typeof seed.size).toBe('number');
    expect(Date.parse(seed.modified as string)).not.toBeNaN();
    expect((seed.sources as Array<{ name: string }>).map((x) => x.name)).toEqual(['files', 'db']);
    const info = (await (await s.request(`/api/backups/${seedKey}/info`, { token: s.adminToken })).json()) as Record<string, unknown>;
    expect(info).toMatchObject({ key: seedKey, excludes: [], warnings: [] });
    const missing = await s.request('/api/backups/nope.zip/info', { token: s.adminToken });
    expect(missing.status).toBe(404);
  });

  it('pages through the manifest', async () => {
    const first = (await (await s.request(`/api/backups/${seedKey}/manifest?perPage=2`, { token: s.adminToken })).json()) as {
      key: string; sources: unknown[]; entries: { page: number; perPage: number; totalItems: number; totalPages: number; items: Array<{ path: string }> };
    };
    expect(first.key).toBe(seedKey);
    expect(first.entries.items).toHaveLength(2);
    const all: string[] = [];
    for (let page = 1; page <= first.entries.totalPages; page++) {
      const p = (await (await s.request(`/api/backups/${seedKey}/manifest?perPage=2&page=${page}`, { token: s.adminToken })).json()) as typeof first;
      all.push(...p.entries.items.map((e) => e.path));
    }
    expect(all).toHaveLength(first.entries.totalItems);
    expect(all).toContain('files/docs/a.json');
    expect(all).toContain('db/app.db');
    const bad = await s.request(`/api/backups/${seedKey}/manifest?perPage=0`, { token: s.adminToken });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { data: object }).data).toHaveProperty('perPage');
  });

  it('downloads with Content-Length, Content-Disposition, ETag and Range', async () => {
    const file = path.join(s.root, 'data/backups', seedKey);
    const bytes = fs.readFileSync(file);
    const r = await s.request(`/api/backups/${seedKey}`, { token: s.adminToken });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-length')).toBe(String(bytes.length));
    expect(r.headers.get('content-disposition')).toBe(`attachment; filename="${seedKey}"`);
    const etag = r.headers.get('etag')!;
    expect(etag).toMatch(/^".+"$/);
    expect(Buffer.from(await r.arrayBuffer()).equals(bytes)).toBe(true);

    const part = await s.request(`/api/backups/${seedKey}`, { token: s.adminToken, headers: { Range: 'bytes=10-109' } });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 10-109/${bytes.length}`);
    expect(Buffer.from(await part.arrayBuffer()).equals(bytes.subarray(10, 110))).toBe(true);
    const tail = await s.request(`/api/backups/${seedKey}`, { token: s.adminToken, headers: { Range: 'bytes=-22' } });
    expect(Buffer.from(await tail.arrayBuffer()).equals(bytes.subarray(bytes.length - 22))).toBe(true);
    const beyond = await s.request(`/api/backups/${seedKey}`, { token: s.adminToken, headers: { Range: `bytes=${bytes.length}-` } });
    expect(beyond.status).toBe(416);
    expect(beyond.headers.get('content-range')).toBe(`bytes */${bytes.length}`);
    const cached = await s.request(`/api/backups/${seedKey}`, { token: s.adminToken, headers: { 'If-None-Match': etag } });
    expect(cached.status).toBe(304);
  });

  it('HEAD on a download: the real Content-Length, ETag, Accept-Ranges and Content-Disposition, and no body', async () => {
    const size = fs.statSync(path.join(s.root, 'data/backups', seedKey)).size;
    const get = await s.request(`/api/backups/${seedKey}`, { token: s.adminToken });
    await get.arrayBuffer();
    // fetch() hides a HEAD body, so read the raw response off the socket.
    const raw = async (pathname: string, headers: Record<string, string> = {}) => {
      const { request } = await import('node:http');
      return new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }>((resolve, reject) => {
        const req = request(`${s.url}${pathname}`, { method: 'HEAD', headers }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
        });
        req.on('error', reject);
        req.end();
      });
    };
    const head = await raw(`/api/backups/${seedKey}`, { Authorization: s.adminToken });
    expect(head.status).toBe(200);
    expect(head.headers).toMatchObject({
      'content-length': String(size),
      etag: get.headers.get('etag'),
      'accept-ranges': 'bytes',
      'content-disposition': `attachment; filename="${seedKey}"`,
      'content-type': 'application/zip',
    });
    expect(head.body.length).toBe(0);
    const part = await raw(`/api/backups/${seedKey}`, { Authorization: s.adminToken, Range: 'bytes=10-109' });
    expect(part.status).toBe(206);
    expect(part.headers).toMatchObject({ 'content-length': '100', 'content-range': `bytes 10-109/${size}` });
    expect(part.body.length).toBe(0);
    // With a download token, as a browser or download manager would check before fetching.
    const token = ((await (await s.request(`/api/backups/${seedKey}/download-token`, { method: 'POST', token: s.adminToken })).json()) as { token: string }).token;
    const viaToken = await raw(`/api/backups/${seedKey}?token=${token}`);
    expect(viaToken.status).toBe(200);
    expect(viaToken.headers['content-length']).toBe(String(size));
    expect((await raw(`/api/backups/${seedKey}`)).status).toBe(401);
    expect((await raw('/api/backups/nope.zip', { Authorization: s.adminToken })).status).toBe(404);
  });

  it('download tokens: valid 3 minutes, bound to their key, never an API credential', async () => {
    const other = ((await (await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: { name: 'other' } })).json()) as { key: string }).key;
    const bound = ((await (await s.request(`/api/backups/${seedKey}/download-token`, { method: 'POST', token: s.adminToken })).json()) as { token: string }).token;
    expect((await s.request(`/api/backups/${seedKey}?token=${bound}`)).status).toBe(200);
    expect((await s.request(`/api/backups/${other}?token=${bound}`)).status).toBe(403);
    const any = ((await (await s.request('/api/files/token', { method: 'POST', token: s.tokenWith('backups:download') })).json()) as { token: string }).token;
    expect((await s.request(`/api/backups/${other}?token=${any}`)).status).toBe(200);
    // A download token is not a way into the rest of the API.
    expect((await s.request('/api/backups', { token: any })).status).toBe(401);
    // Expiry: the token's own exp claim says at most 180 s, and an expired one is refused.
    const claims = JSON.parse(Buffer.from(any.split('.')[1]!, 'base64url').toString()) as { iat: number; exp: number };
    expect(claims.exp - claims.iat).toBeLessThanOrEqual(180);
    const { SignJWT } = await import('jose');
    const forged = await new SignJWT({ type: 'file' }).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime('1s').sign(new Uint8Array(32));
    expect((await s.request(`/api/backups/${seedKey}?token=${forged}`)).status).toBe(403);
    // A real token, signed with the server's key, issued 3 minutes and 1 second ago: expired.
    // (403, as PocketBase answers a bad file token, and as docs/API.md says.)
    const admin = { kind: 'superuser' as const, id: s.auth.listSuperusers().find((u) => u.email === ADMIN_EMAIL)!.id, email: ADMIN_EMAIL };
    const expired = await s.auth.issueFileToken(admin, seedKey, Date.now() - 181_000);
    const expiredClaims = JSON.parse(Buffer.from(expired.split('.')[1]!, 'base64url').toString()) as { exp: number; key: string };
    expect(expiredClaims).toMatchObject({ key: seedKey });
    expect(expiredClaims.exp).toBeLessThan(Date.now() / 1000);
    const refused = await s.request(`/api/backups/${seedKey}?token=${expired}`);
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as { message: string }).message).toMatch(/expired/);
    // The same token minted 2 minutes ago is still good: the refusal was the expiry, nothing else.
    expect((await s.request(`/api/backups/${seedKey}?token=${await s.auth.issueFileToken(admin, seedKey, Date.now() - 120_000)}`)).status).toBe(200);
    const { FILE_TOKEN_TTL_SECONDS } = await import('../src/server/auth.js');
    expect(FILE_TOKEN_TTL_SECONDS).toBe(180);
    // Revoking the API token that asked for a download token voids it at once.
    const created = s.auth.createApiToken('short-lived', ['backups:download']);
    const viaToken = ((await (await s.request('/api/files/token', { method: 'POST', token: created.token })).json()) as { token: string }).token;
    expect((await s.request(`/api/backups/${seedKey}?token=${viaToken}`)).status).toBe(200);
    s.auth.revokeApiToken(created.record.id);
    expect((await s.request(`/api/backups/${seedKey}?token=${viaToken}`)).status).toBe(403);
  });

  it('refuses keys that try to leave the storage folder', async () => {
    for (const evil of ['..%2f..%2fetc%2fpasswd', '..%2fstowage.db', 'a%00.zip', '..%5c..%5cx.zip', '%2e%2e%2fx.zip', 'UPPER.zip', '.hidden.zip', 'x.zip%2f..']) {
      for (const [method, suffix] of [['GET', ''], ['GET', '/info'], ['DELETE', ''], ['POST', '/restore']] as const) {
        const r = await s.request(`/api/backups/${evil}${suffix}`, { method, token: s.adminToken, ...(method === 'POST' ? { json: {} } : {}) });
        expect([400, 404], `${method} ${evil}${suffix}`).toContain(r.status);
        const body = (await r.json()) as { status: number };
        expect(body.status).toBe(r.status);
      }
    }
    expect(fs.existsSync(path.join(s.root, 'data/stowage.db'))).toBe(true);
  });

  it('validates bodies and names the field', async () => {
    const r = await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: { name: 'Bad Name!' } });
    expect(r.status).toBe(400);
    const body = (await r.json()) as { message: string; data: Record<string, { code: string; message: string }> };
    expect(body.data.name?.message).toMatch(/not a valid backup key/);
    const unknown = await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: { nme: 'x' } });
    expect(unknown.status).toBe(400);
    expect(((await unknown.json()) as { data: object }).data).toHaveProperty('nme');
    const clash = await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: { name: seedKey.replace(/\.zip$/, '') } });
    expect(clash.status).toBe(400);
    expect(((await clash.json()) as { data: object }).data).toHaveProperty('name');
    const notJson = await s.request('/api/backups', { method: 'POST', token: s.adminToken, body: '{', headers: { 'content-type': 'application/json' } });
    expect(notJson.status).toBe(400);
    const huge = await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: { description: 'x'.repeat(2_000_000) } });
    expect(huge.status).toBe(413);
    const reset = await s.request('/api/backups/reset-factory', { method: 'POST', token: s.adminToken, json: { confirm: 'yes' } });
    expect(reset.status).toBe(400);
    expect(((await reset.json()) as { data: object }).data).toHaveProperty('confirm');
  });
});

describe('uploads', () => {
  let s: TestServer;
  let archive: Buffer;
  beforeAll(async () => {
    s = await startTestServer();
    const made = (await (await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: { name: 'original' } })).json()) as { key: string };
    archive = fs.readFileSync(path.join(s.root, 'data/backups', made.key));
  });
  afterAll(async () => s?.close());

  const multipart = (bytes: Buffer, filename: string) => {
    const form = new FormData();
    form.append('file', new Blob([bytes]), filename);
    return form;
  };
  const upload = (body: FormData | Buffer, query = '', token = s.adminToken) =>
    s.request(`/api/backups/upload${query}`, { method: 'POST', token, body, ...(body instanceof Buffer ? { headers: { 'content-type': 'application/octet-stream' } } : {}) });

  it('accepts a Stowage archive as multipart and as a raw body, verified, then listed', async () => {
    const a = await upload(multipart(archive, 'copy_a.zip'));
    expect(a.status).toBe(200);
    expect(await a.json()).toMatchObject({ key: 'copy_a.zip', status: 'completed', trigger: 'upload' });
    const b = await upload(archive, '?name=copy_b');
    expect(b.status).toBe(200);
    const list = (await (await s.request('/api/backups', { token: s.adminToken })).json()) as Array<{ key: string }>;
    expect(list.map((x) => x.key)).toEqual(expect.arrayContaining(['copy_a.zip', 'copy_b.zip']));
    expect(run('unzip', ['-tq', path.join(s.root, 'data/backups/copy_b.zip')]).status).toBe(0);
    const clash = await upload(archive, '?name=copy_b');
    expect(clash.status).toBe(400);
    expect(((await clash.json()) as { data: object }).data).toHaveProperty('file');
  });

  it('refuses what is not a usable Stowage archive, and keeps nothing of it', async () => {
    const foreignDir = path.join(s.root, 'foreign');
    fs.mkdirSync(foreignDir);
    fs.writeFileSync(path.join(foreignDir, 'x.txt'), 'not a backup');
    run('zip', ['-q', '-r', path.join(s.root, 'foreign.zip'), 'x.txt'], { cwd: foreignDir });
    const flipped = flipInsideEntry(archive, 'db/app.db');
    const bad: Array<[string, Buffer]> = [
      ['not a zip', Buffer.from('hello, this is plain text and not an archive')],
      ['a foreign zip', fs.readFileSync(path.join(s.root, 'foreign.zip'))],
      ['a truncated archive', archive.subarray(0, Math.floor(archive.length / 2))],
      ['a corrupt archive', flipped],
      ['an empty body', Buffer.alloc(0)],
    ];
    for (const [what, bytes] of bad) {
      const r = await upload(multipart(bytes, 'bad_one.zip'));
      expect(r.status, what).toBe(400);
      const body = (await r.json()) as { data: { file?: { message: string } } };
      expect(body.data.file?.message, what).toBeTruthy();
    }
    expect(fs.existsSync(path.join(s.root, 'data/backups/bad_one.zip'))).toBe(false);
    const list = (await (await s.request('/api/backups', { token: s.adminToken })).json()) as Array<{ key: string }>;
    expect(list.map((x) => x.key)).not.toContain('bad_one.zip');
    // Scratch space is cleaned up after each refusal.
    const uploads = path.join(s.stowage.scratchDir, 'uploads');
    expect(fs.existsSync(uploads) ? fs.readdirSync(uploads) : []).toEqual([]);
  });

  it('refuses bodies over server.maxUploadSize with 413, and bad names or types', async () => {
    const big = Buffer.alloc(6_000_000, 1);
    const r = await upload(big, '?name=big');
    expect(r.status).toBe(413);
    const m = await upload(multipart(big, 'big.zip'));
    expect(m.status).toBe(413);
    const badName = await upload(archive, '?name=../../evil');
    expect(badName.status).toBe(400);
    const text = await s.request('/api/backups/upload', { method: 'POST', token: s.adminToken, body: 'x', headers: { 'content-type': 'text/plain' } });
    expect(text.status).toBe(415);
  });
});

describe('jobs: restore, reset, one at a time', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer();
  });
  afterAll(async () => s?.close());

  const status = async () => (await (await s.request('/api/restore-status', { token: s.adminToken })).json()) as { status: string; key: string; statusMessage: string; safetyBackupKey: string | null };

  it('restores as a job (202), then reports completed, with a safety backup', async () => {
    const key = ((await (await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: { name: 'before' } })).json()) as { key: string }).key;
    fs.writeFileSync(path.join(s.root, 'app/files/readme.txt'), 'changed\n');
    fs.writeFileSync(path.join(s.root, 'app/files/new.txt'), 'new\n');
    const r = await s.request(`/api/backups/${key}/restore`, { method: 'POST', token: s.adminToken, json: {} });
    expect(r.status).toBe(202);
    expect(await r.json()).toMatchObject({ status: 'started', key });
    const done = await waitFor(async () => ((await status()).status !== 'started' ? status() : null), 30_000, 'restore');
    expect(done.status).toBe('completed');
    expect(done.safetyBackupKey).toMatch(/^@pre-restore_/);
    expect(fs.readFileSync(path.join(s.root, 'app/files/readme.txt'), 'utf8')).toBe('hello\n');
    expect(fs.existsSync(path.join(s.root, 'app/files/new.txt'))).toBe(false);
    const jobs = (await (await s.request('/api/jobs', { token: s.adminToken })).json()) as Array<{ kind: string; status: string }>;
    expect(jobs[0]).toMatchObject({ kind: 'restore', status: 'completed' });
  });

  it('a restore that fails is reported as failed, never a silent success', async () => {
    const key = ((await (await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: { name: 'will_break' } })).json()) as { key: string }).key;
    // Damage the stored archive after it was listed: the restore must verify and refuse it.
    const file = path.join(s.root, 'data/backups', key);
    fs.writeFileSync(file, flipInsideEntry(fs.readFileSync(file), 'db/app.db'));
    const r = await s.request(`/api/backups/${key}/restore`, { method: 'POST', token: s.adminToken, json: {} });
    expect(r.status).toBe(202);
    const done = await waitFor(async () => ((await status()).status !== 'started' ? status() : null), 30_000, 'restore');
    expect(done.status).toBe('failed');
    expect(done.statusMessage).toMatch(/failed/);
    expect(fs.readFileSync(path.join(s.root, 'app/files/readme.txt'), 'utf8')).toBe('hello\n');
  });

  it('one backup or restore at a time: 409 with the PocketBase message; delete refuses the key in use', async () => {
    // Hold the lock with a job that cannot finish until we let it.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const remove = s.stowage.addExcludeHook(async () => {
      await gate;
      return [];
    });
    const slow = await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: { name: 'slow' }, headers: { Prefer: 'respond-async' } });
    expect(slow.status).toBe(202);
    expect(await slow.json()).toMatchObject({ key: 'slow.zip', status: 'started' });
    try {
      const second = await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: {} });
      expect(second.status).toBe(409);
      expect(await second.json()).toEqual({ status: 409, message: 'Try again later - another backup/restore process has already been started.', data: {} });
      const list = (await (await s.request('/api/backups', { token: s.adminToken })).json()) as Array<{ key: string }>;
      const restore = await s.request(`/api/backups/${list.find((b) => b.key !== 'slow.zip')!.key}/restore`, { method: 'POST', token: s.adminToken, json: {} });
      expect(restore.status).toBe(409);
      const reset = await s.request('/api/backups/reset-factory', { method: 'POST', token: s.adminToken, json: { confirm: 'reset' } });
      expect(reset.status).toBe(409);
      expect(((await (await s.request('/api/health')).json()) as { canBackup: boolean }).canBackup).toBe(false);
      const inUse = await s.request('/api/backups/slow.zip', { method: 'DELETE', token: s.adminToken });
      expect(inUse.status).toBe(409);
      // The running backup is listed as started.
      const running = (await (await s.request('/api/backups', { token: s.adminToken })).json()) as Array<{ key: string; status: string }>;
      expect(running.find((b) => b.key === 'slow.zip')?.status).toBe('started');
    } finally {
      release();
      remove();
    }
    await waitFor(async () => ((await (await s.request('/api/backups/slow.zip/info', { token: s.adminToken })).json()) as { status: string }).status === 'completed', 30_000, 'slow backup');
    // The record says completed a moment before the job lets go of the key.
    await waitFor(() => !s.stowage.runningJob, 30_000, 'the job to end');
    expect((await s.request('/api/backups/slow.zip', { method: 'DELETE', token: s.adminToken })).status).toBe(204);
    expect((await s.request('/api/backups/slow.zip', { method: 'DELETE', token: s.adminToken })).status).toBe(404);
  });

  it('factory reset: safety backup, then every source empty; restoring the safety backup brings it back', async () => {
    const r = await s.request('/api/backups/reset-factory', { method: 'POST', token: s.adminToken, json: { confirm: 'reset' } });
    expect(r.status).toBe(202);
    const done = await waitFor(async () => ((await status()).status !== 'started' ? status() : null), 30_000, 'reset');
    expect(done).toMatchObject({ status: 'completed', key: 'factory-reset' });
    expect(fs.readdirSync(path.join(s.root, 'app/files'))).toEqual([]);
    const tables = run('sqlite3', [path.join(s.root, 'app/app.db'), '.tables']);
    expect(tables.stdout.trim()).toBe('');
    const back = await s.request(`/api/backups/${done.safetyBackupKey}/restore`, { method: 'POST', token: s.adminToken, json: {} });
    expect(back.status).toBe(202);
    const again = await waitFor(async () => ((await status()).status !== 'started' ? status() : null), 30_000, 'restore');
    expect(again.status, again.statusMessage).toBe('completed');
    expect(fs.readFileSync(path.join(s.root, 'app/files/readme.txt'), 'utf8')).toBe('hello\n');
    expect(run('sqlite3', [path.join(s.root, 'app/app.db'), 'SELECT body FROM notes ORDER BY id']).stdout).toBe('one\ntwo\n');
  });
});

describe('auth', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer();
  });
  afterAll(async () => s?.close());

  const login = (identity: string, password: string, ip?: string) =>
    s.request('/api/collections/_superusers/auth-with-password', { method: 'POST', json: { identity, password }, headers: ip ? { 'X-Forwarded-For': ip } : {} });

  it('logs in with email and password; the record has no secrets', async () => {
    const r = await login(ADMIN_EMAIL, ADMIN_PASSWORD);
    expect(r.status).toBe(200);
    const body = (await r.json()) as { token: string; record: Record<string, unknown> };
    expect(body.record).toMatchObject({ email: ADMIN_EMAIL, collectionName: '_superusers' });
    expect(JSON.stringify(body.record)).not.toMatch(/password|scrypt|token_key|hash/i);
    expect((await s.request('/api/backups', { token: body.token })).status).toBe(200);
    const wrong = await login(ADMIN_EMAIL, 'wrong password!');
    expect(wrong.status).toBe(400);
    const unknown = await login('nobody@example.com', 'whatever password');
    expect(unknown.status).toBe(400);
    expect(((await wrong.json()) as { message: string }).message).toBe(((await unknown.json()) as { message: string }).message);
  });

  it('changing or deleting a superuser ends their sessions', async () => {
    await s.auth.createSuperuser('second@example.com', 'second password');
    const token = ((await (await login('second@example.com', 'second password')).json()) as { token: string }).token;
    expect((await s.request('/api/backups', { token })).status).toBe(200);
    await s.auth.updateSuperuser('second@example.com', 'another password');
    expect((await s.request('/api/backups', { token })).status).toBe(401);
    const token2 = ((await (await login('second@example.com', 'another password')).json()) as { token: string }).token;
    s.auth.deleteSuperuser('second@example.com');
    expect((await s.request('/api/backups', { token: token2 })).status).toBe(401);
  });

  it('API tokens: shown once, stored hashed, listed without secrets, revocable', async () => {
    const created = (await (await s.request('/api/tokens', { method: 'POST', token: s.adminToken, json: { name: 'monitor', scopes: ['backups:read'] } })).json()) as {
      token: string; record: { id: string };
    };
    expect(created.token).toMatch(/^stw_/);
    expect((await s.request('/api/backups', { token: created.token })).status).toBe(200);
    expect((await s.request('/api/backups', { method: 'POST', token: created.token, json: {} })).status).toBe(403);
    const list = await (await s.request('/api/tokens', { token: s.adminToken })).text();
    expect(list).toContain('monitor');
    expect(list).not.toContain(created.token.slice(20));
    const secret = created.token.split('_').slice(2).join('_');
    const stored = s.stowage.catalogue.database.prepare('SELECT * FROM api_tokens WHERE id = ?').get(created.record.id) as Record<string, string>;
    expect(JSON.stringify(stored)).not.toContain(secret);
    // An API token cannot make more tokens.
    expect((await s.request('/api/tokens', { method: 'POST', token: created.token, json: { name: 'x', scopes: ['settings'] } })).status).toBe(403);
    expect((await s.request(`/api/tokens/${created.record.id}`, { method: 'DELETE', token: s.adminToken })).status).toBe(204);
    expect((await s.request('/api/backups', { token: created.token })).status).toBe(401);
    const badScope = await s.request('/api/tokens', { method: 'POST', token: s.adminToken, json: { name: 'x', scopes: ['root'] } });
    expect(badScope.status).toBe(400);
  });

  it('rate-limits failed logins per account and per address', async () => {
    let last = 0;
    for (let i = 0; i < 11; i++) last = (await login('victim@example.com', `guess number ${i}`)).status;
    expect(last).toBe(429);
    // The right password is refused too while the account is locked out...
    await s.auth.createSuperuser('victim@example.com', 'victim password');
    const locked = await login('victim@example.com', 'victim password');
    expect(locked.status).toBe(429);
    expect(Number(locked.headers.get('retry-after'))).toBeGreaterThan(0);
    // ...while other accounts can still log in.
    expect((await login(ADMIN_EMAIL, ADMIN_PASSWORD)).status).toBe(200);
  });
});

describe('the per-address login limit', () => {
  const login = (s: TestServer, identity: string, password: string, ip: string) =>
    s.request('/api/collections/_superusers/auth-with-password', { method: 'POST', json: { identity, password }, headers: { 'X-Forwarded-For': ip } });
  const trusting = oneSourceYaml('', 'trustProxy: true');

  it('behind a proxy (trustProxy): 20 failures from one client address lock that address out, for every account; other addresses still log in', async () => {
    const s = await startTestServer({ yaml: trusting });
    try {
      // Twenty different accounts, so that no per-account limit (10) is reached.
      for (let i = 0; i < 20; i++) expect((await login(s, `guess${i}@example.com`, 'not the password', '203.0.113.7')).status).toBe(400);
      const locked = await login(s, ADMIN_EMAIL, ADMIN_PASSWORD, '203.0.113.7');
      expect(locked.status).toBe(429);
      expect(Number(locked.headers.get('retry-after'))).toBeGreaterThan(500); // the 10-minute window
      expect((await login(s, ADMIN_EMAIL, ADMIN_PASSWORD, '203.0.113.8')).status).toBe(200);
      // The client address is the one the proxy appended, not what the client claimed before it.
      expect((await login(s, ADMIN_EMAIL, ADMIN_PASSWORD, '10.9.9.9, 203.0.113.7')).status).toBe(429);
    } finally {
      await s.close();
    }
  });

  it('without trustProxy, X-Forwarded-For is ignored: a client cannot dodge the limit by inventing addresses', async () => {
    const s = await startTestServer();
    try {
      for (let i = 0; i < 20; i++) expect((await login(s, `guess${i}@example.com`, 'not the password', `198.51.100.${i}`)).status).toBe(400);
      expect((await login(s, ADMIN_EMAIL, ADMIN_PASSWORD, '198.51.100.200')).status).toBe(429);
    } finally {
      await s.close();
    }
  });
});

describe('first start and the backup-key export', () => {
  it('prints a one-time setup link that creates the first superuser', async () => {
    const s = await startTestServer();
    try {
      // startTestServer creates the admin after start; the link was printed before that.
      const link = s.notices.find((l) => l.includes('/setup?token='))!.trim();
      const token = new URL(link).searchParams.get('token')!;
      s.auth.deleteSuperuser(ADMIN_EMAIL);
      const page = await s.request(`/setup?token=${token}`);
      expect(page.status).toBe(200);
      expect(await page.text()).toContain('<form');
      const bad = await s.request('/api/setup', { method: 'POST', json: { token: 'wrong', email: 'first@example.com', password: 'first password' } });
      expect(bad.status).toBe(400);
      const made = await s.request('/api/setup', { method: 'POST', body: new URLSearchParams({ token, email: 'first@example.com', password: 'first password' }) });
      expect(made.status).toBe(200);
      expect(await made.text()).toContain('first@example.com');
      const again = await s.request('/api/setup', { method: 'POST', json: { token, email: 'second@example.com', password: 'second password' } });
      expect(again.status).toBe(400);
      const login = await s.request('/api/collections/_superusers/auth-with-password', { method: 'POST', json: { identity: 'first@example.com', password: 'first password' } });
      expect(login.status).toBe(200);
    } finally {
      await s.close();
    }
  });

  it('STOWAGE_ADMIN_EMAIL / STOWAGE_ADMIN_PASSWORD create a superuser at start, and no setup link is printed', async () => {
    const s = await startTestServer({ env: { STOWAGE_ADMIN_EMAIL: 'ops@example.com', STOWAGE_ADMIN_PASSWORD: 'ops password 1' } });
    try {
      expect(s.notices.join('\n')).not.toContain('/setup?token=');
      const r = await s.request('/api/collections/_superusers/auth-with-password', { method: 'POST', json: { identity: 'ops@example.com', password: 'ops password 1' } });
      expect(r.status).toBe(200);
    } finally {
      await s.close();
    }
  });

  it('export is 404 unless STOWAGE_BACKUP_KEY has at least 20 characters', async () => {
    for (const key of ['', 'short-key-123']) {
      const s = await startTestServer({ backupKey: key });
      try {
        const r = await s.request('/api/backups/export', { method: 'POST', token: s.adminToken, json: { key } });
        expect(r.status).toBe(404);
      } finally {
        await s.close();
      }
    }
  });

  it('export streams a fresh, valid backup and stores nothing; a wrong key is refused', async () => {
    const s = await startTestServer({ backupKey: BACKUP_KEY });
    try {
      const wrong = await s.request('/api/backups/export', { method: 'POST', token: s.adminToken, json: { key: `${BACKUP_KEY}x` } });
      expect(wrong.status).toBe(403);
      const r = await s.request('/api/backups/export', { method: 'POST', token: s.tokenWith('backups:export'), json: { key: BACKUP_KEY } });
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type')).toBe('application/zip');
      const file = path.join(s.root, 'export.zip');
      fs.writeFileSync(file, Buffer.from(await r.arrayBuffer()));
      expect(run('unzip', ['-tq', file]).status).toBe(0);
      expect(run('unzip', ['-l', file]).stdout).toContain('files/readme.txt');
      const list = (await (await s.request('/api/backups', { token: s.adminToken })).json()) as unknown[];
      expect(list).toEqual([]);
      expect(fs.existsSync(path.join(s.root, 'data/backups')) ? fs.readdirSync(path.join(s.root, 'data/backups')) : []).toEqual([]);
    } finally {
      await s.close();
    }
  });
});

describe('secrets and the CLI alongside the server', () => {
  it('never writes passwords, tokens or the backup key to the log or a response', async () => {
    const logLines: string[] = [];
    const s = await startTestServer({ backupKey: BACKUP_KEY, logLines });
    try {
      const login = (await (await s.request('/api/collections/_superusers/auth-with-password', { method: 'POST', json: { identity: ADMIN_EMAIL, password: ADMIN_PASSWORD } })).json()) as { token: string };
      await s.request('/api/collections/_superusers/auth-with-password', { method: 'POST', json: { identity: ADMIN_EMAIL, password: 'a wrong password' } });
      const apiToken = s.tokenWith('backups:read', 'backups:create', 'backups:download');
      const key = ((await (await s.request('/api/backups', { method: 'POST', token: apiToken, json: { name: 'logged' } })).json()) as { key: string }).key;
      const dl = ((await (await s.request(`/api/backups/${key}/download-token`, { method: 'POST', token: `Bearer ${login.token}` })).json()) as { token: string }).token;
      await (await s.request(`/api/backups/${key}?token=${dl}`)).arrayBuffer();
      await (await s.request('/api/backups/export', { method: 'POST', token: login.token, json: { key: BACKUP_KEY } })).arrayBuffer();
      await s.request('/api/backups/nope.zip?token=secret-looking-value');
      const responses = [
        await (await s.request('/api/tokens', { token: login.token })).text(),
        await (await s.request('/api/health')).text(),
        await (await s.request('/api/backups', { token: login.token })).text(),
      ].join('\n');
      const log = logLines.join('');
      expect(log).toContain('/api/backups'); // the log is there...
      for (const secret of [ADMIN_PASSWORD, 'a wrong password', login.token, apiToken, dl, BACKUP_KEY, 'secret-looking-value']) {
        expect(log, 'log').not.toContain(secret);
        expect(responses, 'responses').not.toContain(secret);
      }
    } finally {
      await s.close();
    }
  });

  it('the CLI and the server share one lock: a CLI backup while the server runs one is refused, and says by whom', async () => {
    const s = await startTestServer();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const remove = s.stowage.addExcludeHook(async () => {
      await gate;
      return [];
    });
    try {
      const started = await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: { name: 'from_api' }, headers: { Prefer: 'respond-async' } });
      expect(started.status).toBe(202);
      const cli = stowage(s.root, ['backup', '--name', 'from_cli', '--json']);
      expect(cli.status).toBe(1);
      expect(String(cli.result?.message)).toMatch(/busy, held by backup from_api by pid \d+/);
    } finally {
      release();
      remove();
    }
    await waitFor(async () => ((await (await s.request('/api/backups/from_api.zip/info', { token: s.adminToken })).json()) as { status: string }).status === 'completed', 30_000, 'backup');
    // The backup is recorded as completed while its job still holds the lock (points and
    // afterBackup hooks run inside the job), so wait for the job itself to end.
    await waitFor(async () => ((await (await s.request('/api/health')).json()) as { canBackup: boolean }).canBackup, 30_000, 'the job to release the lock');
    // Once the server's job is done, the CLI works against the same data folder, and the server lists its backup.
    const cli = stowage(s.root, ['backup', '--name', 'from_cli', '--json']);
    expect(cli.status).toBe(0);
    const list = (await (await s.request('/api/backups', { token: s.adminToken })).json()) as Array<{ key: string; status: string }>;
    expect(list.map((b) => `${b.key}:${b.status}`)).toEqual(expect.arrayContaining(['from_api.zip:completed', 'from_cli.zip:completed']));
    await s.close();
  });
});

describe('requests without a body', () => {
  it('POST with no body starts a backup (curl -X POST), and auth is checked before the body', async () => {
    const s = await startTestServer();
    try {
      const r = await s.request('/api/backups', { method: 'POST', token: s.adminToken });
      expect(r.status).toBe(200);
      expect(((await r.json()) as { status: string }).status).toBe('completed');
      const unauth = await s.request('/api/backups', { method: 'POST', body: '{"name": 5}', headers: { 'content-type': 'application/json' } });
      expect(unauth.status).toBe(401);
      const missing = await s.request('/api/backups/reset-factory', { method: 'POST', token: s.adminToken });
      expect(missing.status).toBe(400);
      expect(((await missing.json()) as { data: object }).data).toHaveProperty('confirm');
    } finally {
      await s.close();
    }
  });
});

describe('the list cache', () => {
  it('sees archives added and removed outside the server, and answers 304 to a current ETag', async () => {
    const s = await startTestServer();
    try {
      const made = ((await (await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: { name: 'cached' } })).json()) as { key: string }).key;
      const first = await s.request('/api/backups', { token: s.adminToken });
      const etag = first.headers.get('etag')!;
      expect(((await first.json()) as unknown[]).length).toBe(1);
      expect((await s.request('/api/backups', { token: s.adminToken, headers: { 'If-None-Match': etag } })).status).toBe(304);
      // A copy dropped into the storage folder by hand appears at once (imported on listing)...
      const dir = path.join(s.root, 'data/backups');
      fs.copyFileSync(path.join(dir, made), path.join(dir, 'copied_by_hand.zip'));
      const second = await s.request('/api/backups', { token: s.adminToken, headers: { 'If-None-Match': etag } });
      expect(second.status).toBe(200);
      expect(((await second.json()) as Array<{ key: string }>).map((b) => b.key).sort()).toEqual(['cached.zip', 'copied_by_hand.zip']);
      // ...and one removed by hand is shown as failed, with the reason.
      fs.rmSync(path.join(dir, made));
      const third = (await (await s.request('/api/backups', { token: s.adminToken })).json()) as Array<{ key: string; status: string; statusMessage: string }>;
      expect(third.find((b) => b.key === made)).toMatchObject({ status: 'failed', statusMessage: expect.stringMatching(/no longer in/) });
    } finally {
      await s.close();
    }
  });
});

describe('jobs on the job thread (what stowage serve uses)', () => {
  it('backs up, streams events, refuses a second job with 409 while one runs, restores, and stays responsive', async () => {
    const release = path.join(makeTempDir(), 'release');
    const saved = { fp: process.env.STOWAGE_FAILPOINTS, rel: process.env.STOWAGE_FAILPOINT_RELEASE };
    process.env.STOWAGE_FAILPOINTS = 'backup.started=wait';
    process.env.STOWAGE_FAILPOINT_RELEASE = release;
    const s = await startTestServer({ jobs: 'thread' });
    try {
      // Events from the thread reach the SSE stream.
      const events: string[] = [];
      const abort = new AbortController();
      const stream = await s.request('/api/events', { token: s.adminToken, signal: abort.signal });
      const reader = stream.body!.getReader();
      const reading = (async () => {
        const decoder = new TextDecoder();
        for (;;) {
          const { value, done } = await reader.read().catch(() => ({ value: undefined, done: true }));
          if (done) return;
          for (const m of decoder.decode(value).matchAll(/^event: (.+)$/gm)) events.push(m[1]!);
        }
      })();

      const held = await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: { name: 'threaded' }, headers: { Prefer: 'respond-async' } });
      expect(held.status).toBe(202);
      expect(await held.json()).toMatchObject({ key: 'threaded.zip', status: 'started' });
      // The thread is blocked inside the backup; this thread still answers.
      const second = await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: {} });
      expect(second.status).toBe(409);
      expect(((await (await s.request('/api/health')).json()) as { canBackup: boolean }).canBackup).toBe(false);
      expect((await s.request('/api/backups/threaded.zip', { method: 'DELETE', token: s.adminToken })).status).toBe(409);
      fs.writeFileSync(release, '');
      await waitFor(async () => ((await (await s.request('/api/backups/threaded.zip/info', { token: s.adminToken })).json()) as { status: string }).status === 'completed', 30_000, 'backup');
      await waitFor(() => events.includes('backup.created'), 10_000, 'backup.created event');
      expect(events).toEqual(expect.arrayContaining(['hello', 'backup.started', 'backup.created']));

      fs.writeFileSync(path.join(s.root, 'app/files/readme.txt'), 'changed\n');
      const r = await s.request('/api/backups/threaded.zip/restore', { method: 'POST', token: s.adminToken, json: { safetyBackup: false } });
      expect(r.status).toBe(202);
      await waitFor(async () => ((await (await s.request('/api/restore-status', { token: s.adminToken })).json()) as { status: string }).status === 'completed', 30_000, 'restore');
      expect(fs.readFileSync(path.join(s.root, 'app/files/readme.txt'), 'utf8')).toBe('hello\n');
      await waitFor(() => events.includes('restore.completed'), 10_000, 'restore.completed event');
      // Drills and recorded verification run on the thread too (the scheduler's path).
      const drill = await s.server.jobs.drill('threaded.zip', { trigger: 'schedule' });
      expect(drill).toMatchObject({ key: 'threaded.zip', ok: true });
      const verified = await s.server.jobs.verifyRecorded(undefined, { trigger: 'schedule', sample: 'rotate' });
      expect(verified.ok).toBe(true);
      await waitFor(() => events.includes('drill.completed') && events.includes('verify.completed'), 10_000, 'drill and verify events');
      abort.abort();
      await reading;
    } finally {
      fs.writeFileSync(release, '');
      process.env.STOWAGE_FAILPOINTS = saved.fp;
      process.env.STOWAGE_FAILPOINT_RELEASE = saved.rel;
      if (saved.fp === undefined) delete process.env.STOWAGE_FAILPOINTS;
      if (saved.rel === undefined) delete process.env.STOWAGE_FAILPOINT_RELEASE;
      await s.close();
    }
  });
});
