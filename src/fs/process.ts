import fs from 'node:fs';

/**
 * Who owns a temporary file or a lock: a pid alone is not enough, because pids are reused (a
 * server in a container is pid 1 after every restart). The Linux process start time tells a
 * reused pid from the process that wrote the file.
 */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22 (starttime) follows the command name in parentheses, which may contain spaces.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[19];
  } catch {
    return undefined;
  }
}

/** True if a process with this pid exists on this host. */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

let ownTag: string | undefined;

/** `<pid>-<start time>` of this process: embedded in the names of its temporary files. */
export function processTag(): string {
  ownTag ??= `${process.pid}-${processStartTime(process.pid) ?? '0'}`;
  return ownTag;
}

/** True if the process that made `tag` (see processTag) is still running. */
export function isProcessTagAlive(tag: string): boolean {
  const m = /^(\d+)-(\d+)$/.exec(tag);
  if (!m) return false;
  const pid = Number(m[1]);
  if (!isProcessAlive(pid)) return false;
  const start = processStartTime(pid);
  return start === undefined || m[2] === '0' || start === m[2];
}
