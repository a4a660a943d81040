import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { stowage, stowageAsync, type CliResult } from '../src/testing/cli.js';
import {
  S_IFLNK,
  buildZip,
  crc32,
  listCentralDirectory,
  manifestRawEntry,
  rawEntry,
  sha256,
  stowageEntries,
  validManifest,
  type ManifestJson,
  type RawEntry,
  type TreeItem,
} from '../src/testing/evil-zip.js';
import { hasCommand, makeTempDir, removeDir, run, writeTree } from '../src/testing/tmp.js';
import { snapshotTree } from '../src/testing/tree-snapshot.js';

/**
 * Hostile archives through the real CLI process: every one must be refused with exit status 1,
 * a stable error code and a message that names the problem, and must leave the target exactly
 * as it was (no staging leftovers) with nothing written anywhere else. Each archive is built
 * byte by byte (src/testing/evil-zip.ts), starting from a manifest that is otherwise valid.
 */

/** Every path below `root` whose name contains `marker`. */
function findNamed(root: string, marker: string): string[] {
  const found: string[] = [];
  const walk = (dir: string) => {
    for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
      const abs = path.join(dir, d.name);
      if (d.name.includes(marker)) found.push(abs);
      if (d.isDirectory()) walk(abs);
    }
  };
  walk(root);
  return found;
}

/** Marker in every file name a hostile archive tries to plant; no path with it may appear. */
const PWNED = `pwned-${process.pid}`;
/** An absolute path a hostile entry names (unique to this run, so a hit cannot be stale). */
const ABSOLUTE_TARGET = path.join(os.tmpdir(), `stowage-hostile-${PWNED}.txt`);

let project: string;
/** A second project with the same configuration, where verify runs while the restore runs in the first. */
let verifier: string;
let app: string;
let outside: string;
let archives: string;

const OLD = new Date('2021-03-04T05:06:07.000Z');

const CONFIG = `dataDir: data
app:
  name: t
  version: "1.0.0"
sources:
  - name: files
    kind: dir
    path: ./app
  - name: db
    kind: sqlite
    path: ./db/app.db
`;

