import fs from 'node:fs';

/**
 * Named failure points for crash tests (the etcd/FoundationDB practice): the test sets
 * STOWAGE_FAILPOINTS="restore.swap=kill@2" and the process dies with SIGKILL right there, so
 * recovery is tested against a real dead process, not a simulated one. Unset, this is a no-op.
 *
 *   name=kill        SIGKILL at the first hit      name=kill@N    at the N-th hit (1-based)
 *   name=error       throw at the first hit        name=error@N   throw at the N-th hit
 *   name=wait        block (this thread) until the file $STOWAGE_FAILPOINT_RELEASE exists:
 *                    a test holds a job open, e.g. to see a second one refused
 */
const hits = new Map<string, number>();

export function failpoint(name: string): void {
  const spec = process.env.STOWAGE_FAILPOINTS;
  if (!spec) return;
  for (const item of spec.split(',')) {
    const [fpName, action] = item.split('=');
    if (fpName !== name || !action) continue;
    const [what, nth] = action.split('@');
    const count = (hits.get(name) ?? 0) + 1;
    hits.set(name, count);
    if (nth !== undefined && Number(nth) !== count) continue;
    if (what === 'kill') process.kill(process.pid, 'SIGKILL');
    if (what === 'error') throw new Error(`injected failure at ${name} (STOWAGE_FAILPOINTS)`);
    if (what === 'wait') waitForRelease();
  }
}

function waitForRelease(): void {
  const file = process.env.STOWAGE_FAILPOINT_RELEASE;
  if (!file) throw new Error('STOWAGE_FAILPOINTS has "wait" but STOWAGE_FAILPOINT_RELEASE names no file');
  const cell = new Int32Array(new SharedArrayBuffer(4));
  while (!fs.existsSync(file)) Atomics.wait(cell, 0, 0, 10);
}
