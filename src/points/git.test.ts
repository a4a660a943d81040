import fs from 'node:fs';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { afterAll, beforeAll, beforeEach, afterEach, describe, expect, it } from 'vitest';
import { StowageError } from '../errors.js';
import { startGitServer, type GitServer } from '../testing/git-server.js';
import { makeTempDir, removeDir, writeTree } from '../testing/tmp.js';
import { GitPoint, isValidBranch, type GitPointConfig } from './git.js';
import { POINT_ERROR_CODE } from './point.js';

const USER = 'backup-bot';
const PASSWORD = 'Zq8-s3cr3t-Pa55w0rd';

/** The independent judge: the system's git, with no user configuration. Async: the server runs in this process. */
function judge(args: string[], cwd?: string): Promise<string> {
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: cwd ?? '/nonexistent', GIT_CONFIG_NOSYSTEM: '1', GIT_TERMINAL_PROMPT: '0', LC_ALL: 'C' };
  return new Promise((resolve, reject) => {
    execFile('git', args, { cwd, env, encoding: 'buffer', maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`git ${args.join(' ')}: ${stderr.toString()}`));
      else resolve(stdout.toString('utf8'));
    });
  });
}

/** Every file (and symlink, as `-> target`) under a folder, .git excluded. */
function snapshot(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string): void => {
    for (const d of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${d.name}` : d.name;
      if (r === '.git') continue;
      const abs = path.join(root, r);
      if (d.isSymbolicLink()) out[r] = `-> ${fs.readlinkSync(abs)}`;
      else if (d.isDirectory()) walk(r);
      else out[r] = fs.readFileSync(abs).toString('base64');
    }
  };
  walk('');
  return out;
}

/** Every file under a folder, recursively, for secret scans. */
function allFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
      const abs = path.join(dir, d.name);
      if (d.isDirectory()) walk(abs);
      else if (d.isFile()) out.push(abs);
    }
  };
  walk(root);
  return out;
}

const BINARY = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 37 + 11) % 256));

describe('GitPoint against a real smart-HTTP server', () => {
  let server: GitServer;
  let tmp: string;
  let source: string;
  let dataDir: string;
  let commands: string[][];
  let repoCount = 0;

  beforeAll(async () => {
    server = await startGitServer({ username: USER, password: PASSWORD });
  });
  afterAll(async () => {
    await server.close();
  });
  beforeEach(() => {
    tmp = makeTempDir('stowage-git-point-');
    source = path.join(tmp, 'source');
    dataDir = path.join(tmp, 'data folder'); // a space: the askpass path must still work
    fs.mkdirSync(source);
    fs.mkdirSync(dataDir);
    commands = [];
  });
  afterEach(() => removeDir(tmp));

  const newRepo = (defaultBranch?: string): { url: string; name: string } => {
    const name = `repo${++repoCount}`;
    return { url: server.createRepo(name, defaultBranch ? { defaultBranch } : {}), name };
  };
  const point = (config: Partial<GitPointConfig> & { url: string }): GitPoint =>
    new GitPoint({ name: 'configs', source, username: USER, password: PASSWORD, ignore: [], ...config }, { dataDir, onGitCommand: (args) => void commands.push([...args]), timeoutMs: 60_000 });
  const ctx = (key = 'app_20250102030405.zip'): { backupKey: string; time: Date } => ({ backupKey: key, time: new Date(Date.UTC(2025, 0, 2, 3, 4, 5)) });
  const withAuth = (url: string): string => url.replace('http://', `http://${USER}:${PASSWORD}@`);
  const cloneOf = async (url: string, branch?: string): Promise<string> => {
    const dir = fs.mkdtempSync(path.join(tmp, 'clone-'));
    await judge(['clone', '--quiet', ...(branch ? ['--branch', branch] : []), withAuth(url), dir]);
    return dir;
  };

  it('pushes the source minus ignored paths; a clone holds exactly those bytes', async () => {
    writeTree(source, {
      'router-01.txt': 'hostname r1\n',
      'site/a/switch.cfg': 'vlan 10\n',
      'site/a/b/c/deep.json': '{"x":1}\n',
      'site/secret.key': 'ignored file\n',
      'cache/blob.bin': 'ignored folder content\n',
      'cache/nested/more.txt': 'ignored too\n',
      'image.bin': BINARY,
      'notes.tmp': 'ignored by pattern\n',
      // Git's own files in the source must not change what is sent.
      '.gitignore': '*.cfg\nsite/\n',
      '.gitattributes': '* text=auto\n',
      'crlf.txt': 'one\r\ntwo\r\n',
      // A nested repository's .git is never copied.
      'vendor/.git/HEAD': 'ref: refs/heads/main\n',
      'vendor/lib.txt': 'vendored\n',
    });
    fs.symlinkSync('site/a/switch.cfg', path.join(source, 'link.cfg'));
    fs.symlinkSync('/etc/passwd', path.join(source, 'outside'));
    const { url } = newRepo();
    const p = point({ url, ignore: ['site/secret.key', 'cache/', '*.tmp'] });
    const result = await p.run(ctx());

    expect(result.status).toBe('updated');
    expect(result.commit).toMatch(/^[0-9a-f]{40}$/);
    expect(result.branch).toBe('main');
    expect(result.warnings?.map((w) => w.path)).toEqual(['outside']);
    const clone = await cloneOf(url);
    const expected = snapshot(source);
    for (const gone of ['site/secret.key', 'cache/blob.bin', 'cache/nested/more.txt', 'notes.tmp', 'vendor/.git/HEAD', 'outside']) {
      expect(expected[gone]).toBeDefined();
      delete expected[gone];
    }
    expect(snapshot(clone)).toEqual(expected);
    expect(Object.keys(expected).sort()).toEqual(['.gitattributes', '.gitignore', 'crlf.txt', 'image.bin', 'link.cfg', 'router-01.txt', 'site/a/b/c/deep.json', 'site/a/switch.cfg', 'vendor/lib.txt']);
    expect(result.objectsWritten).toBe(9);
    expect(await judge(['rev-parse', 'HEAD'], clone)).toBe(`${result.commit}\n`);
    const log = await judge(['log', '-1', '--format=%an <%ae>%n%s'], clone);
    expect(log).toBe('Stowage <stowage@localhost>\nStowage backup app_20250102030405.zip (2025-01-02T03:04:05.000Z)\n');
    expect(await judge(['fsck', '--strict'], clone)).toBe('');
  });

  it('makes no commit when nothing changed, and a second commit on top when something did', async () => {
    writeTree(source, { 'a.txt': 'a\n', 'dir/b.txt': 'b\n', 'dir/c.txt': 'c\n' });
    const { url, name } = newRepo();
    const p = point({ url });
    const first = await p.run(ctx('k1.zip'));
    expect(first.status).toBe('updated');

    const before = commands.length;
    const again = await p.run(ctx('k2.zip'));
    expect(again).toMatchObject({ status: 'unchanged', commit: first.commit, objectsWritten: 0, objectsDeleted: 0 });
    expect(commands.slice(before).some((c) => c.includes('push') || c.includes('commit-tree'))).toBe(false);
    expect((await judge(['--git-dir', server.repoPath(name), 'rev-list', '--count', 'main'])).trim()).toBe('1');

    fs.writeFileSync(path.join(source, 'a.txt'), 'a changed\n');
    fs.rmSync(path.join(source, 'dir/c.txt'));
    fs.writeFileSync(path.join(source, 'dir/new.txt'), 'new\n');
    const second = await p.run(ctx('k3.zip'));
    expect(second).toMatchObject({ status: 'updated', objectsWritten: 2, objectsDeleted: 1 });
    const clone = await cloneOf(url);
    expect(snapshot(clone)).toEqual(snapshot(source));
    expect((await judge(['rev-list', '--count', 'HEAD'], clone)).trim()).toBe('2');
    expect((await judge(['rev-parse', 'HEAD^'], clone)).trim()).toBe(first.commit);
  });

  it('rebuilds its commit on top when the remote moved on, never forcing', async () => {
    writeTree(source, { 'a.txt': 'a\n' });
    const { url, name } = newRepo();
    const p = point({ url });
    const first = await p.run(ctx());
    const other = await cloneOf(url);
    const theirCommit = async (file: string): Promise<string> => {
      await judge(['fetch', '-q', server.repoPath(name), 'main'], other);
      await judge(['reset', '-q', '--hard', 'FETCH_HEAD'], other);
      fs.writeFileSync(path.join(other, file), `${file}\n`);
      await judge(['add', '-A'], other);
      await judge(['-c', 'user.name=Other', '-c', 'user.email=o@x', 'commit', '-q', '-m', file], other);
      await judge(['push', '-q', server.repoPath(name), 'HEAD:main'], other); // straight into the bare repo
      return (await judge(['rev-parse', 'HEAD'], other)).trim();
    };
    // Someone pushed before the run: the run's fetch sees it.
    const theirs1 = await theirCommit('theirs1.txt');
    fs.writeFileSync(path.join(source, 'b.txt'), 'b\n');
    const second = await p.run(ctx());
    // Someone pushes between the run's fetch and its push: the push is rejected, the run
    // fetches again and rebuilds its commit on the new tip.
    let theirs2 = '';
    server.beforeBackend = async (req) => {
      if (req.query === 'service=git-receive-pack' && !theirs2) theirs2 = await theirCommit('theirs2.txt');
    };
    fs.writeFileSync(path.join(source, 'c.txt'), 'c\n');
    const pushesBefore = commands.filter((c) => c.includes('push')).length;
    const third = await p.run(ctx()).finally(() => (server.beforeBackend = null));
    expect(third.status).toBe('updated');
    expect(commands.filter((c) => c.includes('push')).length - pushesBefore).toBe(2);

    const clone = await cloneOf(url);
    expect(snapshot(clone)).toEqual(snapshot(source)); // their files are gone from the tree...
    const history = (await judge(['rev-list', 'HEAD'], clone)).trim().split('\n');
    expect(history).toEqual([third.commit, theirs2, second.commit, theirs1, first.commit]); // ...but kept in history
    const pushes = commands.filter((c) => c.includes('push'));
    expect(pushes.flat().some((a) => a === '--force' || a === '-f' || a.startsWith('--force') || a.startsWith('+'))).toBe(false);
  });

  it('pushes to a named branch, and to the remote default branch when none is named', async () => {
    writeTree(source, { 'a.txt': 'a\n' });
    const named = newRepo();
    const r1 = await point({ url: named.url, branch: 'backups/nightly' }).run(ctx());
    expect(r1.branch).toBe('backups/nightly');
    const heads = await judge(['--git-dir', server.repoPath(named.name), 'for-each-ref', '--format=%(refname)']);
    expect(heads.trim()).toBe('refs/heads/backups/nightly');
    expect(snapshot(await cloneOf(named.url, 'backups/nightly'))).toEqual(snapshot(source));

    // An empty remote whose HEAD is an unborn "trunk".
    const empty = newRepo('trunk');
    const r2 = await point({ url: empty.url, branch: '' }).run(ctx());
    expect(r2.branch).toBe('trunk');
    expect((await judge(['--git-dir', server.repoPath(empty.name), 'rev-parse', 'refs/heads/trunk'])).trim()).toBe(r2.commit);

    // A remote with history whose HEAD is "develop": the point builds on it.
    const busy = newRepo('develop');
    const seed = await cloneOf(busy.url);
    fs.writeFileSync(path.join(seed, 'old.txt'), 'old\n');
    await judge(['add', '-A'], seed);
    await judge(['-c', 'user.name=Seed', '-c', 'user.email=s@x', 'commit', '-q', '-m', 'seed'], seed);
    await judge(['push', '-q', 'origin', 'HEAD:develop'], seed);
    fs.rmSync(path.join(dataDir, 'cache'), { recursive: true });
    const r3 = await point({ url: busy.url }).run(ctx());
    expect(r3).toMatchObject({ branch: 'develop', objectsWritten: 1, objectsDeleted: 1 });
    const clone = await cloneOf(busy.url);
    expect((await judge(['rev-list', '--count', 'HEAD'], clone)).trim()).toBe('2');
    expect(snapshot(clone)).toEqual(snapshot(source));
  });

  it('follows kind changes and the executable bit, and never copies its own data folder', async () => {
    const inner = path.join(source, '.stowage');
    writeTree(source, { 'x': 'was a file\n', 'd/f.txt': 'f\n', 'run.sh': '#!/bin/sh\n' });
    const { url } = newRepo();
    const p = new GitPoint({ name: 'inner', source, url, username: USER, password: PASSWORD }, { dataDir: inner });
    await p.run(ctx());
    expect(fs.existsSync(path.join(inner, 'cache'))).toBe(true);
    fs.rmSync(path.join(source, 'x'));
    fs.rmSync(path.join(source, 'd'), { recursive: true });
    writeTree(source, { 'x/now-a-folder.txt': 'x\n', 'd': 'now a file\n' });
    fs.chmodSync(path.join(source, 'run.sh'), 0o755);
    const r = await p.run(ctx());
    expect(r).toMatchObject({ status: 'updated' });
    const clone = await cloneOf(url);
    const expected = snapshot(source);
    for (const k of Object.keys(expected)) if (k.startsWith('.stowage/')) delete expected[k];
    expect(snapshot(clone)).toEqual(expected);
    expect(fs.statSync(path.join(clone, 'run.sh')).mode & 0o111).not.toBe(0);
    expect((await judge(['ls-tree', '-r', '--name-only', 'HEAD'], clone)).split('\n').filter((l) => l.startsWith('.stowage'))).toEqual([]);
  });

  it('stops when cancelled', async () => {
    writeTree(source, { 'a.txt': 'a\n' });
    const { url } = newRepo();
    const controller = new AbortController();
    controller.abort();
    const err = await point({ url }).run({ ...ctx(), signal: controller.signal }).catch((e: unknown) => e as StowageError);
    expect((err as StowageError).details).toMatchObject({ reason: 'aborted' });
  });

  it('refuses wrong credentials with a clear message that holds no secret', async () => {
    writeTree(source, { 'a.txt': 'a\n' });
    const { url } = newRepo();
    const wrong = 'Wrong-Pa55-guess';
    const err = await point({ url, password: wrong })
      .run(ctx())
      .then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(StowageError);
    const e = err as StowageError;
    expect(e.code).toBe(POINT_ERROR_CODE);
    expect(e.details).toMatchObject({ point: 'configs', reason: 'auth' });
    expect(e.message).toMatch(/refused the credentials; check the point's username and password/);
    expect(e.message).toContain(url);
    expect(JSON.stringify(e.toJSON()) + String(e.stack)).not.toContain(wrong);
    // The server was asked with the askpass answer, so git did get (and use) it.
    expect(server.requests.some((r) => r.status === 401 && r.path.startsWith(new URL(url).pathname))).toBe(true);
  });

  it('never writes the password to disk or puts it on a command line', async () => {
    writeTree(source, { 'a.txt': 'a\n' });
    const { url } = newRepo();
    await point({ url }).run(ctx());
    await point({ url, password: `${PASSWORD}-wrong` }).run(ctx()).catch(() => {});
    const files = allFiles(dataDir);
    expect(files.some((f) => f.endsWith(path.join('.git', 'config')))).toBe(true);
    expect(files.some((f) => f.endsWith('askpass.sh'))).toBe(true);
    for (const f of files) {
      const bytes = fs.readFileSync(f);
      expect(bytes.includes(PASSWORD), f).toBe(false);
      expect(bytes.includes(Buffer.from(`${USER}:`)), f).toBe(false);
    }
    const gitConfig = fs.readFileSync(files.find((f) => f.endsWith(path.join('.git', 'config')))!, 'utf8');
    expect(gitConfig).toContain(`url = ${url}`);
    expect(commands.length).toBeGreaterThan(5);
    expect(commands.flat().some((a) => a.includes(PASSWORD) || a.includes(USER))).toBe(false);
    expect(new GitPoint({ name: 'x', source, url, password: PASSWORD }, { dataDir }).describe().password).toBe('***');
  });

  it('explains an unreachable server and a missing repository', async () => {
    writeTree(source, { 'a.txt': 'a\n' });
    const closed = await startGitServer();
    const deadUrl = `${closed.url}/gone.git`;
    await closed.close();
    const unreachable = await point({ url: deadUrl }).run(ctx()).then(() => null, (e: unknown) => e as StowageError);
    expect(unreachable?.details).toMatchObject({ reason: 'unreachable' });
    expect(unreachable?.message).toMatch(/cannot reach http:\/\/127\.0\.0\.1:\d+\/gone\.git; check the URL, that the server is running/);

    const missing = await point({ url: `${server.url}/nope.git` }).run(ctx()).then(() => null, (e: unknown) => e as StowageError);
    expect(missing?.details).toMatchObject({ reason: 'not-found' });
    expect(missing?.message).toMatch(/there is no repository at .*nope\.git; check the URL/);
    for (const e of [unreachable, missing]) expect(e?.message).not.toContain(PASSWORD);
  });

  it('validates its configuration before touching the network', async () => {
    const bad = (config: Partial<GitPointConfig>): string => {
      try {
        new GitPoint({ name: 'p', source, url: 'https://git.example.com/o/r.git', ...config }, { dataDir }).validate();
        return 'ok';
      } catch (err) {
        expect((err as StowageError).code).toBe('CONFIG_INVALID');
        return (err as Error).message;
      }
    };
    expect(bad({})).toBe('ok');
    expect(bad({ url: `https://${USER}:${PASSWORD}@git.example.com/o/r.git` })).toMatch(/must not contain credentials/);
    expect(bad({ url: `https://${USER}:${PASSWORD}@git.example.com/o/r.git` })).not.toContain(PASSWORD);
    expect(bad({ url: 'git@github.com:o/r.git' })).toMatch(/SSH addresses .* are not supported: a Git point needs the repository's http:\/\/ or https:\/\/ URL/);
    expect(bad({ branch: 'bad name' })).toMatch(/not a valid Git branch name/);
    expect(bad({ branch: '--force' })).toMatch(/not a valid Git branch name/);
    const missingSource = await new GitPoint({ name: 'p', source: path.join(tmp, 'nope'), url: 'http://127.0.0.1:1/r.git' }, { dataDir }).run(ctx()).catch((e: unknown) => e as StowageError);
    expect((missingSource as StowageError).details).toMatchObject({ reason: 'source' });
  });
});

describe('isValidBranch', () => {
  it('follows git check-ref-format --branch', async () => {
    const names = ['main', 'backups/nightly', 'release-1.2', 'a..b', 'a b', '-x', 'x.lock', 'a/', '/a', 'a//b', 'a@{1}', '.hidden', 'a/.b', 'x~1', 'ok_ü', 'a:b', 'end.'];
    for (const name of names) {
      const ok = await new Promise<boolean>((resolve) => execFile('git', ['check-ref-format', '--branch', name], (err) => resolve(!err)));
      expect(isValidBranch(name), name).toBe(ok);
    }
  });
});