/** The tree every project starts with (the real backup is made of it once, see beforeAll). */
function writeAppTree(root: string): void {
  const target = path.join(root, 'app');
  writeTree(target, {
    'a.txt': 'alpha, as it was before the restore\n',
    'sub/b.txt': 'bravo\n'.repeat(2000),
    'sub/deeper/c.bin': crypto.randomBytes(4096),
    'empty/': null,
  });
  fs.writeFileSync(path.join(target, 'script.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
  fs.symlinkSync('a.txt', path.join(target, 'link'));
  for (const rel of ['a.txt', 'sub/b.txt', 'sub/deeper/c.bin', 'script.sh', 'sub/deeper', 'sub', 'empty']) fs.utimesSync(path.join(target, rel), OLD, OLD);
  fs.mkdirSync(path.join(root, 'db'));
  const db = new Database(path.join(root, 'db/app.db'));
  db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t (v) VALUES ('one'), ('two');");
  db.close();
}

/** A real backup made by the product (\`stowage backup\`) of a project like the ones below. */
let realZip: Buffer;

beforeAll(() => {
  const template = makeTempDir('stowage-hostile-real-');
  try {
    fs.writeFileSync(path.join(template, 'stowage.yaml'), CONFIG);
    writeAppTree(template);
    const r = stowage(template, ['backup', '--name', 'real', '--json']);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    realZip = fs.readFileSync(path.join(template, 'data/backups/real.zip'));
  } finally {
    removeDir(template);
  }
});

beforeEach(() => {
  project = makeTempDir('stowage-hostile-');
  app = path.join(project, 'app');
  outside = path.join(project, 'outside');
  archives = path.join(project, 'archives');
  fs.writeFileSync(path.join(project, 'stowage.yaml'), CONFIG);
  verifier = makeTempDir('stowage-hostile-verify-');
  fs.writeFileSync(path.join(verifier, 'stowage.yaml'), CONFIG);
  writeAppTree(project);
  fs.mkdirSync(outside);
  fs.mkdirSync(archives);
});

afterEach(() => {
  removeDir(project);
  removeDir(verifier);
  fs.rmSync(ABSOLUTE_TARGET, { force: true });
});

/** The tree of an otherwise valid hand-built backup: content that differs from app/. */
function baseItems(): TreeItem[] {
  return [
    { path: 'files/', type: 'dir' },
    { path: 'files/a.txt', data: 'alpha, from the hostile archive\n' },
    { path: 'files/sub/', type: 'dir' },
    { path: 'files/sub/b.txt', data: 'bravo from the archive\n' },
  ];
}

function writeArchive(name: string, zip: Buffer): string {
  const file = path.join(archives, name);
  fs.writeFileSync(file, zip);
  return file;
}

/** A Stowage archive of `items`, with `mutate` applied to its raw entries (manifest last). */
function hostile(name: string, items: TreeItem[], mutate: (entries: RawEntry[]) => RawEntry[] | void = () => {}, manifest: ManifestJson | string = validManifest(items)): string {
  const entries = stowageEntries(items, manifest);
  return writeArchive(name, buildZip(mutate(entries) ?? entries));
}

/** A copy of the real backup, for a test to damage. */
function realBackup(): { file: string; zip: Buffer } {
  return { file: path.join(archives, 'real.zip'), zip: Buffer.from(realZip) };
}

function sha256File(file: string): string {
  return sha256(fs.readFileSync(file));
}

/** Candidate places a path-traversal entry would have landed, relative to the target and its staging folder. */
function escapeCandidates(): string[] {
  const staging = path.join(app, '.stowage-restore-x', 'new');
  const out: string[] = [ABSOLUTE_TARGET, path.join(path.parse(project).root, `${PWNED}.txt`)];
  for (const base of [app, staging]) {
    for (let up = 1; up <= 4; up++) {
      const dir = path.resolve(base, ...Array<string>(up).fill('..'));
      out.push(path.join(dir, `${PWNED}.txt`), path.join(dir, 'outside', `${PWNED}.txt`));
    }
  }
  return out;
}

interface Expectation {
  code: 'ARCHIVE_UNSAFE' | 'ARCHIVE_INVALID' | 'FORMAT_UNSUPPORTED' | 'CHECKSUM_MISMATCH';
  /** What the message must say; verify's error (or its failed entries) must say it too. */
  message: RegExp;
}

function expectNoStack(r: CliResult): void {
  expect(r.stderr).not.toMatch(/\n\s+at .+:\d+:\d+/);
  expect(r.stdout).not.toMatch(/\n\s+at .+:\d+:\d+/);
}

/**
 * Restores `file` through the CLI and checks the refusal: exit 1, the code, the message, the
 * target unchanged byte for byte, no staging leftovers, nothing written elsewhere. Then verify.
 */
async function expectRefused(file: string, want: Expectation): Promise<void> {
  const appBefore = snapshotTree(app);
  const dbBefore = sha256File(path.join(project, 'db/app.db'));
  const topBefore = fs.readdirSync(project).filter((n) => n !== 'data').sort();

  // verify runs at the same time, in a twin project (its own data folder and lock).
  const [r, v] = await Promise.all([stowageAsync(project, ['restore', file, '--yes', '--json']), stowageAsync(verifier, ['verify', file, '--json'])]);
  const context = `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`;

  // Nothing anywhere else: the sibling folder, the project, the database, the usual escape targets.
  expect(fs.readdirSync(outside), context).toEqual([]);
  expect(findNamed(project, PWNED), context).toEqual([]);
  for (const p of escapeCandidates()) expect(fs.existsSync(p), `${p} exists\n${context}`).toBe(false);
  expect(fs.readdirSync(project).filter((n) => n !== 'data').sort()).toEqual(topBefore);
  expect(sha256File(path.join(project, 'db/app.db'))).toBe(dbBefore);
  expect(fs.existsSync(path.join(project, 'data/restore-journal.json'))).toBe(false);
  // The target: byte for byte, mode for mode, mtime for mtime; no .stowage-* leftovers.
  expect(snapshotTree(app), context).toEqual(appBefore);
  expect(findNamed(project, '.stowage-restore-')).toEqual([]);
  expect(fs.readdirSync(app).filter((n) => n.startsWith('.stowage'))).toEqual([]);

  expect(r.status, context).toBe(1);
  expect(r.result, context).toMatchObject({ type: 'error', code: want.code });
  expect(r.result!.message, context).toEqual(expect.any(String));
  expect(r.result!.message as string, context).toMatch(want.message);
  expect(r.stderr, context).toBe('');
  expectNoStack(r);

  // verify refuses it too: an error line with the same code, or (for damaged data, which it
  // reports entry by entry) a failed result naming the entry.
  const vContext = `stdout:\n${v.stdout}\nstderr:\n${v.stderr}`;
  expect(v.status, vContext).toBe(1);
  expectNoStack(v);
  if (want.code !== 'CHECKSUM_MISMATCH') expect(v.result?.type, vContext).toBe('error');
  if (v.result?.type === 'error') {
    expect(v.result, vContext).toMatchObject({ code: want.code });
    expect(v.result.message as string, vContext).toMatch(want.message);
  } else {
    expect(v.result, vContext).toMatchObject({ type: 'result', ok: false });
    const errors = v.result!.errors as Array<{ path: string; message: string }>;
    expect(errors.length, vContext).toBeGreaterThan(0);
    expect(errors.map((e) => `${e.path}: ${e.message}`).join('\n'), vContext).toMatch(want.message);
  }
}

describe('hostile archives: the control', () => {
  it('restores the hand-built archive these cases start from (so each refusal is about its one defect)', () => {
    const file = hostile('control.zip', baseItems());
    expect(run('unzip', ['-tq', file]).status).toBe(0);
    const v = stowage(verifier, ['verify', file, '--json']);
    expect(v.status, v.stdout + v.stderr).toBe(0);
    const r = stowage(project, ['restore', file, '--yes', '--json']);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(fs.readFileSync(path.join(app, 'a.txt'), 'utf8')).toBe('alpha, from the hostile archive\n');
    expect(fs.readFileSync(path.join(app, 'sub/b.txt'), 'utf8')).toBe('bravo from the archive\n');
    expect(fs.existsSync(path.join(app, 'script.sh'))).toBe(false);
  });

  it('restores the real backup that the damaged copies below are made from', () => {
    const { file, zip } = realBackup();
    fs.writeFileSync(file, zip);
    const r = stowage(project, ['restore', file, '--yes', '--json']);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(fs.readFileSync(path.join(app, 'a.txt'), 'utf8')).toBe('alpha, as it was before the restore\n');
  });

  it('restores symlinks that lead through other symlinks but stay inside the source (a deploy layout)', () => {
    const items: TreeItem[] = [
      ...baseItems(),
      { path: 'files/releases/', type: 'dir' },
      { path: 'files/releases/v2/', type: 'dir' },
      { path: 'files/releases/v2/bin/', type: 'dir' },
      { path: 'files/releases/v2/bin/tool', data: 'the tool\n' },
      { path: 'files/current', type: 'symlink', data: 'releases/v2' },
      { path: 'files/bin', type: 'symlink', data: 'current/bin' },
      { path: 'files/tool', type: 'symlink', data: 'bin/tool' },
      { path: 'files/v2', type: 'symlink', data: 'current/../v2' },
    ];
    const file = hostile('deploy-links.zip', items);
    const r = stowage(project, ['restore', file, '--yes', '--json']);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(fs.readFileSync(path.join(app, 'tool'), 'utf8')).toBe('the tool\n');
    expect(fs.readFileSync(path.join(app, 'v2/bin/tool'), 'utf8')).toBe('the tool\n');
    expect(fs.readlinkSync(path.join(app, 'bin'))).toBe('current/bin');
  });
});

describe('hostile archives: entry names', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['".." climbing out of the source', `files/../../outside/${PWNED}.txt`, /entry "files\/\.\.\/\.\.\/outside\/pwned-\d+\.txt" climbs out of its folder with "\.\."/],
    ['".." one level up', `files/../outside/${PWNED}.txt`, /climbs out of its folder with "\.\."/],
    ['".." at the start', `../outside/${PWNED}.txt`, /climbs out of its folder with "\.\."/],
    ['".." as the whole name', '..', /climbs out of its folder with "\.\."/],
    ['an absolute path', ABSOLUTE_TARGET, /is an absolute path/],
    ['an empty segment', `files//${PWNED}.txt`, /empty or "\." path segment/],
    ['a drive letter with a slash', `C:/${PWNED}.txt`, /entry "C:\/pwned-\d+\.txt" starts with a drive letter/],
    ['a drive-relative name', `C:${PWNED}.txt`, /starts with a drive letter/],
    ['backslashes climbing out', `files\\..\\..\\${PWNED}.txt`, /contains a backslash/],
    ['a backslash drive path', `C:\\Windows\\${PWNED}.txt`, /contains a backslash/],
    ['a NUL byte', `files/a.txt\0/../../${PWNED}.txt`, /contains a NUL byte/],
    ['a "." segment', `files/./${PWNED}.txt`, /empty or "\." path segment/],
  ];
  it.each(cases)('refuses %s', async (_label, name, message) => {
    const items = [...baseItems(), { path: name, data: 'planted by a hostile archive\n' }];
    const file = hostile('names.zip', items);
    await expectRefused(file, { code: 'ARCHIVE_UNSAFE', message });
  });

  it('refuses a hostile path that only the manifest names', async () => {
    const items = baseItems();
    const manifest = validManifest(items);
    manifest.entries.push({ ...manifest.entries[1]!, path: `files/../../outside/${PWNED}.txt` });
    const file = hostile('manifest-name.zip', items, undefined, manifest);
    await expectRefused(file, { code: 'ARCHIVE_UNSAFE', message: /climbs out of its folder/ });
  });
});

