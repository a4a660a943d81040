import { describe, expect, it } from 'vitest';
import type { RetentionPolicy } from '../config/settings.js';
import type { BackupStatus, BackupTrigger } from '../engine/catalogue.js';
import { formatRetentionTable, hasKeepRules, isoWeek, parseDuration, planRetention, subtractDuration, type RetentionCandidate, type RetentionDecision } from './retention.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** A completed scheduled backup whose key is its creation time (keys read like the history). */
function sched(createdAt: string, status: BackupStatus = 'completed', trigger: BackupTrigger = 'schedule'): RetentionCandidate {
  return { key: createdAt, createdAt, status, trigger };
}
const iso = (t: number) => new Date(t).toISOString();
const kept = (ds: RetentionDecision[]) => ds.filter((d) => d.keep).map((d) => d.key).sort();
const removed = (ds: RetentionDecision[]) => ds.filter((d) => !d.keep).map((d) => d.key).sort();
const reasonsOf = (ds: RetentionDecision[]) => Object.fromEntries(ds.map((d) => [d.key, d.reasons]));
const NOW = new Date('2030-01-01T00:00:00Z');

function plan(backups: RetentionCandidate[], policy: RetentionPolicy | undefined, timezone = 'UTC', extra: { cronMaxKeep?: number; now?: Date } = {}) {
  return planRetention(backups, { policy, timezone, now: extra.now ?? NOW, ...(extra.cronMaxKeep === undefined ? {} : { cronMaxKeep: extra.cronMaxKeep }) });
}

describe('parseDuration', () => {
  it('reads every unit', () => {
    expect(parseDuration('1y6m2w3d4h')).toEqual({ years: 1, months: 6, weeks: 2, days: 3, hours: 4 });
    expect(parseDuration('30d')).toEqual({ years: 0, months: 0, weeks: 0, days: 30, hours: 0 });
    expect(parseDuration('12h')).toEqual({ years: 0, months: 0, weeks: 0, days: 0, hours: 12 });
    expect(parseDuration('1y6m')).toEqual({ years: 1, months: 6, weeks: 0, days: 0, hours: 0 });
  });

  it.each(['', '3x', '6m1y', 'd', '1.5d', '-1d', '1d 2h'])('rejects %j', (text) => {
    expect(() => parseDuration(text)).toThrow(RangeError);
  });
});

describe('subtractDuration', () => {
  const sub = (at: string, d: string, tz = 'UTC') => subtractDuration(new Date(at), parseDuration(d), tz).toISOString();

  it('counts calendar months and clamps to the end of a shorter month', () => {
    expect(sub('2025-03-31T12:00:00.000Z', '1m')).toBe('2025-02-28T12:00:00.000Z');
    expect(sub('2024-03-31T12:00:00.000Z', '1m')).toBe('2024-02-29T12:00:00.000Z');
    expect(sub('2025-05-31T12:00:00.000Z', '1m')).toBe('2025-04-30T12:00:00.000Z');
    expect(sub('2025-01-15T00:00:00.000Z', '1m')).toBe('2024-12-15T00:00:00.000Z');
    expect(sub('2025-03-31T12:00:00.000Z', '13m')).toBe('2024-02-29T12:00:00.000Z');
  });

  it('counts calendar years from a leap day', () => {
    expect(sub('2024-02-29T06:00:00.000Z', '1y')).toBe('2023-02-28T06:00:00.000Z');
    expect(sub('2028-02-29T06:00:00.000Z', '4y')).toBe('2024-02-29T06:00:00.000Z');
  });

  it('applies years and months, then weeks and days, then hours', () => {
    // 2026-11-20 10:00 - 1y6m = 2025-05-20 10:00; - 2w3d = 2025-05-03 10:00; - 4h = 06:00.
    expect(sub('2026-11-20T10:00:00.000Z', '1y6m2w3d4h')).toBe('2025-05-03T06:00:00.000Z');
    expect(sub('2026-03-01T00:30:00.250Z', '1d1h')).toBe('2026-02-27T23:30:00.250Z');
  });

  it('counts a day across a DST change as the same local time (23 or 25 hours), hours as elapsed time', () => {
    // Berlin springs forward on 2021-03-28 at 02:00 CET: 12:00 CEST (10:00Z) minus 1d is 12:00 CET (11:00Z).
    expect(sub('2021-03-28T10:00:00.000Z', '1d', 'Europe/Berlin')).toBe('2021-03-27T11:00:00.000Z');
    expect(sub('2021-03-28T10:00:00.000Z', '24h', 'Europe/Berlin')).toBe('2021-03-27T10:00:00.000Z');
    // Falls back on 2021-10-31 at 03:00 CEST: 12:00 CET (11:00Z) minus 1d is 12:00 CEST (10:00Z), 25 hours.
    expect(sub('2021-10-31T11:00:00.000Z', '1d', 'Europe/Berlin')).toBe('2021-10-30T10:00:00.000Z');
    // New York: 2021-03-14 12:00 EDT (16:00Z) minus 1d is 2021-03-13 12:00 EST (17:00Z).
    expect(sub('2021-03-14T16:00:00.000Z', '1d', 'America/New_York')).toBe('2021-03-13T17:00:00.000Z');
  });

  it('moves a local time inside the spring-forward gap forward, and takes the earlier of a repeated time', () => {
    // 2021-03-29 02:30 CEST minus 1d = 2021-03-28 02:30, which does not exist in Berlin: 03:30 CEST.
    expect(sub('2021-03-29T00:30:00.000Z', '1d', 'Europe/Berlin')).toBe('2021-03-28T01:30:00.000Z');
    // 2021-11-01 02:30 CET minus 1d = 2021-10-31 02:30, which happens twice: the first, CEST.
    expect(sub('2021-11-01T01:30:00.000Z', '1d', 'Europe/Berlin')).toBe('2021-10-31T00:30:00.000Z');
    // New York 2021-11-08 01:30 EST minus 1d = 2021-11-07 01:30, twice: the first, EDT (05:30Z).
    expect(sub('2021-11-08T06:30:00.000Z', '1d', 'America/New_York')).toBe('2021-11-07T05:30:00.000Z');
    // New York 2021-03-15 02:30 EDT minus 1d = 2021-03-14 02:30, missing: 03:30 EDT (07:30Z).
    expect(sub('2021-03-15T06:30:00.000Z', '1d', 'America/New_York')).toBe('2021-03-14T07:30:00.000Z');
  });

  it('uses the local calendar of the zone, not UTC', () => {
    // 2026-03-31T11:30Z is 2026-04-01 00:30 in Auckland (NZDT +13); minus 1m = 2026-03-01 00:30 NZDT = 2026-02-28T11:30Z.
    expect(sub('2026-03-31T11:30:00.000Z', '1m', 'Pacific/Auckland')).toBe('2026-02-28T11:30:00.000Z');
    // In UTC the same instant is 03-31, minus 1m clamps to 02-28 11:30Z: the same instant by coincidence of the clamp...
    expect(sub('2026-03-31T11:30:00.000Z', '1m')).toBe('2026-02-28T11:30:00.000Z');
    // ...but not here: 2026-03-30T11:30Z is 03-31 00:30 NZDT -> 02-28 00:30 NZDT (clamped) = 02-27T11:30Z; UTC gives 02-28T11:30Z.
    expect(sub('2026-03-30T11:30:00.000Z', '1m', 'Pacific/Auckland')).toBe('2026-02-27T11:30:00.000Z');
    expect(sub('2026-03-30T11:30:00.000Z', '1m')).toBe('2026-02-28T11:30:00.000Z');
  });
});

