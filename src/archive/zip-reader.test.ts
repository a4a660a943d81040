import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StowageError } from '../errors.js';
import { buildZip, manifestRawEntry, rawEntry, stowageEntries, validManifest, type RawEntry, type TreeItem } from '../testing/evil-zip.js';
import { makeTempDir, removeDir } from '../testing/tmp.js';
import { ArchiveReader } from './zip-reader.js';

/**
 * The reader's compact index (entry ids into typed arrays, the manifest streamed in): what it
 * answers for each entry, and that hostile archives still fail cleanly with the stable codes.
 * test/hostile-archives.test.ts runs the same refusals end to end through the CLI.
 */
let dir: string;
let counter = 0;
beforeAll(() => {
  dir = makeTempDir('stowage-reader-');
});
afterAll(() => removeDir(dir));

function write(zip: Buffer): string {
  const file = path.join(dir, `a${counter++}.zip`);
  fs.writeFileSync(file, zip);
  return file;
}

async function refusal(entries: RawEntry[]): Promise<StowageError> {
  const err = await ArchiveReader.open(write(buildZip(entries))).then(
    (r) => {
      r.close();
      return null;
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(StowageError);
  return err as StowageError;
}

const items: TreeItem[] = [
  { path: 'files/', type: 'dir' },
  { path: 'files/a.txt', data: 'alpha\n' },
  { path: 'files/sub/', type: 'dir', perm: 0o2775 },
  { path: 'files/sub/b.txt', data: 'bravo\n'.repeat(1000), perm: 0o600 },
  { path: 'files/link', type: 'symlink', data: 'a.txt' },
  { path: 'files/empty.txt', data: '' },
];

describe('ArchiveReader index', () => {
  it('answers name, type, size, mode, time and lookup per entry id, in archive order', async () => {
    const reader = await ArchiveReader.open(write(buildZip(stowageEntries(items))));
    try {
      expect([...reader.order].map((id) => reader.name(id))).toEqual(['files', 'files/a.txt', 'files/sub', 'files/sub/b.txt', 'files/link', 'files/empty.txt']);
      expect([...reader.order].map((id) => reader.type(id))).toEqual(['dir', 'file', 'dir', 'file', 'symlink', 'file']);
      const b = reader.find('files/sub/b.txt');
      expect(reader.size(b)).toBe(6000);
      expect(reader.mode(b)).toBe(0o600);
      expect(reader.mode(reader.find('files/sub/'))).toBe(0o2775);
      expect(reader.find('files/sub')).toBe(reader.find('files/sub/'));
      expect(reader.mtimeMs(b)).toBe(Date.parse('2020-01-02T03:04:06.000Z'));
      expect(reader.owner(b)).toBeUndefined();
      expect(reader.find('files/nothing')).toBe(-1);
      expect(reader.find('stowage.json')).toBe(-1);
      expect(reader.header.sources.map((s) => s.name)).toEqual(['files']);
      for (const id of reader.order) await reader.verifyEntry(id);
      expect(() => reader.checkDigest(b, 6000, crypto.createHash('sha256').update('other').digest())).toThrow(/SHA-256 does not match/);
      expect(() => reader.checkDigest(b, 5999, Buffer.alloc(32))).toThrow(/5999 bytes in the archive, 6000 in the manifest/);
      const full = await reader.readManifest();
      expect(full.entries.map((e) => e.path)).toEqual(items.map((i) => i.path));
    } finally {
      reader.close();
    }
  });

  it('finds every one of thousands of entries, and reads a stored manifest of several MiB', async () => {
    const many: TreeItem[] = [{ path: 'files/', type: 'dir' }];
    for (let i = 0; i < 3000; i++) many.push({ path: `files/d${i % 37}-${'x'.repeat(i % 300)}/`, type: 'dir' });
    const unique = [...new Map(many.map((m) => [m.path, m])).values()];
    for (let i = 0; i < 4000; i++) unique.push({ path: `files/f${i}.txt`, data: `${i}\n` });
    const manifest = validManifest(unique);
    // Padding in the header makes the (stored) manifest span several 1 MiB reads.
    const padded = { ...manifest, description: 'p'.repeat(3 * 1024 * 1024) };
    const entries = [...unique.map(rawEntry), { ...manifestRawEntry(JSON.stringify(padded)), method: 0 }];
    const reader = await ArchiveReader.open(write(buildZip(entries)));
    try {
      expect(reader.order.length).toBe(unique.length);
      for (const item of unique) {
        const id = reader.find(item.path);
        expect(id, item.path).toBeGreaterThanOrEqual(0);
        expect(reader.name(id)).toBe(item.path.replace(/\/$/, ''));
      }
      expect(reader.header.description.length).toBe(3 * 1024 * 1024);
    } finally {
      reader.close();
    }
  });

  it('keeps owner ids when the manifest has them', async () => {
    const manifest = validManifest(items);
    for (const e of manifest.entries) Object.assign(e, { uid: 1000, gid: 4294967294 });
    const reader = await ArchiveReader.open(write(buildZip(stowageEntries(items, manifest))));
    try {
      expect(reader.owner(reader.find('files/a.txt'))).toEqual({ uid: 1000, gid: 4294967294 });
    } finally {
      reader.close();
    }
  });
});

describe('ArchiveReader index: hostile archives still fail cleanly', () => {
  it('refuses two names that differ in bytes but decode to the same (invalid UTF-8)', async () => {
    const entries = stowageEntries(items);
    entries.splice(1, 0, { name: Buffer.from([0x66, 0x69, 0x6c, 0x65, 0x73, 0x2f, 0xff]), data: 'x' }, { name: Buffer.from([0x66, 0x69, 0x6c, 0x65, 0x73, 0x2f, 0xfe]), data: 'y' });
    const err = await refusal(entries);
    expect(err.code).toBe('ARCHIVE_UNSAFE');
    expect(err.message).toMatch(/two entries are named "files\/\uFFFD"/);
  });

  it.each([
    ['a duplicate name', (e: RawEntry[]) => e.splice(2, 0, rawEntry({ path: 'files/a.txt', data: 'again' })), 'ARCHIVE_UNSAFE', /two entries are named "files\/a\.txt"/],
    ['a file named like a folder', (e: RawEntry[]) => e.splice(2, 0, rawEntry({ path: 'files/sub', data: 'x' })), 'ARCHIVE_UNSAFE', /two entries are named "files\/sub"/],
    ['a path climbing out', (e: RawEntry[]) => e.splice(2, 0, rawEntry({ path: 'files/../x', data: 'x' })), 'ARCHIVE_UNSAFE', /climbs out of its folder/],
    ['an unlisted entry', (e: RawEntry[]) => e.splice(2, 0, rawEntry({ path: 'files/extra', data: 'x' })), 'ARCHIVE_UNSAFE', /"files\/extra" is not listed in the manifest/],
    ['overlapping entries', (e: RawEntry[]) => e.splice(2, 0, { ...rawEntry({ path: 'files/x', data: 'alpha\n' }), shareLocalWith: 1 }), 'ARCHIVE_UNSAFE', /overlap in the file/],
    ['a zip-bomb ratio', (e: RawEntry[]) => Object.assign(e[1]!, { uncompressedSize: 50_000_000 }), 'ARCHIVE_UNSAFE', /compression ratio/],
  ])('refuses %s', async (_label, damage, code, message) => {
    const entries = stowageEntries(items);
    damage(entries);
    const err = await refusal(entries);
    expect(err.code).toBe(code);
    expect(err.message).toMatch(message);
  });

  it.each([
    ['listing a path twice', (m: ReturnType<typeof validManifest>) => m.entries.push(m.entries[1]!), 'ARCHIVE_UNSAFE', /the manifest lists "files\/a\.txt" twice/],
    ['listing a missing path twice', (m: ReturnType<typeof validManifest>) => m.entries.push({ ...m.entries[1]!, path: 'files/m' }, { ...m.entries[1]!, path: 'files/m' }), 'ARCHIVE_UNSAFE', /lists "files\/m" twice/],
    ['listing a path the archive lacks', (m: ReturnType<typeof validManifest>) => m.entries.push({ ...m.entries[1]!, path: 'files/m' }), 'ARCHIVE_INVALID', /lists "files\/m" but the archive does not contain it/],
    ['a wrong size', (m: ReturnType<typeof validManifest>) => (m.entries[1]!.size += 1), 'ARCHIVE_UNSAFE', /is 6 bytes in the archive but 7 in the manifest/],
    ['a wrong type', (m: ReturnType<typeof validManifest>) => (m.entries[4]!.type = 'file'), 'ARCHIVE_UNSAFE', /is a symlink in the archive but a file in the manifest/],
    ['a bad entry shape after a listing problem (shape wins, as before)', (m: ReturnType<typeof validManifest>) => {
      m.entries.push(m.entries[1]!);
      m.entries.push({ ...m.entries[1]!, mode: 'rw' });
    }, 'ARCHIVE_INVALID', /malformed at entries\.7\.mode/],
    ['a newer version with entries of another shape', (m: ReturnType<typeof validManifest>) => {
      m.formatVersion = 2;
      (m.entries as unknown[]).unshift({ whatever: true });
    }, 'FORMAT_UNSUPPORTED', /version 2/],
  ])('refuses a manifest %s', async (_label, damage, code, message) => {
    const manifest = validManifest(items);
    damage(manifest);
    const err = await refusal(stowageEntries(items, manifest));
    expect(err.code).toBe(code);
    expect(err.message).toMatch(message);
  });

  it('refuses a manifest whose entries come before its header, if the header is wrong', async () => {
    const { entries, ...header } = validManifest(items);
    const text = JSON.stringify({ entries, ...header, format: 'tarball' });
    const err = await refusal(stowageEntries(items, text));
    expect(err.code).toBe('ARCHIVE_INVALID');
    expect(err.message).toMatch(/does not describe a Stowage backup/);
  });
});