describe('hostile archives: symlinks', () => {
  const cases: Array<[string, string, string, RegExp]> = [
    ['"../../outside"', 'files/link', '../../outside', /symlink "files\/link" points to "\.\.\/\.\.\/outside", outside its source/],
    ['"/etc"', 'files/link', '/etc', /symlink "files\/link" points to "\/etc", outside its source/],
    ['".." (the parent of the target)', 'files/link', '..', /points to "\.\.", outside its source/],
    ['out of a subfolder', 'files/sub/link', '../../outside', /points to "\.\.\/\.\.\/outside", outside its source/],
    ['a drive letter', 'files/link', 'C:/Windows', /outside its source/],
    ['backslashes', 'files/link', '..\\..\\outside', /outside its source/],
  ];
  it.each(cases)('refuses a symlink to %s', async (_label, name, target, message) => {
    const items: TreeItem[] = [...baseItems(), { path: name, type: 'symlink', data: target }];
    const file = hostile('symlink.zip', items);
    // The external attributes really say "symlink" (Unix, S_IFLNK), as unzip reads them.
    expect(run('unzip', ['-Z', file]).stdout).toMatch(new RegExp(`^l.* ${name.replace('/', '\\/')}$`, 'm'));
    await expectRefused(file, { code: 'ARCHIVE_UNSAFE', message });
  });

  it('refuses a file written through a symlink entry ("files/link/x" after "files/link" -> "sub")', async () => {
    const items: TreeItem[] = [...baseItems(), { path: 'files/link', type: 'symlink', data: 'sub' }, { path: `files/link/${PWNED}.txt`, data: 'through the link\n' }];
    const file = hostile('through-link.zip', items);
    await expectRefused(file, { code: 'ARCHIVE_UNSAFE', message: /entry "files\/link\/pwned-\d+\.txt" is inside symlink "files\/link"; extracting it would write through the link/ });
  });

  it('refuses symlinks that only leave the source through another symlink (lexically inside, really outside)', async () => {
    // l1 -> ../.. is the source folder itself; l2 -> l1/../../.. is "files/x/y" by the lexical
    // rule but, following l1 on disk, three levels above the source folder.
    const items: TreeItem[] = [
      ...baseItems(),
      { path: 'files/x/', type: 'dir' },
      { path: 'files/x/y/', type: 'dir' },
      { path: 'files/x/y/l1', type: 'symlink', data: '../..' },
      { path: 'files/x/y/l2', type: 'symlink', data: 'l1/../../..' },
    ];
    const file = hostile('chained-links.zip', items);
    await expectRefused(file, { code: 'ARCHIVE_UNSAFE', message: /symlink "files\/x\/y\/l2" points to "l1\/\.\.\/\.\.\/\.\.", outside its source/ });
  });

  it('refuses a file planted through a chain of symlinks into the folder next to the target', async () => {
    const items: TreeItem[] = [...baseItems(), { path: 'files/x/', type: 'dir' }, { path: 'files/x/y/', type: 'dir' }];
    // Small files first, so the link entries are extracted before the planted file is reached.
    for (let i = 0; i < 24; i++) items.push({ path: `files/x/pad${i}.txt`, data: `pad ${i}\n` });
    items.push(
      { path: 'files/x/y/l1', type: 'symlink', data: '../..' },
      { path: 'files/x/y/l2', type: 'symlink', data: 'l1/../../..' },
    );
    for (let i = 0; i < 24; i++) items.push({ path: `files/x/pad-late${i}.txt`, data: `late pad ${i}\n` });
    items.push({ path: `files/x/y/l2/outside/${PWNED}.txt`, data: 'planted through a symlink chain\n' });
    const file = hostile('chained-plant.zip', items);
    await expectRefused(file, { code: 'ARCHIVE_UNSAFE', message: /entry "files\/x\/y\/l2\/outside\/pwned-\d+\.txt" is inside symlink "files\/x\/y\/l2"/ });
  });

  it('refuses a loop of symlinks that a path goes on through', async () => {
    const items: TreeItem[] = [...baseItems(), { path: 'files/a', type: 'symlink', data: 'b/x' }, { path: 'files/b', type: 'symlink', data: 'a/x' }, { path: 'files/c', type: 'symlink', data: 'a/y' }];
    const file = hostile('loop.zip', items);
    await expectRefused(file, { code: 'ARCHIVE_UNSAFE', message: /symlink "files\/[abc]" points to "[ab]\/[xy]", outside its source/ });
  });

  it('refuses a symlink disguised as a file in the manifest', async () => {
    const items = [...baseItems(), { path: 'files/passwd', data: '/etc/passwd' }];
    const file = hostile('disguised.zip', items, (entries) => {
      entries.find((e) => e.name === 'files/passwd')!.mode = S_IFLNK | 0o777;
    });
    await expectRefused(file, { code: 'ARCHIVE_UNSAFE', message: /entry "files\/passwd" is a symlink in the archive but a file in the manifest/ });
  });
});

