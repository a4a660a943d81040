import type { Progress } from '../events/events.js';
import { formatBytes, formatCount, formatDuration, formatRate } from './format.js';

/**
 * A one-line progress bar on stderr (TTY only): phase, bar, bytes, files, rate and ETA.
 * Hand-written: it renders our own Progress events and is ~40 lines; a library would add
 * more configuration than code.
 */
export class ProgressBar {
  private lastDraw = 0;
  private drawn = false;

  constructor(private readonly stream: NodeJS.WriteStream = process.stderr) {}

  get enabled(): boolean {
    return Boolean(this.stream.isTTY) && process.env.CI !== 'true';
  }

  update(p: Progress, force = false): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (!force && now - this.lastDraw < 100) return;
    this.lastDraw = now;
    const width = Math.max(10, Math.min(30, (this.stream.columns ?? 80) - 70));
    const fraction = p.bytesTotal > 0 ? Math.min(1, p.bytes / p.bytesTotal) : 0;
    const filled = Math.round(fraction * width);
    const bar = p.bytesTotal > 0 ? `${'█'.repeat(filled)}${'░'.repeat(width - filled)} ${String(Math.floor(fraction * 100)).padStart(3)}%` : '…';
    const rate = p.elapsedMs > 500 ? formatRate(p.bytes, p.elapsedMs) : '';
    const bytesPerMs = p.elapsedMs > 0 ? p.bytes / p.elapsedMs : 0;
    const eta = p.bytesTotal > 0 && bytesPerMs > 0 && p.bytes < p.bytesTotal ? `ETA ${formatDuration((p.bytesTotal - p.bytes) / bytesPerMs)}` : '';
    const files = p.filesTotal > 0 ? `${formatCount(p.files)}/${formatCount(p.filesTotal)} files` : `${formatCount(p.files)} files`;
    const size = p.bytesTotal > 0 ? `${formatBytes(p.bytes)} / ${formatBytes(p.bytesTotal)}` : formatBytes(p.bytes);
    const line = `${p.phase.padEnd(13)} ${bar}  ${size}  ${files}  ${rate}  ${eta}`.trimEnd();
    this.stream.write(`\r\x1b[2K${line.slice(0, (this.stream.columns ?? 120) - 1)}`);
    this.drawn = true;
  }

  done(): void {
    if (this.drawn) this.stream.write('\r\x1b[2K');
    this.drawn = false;
  }
}
