import { describe, expect, it } from 'vitest';
import { settingsSchema, type Settings } from '../config/settings.js';
import { StowageError } from '../errors.js';
import { StowageEmitter } from '../events/events.js';
import { FakeClock } from '../testing/fake-clock.js';
import { Scheduler, type TaskName, type TaskRun } from './scheduler.js';

function settingsWith(patch: { cron?: string; timezone?: string; runMissed?: boolean; verify?: string }): Settings {
  return settingsSchema.parse({ backups: { cron: patch.cron ?? '', timezone: patch.timezone ?? 'UTC', runMissed: patch.runMissed ?? true }, verify: { cron: patch.verify ?? '' } });
}

function harness(start: string, initial: Parameters<typeof settingsWith>[0], state: Partial<Record<TaskName, string>> = {}) {
  const clock = new FakeClock(start);
  let settings = settingsWith(initial);
  const runs: Array<{ task: TaskName; at: string; run: TaskRun }> = [];
  const events = new StowageEmitter();
  const emitted: Array<{ name: string; payload: unknown }> = [];
  events.onAny((name, payload) => emitted.push({ name, payload }));
  let busy: string | null = null;
  let failNext: Error | null = null;
  const record = (task: TaskName) => async (run: TaskRun) => {
    if (failNext) {
      const e = failNext;
      failNext = null;
      throw e;
    }
    runs.push({ task, at: new Date(clock.now()).toISOString(), run });
  };
  const stored: Partial<Record<TaskName, string>> = { ...state };
  const scheduler = new Scheduler({
    settings: () => settings,
    run: { backup: record('backup'), verify: record('verify'), drill: record('drill') },
    busy: () => busy,
    state: { get: (t) => stored[t] ?? null, set: (t, iso) => (stored[t] = iso) },
    events,
    clock,
    pollMs: 1000,
    reloadMs: 30_000,
  });
  return {
    clock,
    scheduler,
    runs,
    emitted,
    stored,
    setBusy: (b: string | null) => (busy = b),
    setSettings: (p: Parameters<typeof settingsWith>[0]) => (settings = settingsWith(p)),
    failOnce: (e: Error) => (failNext = e),
  };
}

const DAY = 86_400_000;

