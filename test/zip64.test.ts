import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import yauzl from 'yauzl';
import { ZipWriter } from '../src/archive/zip-writer.js';
import { stowage } from '../src/testing/cli.js';
import { makeTempDir, removeDir, run } from '../src/testing/tmp.js';

/**
 * zip64: entries over 4 GiB and entries whose offset lies past 4 GiB, made from sparse files
 * (no disk used for the sources). The big archives and restores go to tmpfs (/dev/shm) when it
 * has room, so the test costs memory for a moment rather than disk.
 */
const GiB = 1024 ** 3;
const BIG = 4 * GiB + 123_457; // past the 32-bit limit, odd on purpose

function scratchRoot(need: number): string | null {
  for (const dir of ['/dev/shm', process.env.TMPDIR ?? '/tmp']) {
    try {
      const st = fs.statfsSync(dir);
      if (st.bavail * st.bsize > need * 1.2) return dir;
    } catch {
      // not there
    }
  }
  return null;
}

function sparseFile(file: string, size: number, marker: string): void {
  const fd = fs.openSync(file, 'w');
  fs.writeSync(fd, marker, 0); // a little content at the start and the end, zeros between
  fs.writeSync(fd, marker, size - marker.length);
  fs.closeSync(fd);
}

function sha256File(file: string): string {
  const hash = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.allocUnsafe(8 * 1024 * 1024);
  try {
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      hash.update(buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}

let dir: string;
beforeEach(() => {
  dir = makeTempDir('stowage-zip64-');
});
afterEach(() => removeDir(dir));

describe('zip64', () => {
  const shm = scratchRoot(BIG + 64 * 1024 * 1024);

  it.skipIf(!shm)('writes offsets past 4 GiB that unzip and yauzl read', { timeout: 300_000 }, async () => {
    const work = fs.mkdtempSync(path.join(shm!, 'stowage-zip64-'));
    try {
      const big = path.join(dir, 'big.bin');
      sparseFile(big, BIG, 'BIG!');
      const small = path.join(dir, 'after.txt');
      fs.writeFileSync(small, 'the entry after the big one');
      const out = path.join(work, 'offsets.zip');
      const stream = fs.createWriteStream(out);
      const w = new ZipWriter(stream, { spoolPath: path.join(dir, 'cd.spool'), storeOnly: true });
      await w.add({ kind: 'file', name: 'big.bin', path: big, size: BIG, mode: 0o644, mtimeMs: Date.now() });
      await w.add({ kind: 'file', name: 'after.txt', path: small, size: fs.statSync(small).size, mode: 0o644, mtimeMs: Date.now() });
      const { size } = await w.finish();
      await new Promise<void>((resolve) => stream.end(resolve));
      expect(size).toBeGreaterThan(BIG);

      expect(run('unzip', ['-tq', out]).stdout).toContain('No errors detected');
      expect(run('unzip', ['-p', out, 'after.txt']).stdout).toBe('the entry after the big one');
      const entries = await new Promise<yauzl.Entry[]>((resolve, reject) => {
        yauzl.open(out, { lazyEntries: false }, (err, zip) => {
          if (err) return reject(err);
          const list: yauzl.Entry[] = [];
          zip.on('entry', (e: yauzl.Entry) => list.push(e));
          zip.on('end', () => {
            zip.close();
            resolve(list);
          });
        });
      });
      const after = entries.find((e) => e.fileName === 'after.txt')!;
      expect(after.relativeOffsetOfLocalHeader).toBeGreaterThan(0xffffffff);
      expect(entries.find((e) => e.fileName === 'big.bin')!.uncompressedSize).toBe(BIG);
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  });

  it.skipIf(!shm)('backs up, verifies and restores a file over 4 GiB through the CLI', { timeout: 300_000 }, () => {
    const app = path.join(dir, 'app');
    fs.mkdirSync(app);
    sparseFile(path.join(app, 'disk.img'), BIG, 'IMG!');
    fs.writeFileSync(path.join(app, 'small.txt'), 'small');
    fs.writeFileSync(path.join(dir, 'stowage.yaml'), 'dataDir: data\napp: { name: big, version: "1" }\nsources:\n  - { name: files, kind: dir, path: ./app }\n');
    const backup = stowage(dir, ['backup', '--name', 'big', '--json']);
    expect(backup.status).toBe(0);
    const archive = path.join(dir, 'data/backups/big.zip');
    expect(run('unzip', ['-tq', archive]).stdout).toContain('No errors detected');
    const listing = run('unzip', ['-Zl', archive]).stdout;
    expect(listing).toMatch(new RegExp(`${BIG}\\s`)); // the full 64-bit size, not a truncated one
    expect(stowage(dir, ['verify', 'big.zip', '--json']).result).toMatchObject({ ok: true });

    const target = fs.mkdtempSync(path.join(shm!, 'stowage-zip64-restore-'));
    try {
      const r = stowage(dir, ['restore', 'big.zip', '--target', target, '--json']);
      expect(r.status).toBe(0);
      const restored = path.join(target, 'files/disk.img');
      expect(fs.statSync(restored).size).toBe(BIG);
      expect(sha256File(restored)).toBe(sha256File(path.join(app, 'disk.img')));
      expect(fs.readFileSync(path.join(target, 'files/small.txt'), 'utf8')).toBe('small');
    } finally {
      fs.rmSync(target, { recursive: true, force: true });
    }
  });
});