describe('hostile archives: source names', () => {
  const cases: Array<[string, (m: ManifestJson) => void, RegExp]> = [
    ['named ".." (the folder above --target)', (m) => m.sources.push({ ...m.sources[0]!, name: '..' }), /has a source name "\.\.", which is not a plain folder name/],
    ['named "../.."', (m) => m.sources.push({ ...m.sources[0]!, name: '../..' }), /has a source name "\.\.\/\.\.", which is not a plain folder name/],
    ['named "." (--target itself)', (m) => m.sources.push({ ...m.sources[0]!, name: '.' }), /has a source name "\.", which is not a plain folder name/],
    ['listed twice', (m) => m.sources.push({ ...m.sources[0]! }), /lists source "files" twice/],
    ['of SQLite, with a path ending in ".."', (m) => m.sources.push({ ...m.sources[0]!, name: 'db2', kind: 'sqlite', path: '/srv/app/..' }), /SQLite source "db2" has the path "\/srv\/app\/\.\.", which does not end in a file name/],
  ];
  it.each(cases)('refuses a source %s', async (_label, mutate, message) => {
    const items = baseItems();
    const manifest = validManifest(items);
    mutate(manifest);
    await expectRefused(hostile('source-name.zip', items, undefined, manifest), { code: 'ARCHIVE_UNSAFE', message });
  });

  it('refuses a source named ".." with --target, leaving the folder above the target as it was', async () => {
    const items = baseItems();
    const manifest = validManifest(items);
    manifest.sources.push({ ...manifest.sources[0]!, name: '..' });
    const file = hostile('source-name.zip', items, undefined, manifest);
    // With --target DIR each source goes to DIR/<name>; DIR is deep inside the project, so that
    // even a wrong restore stays inside the test's folder (one did empty DIR/..).
    const target = path.join(outside, 'a', 'b', 'target');
    fs.mkdirSync(target, { recursive: true });
    fs.writeFileSync(path.join(target, 'keep.txt'), 'in the target folder\n');
    fs.writeFileSync(path.join(outside, 'a', 'b', 'keep.txt'), 'next to the target folder\n');
    const before = snapshotTree(outside);
    const r = await stowageAsync(project, ['restore', file, '--target', target, '--yes', '--json']);
    expect(snapshotTree(outside), r.stdout).toEqual(before);
    expect(r.status, r.stdout + r.stderr).toBe(1);
    expect(r.result).toMatchObject({ type: 'error', code: 'ARCHIVE_UNSAFE' });
    expect(r.result!.message).toMatch(/has a source name "\.\.", which is not a plain folder name/);
    expectNoStack(r);
  });
});

