import { Cron } from 'croner';
import type { Settings } from '../config/settings.js';
import { errorMessage, isStowageError } from '../errors.js';
import type { StowageEmitter } from '../events/events.js';

/**
 * Runs the scheduled jobs (backup, verify, drill) from the settings' cron expressions. croner
 * only computes run times; waiting is done on an injectable clock, so tests run a month of
 * schedule in milliseconds and no test waits real minutes.
 *
 * Rules (issue 4):
 * - never two jobs at once: a run that falls while another job holds the data-folder lock is
 *   queued once and runs when that job ends, and the delay is recorded;
 * - a run missed while Stowage was down runs once at start when `runMissed` (and is logged);
 * - schedules reload when the settings change, without a restart (changes made in this
 *   process at once, changes made by another process within `reloadMs`).
 */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export type TaskName = 'backup' | 'verify' | 'drill';
export const TASKS: readonly TaskName[] = ['backup', 'verify', 'drill'];

export interface TaskRun {
  scheduledFor: Date;
  /** How long the run waited for another job, in ms (0 when it ran on time). */
  delayedMs: number;
  /** What it waited for, when it waited. */
  waitedFor: string | null;
  /** True for the one catch-up run of a schedule missed while Stowage was down. */
  missed: boolean;
}

export interface SchedulerOptions {
  settings: () => Settings;
  run: Record<TaskName, (run: TaskRun) => Promise<void>>;
  /** What is running now (a backup or restore here or in another process), or null when idle. */
  busy: () => string | null;
  /** When each task last ran (persisted, so missed runs are seen after a restart). */
  state: { get(task: TaskName): string | null; set(task: TaskName, iso: string): void };
  events: StowageEmitter;
  clock?: Clock;
  log?: (level: 'info' | 'warn' | 'error', message: string) => void;
  /** While a run waits for another job, how often to look again. */
  pollMs?: number;
  /** How often to look for settings changed by another process. */
  reloadMs?: number;
}

/** Long waits are taken in steps: robust to clock jumps and to setTimeout's 24.8-day limit. */
const MAX_STEP_MS = 3600_000;

export function taskCron(settings: Settings, task: TaskName): { cron: string; timezone: string } | null {
  const cron = task === 'backup' ? settings.backups.cron : settings[task].cron;
  return cron ? { cron, timezone: settings.backups.timezone } : null;
}

export class Scheduler {
  private readonly clock: Clock;
  private readonly timers = new Map<TaskName, unknown>();
  private readonly waiting = new Map<TaskName, { run: TaskRun; since: number; handle: unknown }>();
  private readonly running = new Set<TaskName>();
  private reloadTimer: unknown = null;
  private seenSettings = '';
  private stopped = true;

  constructor(private readonly options: SchedulerOptions) {
    this.clock = options.clock ?? systemClock;
  }

  private log(level: 'info' | 'warn' | 'error', message: string): void {
    this.options.log?.(level, message);
  }

  /** Next run time of each scheduled task (for health and `settings get`). */
  nextRuns(): Partial<Record<TaskName, string>> {
    const settings = this.options.settings();
    const out: Partial<Record<TaskName, string>> = {};
    for (const task of TASKS) {
      const c = taskCron(settings, task);
      const next = c && new Cron(c.cron, { paused: true, timezone: c.timezone }).nextRun(new Date(this.clock.now()));
      if (next) out[task] = next.toISOString();
    }
    return out;
  }

  start(): void {
    this.stopped = false;
    this.seenSettings = JSON.stringify(this.options.settings());
    this.catchUp();
    this.armAll();
    this.watchSettings();
  }

  /** Re-reads the settings and re-arms every schedule (queued runs stay queued). */
  reload(): void {
    if (this.stopped) return;
    this.seenSettings = JSON.stringify(this.options.settings());
    for (const h of this.timers.values()) this.clock.clearTimeout(h);
    this.timers.clear();
    this.armAll();
    this.log('info', `schedules reloaded: ${this.describe()}`);
  }

  stop(): void {
    this.stopped = true;
    for (const h of this.timers.values()) this.clock.clearTimeout(h);
    for (const w of this.waiting.values()) this.clock.clearTimeout(w.handle);
    this.timers.clear();
    this.waiting.clear();
    if (this.reloadTimer) this.clock.clearTimeout(this.reloadTimer);
    this.reloadTimer = null;
  }

  describe(): string {
    const next = this.nextRuns();
    const parts = TASKS.filter((t) => next[t]).map((t) => `${t} next at ${next[t]}`);
    return parts.length ? parts.join(', ') : 'nothing scheduled';
  }

