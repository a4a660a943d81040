/**
 * A condition to wait on inside one process: `wait()` resolves at the next `fire()`, which wakes
 * every waiter at once (cheaper than waking every waiter on every change). Waiters re-check their
 * condition after waking. Used where producers and consumers of a stream meet (the ZIP writer's
 * read-ahead, the threaded age writer's batches).
 */
export class Signal {
  private waiters: Array<() => void> = [];

  wait(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  fire(): void {
    if (!this.waiters.length) return;
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}
