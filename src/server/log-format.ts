/**
 * Pino writes JSON lines (right for log collectors). On a terminal they are hard to read, so
 * `stowage serve` formats them as `07:12:03 INFO  message  GET /api/backups 200 4 ms` there.
 */
const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO ', 40: 'WARN ', 50: 'ERROR', 60: 'FATAL' };

export function formatLogLine(line: string): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  const time = new Date(Number(rec.time)).toTimeString().slice(0, 8);
  const level = LEVELS[Number(rec.level)] ?? String(rec.level);
  const req = rec.req as { method?: string; url?: string } | undefined;
  const res = rec.res as { statusCode?: number } | undefined;
  const parts = [time, level, String(rec.msg ?? '')];
  if (req?.method) parts.push(`${req.method} ${req.url}`);
  if (res?.statusCode) parts.push(String(res.statusCode));
  if (typeof rec.responseTime === 'number') parts.push(`${rec.responseTime.toFixed(0)} ms`);
  const err = rec.err as { message?: string } | undefined;
  if (err?.message) parts.push(`(${err.message})`);
  return `${parts.join('  ')}\n`;
}

/** A pino destination that prints formatted lines to stdout. */
export const prettyStdout = { write: (line: string) => process.stdout.write(formatLogLine(line)) };