describe('hostile archives: duplicates and unlisted entries', () => {
  it('refuses two entries with the same name', async () => {
    const items = baseItems();
    const file = hostile('dup.zip', items, (entries) => {
      entries.splice(2, 0, { ...rawEntry({ path: 'files/a.txt', data: `second copy ${PWNED}\n` }) });
    });
    await expectRefused(file, { code: 'ARCHIVE_UNSAFE', message: /two entries are named "files\/a\.txt"/ });
  });

  it('refuses a folder and a file with the same name', async () => {
    const items = baseItems();
    const file = hostile('dup-dir.zip', items, (entries) => {
      entries.push(rawEntry({ path: 'files/sub', data: 'a file where a folder is\n' }));
    });
    await expectRefused(file, { code: 'ARCHIVE_UNSAFE', message: /two entries are named "files\/sub"/ });
  });

  it('refuses the manifest listing a path twice', async () => {
    const items = baseItems();
    const manifest = validManifest(items);
    manifest.entries.push(manifest.entries[1]!);
    const file = hostile('dup-manifest.zip', items, undefined, manifest);
    await expectRefused(file, { code: 'ARCHIVE_UNSAFE', message: /the manifest lists "files\/a\.txt" twice/ });
  });

  it('refuses an entry the manifest does not list', async () => {
    const items = baseItems();
    const file = hostile('unlisted.zip', items, (entries) => {
      entries.splice(2, 0, rawEntry({ path: `files/${PWNED}.txt`, data: 'smuggled\n' }));
    });
    await expectRefused(file, { code: 'ARCHIVE_UNSAFE', message: /entry "files\/pwned-\d+\.txt" is not listed in the manifest/ });
  });

  it('refuses a manifest entry the archive does not contain', async () => {
    const items = baseItems();
    const manifest = validManifest([...items, { path: 'files/missing.txt', data: 'never written\n' }]);
    const file = hostile('missing-entry.zip', items, undefined, manifest);
    await expectRefused(file, { code: 'ARCHIVE_INVALID', message: /the manifest lists "files\/missing\.txt" but the archive does not contain it/ });
  });

  it('refuses an entry that belongs to no source of the backup', async () => {
    const items = [...baseItems(), { path: `elsewhere/${PWNED}.txt`, data: 'no source\n' }];
    const file = hostile('no-source.zip', items);
    await expectRefused(file, { code: 'ARCHIVE_UNSAFE', message: /entry "elsewhere\/pwned-\d+\.txt" belongs to no source of this backup/ });
  });
});

