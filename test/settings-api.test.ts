import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stowage } from '../src/testing/cli.js';
import { startTestServer, type TestServer } from '../src/testing/server.js';

describe('settings: API and CLI', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer({
      yaml: `dataDir: ./data
app: { name: testapp, version: "1.0.0" }
sources:
  - { name: files, kind: dir, path: ./app/files }
backups:
  cron: "0 3 * * *"
  cronMaxKeep: 3
server: { http: 127.0.0.1:0 }
`,
    });
  });
  afterAll(async () => s?.close());

  const get = async () => (await (await s.request('/api/settings', { token: s.adminToken })).json()) as { backups: Record<string, unknown> & { s3: Record<string, unknown> }; verify: object };
  const patch = (body: unknown) => s.request('/api/settings', { method: 'PATCH', token: s.adminToken, json: body });

  it('the configuration file gives the defaults', async () => {
    expect((await get()).backups).toMatchObject({ cron: '0 3 * * *', cronMaxKeep: 3, timezone: 'UTC', runMissed: true });
  });

  it('health says when the last backup succeeded and whether the schedule is overdue', async () => {
    const before = (await (await s.request('/api/health')).json()) as { backups: { overdue: boolean; lastSuccessAt: string | null; schedule: string; nextRunAt: string } };
    expect(before.backups).toMatchObject({ schedule: '0 3 * * *', lastSuccessAt: null, overdue: true });
    expect(before.backups.nextRunAt).toMatch(/T03:00:00\.000Z$/);
    expect((await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: {} })).status).toBe(200);
    const after = (await (await s.request('/api/health')).json()) as { backups: { overdue: boolean; lastSuccessAt: string | null } };
    expect(after.backups.overdue).toBe(false);
    expect(Date.parse(after.backups.lastSuccessAt!)).toBeGreaterThan(Date.now() - 60_000);
  });

  it('needs the settings scope', async () => {
    expect((await s.request('/api/settings')).status).toBe(401);
    expect((await s.request('/api/settings', { token: s.tokenWith('backups:read') })).status).toBe(403);
    expect((await s.request('/api/settings', { token: s.tokenWith('settings') })).status).toBe(200);
    expect((await s.request('/api/settings', { method: 'PATCH', token: s.tokenWith('backups:create'), json: {} })).status).toBe(403);
  });

  it('validates with field errors that say what a valid value looks like, and changes nothing then', async () => {
    const cases: Array<[unknown, string, RegExp]> = [
      [{ backups: { cron: '0 3 * *' } }, 'backups.cron', /5 fields/],
      [{ backups: { cron: '61 * * * *' } }, 'backups.cron', /minute/],
      [{ backups: { cron: '@fortnightly' } }, 'backups.cron', /@daily/],
      [{ backups: { cronMaxKeep: 0 } }, 'backups.cronMaxKeep', /1 or more/],
      [{ backups: { timezone: 'Mars/Olympus' } }, 'backups.timezone', /IANA/],
      [{ backups: { retention: { keepWithin: '30 days' } } }, 'backups.retention.keepWithin', /30d/],
      [{ backups: { s3: { enabled: true } } }, 'backups.s3.bucket', /required/],
      [{ backups: { nope: 1 } }, 'backups', /unknown field/],
    ];
    for (const [body, field, message] of cases) {
      const r = await patch(body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      const err = (await r.json()) as { data: Record<string, { message: string }> };
      expect(err.data[field]?.message, `${JSON.stringify(body)} → ${JSON.stringify(err.data)}`).toMatch(message);
    }
    expect((await get()).backups).toMatchObject({ cron: '0 3 * * *', cronMaxKeep: 3 });
  });

  it('PATCH merges; secrets are masked and kept when left out or sent back masked', async () => {
    const r = await patch({ backups: { cron: '@daily', retention: { keepDaily: 7 }, s3: { enabled: true, bucket: 'b', secret: 'super-secret-value', accessKey: 'AK' } } });
    expect(r.status).toBe(200);
    const body = await r.text();
    expect(body).not.toContain('super-secret-value');
    const now = await get();
    expect(now.backups).toMatchObject({ cron: '@daily', cronMaxKeep: 3, retention: { keepDaily: 7 } });
    expect(now.backups.s3).toMatchObject({ enabled: true, bucket: 'b', secret: '******', accessKey: 'AK' });
    // Leaving the secret out, or sending the mask back (a form round trip), keeps it.
    await patch({ backups: { s3: { region: 'eu-west-1' } } });
    await patch({ backups: { s3: { secret: '******' } } });
    expect(s.stowage.settings.get().backups.s3).toMatchObject({ secret: 'super-secret-value', region: 'eu-west-1' });
    // Stored in the data folder's database, where the CLI reads it too.
    const cli = stowage(s.root, ['settings', 'get', '--json']);
    expect((cli.result?.settings as { backups: { cron: string; s3: { secret: string } } }).backups).toMatchObject({ cron: '@daily', s3: { secret: '******' } });
    const db = new Database(path.join(s.root, 'data/stowage.db'), { readonly: true });
    expect(JSON.stringify(db.prepare("SELECT value FROM settings WHERE name = 'settings.overrides'").get())).toContain('@daily');
    db.close();
  });

  it('previews a cron expression: the next 5 runs and a description', async () => {
    const r = await s.request(`/api/settings/cron-preview?cron=${encodeURIComponent('0 0 * * *')}&timezone=UTC`, { token: s.adminToken });
    const body = (await r.json()) as { description: string; next: string[] };
    expect(body.next).toHaveLength(5);
    expect(body.next.every((t) => t.endsWith('T00:00:00.000Z'))).toBe(true);
    expect(body.description).toMatch(/00:00.*every day/);
    const bad = await s.request('/api/settings/cron-preview?cron=nonsense', { token: s.adminToken });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { data: object }).data).toHaveProperty('cron');
  });

  it('stowage settings set changes what the server serves, and refuses bad values with the field named', async () => {
    const ok = stowage(s.root, ['settings', 'set', 'backups.cron', '0 4 * * 1-5', 'backups.cronMaxKeep', '10', '--json']);
    expect(ok.status).toBe(0);
    expect((await get()).backups).toMatchObject({ cron: '0 4 * * 1-5', cronMaxKeep: 10 });
    const bad = stowage(s.root, ['settings', 'set', 'backups.cron', 'every day']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/backups\.cron: must be 5 fields/);
    const text = stowage(s.root, ['settings', 'get']);
    expect(text.stdout).toMatch(/at 04:00, Monday through Friday/i);
  });
});