  private watchSettings(): void {
    const tick = () => {
      if (this.stopped) return;
      if (JSON.stringify(this.options.settings()) !== this.seenSettings) this.reload();
      this.reloadTimer = this.clock.setTimeout(tick, this.options.reloadMs ?? 30_000);
    };
    this.reloadTimer = this.clock.setTimeout(tick, this.options.reloadMs ?? 30_000);
  }

  /** At start: a run missed while Stowage was down runs once now (runMissed), else is logged. */
  private catchUp(): void {
    const settings = this.options.settings();
    const now = this.clock.now();
    for (const task of TASKS) {
      const c = taskCron(settings, task);
      if (!c) continue;
      const last = this.options.state.get(task);
      if (!last) {
        // First start with this schedule: it begins now; nothing was missed.
        this.options.state.set(task, new Date(now).toISOString());
        continue;
      }
      const [previous] = new Cron(c.cron, { paused: true, timezone: c.timezone }).previousRuns(1, new Date(now));
      if (!previous || previous.getTime() <= Date.parse(last)) continue;
      const runNow = settings.backups.runMissed;
      this.options.events.emit('schedule.missed', { job: task, scheduledFor: previous.toISOString(), runNow });
      this.log('warn', `the ${task} scheduled for ${previous.toISOString()} was missed while Stowage was not running${runNow ? '; running it now' : ' (runMissed is off)'}`);
      if (runNow) this.fire(task, { scheduledFor: previous, delayedMs: 0, waitedFor: null, missed: true });
      else this.options.state.set(task, previous.toISOString());
    }
  }

  private armAll(): void {
    for (const task of TASKS) this.arm(task);
  }

  private arm(task: TaskName): void {
    const c = taskCron(this.options.settings(), task);
    if (!c || this.stopped) return;
    const next = new Cron(c.cron, { paused: true, timezone: c.timezone }).nextRun(new Date(this.clock.now()));
    if (!next) return;
    const wake = () => {
      this.timers.delete(task);
      if (this.stopped) return;
      if (this.clock.now() >= next.getTime()) {
        this.fire(task, { scheduledFor: next, delayedMs: 0, waitedFor: null, missed: false });
        this.arm(task);
      } else {
        this.timers.set(task, this.clock.setTimeout(wake, Math.min(next.getTime() - this.clock.now(), MAX_STEP_MS)));
      }
    };
    this.timers.set(task, this.clock.setTimeout(wake, Math.min(Math.max(0, next.getTime() - this.clock.now()), MAX_STEP_MS)));
  }

  /** Runs a task now, or queues it (once) behind the job that is running. */
  private fire(task: TaskName, run: TaskRun): void {
    if (this.waiting.has(task)) return; // already queued: a second due run is the same run
    if (this.running.has(task)) {
      this.log('warn', `the ${task} scheduled for ${run.scheduledFor.toISOString()} is skipped: the previous one is still running`);
      return;
    }
    this.options.state.set(task, run.scheduledFor.toISOString());
    const blocker = this.options.busy();
    if (blocker) this.wait(task, run, blocker);
    else void this.execute(task, run);
  }

  private wait(task: TaskName, run: TaskRun, blocker: string): void {
    const since = this.clock.now() - run.delayedMs;
    if (!run.waitedFor) {
      this.options.events.emit('schedule.delayed', { job: task, scheduledFor: run.scheduledFor.toISOString(), waitingFor: blocker });
      this.log('info', `the ${task} scheduled for ${run.scheduledFor.toISOString()} waits: ${blocker} is running`);
    }
    const poll = () => {
      this.waiting.delete(task);
      if (this.stopped) return;
      const delayed = { ...run, delayedMs: this.clock.now() - since, waitedFor: run.waitedFor ?? blocker };
      const still = this.options.busy();
      if (still) this.wait(task, delayed, still);
      else void this.execute(task, delayed);
    };
    this.waiting.set(task, { run, since, handle: this.clock.setTimeout(poll, this.options.pollMs ?? 5000) });
  }

  private async execute(task: TaskName, run: TaskRun): Promise<void> {
    this.running.add(task);
    try {
      await this.options.run[task](run);
    } catch (err) {
      if (isStowageError(err, 'BUSY')) {
        // Another process took the lock between the check and the start: wait for it.
        this.running.delete(task);
        this.wait(task, run, 'another job');
        return;
      }
      this.log('error', `the scheduled ${task} failed: ${errorMessage(err)}`);
    } finally {
      this.running.delete(task);
    }
  }
}