describe('isoWeek', () => {
  it.each([
    ['2020-12-28', 2020, 53], // Monday of 2020-W53
    ['2021-01-03', 2020, 53], // Sunday, still 2020-W53
    ['2021-01-04', 2021, 1],
    ['2024-12-30', 2025, 1], // a Monday in December belongs to the next week-year
    ['2026-01-01', 2026, 1], // Thursday
    ['2027-01-01', 2026, 53], // Friday: 2026 has 53 weeks
    ['2024-06-09', 2024, 23], // Sunday
    ['2024-06-10', 2024, 24], // Monday
  ])('%s is %i-W%i', (date, weekYear, week) => {
    const [y, m, d] = date.split('-').map(Number) as [number, number, number];
    expect(isoWeek(y, m, d)).toEqual({ weekYear, week });
  });
});

describe('planRetention: who is a candidate', () => {
  it('never prunes manual, uploaded, api or pre-restore backups', () => {
    const backups = [
      sched('2026-01-01T00:00:00Z', 'completed', 'manual'),
      sched('2026-01-02T00:00:00Z', 'completed', 'upload'),
      sched('2026-01-03T00:00:00Z', 'completed', 'api'),
      sched('2026-01-04T00:00:00Z', 'completed', 'pre-restore'),
      sched('2026-01-05T00:00:00Z', 'failed', 'manual'),
      sched('2026-01-06T00:00:00Z', 'completed', 'manual'),
    ];
    for (const ds of [plan(backups, { keepLast: 1 }), plan(backups, undefined, 'UTC', { cronMaxKeep: 1 }), plan(backups, undefined, 'UTC', { cronMaxKeep: 0 })]) {
      expect(removed(ds)).toEqual([]);
      expect(ds.every((d) => d.reasons.join() === 'not scheduled')).toBe(true);
    }
  });

  it('keeps everything when neither a policy nor cronMaxKeep is given, or the policy is all zeros', () => {
    const backups = ['2026-01-01T00:00:00Z', '2026-01-02T00:00:00Z'].map((t) => sched(t));
    expect(removed(plan(backups, undefined))).toEqual([]);
    expect(removed(plan(backups, {}))).toEqual([]);
    expect(hasKeepRules({ keepDaily: 0, keepWithin: '0d' })).toBe(false);
    expect(hasKeepRules({ keepWithin: '1h' })).toBe(true);
    // An all-zero policy falls back to cronMaxKeep.
    expect(kept(plan(backups, { keepDaily: 0, keepWithin: '0d' }, 'UTC', { cronMaxKeep: 1 }))).toEqual(['2026-01-02T00:00:00Z']);
  });

  it('keeps in-progress backups, and removes failed scheduled ones only when older than the newest completed one', () => {
    const backups = [
      sched('2026-01-01T00:00:00Z', 'failed'),
      sched('2026-01-02T00:00:00Z'),
      sched('2026-01-03T00:00:00Z', 'failed'),
      sched('2026-01-04T00:00:00Z'),
      sched('2026-01-05T00:00:00Z', 'failed'),
      sched('2026-01-06T00:00:00Z', 'started'),
      sched('2026-01-07T00:00:00Z', 'uploading'),
      sched('2026-01-02T12:00:00Z', 'started'),
    ];
    const ds = plan(backups, { keepLast: 1 });
    expect(kept(ds)).toEqual(['2026-01-02T12:00:00Z', '2026-01-04T00:00:00Z', '2026-01-05T00:00:00Z', '2026-01-06T00:00:00Z', '2026-01-07T00:00:00Z']);
    expect(reasonsOf(ds)).toEqual({
      '2026-01-01T00:00:00Z': ['failed'],
      '2026-01-02T00:00:00Z': ['no rule keeps it'],
      '2026-01-03T00:00:00Z': ['failed'],
      '2026-01-04T00:00:00Z': ['last 1'],
      '2026-01-05T00:00:00Z': ['failed, no newer completed scheduled backup'],
      '2026-01-06T00:00:00Z': ['in progress'],
      '2026-01-07T00:00:00Z': ['in progress'],
      '2026-01-02T12:00:00Z': ['in progress'],
    });
    // Decisions come back in input order.
    expect(ds.map((d) => d.key)).toEqual(backups.map((b) => b.key));
  });

  it('keeps an all-failed scheduled history (no completed backup supersedes any of it)', () => {
    const backups = Array.from({ length: 5 }, (_, i) => sched(iso(Date.UTC(2026, 0, 1 + i)), 'failed'));
    for (const ds of [plan(backups, { keepLast: 1 }), plan(backups, undefined, 'UTC', { cronMaxKeep: 1 })]) {
      expect(removed(ds)).toEqual([]);
      expect(ds.every((d) => d.reasons.join() === 'failed, no newer completed scheduled backup')).toBe(true);
    }
  });

  it('a completed manual backup does not make failed scheduled ones removable', () => {
    const ds = plan([sched('2026-01-01T00:00:00Z', 'failed'), sched('2026-01-02T00:00:00Z', 'completed', 'manual')], { keepLast: 1 });
    expect(removed(ds)).toEqual([]);
  });

  it('keeps a backup whose createdAt cannot be read', () => {
    const ds = plan([{ key: 'odd', createdAt: 'yesterday', status: 'completed', trigger: 'schedule' }, sched('2026-01-01T00:00:00Z')], undefined, 'UTC', { cronMaxKeep: 0 });
    expect(reasonsOf(ds)).toEqual({ odd: ['unreadable createdAt'], '2026-01-01T00:00:00Z': ['last completed backup'] });
  });

  it('rejects an unknown time zone and a negative cronMaxKeep', () => {
    expect(() => plan([], undefined, 'Mars/Olympus')).toThrow(RangeError);
    expect(() => plan([], undefined, 'UTC', { cronMaxKeep: -1 })).toThrow(RangeError);
    expect(() => plan([], undefined, 'UTC', { cronMaxKeep: 1.5 })).toThrow(RangeError);
  });
});

