import { table } from '../cli/format.js';
import { DURATION, type RetentionPolicy } from '../config/settings.js';
import type { BackupRecord } from '../engine/catalogue.js';

/**
 * The retention policy: which scheduled backups a prune keeps. Pure (no clock, no I/O): the
 * caller passes the catalogue's records, the settings and `now`, and gets one decision per
 * record. The model is restic's `forget` (internal/restic/snapshot_policy.go, `ApplyPolicy`):
 *
 * - Candidates are completed backups with trigger `schedule`; every other trigger is kept.
 * - Rules are OR'ed: a backup kept by any rule stays, and `reasons` names every rule that kept it.
 * - keepLast N keeps the newest N. keepHourly/Daily/Weekly/Monthly/Yearly N walk the candidates
 *   newest first and keep the first (newest) backup of each new bucket until N buckets are
 *   used, so buckets without a backup do not count. If a rule still has count left when the
 *   walk reaches the oldest candidate, the oldest is kept too (restic 0.17+: "If there are not
 *   enough snapshots to keep one for each duration related option, the oldest snapshot in the
 *   group is kept additionally"); its reason ends in "(oldest)".
 * - Buckets use the local wall time in `timezone`. Weeks are ISO 8601 weeks (Monday to Sunday,
 *   week-year of the week's Thursday), as restic's `time.ISOWeek`: 2021-01-01 is in 2020-W53.
 * - keepWithin D keeps every candidate created strictly after (latest - D), where latest is the
 *   newest candidate created before `now` (restic's `findLatestTimestamp`: relative to the
 *   newest snapshot, not to now, and ignoring snapshots dated in the future).
 * - With no keep rule set (all absent or 0, keepWithin absent or zero: restic's `Empty`),
 *   `cronMaxKeep` keeps the newest N, as PocketBase does; with neither, nothing is removed.
 *   With a policy, the policy decides and `cronMaxKeep` is ignored.
 * - The last completed backup is never removed, whatever the trigger and the rules.
 *
 * Reasons read "last 3" (keepLast 3), "hourly 2026-11-20 14h", "daily 2026-11-20",
 * "weekly 2026-W47", "monthly 2026-11", "yearly 2026", "within 30d", "cronMaxKeep 7"; and for
 * what no rule covers: "not scheduled", "in progress", "failed", "last completed backup", ...
 */

export type RetentionCandidate = Pick<BackupRecord, 'key' | 'createdAt' | 'status' | 'trigger'>;

export interface RetentionOptions {
  /** PocketBase's cronMaxKeep: how many completed scheduled backups to keep when no keep rule is set. */
  cronMaxKeep?: number;
  policy?: RetentionPolicy;
  /** IANA time zone in which hours, days, weeks, months and years are counted. */
  timezone: string;
  now: Date;
}

export interface RetentionDecision {
  key: string;
  createdAt: string;
  keep: boolean;
  /** Kept: every rule that keeps it ("daily 2026-11-20", "last 3", ...). Removed: why. */
  reasons: string[];
}

/** A keepWithin duration, "1y6m2w3d4h". */
export interface RetentionDuration {
  years: number;
  months: number;
  weeks: number;
  days: number;
  hours: number;
}

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/**
 * Decide, for every backup, whether a prune keeps it. Decisions come back in input order.
 * Throws RangeError for an unknown time zone, a negative cronMaxKeep or a malformed keepWithin.
 */
