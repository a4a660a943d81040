/**
 * The restore status (GET /api/restore-status), kept current from restore.* events, polled
 * while a restore runs in case an event is missed. Shared by the banner and the restore dialog.
 */
import { useEffect, useState } from 'preact/hooks';
import { client, type Progress, type RestoreStatus, type ServerEvent } from './api.js';

let status: RestoreStatus | null = null;
let live: Progress | null = null;
const listeners = new Set<() => void>();
let poll: ReturnType<typeof setInterval> | undefined;

function changed() {
  listeners.forEach((l) => l());
  const running = status?.status === 'started';
  if (running && !poll) poll = setInterval(() => void refreshRestoreStatus(), 1000);
  if (!running && poll) {
    clearInterval(poll);
    poll = undefined;
  }
}

export async function refreshRestoreStatus(): Promise<void> {
  try {
    status = await client.restoreStatus();
    if (status.status !== 'started') live = null;
    else if (status.progress) live = status.progress;
    changed();
  } catch {
    // the banner shows nothing it cannot read; the next event or poll tries again
  }
}

export function onRestoreEvent(event: ServerEvent): void {
  const d = event.data as Record<string, unknown>;
  switch (event.type) {
    case 'restore.started':
      live = null;
      status = { status: 'started', key: String(d.key), startedAt: new Date().toISOString(), lastRestoreTime: status?.lastRestoreTime ?? null, statusMessage: `restoring ${String(d.key)}`, safetyBackupKey: null, progress: null, sources: [] };
      changed();
      break;
    case 'restore.progress': {
      const { key: _key, ...p } = d as Progress & { key: string };
      live = p;
      if (status?.status !== 'started') void refreshRestoreStatus();
      changed();
      break;
    }
    case 'restore.completed':
    case 'restore.failed':
      live = null;
      if (d.status && typeof d.status === 'object') status = d.status as RestoreStatus;
      changed();
      void refreshRestoreStatus();
      break;
    case 'hello':
      void refreshRestoreStatus();
      break;
    default:
  }
}

export function useRestoreStatus(): { status: RestoreStatus | null; progress: Progress | null } {
  const [, setTick] = useState(0);
  useEffect(() => {
    const l = () => setTick((t) => t + 1);
    listeners.add(l);
    return () => void listeners.delete(l);
  }, []);
  return { status, progress: live ?? status?.progress ?? null };
}

/** The phases of a restore, in order, as the engine reports them, with what each means. */
export const RESTORE_PHASES: Array<[string, string]> = [
  ['verifying', 'Checking the archive'],
  ['staging', 'Extracting and verifying every file'],
  ['safety-backup', 'Taking the safety backup'],
  ['swapping', 'Swapping the new data in'],
  ['restoring-database', 'Restoring databases'],
  ['completed', 'Done'],
];

/** The answer of POST /restore (status "started"), so the dialog follows this restore from the start. */
export function setRestoreStatus(next: RestoreStatus): void {
  status = next;
  changed();
}
