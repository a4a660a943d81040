import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stowage } from '../src/testing/cli.js';
import { oneSourceYaml, startTestServer, type TestServer } from '../src/testing/server.js';

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

  it('health says when the last backup succeeded and whether the schedule is overdue; only scheduled backups made here clear it', async () => {
    type H = { backups: { overdue: boolean; lastSuccessAt: string | null; lastScheduledAt: string | null; schedule: string; nextRunAt: string } };
    const health = async () => ((await (await s.request('/api/health')).json()) as H).backups;
    const before = await health();
    expect(before).toMatchObject({ schedule: '0 3 * * *', lastSuccessAt: null, lastScheduledAt: null, overdue: true });
    expect(before.nextRunAt).toMatch(/T03:00:00\.000Z$/);
    // A manual backup protects the data, but says nothing about the schedule.
    expect((await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: {} })).status).toBe(200);
    const manual = await health();
    expect(Date.parse(manual.lastSuccessAt!)).toBeGreaterThan(Date.now() - 60_000);
    expect(manual).toMatchObject({ lastScheduledAt: null, overdue: true });
    // A scheduled backup from before the last due time (its createdAt is old) leaves it overdue.
    const stale = await s.stowage.createBackup({ trigger: 'schedule', name: '@auto_testapp_20200101030000' });
    s.stowage.catalogue.database.prepare('UPDATE backups SET created_at = ? WHERE key = ?').run('2020-01-01T03:00:00.000Z', stale.key);
    const afterStale = await health();
    expect(afterStale).toMatchObject({ lastScheduledAt: '2020-01-01T03:00:00.000Z', overdue: true });
    expect(afterStale.lastSuccessAt).toBe(manual.lastSuccessAt);
    // A scheduled backup made now clears it.
    await s.stowage.createBackup({ trigger: 'schedule' });
    const after = await health();
    expect(after.overdue).toBe(false);
    expect(Date.parse(after.lastScheduledAt!)).toBeGreaterThan(Date.now() - 60_000);
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

  it('PATCH is a merge patch: null puts a field back to its stowage.yaml default, "" stays ""; types are checked', async () => {
    expect((await patch({ backups: { cron: '@hourly', cronMaxKeep: 5 } })).status).toBe(200);
    expect((await patch({ backups: { cron: '' } })).status).toBe(200);
    expect((await get()).backups).toMatchObject({ cron: '', cronMaxKeep: 5 }); // "" is "no schedule", not a reset
    const reset = await patch({ backups: { cron: null, cronMaxKeep: null } });
    expect(reset.status).toBe(200);
    expect((await get()).backups).toMatchObject({ cron: '0 3 * * *', cronMaxKeep: 3 });
    const wrongType = await patch({ backups: { runMissed: { yes: true } } });
    expect(wrongType.status).toBe(400);
    expect(((await wrongType.json()) as { data: object }).data).toHaveProperty(['backups.runMissed']);
    const notObject = await patch({ backups: 'daily' });
    expect(notObject.status).toBe(400);
    expect(((await notObject.json()) as { data: object }).data).toHaveProperty('backups');
    expect((await get()).backups).toMatchObject({ cron: '0 3 * * *', cronMaxKeep: 3 });
  });

  it('POST /api/settings/test-s3 checks its body against the documented schema before touching any S3', async () => {
    const test = (body: unknown) => s.request('/api/settings/test-s3', { method: 'POST', token: s.adminToken, json: body });
    const typo = await test({ bukket: 'b' });
    expect(typo.status).toBe(400);
    expect(((await typo.json()) as { data: Record<string, { message: string }> }).data.bukket?.message).toMatch(/unknown field/);
    const wrongType = await test({ bucket: 'b', forcePathStyle: { yes: true } });
    expect(wrongType.status).toBe(400);
    expect(((await wrongType.json()) as { data: object }).data).toHaveProperty('forcePathStyle');
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

describe('health: what counts as a backup', () => {
  it('an uploaded archive is never a success: not in lastSuccessAt, and the schedule stays overdue', async () => {
    const s = await startTestServer({ yaml: oneSourceYaml('backups: { cron: "* * * * *" }') });
    try {
      // An archive of this very application, made and then removed, comes back as an upload.
      const made = await s.stowage.createBackup({ name: 'made_then_removed' });
      const bytes = fs.readFileSync(path.join(s.root, 'data/backups', made.key));
      await s.stowage.deleteBackup(made.key);
      const r = await s.request('/api/backups/upload?name=uploaded_copy', { method: 'POST', token: s.adminToken, body: bytes, headers: { 'content-type': 'application/octet-stream' } });
      expect(r.status).toBe(200);
      expect(await r.json()).toMatchObject({ key: 'uploaded_copy.zip', status: 'completed', trigger: 'upload' });
      const health = ((await (await s.request('/api/health')).json()) as { backups: Record<string, unknown> }).backups;
      expect(health).toMatchObject({ schedule: '* * * * *', lastSuccessAt: null, lastScheduledAt: null, overdue: true });
    } finally {
      await s.close();
    }
  });

  it('pre-restore backups count as a success but not for the schedule; unusable uploads are no failure', async () => {
    const { backupHealth } = await import('../src/server/routes/system.js');
    const now = Date.parse('2026-11-22T12:00:00Z');
    const record = (trigger: string, createdAt: string, status = 'completed', completedAt: string | null = createdAt) =>
      ({ key: `${trigger}-${createdAt}.zip`, trigger, createdAt, completedAt, status }) as unknown as import('../src/engine/catalogue.js').BackupRecord;
    const settings = { backups: { cron: '0 3 * * *', timezone: 'UTC' } } as Parameters<typeof backupHealth>[1];
    const health = backupHealth(
      [
        record('pre-restore', '2026-11-22T11:00:00.000Z'),
        record('upload', '2026-11-22T11:30:00.000Z', 'completed', '2026-11-22T11:59:00.000Z'),
        record('upload', '2026-11-22T11:40:00.000Z', 'failed', null),
        record('schedule', '2026-11-21T03:00:01.000Z'),
      ],
      settings,
      now,
    );
    expect(health).toMatchObject({ lastSuccessAt: '2026-11-22T11:00:00.000Z', lastScheduledAt: '2026-11-21T03:00:01.000Z', lastFailureAt: null, overdue: true, nextRunAt: '2026-11-23T03:00:00.000Z' });
    // The run due at 03:00 today happened: not overdue.
    expect(backupHealth([record('schedule', '2026-11-22T03:00:00.500Z')], settings, now).overdue).toBe(false);
    // No schedule, never overdue.
    expect(backupHealth([], { backups: { cron: '', timezone: 'UTC' } } as Parameters<typeof backupHealth>[1], now)).toMatchObject({ overdue: false, schedule: null, nextRunAt: null });
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
      // stowage prune --dry-run says the same and changes nothing: files, catalogue and list stay.
      const backupsDir = path.join(s.root, 'data/backups');
      const filesBefore = fs.readdirSync(backupsDir).sort();
      const listBefore = await (await s.request('/api/backups', { token: s.adminToken })).text();
      const dryCli = stowage(s.root, ['prune', '--dry-run', '--json']);
      expect(dryCli.status).toBe(0);
      expect(dryCli.result).toMatchObject({ dryRun: true, removed: [] });
      const dryDecisions = dryCli.result?.decisions as Array<{ key: string; keep: boolean }>;
      expect(dryDecisions.filter((d) => !d.keep).map((d) => d.key).sort()).toEqual(['@auto_testapp_20261120030000.zip', '@auto_testapp_20261121030000.zip']);
      expect(stowage(s.root, ['prune', '--dry-run']).stdout).toMatch(/Dry run: nothing was removed/);
      expect(fs.readdirSync(backupsDir).sort()).toEqual(filesBefore);
      expect(await (await s.request('/api/backups', { token: s.adminToken })).text()).toBe(listBefore);
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