export function planRetention(backups: readonly RetentionCandidate[], options: RetentionOptions): RetentionDecision[] {
  const zone = new ZonedClock(options.timezone);
  const now = options.now.getTime();
  if (options.cronMaxKeep !== undefined && !(Number.isInteger(options.cronMaxKeep) && options.cronMaxKeep >= 0)) {
    throw new RangeError(`cronMaxKeep must be a whole number (0 or more), got ${options.cronMaxKeep}`);
  }
  const parsedWithin = options.policy?.keepWithin ? parseDuration(options.policy.keepWithin) : null;
  // A zero duration ("0d") is no rule at all, as restic's Duration.Zero.
  const within = parsedWithin && Object.values(parsedWithin).some((n) => n > 0) ? parsedWithin : null;

  const decisions: RetentionDecision[] = backups.map((b) => ({ key: b.key, createdAt: b.createdAt, keep: true, reasons: [] }));
  const times = backups.map((b) => Date.parse(b.createdAt));
  const candidates: number[] = [];
  const failed: number[] = [];
  backups.forEach((b, i) => {
    const d = decisions[i]!;
    if (Number.isNaN(times[i])) d.reasons.push('unreadable createdAt');
    else if (b.trigger !== 'schedule') d.reasons.push('not scheduled');
    else if (b.status === 'completed') candidates.push(i);
    else if (b.status === 'failed') failed.push(i);
    else d.reasons.push('in progress');
  });
  // Newest first; equal times by key, newest key first, as the catalogue lists them.
  const newestFirst = (a: number, b: number) => times[b]! - times[a]! || (backups[b]!.key < backups[a]!.key ? -1 : backups[b]!.key > backups[a]!.key ? 1 : 0);
  candidates.sort(newestFirst);
  for (const i of candidates) decisions[i]!.keep = false;

  const policy = options.policy;
  if (policy && hasKeepRules(policy)) {
    applyPolicy(candidates, times, policy, within, zone, now, decisions);
  } else if (options.cronMaxKeep !== undefined) {
    candidates.forEach((i, n) => {
      decisions[i]!.keep = n < options.cronMaxKeep!;
      decisions[i]!.reasons.push(n < options.cronMaxKeep! ? `cronMaxKeep ${options.cronMaxKeep}` : `beyond cronMaxKeep ${options.cronMaxKeep}`);
    });
  } else {
    for (const i of candidates) {
      decisions[i]!.keep = true;
      decisions[i]!.reasons.push('no retention configured');
    }
  }
  for (const i of candidates) if (!decisions[i]!.keep && decisions[i]!.reasons.length === 0) decisions[i]!.reasons.push('no rule keeps it');

  // A failed scheduled backup stays visible until a newer scheduled backup completed.
  const newestCompleted = candidates.length ? times[candidates[0]!]! : Number.NEGATIVE_INFINITY;
  for (const i of failed) {
    const d = decisions[i]!;
    d.keep = times[i]! >= newestCompleted;
    d.reasons.push(d.keep ? 'failed, no newer completed scheduled backup' : 'failed');
  }

  // Never remove the last completed backup, of any trigger.
  const completed = backups.map((_, i) => i).filter((i) => backups[i]!.status === 'completed' && !Number.isNaN(times[i]));
  if (completed.length && completed.every((i) => !decisions[i]!.keep)) {
    const newest = completed.sort(newestFirst)[0]!;
    decisions[newest] = { ...decisions[newest]!, keep: true, reasons: ['last completed backup'] };
  }
  return decisions;
}

/** Whether `policy` sets any keep rule (restic's `ExpirePolicy.Empty`, negated). */
export function hasKeepRules(policy: RetentionPolicy): boolean {
  const counts = [policy.keepLast, policy.keepHourly, policy.keepDaily, policy.keepWeekly, policy.keepMonthly, policy.keepYearly];
  if (counts.some((n) => n !== undefined && n > 0)) return true;
  if (!policy.keepWithin) return false;
  const d = parseDuration(policy.keepWithin);
  return d.years + d.months + d.weeks + d.days + d.hours > 0;
}

type BucketRule = 'hourly' | 'daily' | 'weekly' | 'monthly' | 'yearly';

