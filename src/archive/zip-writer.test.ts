import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ZipWriter, type WrittenEntry } from './zip-writer.js';
import { hasCommand, makeTempDir, removeDir, run } from '../testing/tmp.js';

let dir: string;
beforeEach(() => {
  dir = makeTempDir();
});
afterEach(() => removeDir(dir));

async function build(entries: Parameters<ZipWriter['add']>[0][], opts: { storeOnly?: boolean } = {}) {
  const out = path.join(dir, 'out.zip');
  const stream = fs.createWriteStream(out);
  const written: WrittenEntry[] = [];
  const w = new ZipWriter(stream, { spoolPath: path.join(dir, 'cd.spool'), onEntry: (e) => written.push(e), ...opts });
  for (const e of entries) await w.add(e);
  const result = await w.finish();
  await new Promise<void>((resolve, reject) => stream.end((err?: Error | null) => (err ? reject(err) : resolve())));
  return { out, written, result };
}

function fileInput(name: string, p: string) {
  const st = fs.statSync(p);
  return { kind: 'file' as const, name, path: p, size: st.size, mode: st.mode, mtimeMs: st.mtimeMs };
}

describe('ZipWriter', () => {
  it('writes an archive that unzip accepts, with stored and deflated entries', async () => {
    const text = path.join(dir, 'text.txt');
    fs.writeFileSync(text, 'hello world\n'.repeat(300_000)); // 3.6 MB: several deflate chunks
    const rnd = path.join(dir, 'random.bin');
    fs.writeFileSync(rnd, crypto.randomBytes(2_500_000));
    const small = path.join(dir, 'small.json');
    fs.writeFileSync(small, JSON.stringify({ a: 1, b: 'two'.repeat(100) }));
    const empty = path.join(dir, 'empty');
    fs.writeFileSync(empty, '');
    const { out, written, result } = await build([
      { kind: 'dir', name: 'src/', mode: 0o755, mtimeMs: Date.UTC(2024, 0, 2, 3, 4, 6) },
      fileInput('src/text.txt', text),
      fileInput('src/random.bin', rnd),
      fileInput('src/small.json', small),
      fileInput('src/ünïcødé name.txt', small),
      fileInput('src/empty', empty),
      { kind: 'symlink', name: 'src/link', target: 'text.txt', mode: 0o777, mtimeMs: Date.now() },
    ]);
    expect(result.entries).toBe(7);
    expect(fs.statSync(out).size).toBe(result.size);
    const byName = Object.fromEntries(written.map((e) => [e.name, e]));
    expect(byName['src/text.txt']!.method).toBe('deflate');
    expect(byName['src/text.txt']!.compressedSize).toBeLessThan(100_000);
    expect(byName['src/random.bin']!.method).toBe('store');
    expect(byName['src/text.txt']!.sha256).toBe(crypto.createHash('sha256').update(fs.readFileSync(text)).digest('hex'));
    const t = run('unzip', ['-t', out]);
    expect(t.stdout + t.stderr).toContain('No errors detected');
    expect(t.status).toBe(0);
    const x = path.join(dir, 'x');
    expect(run('unzip', ['-q', out, '-d', x]).status).toBe(0);
    expect(fs.readFileSync(path.join(x, 'src/text.txt')).equals(fs.readFileSync(text))).toBe(true);
    expect(fs.readFileSync(path.join(x, 'src/random.bin')).equals(fs.readFileSync(rnd))).toBe(true);
    expect(fs.readlinkSync(path.join(x, 'src/link'))).toBe('text.txt');
    expect(fs.readFileSync(path.join(x, 'src/ünïcødé name.txt'), 'utf8')).toContain('two');
    // The extended timestamp field carries the exact second.
    expect(fs.statSync(path.join(x, 'src')).mtimeMs).toBe(Date.UTC(2024, 0, 2, 3, 4, 6));
  });

  it.runIf(hasCommand('7z'))('is accepted by 7z', async () => {
    const f = path.join(dir, 'f.txt');
    fs.writeFileSync(f, 'abc'.repeat(1_000_000));
    const { out } = await build([fileInput('f.txt', f)]);
    const t = run('7z', ['t', out]);
    expect(t.stdout).toContain('Everything is Ok');
  });

  it('uses zip64 end records past 65535 entries', async () => {
    const entries = [];
    for (let i = 0; i < 70_000; i++) entries.push({ kind: 'dir' as const, name: `d${i}/`, mode: 0o755, mtimeMs: Date.now() });
    const { out, result } = await build(entries);
    expect(result.entries).toBe(70_000);
    const t = run('unzip', ['-tq', out]);
    expect(t.stdout).toContain('No errors detected');
  });

  it('refuses duplicate names', async () => {
    const stream = fs.createWriteStream(path.join(dir, 'o.zip'));
    const w = new ZipWriter(stream, { spoolPath: path.join(dir, 's') });
    await w.add({ kind: 'dir', name: 'a/', mode: 0o755, mtimeMs: 0 });
    await expect(w.add({ kind: 'dir', name: 'a/', mode: 0o755, mtimeMs: 0 })).rejects.toThrow(/duplicate/);
    await w.abort(new Error('test'));
    stream.destroy();
  });

  it('skips a file that cannot be opened and reports why', async () => {
    const skipped: string[] = [];
    const stream = fs.createWriteStream(path.join(dir, 'o.zip'));
    const w = new ZipWriter(stream, { spoolPath: path.join(dir, 's'), onSkip: (s) => skipped.push(`${s.name}: ${s.reason}`) });
    await w.add({ kind: 'file', name: 'gone', path: path.join(dir, 'does-not-exist'), size: 10, mode: 0o644, mtimeMs: 0 });
    await w.add({ kind: 'dir', name: 'kept/', mode: 0o755, mtimeMs: Date.now() });
    const result = await w.finish();
    expect(result.entries).toBe(1);
    await new Promise<void>((r) => stream.end(r));
    expect(skipped).toEqual(['gone: vanished while the backup ran']);
    expect(run('unzip', ['-tq', path.join(dir, 'o.zip')]).status).toBe(0);
  });
});