describe('hostile archives: sizes that lie and zip bombs', () => {
  it('refuses an entry whose data inflates far past the 10 bytes its records declare', async () => {
    const big = Buffer.alloc(1024 * 1024, 'A');
    const items = [...baseItems(), { path: 'files/liar.txt', data: big.subarray(0, 10) }];
    const file = hostile('liar.zip', items, (entries) => {
      const e = entries.find((x) => x.name === 'files/liar.txt')!;
      e.payload = zlib.deflateRawSync(big);
      e.method = 8;
      e.crc32 = crc32(big.subarray(0, 10));
    });
    await expectRefused(file, { code: 'CHECKSUM_MISMATCH', message: /files\/liar\.txt: cannot be read back \(too many bytes in the stream/ });
  });

  it('refuses an entry whose data is shorter than its records declare', async () => {
    const data = crypto.randomBytes(4000);
    const items = [...baseItems(), { path: 'files/short.bin', data: Buffer.concat([data, Buffer.alloc(1000)]) }];
    const file = hostile('short.zip', items, (entries) => {
      const e = entries.find((x) => x.name === 'files/short.bin')!;
      e.payload = zlib.deflateRawSync(data);
    });
    await expectRefused(file, { code: 'CHECKSUM_MISMATCH', message: /files\/short\.bin: cannot be read back \(not enough bytes in the stream/ });
  });

  it('refuses a stored entry whose compressed and uncompressed sizes differ', async () => {
    const items = [...baseItems(), { path: 'files/stored.txt', data: 'stored content\n' }];
    const file = hostile('stored-liar.zip', items, (entries) => {
      const e = entries.find((x) => x.name === 'files/stored.txt')!;
      e.method = 0;
      e.payload = Buffer.from('stored content\n');
      e.uncompressedSize = 1024 * 1024;
    });
    await expectRefused(file, { code: 'ARCHIVE_INVALID', message: /stored entry "files\/stored.txt" has different compressed and uncompressed sizes/ });
  });

  it('refuses an entry whose size in the archive differs from the manifest', async () => {
    const items = baseItems();
    const manifest = validManifest(items);
    manifest.entries[1]!.size += 1;
    const file = hostile('manifest-size.zip', items, undefined, manifest);
    await expectRefused(file, { code: 'ARCHIVE_UNSAFE', message: /entry "files\/a\.txt" is 32 bytes in the archive but 33 in the manifest/ });
  });

  it('refuses an entry claiming a compression ratio over the limit (200 MB from 1 kB)', async () => {
    const declared = 200 * 1024 * 1024;
    const items = [...baseItems(), { path: 'files/bomb.bin', data: Buffer.alloc(0) }];
    const manifest = validManifest(items);
    manifest.entries.find((e) => e.path === 'files/bomb.bin')!.size = declared;
    const file = hostile(
      'ratio-bomb.zip',
      items,
      (entries) => {
        const e = entries.find((x) => x.name === 'files/bomb.bin')!;
        e.method = 8;
        e.payload = zlib.deflateRawSync(Buffer.alloc(1024 * 1024));
        e.uncompressedSize = declared;
      },
      manifest,
    );
    expect(fs.statSync(file).size).toBeLessThan(10_000);
    await expectRefused(file, { code: 'ARCHIVE_UNSAFE', message: /entry "files\/bomb\.bin" claims a \d+:1 compression ratio \(limit 1100:1\); this is what zip bombs look like/ });
  });

  it('refuses an entry claiming 200 MB from no data at all', async () => {
    const declared = 200 * 1024 * 1024;
    const items = [...baseItems(), { path: 'files/nothing.bin', data: Buffer.alloc(0) }];
    const manifest = validManifest(items);
    manifest.entries.find((e) => e.path === 'files/nothing.bin')!.size = declared;
    const file = hostile(
      'zero-bomb.zip',
      items,
      (entries) => {
        const e = entries.find((x) => x.name === 'files/nothing.bin')!;
        e.method = 8;
        e.payload = Buffer.alloc(0);
        e.uncompressedSize = declared;
      },
      manifest,
    );
    // No ratio to compute; the inflate of nothing fails before a byte is written.
    await expectRefused(file, { code: 'CHECKSUM_MISMATCH', message: /files\/nothing\.bin: cannot be read back \(.+\); the archive is damaged/ });
  });

  it('refuses overlapping entries: many central records sharing one local file (the Fifield construction)', async () => {
    const kernel = Buffer.alloc(1024 * 1024); // ~1 kB deflated, ~1000:1: each entry alone is within the limit
    const names = Array.from({ length: 10 }, (_, i) => `files/bomb${i}.bin`);
    const items = [...baseItems(), ...names.map((n) => ({ path: n, data: kernel }))];
    const file = hostile('overlap-bomb.zip', items, (entries) => {
      const first = entries.findIndex((x) => x.name === names[0]);
      for (let i = first + 1; i < first + names.length; i++) entries[i]!.shareLocalWith = first;
    });
    expect(fs.statSync(file).size).toBeLessThan(10_000);
    await expectRefused(file, { code: 'ARCHIVE_UNSAFE', message: /entries "files\/bomb0\.bin" and "files\/bomb1\.bin" overlap in the file \(a known zip-bomb construction\)/ });
  });

  it('refuses overlapping entries where each entry\'s data quotes the next local header', async () => {
    const kernel = zlib.deflateRawSync(Buffer.alloc(1024 * 1024));
    const names = Array.from({ length: 6 }, (_, i) => `files/q${i}.bin`);
    const items = [...baseItems(), ...names.map((n) => ({ path: n, data: Buffer.alloc(1024 * 1024) }))];
    const file = hostile('quoted-bomb.zip', items, (entries) => {
      const first = entries.findIndex((x) => x.name === names[0]);
      // Local headers back to back, the kernel after the last; entry i's data runs to the kernel's end.
      const header = 30 + Buffer.byteLength(names[0]!);
      names.forEach((_, k) => {
        const e = entries[first + k]!;
        e.payload = k === names.length - 1 ? kernel : Buffer.alloc(0);
        e.compressedSize = (names.length - 1 - k) * header + kernel.length;
      });
    });
    await expectRefused(file, { code: 'ARCHIVE_UNSAFE', message: /entries "files\/q0\.bin" and "files\/q1\.bin" overlap in the file/ });
  });
});

describe('hostile archives: truncation, foreign and damaged files', () => {
  it.each([
    ['cut in half', (n: number) => Math.floor(n / 2)],
    ['missing its last 10 bytes', (n: number) => n - 10],
    ['missing its end record', (n: number) => n - 22],
    ['only its first 100 bytes', () => 100],
    ['empty', () => 0],
  ])('refuses a real backup %s', async (_label, cut) => {
    const { file, zip } = realBackup();
    fs.writeFileSync(file, zip.subarray(0, cut(zip.length)));
    await expectRefused(file, { code: 'ARCHIVE_INVALID', message: /is not a readable ZIP archive \(.+\); it may be truncated, damaged, or not a backup at all/ });
  });

  it('refuses a real backup whose central directory was cut out', async () => {
    const { file, zip } = realBackup();
    const entries = listCentralDirectory(zip);
    const last = entries[entries.length - 1]!;
    // Keep the local data and the end record, drop the central directory between them.
    const cdStart = last.dataStart + last.compressedSize;
    fs.writeFileSync(file, Buffer.concat([zip.subarray(0, cdStart), zip.subarray(zip.length - 22)]));
    await expectRefused(file, { code: 'ARCHIVE_INVALID', message: /not a readable ZIP archive|cannot be read as a Stowage backup/ });
  });

  it('refuses a file that is not a ZIP at all', async () => {
    const file = writeArchive('notes.zip', Buffer.from('this is not a zip file\n'.repeat(10)));
    await expectRefused(file, { code: 'ARCHIVE_INVALID', message: /is not a readable ZIP archive/ });
  });

  it.skipIf(!hasCommand('zip'))('refuses a foreign ZIP made by the zip tool', async () => {
    const src = path.join(project, 'foreign-src');
    writeTree(src, { 'files/a.txt': 'foreign\n', 'readme.md': '# not a backup\n', 'nested/deep/x.bin': crypto.randomBytes(100) });
    const file = path.join(archives, 'foreign.zip');
    expect(run('zip', ['-qr', file, '.'], { cwd: src }).status).toBe(0);
    removeDir(src);
    await expectRefused(file, { code: 'ARCHIVE_INVALID', message: /not a Stowage backup: the archive has no stowage\.json manifest/ });
  });

  it.skipIf(!hasCommand('zip'))('refuses a foreign ZIP that happens to contain a stowage.json', async () => {
    const src = path.join(project, 'foreign-src');
    writeTree(src, { 'stowage.json': '{"name":"some npm-ish package","version":"1.0.0"}', 'files/a.txt': 'foreign\n' });
    const file = path.join(archives, 'foreign-json.zip');
    expect(run('zip', ['-qr', file, '.'], { cwd: src }).status).toBe(0);
    removeDir(src);
    await expectRefused(file, { code: 'ARCHIVE_INVALID', message: /stowage\.json does not describe a Stowage backup \(format is not "stowage-backup"\)/ });
  });

  it('refuses a valid ZIP of the files without a manifest', async () => {
    const file = writeArchive('no-manifest.zip', buildZip(baseItems().map(rawEntry)));
    expect(run('unzip', ['-tq', file]).status).toBe(0);
    await expectRefused(file, { code: 'ARCHIVE_INVALID', message: /not a Stowage backup: the archive has no stowage\.json manifest/ });
  });

  it('refuses a manifest that is not valid JSON', async () => {
    const items = baseItems();
    const text = JSON.stringify(validManifest(items), null, 2);
    const file = hostile('bad-json.zip', items, undefined, text.slice(0, text.length / 2));
    await expectRefused(file, { code: 'ARCHIVE_INVALID', message: /the manifest stowage\.json is not valid JSON/ });
  });

  it.each([
    ['null', 'null', /does not describe a Stowage backup/],
    ['an array', '[]', /does not describe a Stowage backup/],
    ['a string', '"stowage-backup"', /does not describe a Stowage backup/],
    ['another format', JSON.stringify({ format: 'tarball', formatVersion: 1 }), /does not describe a Stowage backup \(format is not "stowage-backup"\)/],
  ])('refuses a manifest that is %s', async (_label, text, message) => {
    const items = baseItems();
    const file = writeArchive('shape.zip', buildZip([...items.map(rawEntry), manifestRawEntry(text)]));
    await expectRefused(file, { code: 'ARCHIVE_INVALID', message });
  });

  it.each([
    ['without entries', (m: Record<string, unknown>) => delete m.entries, /the manifest stowage\.json is malformed at entries: /],
    ['with a string formatVersion', (m: Record<string, unknown>) => (m.formatVersion = '1'), /malformed at formatVersion/],
    ['with an entry of an unknown type', (m: Record<string, unknown>) => ((m.entries as Array<Record<string, unknown>>)[1]!.type = 'fifo'), /malformed at entries\.1\.type/],
    ['with a negative size', (m: Record<string, unknown>) => ((m.entries as Array<Record<string, unknown>>)[1]!.size = -1), /malformed at entries\.1\.size/],
    ['with a bad checksum string', (m: Record<string, unknown>) => ((m.entries as Array<Record<string, unknown>>)[1]!.sha256 = 'not-hex'), /malformed at entries\.1\.sha256/],
    ['with sources that are not a list', (m: Record<string, unknown>) => (m.sources = { files: 'dir' }), /malformed at sources/],
  ])('refuses a manifest %s', async (_label, mutate, message) => {
    const items = baseItems();
    const manifest = validManifest(items) as unknown as Record<string, unknown>;
    mutate(manifest);
    const file = writeArchive('wrong-shape.zip', buildZip([...items.map(rawEntry), manifestRawEntry(JSON.stringify(manifest))]));
    await expectRefused(file, { code: 'ARCHIVE_INVALID', message });
  });

  it('refuses a newer format version and says to upgrade Stowage', async () => {
    const items = baseItems();
    const manifest = validManifest(items);
    manifest.formatVersion = 99;
    const file = hostile('v99.zip', items, undefined, manifest);
    await expectRefused(file, { code: 'FORMAT_UNSUPPORTED', message: /archive format version 99, made by a newer Stowage; this Stowage reads up to version 1\. Upgrade Stowage to restore it/ });
  });
});

describe('hostile archives: checksums', () => {
  it('refuses an entry whose content was altered (same size, consistent CRC) before touching the target', async () => {
    const items = baseItems();
    const manifest = validManifest(items);
    const file = hostile(
      'altered.zip',
      items,
      (entries) => {
        const e = entries.find((x) => x.name === 'files/sub/b.txt')!;
        e.data = 'BRAVO from the archive\n'; // same length; the CRC and sizes are recomputed for it
      },
      manifest,
    );
    await expectRefused(file, { code: 'CHECKSUM_MISMATCH', message: /files\/sub\/b\.txt: SHA-256 does not match the manifest; the archive is damaged or was altered/ });
  });

  it('refuses a real backup with one byte of a stored entry flipped', async () => {
    const { file, zip } = realBackup();
    const entry = listCentralDirectory(zip).find((e) => e.name === 'files/sub/deeper/c.bin')!;
    expect(entry.method).toBe(0); // random data is stored
    const damaged = Buffer.from(zip);
    damaged[entry.dataStart + 1000]! ^= 0xff;
    fs.writeFileSync(file, damaged);
    await expectRefused(file, { code: 'CHECKSUM_MISMATCH', message: /files\/sub\/deeper\/c\.bin: SHA-256 does not match the manifest/ });
  });

  it('refuses a real backup with the deflated data of an entry damaged', async () => {
    const { file, zip } = realBackup();
    const entry = listCentralDirectory(zip).find((e) => e.name === 'files/sub/b.txt')!;
    expect(entry.method).toBe(8);
    const damaged = Buffer.from(zip);
    for (let i = 0; i < 8; i++) damaged[entry.dataStart + 2 + i] = 0xff;
    fs.writeFileSync(file, damaged);
    await expectRefused(file, { code: 'CHECKSUM_MISMATCH', message: /files\/sub\/b\.txt: cannot be read back \(.+\); the archive is damaged/ });
  });

  it('refuses a real backup whose SQLite database was altered', async () => {
    const { file, zip } = realBackup();
    const entry = listCentralDirectory(zip).find((e) => e.name.startsWith('db/') && e.name.endsWith('.db'))!;
    expect(entry).toBeDefined();
    const damaged = Buffer.from(zip);
    damaged[entry.dataStart + entry.compressedSize - 1]! ^= 0x01;
    fs.writeFileSync(file, damaged);
    await expectRefused(file, { code: 'CHECKSUM_MISMATCH', message: new RegExp(`${entry.name.replace(/[.]/g, '\\.')}: (cannot be read back|SHA-256 does not match)`) });
  });
});