function applyPolicy(
  candidates: number[],
  times: number[],
  policy: RetentionPolicy,
  within: RetentionDuration | null,
  zone: ZonedClock,
  now: number,
  decisions: RetentionDecision[],
): void {
  // restic's findLatestTimestamp: the newest snapshot that is not in the future.
  let latest = Number.NEGATIVE_INFINITY;
  for (const i of candidates) if (times[i]! < now && times[i]! > latest) latest = times[i]!;
  const withinCutoff = within && latest !== Number.NEGATIVE_INFINITY ? subtractDuration(new Date(latest), within, zone.timezone).getTime() : Number.NEGATIVE_INFINITY;

  const rules: Array<{ rule: BucketRule; left: number; last: string | null }> = (
    [
      ['hourly', policy.keepHourly],
      ['daily', policy.keepDaily],
      ['weekly', policy.keepWeekly],
      ['monthly', policy.keepMonthly],
      ['yearly', policy.keepYearly],
    ] as const
  )
    .filter(([, n]) => n !== undefined && n > 0)
    .map(([rule, n]) => ({ rule, left: n!, last: null }));
  const keepLast = policy.keepLast ?? 0;

  candidates.forEach((i, n) => {
    const reasons: string[] = [];
    const oldest = n === candidates.length - 1;
    if (within && times[i]! > withinCutoff) reasons.push(`within ${policy.keepWithin}`);
    if (n < keepLast) reasons.push(`last ${keepLast}`);
    if (rules.length) {
      const local = zone.parts(times[i]!);
      for (const r of rules) {
        if (r.left === 0) continue;
        const bucket = bucketLabel(r.rule, local);
        if (bucket !== r.last || oldest) {
          reasons.push(`${r.rule} ${bucket}${bucket === r.last ? ' (oldest)' : ''}`);
          r.last = bucket;
          r.left--;
        }
      }
    }
    decisions[i]!.keep = reasons.length > 0;
    decisions[i]!.reasons.push(...reasons);
  });
}

interface LocalParts {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
}

const pad = (n: number, width = 2) => String(n).padStart(width, '0');

/** The bucket a local time falls in, as it is shown in reasons ("2026-11-20", "2020-W53"). */
function bucketLabel(rule: BucketRule, t: LocalParts): string {
  switch (rule) {
    case 'hourly':
      return `${pad(t.year, 4)}-${pad(t.month)}-${pad(t.day)} ${pad(t.hour)}h`;
    case 'daily':
      return `${pad(t.year, 4)}-${pad(t.month)}-${pad(t.day)}`;
    case 'weekly': {
      const { weekYear, week } = isoWeek(t.year, t.month, t.day);
      return `${pad(weekYear, 4)}-W${pad(week)}`;
    }
    case 'monthly':
      return `${pad(t.year, 4)}-${pad(t.month)}`;
    case 'yearly':
      return pad(t.year, 4);
  }
}

/** ISO 8601 week: weeks start on Monday; week 1 is the week with the year's first Thursday. */
export function isoWeek(year: number, month: number, day: number): { weekYear: number; week: number } {
  const date = Date.UTC(year, month - 1, day);
  const isoDay = ((new Date(date).getUTCDay() + 6) % 7) + 1; // Monday 1 ... Sunday 7
  const thursday = date + (4 - isoDay) * DAY;
  const weekYear = new Date(thursday).getUTCFullYear();
  return { weekYear, week: Math.floor((thursday - Date.UTC(weekYear, 0, 1)) / DAY / 7) + 1 };
}

/** Local wall time in one IANA zone, through Intl (no time zone database of our own). */
class ZonedClock {
  private readonly format: Intl.DateTimeFormat;

  constructor(readonly timezone: string) {
    try {
      this.format = new Intl.DateTimeFormat('en-US', {
        timeZone: timezone,
        hourCycle: 'h23',
        year: 'numeric',
        month: 'numeric',
        day: 'numeric',
        hour: 'numeric',
        minute: 'numeric',
        second: 'numeric',
      });
    } catch {
      throw new RangeError(`unknown time zone "${timezone}": use an IANA name such as "UTC" or "Europe/Berlin"`);
    }
  }

