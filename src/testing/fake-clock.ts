import type { Clock } from '../schedule/scheduler.js';

/** A clock that only moves when the test says so; due timers run in time order. */
export class FakeClock implements Clock {
  private t: number;
  private timers: Array<{ at: number; fn: () => void; id: number }> = [];
  private nextId = 1;

  constructor(start: string) {
    this.t = Date.parse(start);
  }

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.push({ at: this.t + Math.max(0, ms), fn, id });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.timers = this.timers.filter((t) => t.id !== handle);
  }

  /**
   * Moves time forward, running every timer that falls due; `settle` is awaited after each
   * (promises in between; real work such as a backup needs a real wait, e.g. until idle).
   */
  async advance(ms: number, settle: () => Promise<void> = async () => {
    for (let i = 0; i < 10; i++) await Promise.resolve();
  }): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at || a.id - b.id);
      const next = this.timers[0];
      if (!next || next.at > end) break;
      this.timers.shift();
      this.t = next.at;
      next.fn();
      await settle();
    }
    this.t = end;
  }
}