describe('planRetention: cronMaxKeep and the last-completed guard', () => {
  const days = Array.from({ length: 10 }, (_, i) => sched(iso(Date.UTC(2026, 4, 1 + i, 3))));

  it('keeps the newest cronMaxKeep completed scheduled backups without a policy', () => {
    const ds = plan([...days].reverse(), undefined, 'UTC', { cronMaxKeep: 3 });
    expect(kept(ds)).toEqual(['2026-05-08T03:00:00.000Z', '2026-05-09T03:00:00.000Z', '2026-05-10T03:00:00.000Z']);
    expect(ds.find((d) => d.key === '2026-05-10T03:00:00.000Z')!.reasons).toEqual(['cronMaxKeep 3']);
    expect(ds.find((d) => d.key === '2026-05-01T03:00:00.000Z')!.reasons).toEqual(['beyond cronMaxKeep 3']);
  });

  it('cronMaxKeep counts completed backups only', () => {
    const withFailures = [...days, sched('2026-05-09T12:00:00.000Z', 'failed'), sched('2026-05-10T12:00:00.000Z', 'failed')];
    expect(kept(plan(withFailures, undefined, 'UTC', { cronMaxKeep: 2 }))).toEqual(['2026-05-09T03:00:00.000Z', '2026-05-10T03:00:00.000Z', '2026-05-10T12:00:00.000Z']);
  });

  it('the policy decides when both are given', () => {
    expect(kept(plan(days, { keepLast: 1 }, 'UTC', { cronMaxKeep: 5 }))).toEqual(['2026-05-10T03:00:00.000Z']);
    expect(kept(plan(days, { keepDaily: 4 }, 'UTC', { cronMaxKeep: 1 }))).toHaveLength(4);
  });

  it('never removes the last completed backup', () => {
    const history = [...days, sched('2026-05-11T03:00:00.000Z', 'failed')];
    const ds = plan(history, undefined, 'UTC', { cronMaxKeep: 0 });
    expect(kept(ds)).toEqual(['2026-05-10T03:00:00.000Z', '2026-05-11T03:00:00.000Z']);
    expect(ds.find((d) => d.key === '2026-05-10T03:00:00.000Z')!.reasons).toEqual(['last completed backup']);
  });

  it('the guard is not needed when a completed backup of another trigger stays', () => {
    const ds = plan([...days, sched('2026-04-01T00:00:00.000Z', 'completed', 'manual')], undefined, 'UTC', { cronMaxKeep: 0 });
    expect(kept(ds)).toEqual(['2026-04-01T00:00:00.000Z']);
  });
});