  parts(t: number): LocalParts {
    const p: Record<string, number> = {};
    for (const { type, value } of this.format.formatToParts(t)) if (type !== 'literal') p[type] = Number(value);
    return { year: p.year!, month: p.month!, day: p.day!, hour: p.hour!, minute: p.minute!, second: p.second! };
  }

  /** The zone's offset from UTC at instant t, in ms. */
  private offset(t: number): number {
    const p = this.parts(t);
    return Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second) - (t - mod(t, 1000));
  }

  /**
   * The instant of a local wall time (given as if it were UTC). A time that occurs twice (clocks
   * go back) is the earlier instant; one that does not occur (clocks go forward) is moved forward
   * by the gap, so 02:30 on a spring-forward night in Berlin is 03:30 CEST (Temporal's "compatible").
   */
  instant(wall: number): number {
    const before = this.offset(wall - DAY);
    const after = this.offset(wall + DAY);
    const fits = [wall - before, wall - after].filter((t) => this.offset(t) === wall - t);
    return fits.length ? Math.min(...fits) : wall - before;
  }
}

const mod = (a: number, b: number) => ((a % b) + b) % b;

/** Parse a keepWithin duration ("30d", "12h", "2w", "1y6m"; y, m, w, d, h, in that order). */
export function parseDuration(text: string): RetentionDuration {
  const m = DURATION.exec(text.trim());
  if (!m || text.trim() === '') throw new RangeError(`"${text}" is not a duration such as "30d", "12h", "2w", "1y6m" (y, m, w, d, h, in that order)`);
  const n = (g: string | undefined) => (g ? Number.parseInt(g, 10) : 0);
  return { years: n(m[1]), months: n(m[2]), weeks: n(m[3]), days: n(m[4]), hours: n(m[5]) };
}

/**
 * `date` minus `d`, on the calendar of `timezone`: years and months first, with the day clamped
 * to the end of a shorter month (2025-03-31 minus 1m is 2025-02-28; restic's Go `AddDate` would
 * overflow to 03-03, so this keeps slightly more, never less), then weeks and days as calendar
 * days (the same local time of day, so a day across a DST change is 23 or 25 hours), then hours
 * as elapsed time.
 */
export function subtractDuration(date: Date, d: RetentionDuration, timezone = 'UTC'): Date {
  const zone = new ZonedClock(timezone);
  const t = date.getTime();
  const p = zone.parts(t);
  const monthIndex = p.year * 12 + (p.month - 1) - d.years * 12 - d.months;
  const year = Math.floor(monthIndex / 12);
  const month = mod(monthIndex, 12);
  const day = Math.min(p.day, new Date(Date.UTC(year, month + 1, 0)).getUTCDate());
  const wallDate = Date.UTC(year, month, day) - (d.weeks * 7 + d.days) * DAY;
  const wall = wallDate + ((p.hour * 60 + p.minute) * 60 + p.second) * 1000 + mod(t, 1000);
  return new Date(zone.instant(wall) - d.hours * HOUR);
}

/**
 * The plan as a table for `stowage prune --dry-run`: key, creation time in `timezone`, kept or
 * removed, and the rules (or the reason) behind it; then a count.
 */
export function formatRetentionTable(decisions: readonly RetentionDecision[], timezone = 'UTC'): string {
  const zone = new ZonedClock(timezone);
  const rows = decisions.map((d) => {
    const t = Date.parse(d.createdAt);
    let created = d.createdAt;
    if (!Number.isNaN(t)) {
      const p = zone.parts(t);
      created = `${pad(p.year, 4)}-${pad(p.month)}-${pad(p.day)} ${pad(p.hour)}:${pad(p.minute)}:${pad(p.second)}`;
    }
    return [d.key, created, d.keep ? 'keep' : 'remove', d.reasons.join(', ')];
  });
  const kept = decisions.filter((d) => d.keep).length;
  return `${table(['KEY', `CREATED (${timezone})`, 'ACTION', 'WHY'], rows)}\n\n${kept} kept, ${decisions.length - kept} removed`;
}