describe('prune: retention by hand', () => {
  it('removes only scheduled backups beyond the rules, says why for each, and dry-runs', async () => {
    const s = await startTestServer();
    try {
      for (const name of ['manual_a', 'manual_b']) expect((await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: { name } })).status).toBe(200);
      // Scheduled backups, as the scheduler makes them (trigger schedule).
      for (let i = 0; i < 4; i++) await s.stowage.createBackup({ trigger: 'schedule', name: `@auto_testapp_2026112${i}030000` });
      s.stowage.settings.patch({ backups: { cronMaxKeep: 2 } });
      const dry = await s.request('/api/backups/prune', { method: 'POST', token: s.adminToken, json: { dryRun: true } });
      const plan = (await dry.json()) as { removed: string[]; decisions: Array<{ key: string; keep: boolean; reasons: string[] }> };
      expect(plan.removed).toEqual([]);
      expect(plan.decisions.filter((d) => !d.keep).map((d) => d.key).sort()).toEqual(['@auto_testapp_20261120030000.zip', '@auto_testapp_20261121030000.zip']);
      expect(plan.decisions.find((d) => d.key === 'manual_a.zip')).toMatchObject({ keep: true, reasons: [expect.stringMatching(/not scheduled/)] });
      expect(fs.existsSync(path.join(s.root, 'data/backups/@auto_testapp_20261120030000.zip'))).toBe(true);
      const cli = stowage(s.root, ['prune', '--json']);
      expect(cli.status).toBe(0);
      expect((cli.result?.removed as string[]).sort()).toEqual(['@auto_testapp_20261120030000.zip', '@auto_testapp_20261121030000.zip']);
      const left = (await (await s.request('/api/backups', { token: s.adminToken })).json()) as Array<{ key: string }>;
      expect(left.map((b) => b.key).sort()).toEqual(['@auto_testapp_20261122030000.zip', '@auto_testapp_20261123030000.zip', 'manual_a.zip', 'manual_b.zip']);
      expect((await s.request('/api/backups/prune', { method: 'POST', token: s.tokenWith('backups:read'), json: {} })).status).toBe(403);
    } finally {
      await s.close();
    }
  });
});
