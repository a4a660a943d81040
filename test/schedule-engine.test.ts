import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createEngineScheduler } from '../src/schedule/engine-scheduler.js';
import { FakeClock } from '../src/testing/fake-clock.js';
import { oneSourceYaml, startTestServer, waitFor, type TestServer } from '../src/testing/server.js';

/**
 * The scheduler driving the real engine (real backups, real retention) on a fake clock: a
 * week of hourly schedule runs in seconds.
 */
describe('scheduled backups on the engine', () => {
  let s: TestServer | undefined;
  afterEach(async () => {
    await s?.close();
    s = undefined;
  });

  const settle = (srv: TestServer) => async () => {
    await new Promise((r) => setTimeout(r, 5));
    await waitFor(() => !srv.server.jobs.runningJob && !srv.stowage.runningJob, 30_000, 'jobs to finish');
  };

  it('makes @auto_ backups with trigger schedule, then applies retention to them only', async () => {
    s = await startTestServer();
    await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: { name: 'manual_one' } });
    s.stowage.settings.patch({ backups: { cron: '0 * * * *', cronMaxKeep: 3 } });
    const clock = new FakeClock('2026-11-22T10:30:00Z');
    const logs: string[] = [];
    const scheduler = createEngineScheduler(s.stowage, s.server.jobs, { clock, log: (_l, m) => logs.push(m) });
    const pruned: string[][] = [];
    s.stowage.on('prune.completed', (e) => pruned.push(e.removed));
    scheduler.start();
    await clock.advance(5 * 3600_000, settle(s)); // 11:00 ... 15:00: five scheduled backups
    await waitFor(() => pruned.length === 5, 30_000, 'retention after each run');
    scheduler.stop();
    const list = (await (await s.request('/api/backups', { token: s.adminToken })).json()) as Array<{ key: string; trigger: string; status: string; description: string }>;
    const auto = list.filter((b) => b.trigger === 'schedule');
    expect(auto).toHaveLength(3); // cronMaxKeep
    expect(auto.every((b) => b.key.startsWith('@auto_testapp_') && b.status === 'completed')).toBe(true);
    expect(auto[0]!.description).toMatch(/^scheduled for 2026-11-22T15:00:00.000Z/);
    expect(list.map((b) => b.key)).toContain('manual_one.zip'); // never pruned
    expect(pruned.flat()).toHaveLength(2);
    expect(logs.join('\n')).toMatch(/retention removed/);
  });

  it('a scheduled run during another job waits for it, and the backup records the delay', async () => {
    s = await startTestServer();
    s.stowage.settings.patch({ backups: { cron: '0 11 * * *' } });
    const clock = new FakeClock('2026-11-22T10:59:00Z');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const remove = s.stowage.addExcludeHook(async () => {
      await gate;
      return [];
    });
    // A manual backup holds the lock across 11:00.
    const held = await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: { name: 'long_manual' }, headers: { Prefer: 'respond-async' } });
    expect(held.status).toBe(202);
    const delayed: string[] = [];
    s.stowage.on('schedule.delayed', (e) => delayed.push(e.waitingFor));
    const scheduler = createEngineScheduler(s.stowage, s.server.jobs, { clock, pollMs: 1000 });
    scheduler.start();
    await clock.advance(2 * 60_000); // 11:00 falls while busy
    expect(delayed).toEqual([expect.stringMatching(/backup of long_manual\.zip/)]);
    remove();
    release();
    await waitFor(() => !s!.stowage.runningJob, 30_000, 'manual backup');
    await clock.advance(5000, settle(s));
    scheduler.stop();
    const list = (await (await s.request('/api/backups', { token: s.adminToken })).json()) as Array<{ trigger: string; description: string }>;
    const auto = list.find((b) => b.trigger === 'schedule');
    expect(auto?.description).toMatch(/scheduled for 2026-11-22T11:00:00.000Z, delayed \d+ s while a backup of long_manual.zip ran/);
  });
  it('retention still runs after a scheduled backup fails, and never removes the last completed backup', async () => {
    s = await startTestServer({
      yaml: oneSourceYaml(`hooks:
  beforeBackup:
    - command: ["sh", "-c", "if [ -e fail-backups ]; then echo the database would not flush >&2; exit 1; fi"]
      cwd: .`),
    });
    s.stowage.settings.patch({ backups: { cron: '0 * * * *', cronMaxKeep: 2 } });
    const clock = new FakeClock('2026-11-22T10:30:00Z');
    const prunes: Array<{ removed: string[]; trigger: string }> = [];
    const failed: string[] = [];
    s.stowage.on('prune.completed', (e) => prunes.push({ removed: e.removed, trigger: e.trigger }));
    s.stowage.on('backup.failed', (e) => failed.push(e.key));
    const scheduler = createEngineScheduler(s.stowage, s.server.jobs, { clock });
    type Listed = { key: string; trigger: string; status: string; statusMessage: string; description: string };
    const list = async () => (await (await s!.request('/api/backups', { token: s!.adminToken })).json()) as Listed[];
    const at = (items: Listed[], hour: number) => items.find((b) => b.description.startsWith(`scheduled for 2026-11-22T${hour}:00:00.000Z`));
    scheduler.start();
    await clock.advance(3 * 3600_000, settle(s)); // 11:00, 12:00, 13:00 complete
    await waitFor(() => prunes.length === 3, 30_000, 'retention after each run');
    const before = await list();
    expect([11, 12, 13].map((h) => at(before, h)?.status)).toEqual([undefined, 'completed', 'completed']); // 11:00 beyond cronMaxKeep 2

    // From now on every backup fails; and the rule is tightened to one scheduled backup.
    fs.writeFileSync(path.join(s.root, 'fail-backups'), '');
    s.stowage.settings.patch({ backups: { cronMaxKeep: 1 } });
    await clock.advance(2 * 3600_000, settle(s)); // 14:00, 15:00 fail
    await waitFor(() => prunes.length === 5, 30_000, 'retention after the failed runs');
    scheduler.stop();
    expect(failed).toHaveLength(2);
    expect(prunes.every((p) => p.trigger === 'schedule')).toBe(true);
    const after = await list();
    const last = at(before, 13)!;
    // The retention that followed the failed 14:00 run still did its work (12:00 went, by cronMaxKeep 1)...
    expect(prunes[3]!.removed).toEqual([at(before, 12)!.key]);
    // ...and kept the newest completed backup, on disk, although newer (failed) runs exist.
    expect(at(after, 13)).toMatchObject({ key: last.key, status: 'completed' });
    expect(fs.existsSync(path.join(s.root, 'data/backups', last.key))).toBe(true);
    // The failures stay listed, with the reason, until a newer scheduled backup completes.
    for (const h of [14, 15]) expect(at(after, h)).toMatchObject({ status: 'failed', statusMessage: expect.stringMatching(/the database would not flush/) });
    const plan = await s.stowage.prune({ dryRun: true });
    expect(plan.decisions.find((d) => d.key === last.key)).toMatchObject({ keep: true });
  });
});