describe('planRetention: keep rules (restic forget semantics)', () => {
  it('counts only buckets that hold a backup (the restic forum example)', () => {
    // a1 May 1 08:00, a2 May 2 08:00, a3 May 2 11:00, a4 May 4 09:00, a5 May 5 10:00; --keep-daily 4 keeps a1 a3 a4 a5.
    const [a1, a2, a3, a4, a5] = ['2026-05-01T08:00:00Z', '2026-05-02T08:00:00Z', '2026-05-02T11:00:00Z', '2026-05-04T09:00:00Z', '2026-05-05T10:00:00Z'];
    const ds = plan([a1, a2, a3, a4, a5].map((t) => sched(t!)), { keepDaily: 4 }, 'UTC', { now: new Date('2026-05-05T12:00:00Z') });
    expect(kept(ds)).toEqual([a1, a3, a4, a5].sort());
    expect(reasonsOf(ds)).toEqual({
      [a1!]: ['daily 2026-05-01'],
      [a2!]: ['no rule keeps it'],
      [a3!]: ['daily 2026-05-02'],
      [a4!]: ['daily 2026-05-04'],
      [a5!]: ['daily 2026-05-05'],
    });
  });

  it("ORs the rules and lists every rule that kept a backup", () => {
    const backups = [
      '2026-11-17T09:00:00Z',
      '2026-11-18T09:00:00Z',
      '2026-11-18T21:00:00Z',
      '2026-11-19T21:00:00Z',
      '2026-11-20T06:00:00Z',
      '2026-11-20T12:00:00Z',
      '2026-11-20T18:00:00Z',
    ].map((t) => sched(t));
    const ds = plan(backups, { keepLast: 3, keepDaily: 2, keepWeekly: 2, keepWithin: '12h' });
    expect(reasonsOf(ds)).toEqual({
      // All in 2026-W47 (Monday 11-16 to Sunday 11-22): the weekly rule still has a count left at
      // the oldest backup, so it keeps that one too (restic 0.17+).
      '2026-11-17T09:00:00Z': ['weekly 2026-W47 (oldest)'],
      '2026-11-18T09:00:00Z': ['no rule keeps it'],
      '2026-11-18T21:00:00Z': ['no rule keeps it'],
      '2026-11-19T21:00:00Z': ['daily 2026-11-19'],
      // Exactly 12 hours before the newest: not strictly after the cut-off, so not "within" (restic: Time.After).
      '2026-11-20T06:00:00Z': ['last 3'],
      '2026-11-20T12:00:00Z': ['within 12h', 'last 3'],
      '2026-11-20T18:00:00Z': ['within 12h', 'last 3', 'daily 2026-11-20', 'weekly 2026-W47'],
    });
  });

  it('keeps the oldest backup too while a rule has count left (restic 0.17+)', () => {
    const backups = ['2026-05-01T01:00:00Z', '2026-05-01T02:00:00Z', '2026-05-02T01:00:00Z', '2026-05-02T02:00:00Z', '2026-05-03T01:00:00Z', '2026-05-03T02:00:00Z'].map((t) => sched(t));
    expect(kept(plan(backups, { keepDaily: 5 }))).toEqual(['2026-05-01T01:00:00Z', '2026-05-01T02:00:00Z', '2026-05-02T02:00:00Z', '2026-05-03T02:00:00Z']);
    // With exactly as many buckets as the count, the count is used up before the oldest: not kept.
    expect(kept(plan(backups, { keepDaily: 3 }))).toEqual(['2026-05-01T02:00:00Z', '2026-05-02T02:00:00Z', '2026-05-03T02:00:00Z']);
    // keepLast larger than the history keeps everything.
    expect(removed(plan(backups, { keepLast: 10 }))).toEqual([]);
  });

  it('separates Sunday and Monday into ISO weeks, in the local time zone', () => {
    // Sunday 2024-06-09 22:30Z and Monday 2024-06-10 00:30Z: in UTC two weeks (W23, W24).
    // In Berlin (CEST, +2) Sunday 22:30Z is already Monday 00:30: one week, W24.
    const backups = ['2024-06-02T12:00:00Z', '2024-06-09T22:30:00Z', '2024-06-10T00:30:00Z'].map((t) => sched(t));
    const utc = plan(backups, { keepWeekly: 2 });
    expect(kept(utc)).toEqual(['2024-06-09T22:30:00Z', '2024-06-10T00:30:00Z']);
    expect(reasonsOf(utc)['2024-06-09T22:30:00Z']).toEqual(['weekly 2024-W23']);
    const berlin = plan(backups, { keepWeekly: 2 }, 'Europe/Berlin');
    expect(kept(berlin)).toEqual(['2024-06-02T12:00:00Z', '2024-06-10T00:30:00Z']);
    expect(reasonsOf(berlin)['2024-06-02T12:00:00Z']).toEqual(['weekly 2024-W22']);
  });

  it('uses the ISO week-year across 2020-W53 / 2021-W01, and the calendar year for yearly', () => {
    const backups = Array.from({ length: 11 }, (_, i) => sched(iso(Date.UTC(2020, 11, 26 + i, 12)))); // 2020-12-26 .. 2021-01-05
    const ds = plan(backups, { keepWeekly: 3, keepYearly: 2 });
    expect(kept(ds)).toEqual(['2020-12-27T12:00:00.000Z', '2020-12-31T12:00:00.000Z', '2021-01-03T12:00:00.000Z', '2021-01-05T12:00:00.000Z']);
    expect(reasonsOf(ds)).toMatchObject({
      '2021-01-05T12:00:00.000Z': ['weekly 2021-W01', 'yearly 2021'],
      '2021-01-03T12:00:00.000Z': ['weekly 2020-W53'],
      '2020-12-31T12:00:00.000Z': ['yearly 2020'],
      '2020-12-27T12:00:00.000Z': ['weekly 2020-W52'],
    });
  });

  it('crosses month ends (Jan 31 to Feb 1) and the leap day', () => {
    const backups = ['2026-01-30T23:00:00Z', '2026-01-31T23:00:00Z', '2026-02-01T01:00:00Z', '2026-02-28T23:59:59Z', '2026-03-01T00:00:00Z'].map((t) => sched(t));
    expect(kept(plan(backups, { keepMonthly: 2 }))).toEqual(['2026-02-28T23:59:59Z', '2026-03-01T00:00:00Z']);
    expect(kept(plan(backups, { keepMonthly: 3 }))).toEqual(['2026-01-31T23:00:00Z', '2026-02-28T23:59:59Z', '2026-03-01T00:00:00Z']);

    const leap = ['2024-02-27T10:00:00Z', '2024-02-28T10:00:00Z', '2024-02-29T09:00:00Z', '2024-02-29T10:00:00Z', '2024-03-01T10:00:00Z'].map((t) => sched(t));
    const ds = plan(leap, { keepDaily: 3 });
    expect(kept(ds)).toEqual(['2024-02-28T10:00:00Z', '2024-02-29T10:00:00Z', '2024-03-01T10:00:00Z']);
    expect(reasonsOf(ds)['2024-02-29T10:00:00Z']).toEqual(['daily 2024-02-29']);
  });

  it('Europe/Berlin spring forward: the local day of 2021-03-28 has 23 hours and no 02h bucket', () => {
    // Hourly from 2021-03-27T20:00Z to 2021-03-28T23:00Z.
    const backups = Array.from({ length: 28 }, (_, i) => sched(iso(Date.UTC(2021, 2, 27, 20 + i))));
    const daily = plan(backups, { keepDaily: 3 }, 'Europe/Berlin');
    // Newest of Mar 29 (23:00Z = 01:00 CEST), of Mar 28 (21:00Z = 23:00 CEST), of Mar 27 (22:00Z = 23:00 CET).
    expect(kept(daily)).toEqual(['2021-03-27T22:00:00.000Z', '2021-03-28T21:00:00.000Z', '2021-03-28T23:00:00.000Z']);
    // In UTC the buckets fall elsewhere.
    expect(kept(plan(backups, { keepDaily: 3 }))).toEqual(['2021-03-27T20:00:00.000Z', '2021-03-27T23:00:00.000Z', '2021-03-28T23:00:00.000Z']);

    const hourly = plan(backups, { keepHourly: 100 }, 'Europe/Berlin');
    expect(removed(hourly)).toEqual([]); // one backup per local hour, each its own bucket
    const labels = hourly.flatMap((d) => d.reasons);
    expect(labels).toContain('hourly 2021-03-28 01h');
    expect(labels).toContain('hourly 2021-03-28 03h');
    expect(labels).not.toContain('hourly 2021-03-28 02h');
  });

  it('Europe/Berlin fall back: the repeated 02h is one hourly bucket', () => {
    // Every 30 minutes from 2021-10-30T23:30Z (01:30 CEST) to 2021-10-31T02:00Z (03:00 CET);
    // 00:00Z, 00:30Z (02:00, 02:30 CEST) and 01:00Z, 01:30Z (02:00, 02:30 CET) are all local hour 02.
    const backups = Array.from({ length: 6 }, (_, i) => sched(iso(Date.UTC(2021, 9, 30, 23, 30) + i * 30 * 60_000)));
    const ds = plan(backups, { keepHourly: 3 }, 'Europe/Berlin');
    expect(kept(ds)).toEqual(['2021-10-30T23:30:00.000Z', '2021-10-31T01:30:00.000Z', '2021-10-31T02:00:00.000Z']);
    expect(reasonsOf(ds)['2021-10-31T01:30:00.000Z']).toEqual(['hourly 2021-10-31 02h']);
    // UTC has no repeated hour: 02:00Z, 01:30Z and 00:30Z.
    expect(kept(plan(backups, { keepHourly: 3 }))).toEqual(['2021-10-31T00:30:00.000Z', '2021-10-31T01:30:00.000Z', '2021-10-31T02:00:00.000Z']);
  });

  it('America/New_York fall back and spring forward', () => {
    // 2021-11-07: 01:xx happens in EDT (05:xxZ) and again in EST (06:xxZ).
    const fall = ['2021-11-07T04:30:00Z', '2021-11-07T05:15:00Z', '2021-11-07T05:45:00Z', '2021-11-07T06:15:00Z', '2021-11-07T06:45:00Z', '2021-11-07T07:15:00Z'].map((t) => sched(t));
    const ds = plan(fall, { keepHourly: 3 }, 'America/New_York');
    expect(reasonsOf(ds)).toEqual({
      '2021-11-07T04:30:00Z': ['hourly 2021-11-07 00h'],
      '2021-11-07T05:15:00Z': ['no rule keeps it'],
      '2021-11-07T05:45:00Z': ['no rule keeps it'],
      '2021-11-07T06:15:00Z': ['no rule keeps it'],
      '2021-11-07T06:45:00Z': ['hourly 2021-11-07 01h'],
      '2021-11-07T07:15:00Z': ['hourly 2021-11-07 02h'],
    });

    // 2021-03-14 12:00 EDT (16:00Z) minus 1d is 2021-03-13 12:00 EST (17:00Z): 23 hours, not 24.
    const spring = ['2021-03-13T16:30:00Z', '2021-03-13T17:30:00Z', '2021-03-14T16:00:00Z'].map((t) => sched(t));
    expect(kept(plan(spring, { keepWithin: '1d' }, 'America/New_York'))).toEqual(['2021-03-13T17:30:00Z', '2021-03-14T16:00:00Z']);
    expect(kept(plan(spring, { keepWithin: '1d' }))).toEqual(['2021-03-13T16:30:00Z', '2021-03-13T17:30:00Z', '2021-03-14T16:00:00Z']);
    expect(kept(plan(spring, { keepWithin: '24h' }, 'America/New_York'))).toEqual(['2021-03-13T16:30:00Z', '2021-03-13T17:30:00Z', '2021-03-14T16:00:00Z']);
  });

  it('Pacific/Kiritimati (UTC+14) and Pacific/Auckland put days and months on their local date', () => {
    // 2026-06-01T10:00Z is 2026-06-02 00:00 in Kiritimati.
    const backups = ['2026-06-01T08:00:00Z', '2026-06-01T09:30:00Z', '2026-06-01T10:30:00Z'].map((t) => sched(t));
    const kiri = plan(backups, { keepDaily: 2 }, 'Pacific/Kiritimati');
    expect(kept(kiri)).toEqual(['2026-06-01T09:30:00Z', '2026-06-01T10:30:00Z']);
    expect(reasonsOf(kiri)['2026-06-01T10:30:00Z']).toEqual(['daily 2026-06-02']);
    // In UTC all three are on June 1: the newest, plus the oldest because a count is left.
    expect(kept(plan(backups, { keepDaily: 2 }))).toEqual(['2026-06-01T08:00:00Z', '2026-06-01T10:30:00Z']);

    // 2026-01-31T11:30Z is 2026-02-01 00:30 NZDT (+13): February in Auckland, January in UTC.
    const months = ['2025-12-31T12:00:00Z', '2026-01-31T10:30:00Z', '2026-01-31T11:30:00Z'].map((t) => sched(t));
    // 2025-12-31T12:00Z is 2026-01-01 01:00 NZDT, so Auckland sees January twice and February once.
    const akl = plan(months, { keepMonthly: 2 }, 'Pacific/Auckland');
    expect(reasonsOf(akl)).toEqual({
      '2025-12-31T12:00:00Z': ['no rule keeps it'],
      '2026-01-31T10:30:00Z': ['monthly 2026-01'],
      '2026-01-31T11:30:00Z': ['monthly 2026-02'],
    });
    expect(kept(plan(months, { keepMonthly: 2 }))).toEqual(['2025-12-31T12:00:00Z', '2026-01-31T11:30:00Z']);
  });

  it('keepWithin counts from the newest backup, not from now, in calendar months ("1m" from Mar 31)', () => {
    const backups = Array.from({ length: 40 }, (_, i) => sched(iso(Date.UTC(2025, 1, 20 + i, 12)))); // 2025-02-20 .. 2025-03-31 12:00Z
    const ds = plan(backups, { keepWithin: '1m' }, 'UTC', { now: new Date('2027-01-01T00:00:00Z') });
    // Cut-off 2025-02-28T12:00Z (clamped), strictly after it: March 1 to 31.
    expect(kept(ds)).toEqual(backups.slice(9).map((b) => b.key));
    expect(ds.find((d) => d.key === '2025-02-28T12:00:00.000Z')!.keep).toBe(false);
    expect(ds.find((d) => d.key === '2025-03-01T12:00:00.000Z')!.reasons).toEqual(['within 1m']);

    const leap = Array.from({ length: 40 }, (_, i) => sched(iso(Date.UTC(2024, 1, 20 + i, 12)))); // 2024-02-20 .. 2024-03-30
    const last = sched('2024-03-31T12:00:00.000Z');
    expect(kept(plan([...leap, last], { keepWithin: '1m' }))).toEqual([...leap.slice(10), last].map((b) => b.key).sort());
  });

  it('keepWithin ignores backups dated after now when finding the newest (restic findLatestTimestamp)', () => {
    const now = new Date('2026-06-10T00:00:00Z');
    const backups = ['2026-06-01T00:00:00Z', '2026-06-08T00:00:00Z', '2026-06-09T00:00:00Z', '2026-07-01T00:00:00Z'].map((t) => sched(t));
    // Newest before now: June 9; "2d" keeps after June 7 00:00: June 8, 9 and the future one.
    expect(kept(plan(backups, { keepWithin: '2d' }, 'UTC', { now }))).toEqual(['2026-06-08T00:00:00Z', '2026-06-09T00:00:00Z', '2026-07-01T00:00:00Z']);
  });
});

