import { describe, expect, it } from 'vitest';
import { formatBytes, formatDuration, formatRate, table } from './format.js';
import { ProgressBar } from './progress.js';

describe('human formats', () => {
  it('formats sizes with decimal units', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(999)).toBe('999 B');
    expect(formatBytes(1500)).toBe('1.50 kB');
    expect(formatBytes(495_045_187)).toBe('495 MB');
    expect(formatBytes(4.5e12)).toBe('4.50 TB');
  });
  it('formats durations and rates', () => {
    expect(formatDuration(450)).toBe('450 ms');
    expect(formatDuration(3200)).toBe('3.2 s');
    expect(formatDuration(125_000)).toBe('2 min 5 s');
    expect(formatDuration(3_900_000)).toBe('1 h 5 min');
    expect(formatRate(100e6, 2000)).toBe('50.0 MB/s');
  });
  it('aligns tables', () => {
    expect(table(['A', 'LONGER'], [['x', 'y'], ['wide cell', 'z']])).toBe('A          LONGER\nx          y\nwide cell  z');
  });
});

describe('ProgressBar', () => {
  it('draws phase, bar, bytes, files, rate and ETA on a TTY', () => {
    let written = '';
    const fake = { isTTY: true, columns: 140, write: (s: string) => ((written += s), true) } as unknown as NodeJS.WriteStream;
    const ci = process.env.CI;
    delete process.env.CI;
    try {
      const bar = new ProgressBar(fake);
      bar.update({ phase: 'archiving', files: 500, filesTotal: 1000, bytes: 50e6, bytesTotal: 100e6, elapsedMs: 2000 }, true);
      expect(written).toMatch(/archiving .*█+░+\s+50%\s+50.0 MB \/ 100 MB\s+500\/1,000 files\s+25.0 MB\/s\s+ETA 2.0 s/);
      bar.done();
      expect(written.endsWith('\r\x1b[2K')).toBe(true);
    } finally {
      if (ci !== undefined) process.env.CI = ci;
    }
  });
  it('stays silent when stderr is not a terminal', () => {
    let written = '';
    const fake = { isTTY: false, write: (s: string) => ((written += s), true) } as unknown as NodeJS.WriteStream;
    new ProgressBar(fake).update({ phase: 'x', files: 1, filesTotal: 2, bytes: 1, bytesTotal: 2, elapsedMs: 1 }, true);
    expect(written).toBe('');
  });
});