describe('Scheduler', () => {
  it('runs a daily backup at its time, day after day, without waiting real time', async () => {
    const h = harness('2026-11-22T10:00:00Z', { cron: '0 3 * * *' });
    h.scheduler.start();
    await h.clock.advance(3 * DAY);
    expect(h.runs.map((r) => `${r.task} ${r.at}`)).toEqual(['backup 2026-11-23T03:00:00.000Z', 'backup 2026-11-24T03:00:00.000Z', 'backup 2026-11-25T03:00:00.000Z']);
    expect(h.runs.every((r) => r.run.delayedMs === 0 && !r.run.missed)).toBe(true);
    expect(h.stored.backup).toBe('2026-11-25T03:00:00.000Z');
  });

  it('follows the time zone across a DST change (03:00 in Berlin)', async () => {
    const h = harness('2026-03-27T12:00:00Z', { cron: '0 3 * * *', timezone: 'Europe/Berlin' });
    h.scheduler.start();
    await h.clock.advance(3 * DAY);
    // CET (UTC+1) until Sunday 29 March 02:00, CEST (UTC+2) after.
    expect(h.runs.map((r) => r.at)).toEqual(['2026-03-28T02:00:00.000Z', '2026-03-29T01:00:00.000Z', '2026-03-30T01:00:00.000Z']);
  });

  it('reloads when the settings change: new times at once, a cleared cron stops', async () => {
    const h = harness('2026-11-22T10:00:00Z', { cron: '0 3 * * *' });
    h.scheduler.start();
    h.setSettings({ cron: '*/30 * * * *' });
    h.scheduler.reload();
    await h.clock.advance(61 * 60_000);
    expect(h.runs.map((r) => r.at)).toEqual(['2026-11-22T10:30:00.000Z', '2026-11-22T11:00:00.000Z']);
    h.setSettings({ cron: '' });
    h.scheduler.reload();
    await h.clock.advance(DAY);
    expect(h.runs).toHaveLength(2);
  });

  it('notices settings changed by another process within the reload interval', async () => {
    const h = harness('2026-11-22T10:00:00Z', { cron: '' });
    h.scheduler.start();
    h.setSettings({ cron: '0 * * * *' }); // no reload() call: as if the CLI changed it
    await h.clock.advance(2 * 3600_000);
    expect(h.runs.map((r) => r.at)).toEqual(['2026-11-22T11:00:00.000Z', '2026-11-22T12:00:00.000Z']);
  });

  it('queues a run that falls during another job, once, and records the delay', async () => {
    const h = harness('2026-11-22T10:00:00Z', { cron: '*/10 * * * *' });
    h.scheduler.start();
    h.setBusy('a restore of x.zip');
    await h.clock.advance(25 * 60_000); // 10:10 and 10:20 fall while busy
    expect(h.runs).toHaveLength(0);
    h.setBusy(null);
    await h.clock.advance(2000);
    expect(h.runs).toHaveLength(1);
    expect(h.runs[0]!.run).toMatchObject({ waitedFor: 'a restore of x.zip', missed: false });
    expect(h.runs[0]!.run.scheduledFor.toISOString()).toBe('2026-11-22T10:10:00.000Z');
    expect(h.runs[0]!.run.delayedMs).toBeGreaterThanOrEqual(15 * 60_000);
    expect(h.emitted.filter((e) => e.name === 'schedule.delayed')).toHaveLength(1);
    await h.clock.advance(10 * 60_000);
    expect(h.runs.map((r) => r.at)).toContain('2026-11-22T10:30:00.000Z');
  });

  it('waits and retries when another process took the lock first (BUSY)', async () => {
    const h = harness('2026-11-22T10:00:00Z', { cron: '0 11 * * *' });
    h.scheduler.start();
    h.failOnce(new StowageError('BUSY', 'busy, held by backup by pid 1'));
    await h.clock.advance(3600_000 + 5000);
    expect(h.runs).toHaveLength(1);
    expect(h.runs[0]!.run.scheduledFor.toISOString()).toBe('2026-11-22T11:00:00.000Z');
  });

  it('runs a schedule missed while down once at start (runMissed), and says so', async () => {
    const h = harness('2026-11-25T10:00:00Z', { cron: '0 3 * * *' }, { backup: '2026-11-22T03:00:00.000Z' });
    h.scheduler.start();
    await h.clock.advance(0);
    expect(h.runs).toHaveLength(1); // three missed days, one catch-up run
    expect(h.runs[0]!.run).toMatchObject({ missed: true });
    expect(h.runs[0]!.run.scheduledFor.toISOString()).toBe('2026-11-25T03:00:00.000Z');
    expect(h.emitted.find((e) => e.name === 'schedule.missed')?.payload).toEqual({ job: 'backup', scheduledFor: '2026-11-25T03:00:00.000Z', runNow: true });
    await h.clock.advance(DAY);
    expect(h.runs.map((r) => r.at)).toEqual(['2026-11-25T10:00:00.000Z', '2026-11-26T03:00:00.000Z']);
  });

  it('with runMissed off, only reports the missed run; a first start misses nothing', async () => {
    const off = harness('2026-11-25T10:00:00Z', { cron: '0 3 * * *', runMissed: false }, { backup: '2026-11-22T03:00:00.000Z' });
    off.scheduler.start();
    await off.clock.advance(0);
    expect(off.runs).toHaveLength(0);
    expect(off.emitted.find((e) => e.name === 'schedule.missed')?.payload).toMatchObject({ runNow: false });
    const fresh = harness('2026-11-25T10:00:00Z', { cron: '0 3 * * *' });
    fresh.scheduler.start();
    await fresh.clock.advance(0);
    expect(fresh.runs).toHaveLength(0);
    expect(fresh.emitted).toEqual([]);
  });

  it('schedules verification next to backups, and stop() ends everything', async () => {
    const h = harness('2026-11-22T10:00:00Z', { cron: '0 3 * * *', verify: '0 5 * * *' });
    h.scheduler.start();
    expect(h.scheduler.nextRuns()).toEqual({ backup: '2026-11-23T03:00:00.000Z', verify: '2026-11-23T05:00:00.000Z' });
    await h.clock.advance(DAY);
    expect(h.runs.map((r) => `${r.task} ${r.at}`)).toEqual(['backup 2026-11-23T03:00:00.000Z', 'verify 2026-11-23T05:00:00.000Z']);
    h.scheduler.stop();
    await h.clock.advance(DAY);
    expect(h.runs).toHaveLength(2);
  });
});