// ---------------------------------------------------------------------------------------------
// Large histories, checked against an oracle that shares no code with the module: local time
// from hand-written DST rules (EU and US), ISO weeks by the ordinal-date formula, buckets by
// grouping instead of a newest-first walk.

function mulberry32(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The UTC instant of the n-th (1-based; -1 = last) Sunday of a month at hh:00 UTC. */
function nthSunday(year: number, month: number, n: number, hourUtc: number): number {
  if (n === -1) {
    const lastDay = new Date(Date.UTC(year, month + 1, 0));
    return Date.UTC(year, month, lastDay.getUTCDate() - lastDay.getUTCDay(), hourUtc);
  }
  const first = new Date(Date.UTC(year, month, 1)).getUTCDay();
  return Date.UTC(year, month, 1 + ((7 - first) % 7) + (n - 1) * 7, hourUtc);
}

const OFFSETS: Record<string, (t: number) => number> = {
  UTC: () => 0,
  // EU: summer time from the last Sunday of March 01:00 UTC to the last Sunday of October 01:00 UTC.
  'Europe/Berlin': (t) => {
    const y = new Date(t).getUTCFullYear();
    return t >= nthSunday(y, 2, -1, 1) && t < nthSunday(y, 9, -1, 1) ? 2 * HOUR : HOUR;
  },
  // US: from the second Sunday of March 02:00 EST (07:00Z) to the first Sunday of November 02:00 EDT (06:00Z).
  'America/New_York': (t) => {
    const y = new Date(t).getUTCFullYear();
    return t >= nthSunday(y, 2, 2, 7) && t < nthSunday(y, 10, 1, 6) ? -4 * HOUR : -5 * HOUR;
  },
};

function oracleIsoWeek(y: number, m: number, d: number): string {
  const p = (yr: number) => (yr + Math.floor(yr / 4) - Math.floor(yr / 100) + Math.floor(yr / 400)) % 7;
  const weeksIn = (yr: number) => (p(yr) === 4 || p(yr - 1) === 3 ? 53 : 52);
  const ordinal = (Date.UTC(y, m - 1, d) - Date.UTC(y, 0, 1)) / DAY + 1;
  const weekday = new Date(Date.UTC(y, m - 1, d)).getUTCDay() || 7;
  let week = Math.floor((ordinal - weekday + 10) / 7);
  let year = y;
  if (week < 1) week = weeksIn(--year);
  else if (week > weeksIn(y)) [week, year] = [1, y + 1];
  return `${year}-W${String(week).padStart(2, '0')}`;
}

function oracle(times: number[], policy: Required<Omit<RetentionPolicy, 'keepWithin'>> & { withinHours: number }, tz: string): Map<number, string[]> {
  const local = (t: number) => new Date(t + OFFSETS[tz]!(t));
  const keys: Record<string, (t: number) => string> = {
    hourly: (t) => local(t).toISOString().slice(0, 13),
    daily: (t) => local(t).toISOString().slice(0, 10),
    weekly: (t) => {
      const l = local(t);
      return oracleIsoWeek(l.getUTCFullYear(), l.getUTCMonth() + 1, l.getUTCDate());
    },
    monthly: (t) => local(t).toISOString().slice(0, 7),
    yearly: (t) => local(t).toISOString().slice(0, 4),
  };
  const counts: Record<string, number> = { hourly: policy.keepHourly, daily: policy.keepDaily, weekly: policy.keepWeekly, monthly: policy.keepMonthly, yearly: policy.keepYearly };
  const why = new Map<number, string[]>();
  const add = (t: number, rule: string) => why.set(t, [...(why.get(t) ?? []), rule]);
  const sorted = [...times].sort((a, b) => b - a);
  const latest = sorted[0]!;
  for (const t of sorted) if (t > latest - policy.withinHours * HOUR) add(t, 'within');
  sorted.slice(0, policy.keepLast).forEach((t) => add(t, 'last'));
  for (const [rule, key] of Object.entries(keys)) {
    const newestPerBucket = new Map<string, number>();
    for (const t of times) newestPerBucket.set(key(t), Math.max(newestPerBucket.get(key(t)) ?? -Infinity, t));
    const buckets = [...newestPerBucket.keys()].sort().reverse();
    for (const b of buckets.slice(0, counts[rule])) add(newestPerBucket.get(b)!, rule);
    if (buckets.length < counts[rule]! && !buckets.slice(0, counts[rule]).some((b) => newestPerBucket.get(b) === sorted.at(-1))) add(sorted.at(-1)!, rule);
  }
  return why;
}

/** Three years of backups: 0 to 3 an hour at random minutes, with gaps of hours to weeks. */
function history(seed: number, start: number, hours: number): RetentionCandidate[] {
  const random = mulberry32(seed);
  const out: RetentionCandidate[] = [];
  for (let h = 0; h < hours; h++) {
    if (random() < 0.002) h += Math.floor(random() * 24 * 14); // a gap of up to two weeks
    const n = Math.floor(random() * 4);
    const seconds = new Set<number>();
    while (seconds.size < n) seconds.add(Math.floor(random() * 3600));
    for (const s of seconds) {
      const t = start + h * HOUR + s * 1000;
      const roll = random();
      const trigger: BackupTrigger = roll < 0.03 ? 'manual' : 'schedule';
      const status: BackupStatus = roll > 0.97 ? 'failed' : 'completed';
      out.push({ key: `b-${t}`, createdAt: iso(t), status, trigger });
    }
  }
  return out;
}

describe('planRetention: three-year histories against an independent oracle', () => {
  const start = Date.UTC(2022, 11, 20); // crosses 2022-12/2023, three DST years and 2026-W53
  const backups = history(20260420, start, 3 * 366 * 24 + 400);
  const policy = { keepLast: 5, keepHourly: 48, keepDaily: 30, keepWeekly: 20, keepMonthly: 18, keepYearly: 10, withinHours: 36 };
  const candidates = backups.filter((b) => b.trigger === 'schedule' && b.status === 'completed');
  const isCandidate = new Set(candidates);

  it('the history is as varied as intended', () => {
    expect(candidates.length).toBeGreaterThan(20_000);
    const times = candidates.map((b) => Date.parse(b.createdAt)).sort((x, y) => x - y);
    expect(times.at(-1)! - times[0]!).toBeGreaterThan(3 * 365 * DAY);
    expect(times.some((t, i) => i > 0 && t - times[i - 1]! > 3 * DAY)).toBe(true); // gaps
    expect(times.some((t, i) => i > 0 && Math.floor(t / HOUR) === Math.floor(times[i - 1]! / HOUR))).toBe(true); // several an hour
    expect(backups.some((b) => b.trigger === 'manual')).toBe(true);
    expect(backups.some((b) => b.status === 'failed' && b.trigger === 'schedule')).toBe(true);
  });

  it.each(['UTC', 'Europe/Berlin', 'America/New_York'])('policy in %s', (tz) => {
    const { withinHours, ...counts } = policy;
    const ds = planRetention(backups, { policy: { ...counts, keepWithin: `${withinHours}h` }, timezone: tz, now: NOW });
    const expected = oracle(candidates.map((b) => Date.parse(b.createdAt)), policy, tz);
    const keptCandidates = new Map(
      ds.filter((d, i) => d.keep && isCandidate.has(backups[i]!)).map((d) => [Date.parse(d.createdAt), d.reasons.map((r) => r.split(' ')[0]!).sort()]),
    );
    expect([...keptCandidates.keys()].sort()).toEqual([...expected.keys()].sort());
    for (const [t, rules] of expected) expect(keptCandidates.get(t), iso(t)).toEqual(rules.sort());
    // Bucket labels agree with the oracle's local calendar too (spot check on the weekly ones).
    const weekly = ds.flatMap((d) => d.reasons).filter((r) => r.startsWith('weekly')).map((r) => r.split(' ')[1]);
    const oracleWeekly = [...expected].filter(([, r]) => r.includes('weekly')).map(([t]) => {
      const l = new Date(t + OFFSETS[tz]!(t));
      return oracleIsoWeek(l.getUTCFullYear(), l.getUTCMonth() + 1, l.getUTCDate());
    });
    expect(weekly.sort()).toEqual(oracleWeekly.sort());
    // Everything that is not a candidate stays, except failed scheduled backups before the newest completed one.
    const newest = Math.max(...candidates.map((b) => Date.parse(b.createdAt)));
    ds.forEach((d, i) => {
      const b = backups[i]!;
      if (b.trigger !== 'schedule') expect(d.keep).toBe(true);
      else if (b.status === 'failed') expect(d.keep).toBe(Date.parse(b.createdAt) >= newest);
    });
  });

  it('cronMaxKeep on the same history keeps exactly the newest N completed scheduled backups', () => {
    const ds = planRetention(backups, { cronMaxKeep: 25, timezone: 'UTC', now: NOW });
    const newest25 = [...candidates].sort((a, b) => Date.parse(b.createdAt) - Date.parse(a.createdAt)).slice(0, 25).map((b) => b.key);
    const keptScheduledCompleted = ds.filter((d, i) => d.keep && isCandidate.has(backups[i]!)).map((d) => d.key);
    expect(keptScheduledCompleted.sort()).toEqual(newest25.sort());
  });
});

describe('formatRetentionTable', () => {
  it('shows key, local creation time, action and reasons, then the count', () => {
    const ds = plan(['2026-11-19T23:30:00Z', '2026-11-20T12:00:00Z', '2026-11-20T18:00:00Z'].map((t) => sched(t)), { keepDaily: 1 }, 'Europe/Berlin');
    expect(formatRetentionTable(ds, 'Europe/Berlin')).toBe(
      [
        'KEY                   CREATED (Europe/Berlin)  ACTION  WHY',
        '2026-11-19T23:30:00Z  2026-11-20 00:30:00      remove  no rule keeps it',
        '2026-11-20T12:00:00Z  2026-11-20 13:00:00      remove  no rule keeps it',
        '2026-11-20T18:00:00Z  2026-11-20 19:00:00      keep    daily 2026-11-20',
        '',
        '1 kept, 2 removed',
      ].join('\n'),
    );
  });
});
