import { afterEach, describe, expect, it } from 'vitest';
import { createEngineScheduler } from '../src/schedule/engine-scheduler.js';
import { FakeClock } from '../src/testing/fake-clock.js';
import { startTestServer, waitFor, type TestServer } from '../src/testing/server.js';

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
});
