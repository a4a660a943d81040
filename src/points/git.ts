import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { StowageError } from '../errors.js';
import { insideSymlinkTarget, walkDir } from '../sources/dir.js';
import { ExcludeRules } from '../sources/fnmatch.js';
import { GitRunner } from './git-cli.js';
import { POINT_ERROR_CODE, type Point, type PointDescription, type PointRunContext, type PointRunResult } from './point.js';
import { parseGitUrl, redactUrl } from './url.js';

export interface GitPointConfig {
  name: string;
  /** The dir source's folder. */
  source: string;
  /** http(s) address of an existing repository, without credentials. */
  url: string;
  /** fnmatch rules, relative to the source; a folder rule leaves out everything below it. */
  ignore?: string[];
  username?: string;
  password?: string;
  /** Empty: the remote's default branch (its HEAD; `main` for an empty remote without one). */
  branch?: string;
}

export interface GitPointOptions {
  /** Stowage's data folder: the working clone lives under `<dataDir>/cache/points/`. */
  dataDir: string;
  /** More folders never copied (the data folder never is); pass the storage folder here. */
  neverInclude?: string[];
  /** Per git command (fetch and push of a large first copy take the longest). Default 10 min. */
  timeoutMs?: number;
  /** Sees the arguments of every git command run (they never hold a secret). */
  onGitCommand?: (args: readonly string[]) => void;
}

const AUTHOR = { GIT_AUTHOR_NAME: 'Stowage', GIT_AUTHOR_EMAIL: 'stowage@localhost', GIT_COMMITTER_NAME: 'Stowage', GIT_COMMITTER_EMAIL: 'stowage@localhost' };

/** Never copied, whatever the rules say: Git would read a nested `.git` as a repository. */
const ALWAYS_IGNORED = ['.git', '*/.git'];

/**
 * Byte-exact content: attributes in the source (`text=auto`, LFS filters, encodings) must not
 * rewrite what is committed. `$GIT_DIR/info/attributes` wins over in-tree `.gitattributes`.
 */
const ATTRIBUTES = '* -text -eol -filter -ident -working-tree-encoding\n';

/** How often a push is rebuilt on top of a remote that moved on before giving up. */
const PUSH_ATTEMPTS = 3;

/**
 * The Git backup point: keeps a working clone in the data folder, mirrors the source into it
 * (minus ignored paths), commits when something changed and pushes without ever forcing; when
 * the remote moved on, the commit is rebuilt on the new tip, so history is kept.
 */
export class GitPoint implements Point {
  readonly method = 'git' as const;
  readonly name: string;
  readonly source: string;
  private readonly stateDir: string;
  private readonly repoDir: string;

  constructor(
    private readonly config: GitPointConfig,
    private readonly options: GitPointOptions,
  ) {
    this.name = config.name;
    this.source = path.resolve(config.source);
    const slug = config.name.toLowerCase().replace(/[^a-z0-9._-]+/g, '_').slice(0, 40);
    const id = createHash('sha256').update(config.name).digest('hex').slice(0, 8);
    this.stateDir = path.join(path.resolve(options.dataDir), 'cache', 'points', `${slug}-${id}`);
    this.repoDir = path.join(this.stateDir, 'repo');
  }

  validate(): void {
    const { name, url, branch } = this.config;
    if (!name.trim()) throw new StowageError('CONFIG_INVALID', 'a backup point needs a name');
    if (!this.config.source.trim()) throw new StowageError('CONFIG_INVALID', `point "${name}": source is empty; name the folder to back up`);
    try {
      parseGitUrl(url);
    } catch (err) {
      if (err instanceof StowageError) throw new StowageError('CONFIG_INVALID', `point "${name}": ${err.message}`, { details: err.details });
      throw err;
    }
    if (branch && !isValidBranch(branch)) {
      throw new StowageError('CONFIG_INVALID', `point "${name}": "${branch}" is not a valid Git branch name (no spaces, "..", "~^:?*[\\", leading "-" or "/", trailing ".lock")`);
    }
  }

  describe(): PointDescription {
    return { name: this.name, method: 'git', source: this.source, url: redactUrl(this.config.url), branch: this.config.branch ?? '', ignore: this.config.ignore ?? [], username: this.config.username ?? '', password: this.config.password ? '***' : '' };
  }

  async run(ctx: PointRunContext): Promise<PointRunResult> {
    this.validate();
    const log = ctx.log ?? ((): void => {});
    const url = parseGitUrl(this.config.url);
    const git = new GitRunner({
      stateDir: this.stateDir,
      username: this.config.username ?? '',
      password: this.config.password ?? '',
      url,
      pointName: this.name,
      timeoutMs: this.options.timeoutMs ?? 10 * 60_000,
      ...(ctx.signal ? { signal: ctx.signal } : {}),
      ...(this.options.onGitCommand ? { onCommand: this.options.onGitCommand } : {}),
    });
    await this.checkSource(git);
    await fs.promises.mkdir(this.stateDir, { recursive: true, mode: 0o700 });
    await git.prepare();
    await this.openRepo(git, url);
    const cwd = this.repoDir;

    const branch = this.config.branch || (await this.remoteDefaultBranch(git, url));
    log(`point "${this.name}": copying ${this.source} to ${redactUrl(url)} (branch ${branch})`);
    const warnings = await this.mirrorSource();
    await git.ok(['add', '--all', '--force'], { cwd });
    const tree = (await git.ok(['write-tree'], { cwd })).trim();

    for (let attempt = 1; attempt <= PUSH_ATTEMPTS; attempt++) {
      const parent = await this.fetchBranch(git, branch);
      if (parent && (await git.ok(['rev-parse', `${parent}^{tree}`], { cwd })).trim() === tree) {
        await this.pointLocalBranch(git, branch, parent);
        log(`point "${this.name}": unchanged, ${branch} already holds the source at ${parent.slice(0, 12)}`);
        return { status: 'unchanged', message: `${redactUrl(url)} (${branch}) already holds the source; no commit made`, commit: parent, branch, objectsWritten: 0, objectsDeleted: 0, ...(warnings.length ? { warnings } : {}) };
      }
      const { written, deleted } = await this.countChanges(git, parent, tree);
      const when = ctx.time.toISOString();
      const message = `Stowage backup ${ctx.backupKey} (${when})\n\nSource ${this.source} as of backup ${ctx.backupKey}, taken ${when}: ${written} file(s) added or changed, ${deleted} removed.\n`;
      const commitArgs = ['commit-tree', tree, ...(parent ? ['-p', parent] : []), '-F', '-'];
      const authorDate = `@${Math.floor(ctx.time.getTime() / 1000)} +0000`;
      const commit = (await git.ok(commitArgs, { cwd, input: message, env: { ...AUTHOR, GIT_AUTHOR_DATE: authorDate } })).trim();

      const push = await git.run(['push', '--porcelain', '--no-verify', 'origin', `${commit}:refs/heads/${branch}`], { cwd, network: true });
      if (push.code === 0) {
        await git.ok(['update-ref', `refs/remotes/origin/${branch}`, commit], { cwd });
        await this.pointLocalBranch(git, branch, commit);
        log(`point "${this.name}": pushed ${commit.slice(0, 12)} to ${branch} (${written} written, ${deleted} removed)`);
        return {
          status: 'updated',
          message: `pushed ${commit.slice(0, 12)} to ${redactUrl(url)} (${branch}): ${written} file(s) added or changed, ${deleted} removed`,
          commit,
          branch,
          objectsWritten: written,
          objectsDeleted: deleted,
          ...(warnings.length ? { warnings } : {}),
        };
      }
      if (!isBehindRejection(push.stdout + push.stderr)) throw git.explain('push', push);
      log(`point "${this.name}": ${branch} moved on at the remote; rebuilding the commit on its new tip`);
    }
    throw git.failure('rejected', `point "${this.name}": ${redactUrl(url)} (${branch}) kept moving while pushing (${PUSH_ATTEMPTS} attempts); run the point again`);
  }

  private async checkSource(git: GitRunner): Promise<void> {
    try {
      const st = await fs.promises.stat(this.source);
      if (st.isDirectory()) return;
    } catch (err) {
      throw git.failure('source', `point "${this.name}": source folder ${this.source} cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)}); fix the point's source`);
    }
    throw git.failure('source', `point "${this.name}": source ${this.source} is not a folder; a Git point copies a dir source`);
  }

  /**
   * The working clone: created on first use (or when the URL changed, or it is damaged); its
   * `origin` holds the URL without userinfo. Stale lock files of a killed run are removed: the
   * job lock guarantees no other run uses this folder.
   */
  private async openRepo(git: GitRunner, url: string): Promise<void> {
    const cwd = this.repoDir;
    let usable = false;
    if (fs.existsSync(path.join(cwd, '.git'))) {
      const r = await git.run(['config', '--get', 'remote.origin.url'], { cwd });
      usable = r.code === 0 && r.stdout.trim() === url;
    }
    if (!usable) {
      await fs.promises.rm(cwd, { recursive: true, force: true });
      await fs.promises.mkdir(cwd, { recursive: true });
      await git.ok(['init', '--quiet', cwd], { cwd: this.stateDir });
      await git.ok(['remote', 'add', 'origin', url], { cwd });
    }
    for (const lock of ['index.lock', 'HEAD.lock', 'config.lock', 'shallow.lock']) await fs.promises.rm(path.join(cwd, '.git', lock), { force: true });
    await fs.promises.mkdir(path.join(cwd, '.git', 'info'), { recursive: true });
    await fs.promises.writeFile(path.join(cwd, '.git', 'info', 'attributes'), ATTRIBUTES);
    // Nothing in the working tree is ever ignored by Git: the point's own rules decide.
    await fs.promises.writeFile(path.join(cwd, '.git', 'info', 'exclude'), '');
  }

  /** The remote's HEAD branch; for an empty remote, its unborn HEAD (a throwaway clone learns it). */
  private async remoteDefaultBranch(git: GitRunner, url: string): Promise<string> {
    const out = await git.ok(['ls-remote', '--symref', 'origin', 'HEAD'], { cwd: this.repoDir, network: true });
    const m = /^ref: refs\/heads\/(\S+)\tHEAD$/m.exec(out);
    if (m) return m[1]!;
    const probe = path.join(this.stateDir, 'probe');
    await fs.promises.rm(probe, { recursive: true, force: true });
    try {
      await git.ok(['clone', '--bare', '--quiet', '--no-tags', '--depth=1', url, probe], { cwd: this.stateDir, network: true });
      const head = await git.run(['symbolic-ref', '--short', 'HEAD'], { cwd: probe });
      const name = head.stdout.trim();
      if (head.code === 0 && name && isValidBranch(name)) return name;
    } finally {
      await fs.promises.rm(probe, { recursive: true, force: true });
    }
    return 'main';
  }

  /** Fetches the branch; its tip, or null when the remote has no such branch (yet). */
  private async fetchBranch(git: GitRunner, branch: string): Promise<string | null> {
    const cwd = this.repoDir;
    const tracking = `refs/remotes/origin/${branch}`;
    const r = await git.run(['fetch', '--quiet', '--no-tags', '--no-write-fetch-head', 'origin', `+refs/heads/${branch}:${tracking}`], { cwd, network: true });
    if (r.code !== 0) {
      if (/couldn't find remote ref/i.test(r.stderr)) {
        await git.run(['update-ref', '-d', tracking], { cwd });
        return null;
      }
      throw git.explain('fetch', r);
    }
    return (await git.ok(['rev-parse', '--verify', `${tracking}^{commit}`], { cwd })).trim();
  }

  private async pointLocalBranch(git: GitRunner, branch: string, commit: string): Promise<void> {
    await git.ok(['update-ref', `refs/heads/${branch}`, commit], { cwd: this.repoDir });
    await git.ok(['symbolic-ref', 'HEAD', `refs/heads/${branch}`], { cwd: this.repoDir });
  }

  private async countChanges(git: GitRunner, parent: string | null, tree: string): Promise<{ written: number; deleted: number }> {
    const cwd = this.repoDir;
    if (!parent) {
      const out = await git.ok(['ls-tree', '-r', '-z', '--name-only', tree], { cwd });
      return { written: out.split('\0').filter(Boolean).length, deleted: 0 };
    }
    const out = await git.ok(['diff-tree', '-r', '-z', '--no-renames', '--name-status', parent, tree], { cwd });
    const fields = out.split('\0').filter(Boolean);
    let written = 0;
    let deleted = 0;
    for (let i = 0; i + 1 < fields.length; i += 2) {
      if (fields[i] === 'D') deleted++;
      else written++;
    }
    return { written, deleted };
  }

  /**
   * Makes the working tree equal to the source minus ignored paths: removes what the source no
   * longer has, copies files whose size, mtime or mode differ (keeping the source's mtime, so
   * the next run and `git add` skip unchanged files), recreates symlinks that stay inside.
   */
  private async mirrorSource(): Promise<Array<{ path: string; reason: string }>> {
    const warnings: Array<{ path: string; reason: string }> = [];
    const wanted = new Map<string, { kind: 'dir' | 'file' | 'symlink'; abs: string; stat: fs.Stats; target?: string }>();
    const excludes = new ExcludeRules([...ALWAYS_IGNORED, ...(this.config.ignore ?? [])]);
    const ctx = {
      excludes,
      neverInclude: [this.options.dataDir, ...(this.options.neverInclude ?? [])],
      tempDir: this.stateDir,
      warn: (p: string, reason: string): void => void warnings.push({ path: p, reason }),
    };
    if (!excludes.excludesEverything) {
      for await (const e of walkDir(this.source, ctx)) {
        if (e.stat.isDirectory()) {
          wanted.set(e.rel, { kind: 'dir', abs: e.abs, stat: e.stat });
        } else if (e.stat.isSymbolicLink()) {
          const target = await insideSymlinkTarget(e, ctx, 'copied');
          if (target === null) continue;
          wanted.set(e.rel, { kind: 'symlink', abs: e.abs, stat: e.stat, target });
        } else {
          wanted.set(e.rel, { kind: 'file', abs: e.abs, stat: e.stat });
        }
      }
    }

    // Remove what the source does not have (or has as another kind), top-down.
    const prune = async (rel: string): Promise<void> => {
      const dir = rel ? path.join(this.repoDir, rel) : this.repoDir;
      for (const d of await fs.promises.readdir(dir, { withFileTypes: true })) {
        const childRel = rel ? `${rel}/${d.name}` : d.name;
        if (!rel && d.name === '.git') continue;
        const want = wanted.get(childRel);
        const kind = d.isDirectory() ? 'dir' : d.isSymbolicLink() ? 'symlink' : d.isFile() ? 'file' : 'other';
        if (!want || want.kind !== kind) await fs.promises.rm(path.join(dir, d.name), { recursive: true, force: true });
        else if (kind === 'dir') await prune(childRel);
      }
    };
    await prune('');

    for (const [rel, want] of wanted) {
      const dest = path.join(this.repoDir, rel);
      if (want.kind === 'dir') {
        await fs.promises.mkdir(dest, { recursive: true });
        continue;
      }
      const have = await fs.promises.lstat(dest).catch(() => null);
      if (want.kind === 'symlink') {
        if (have && (await fs.promises.readlink(dest)) === want.target) continue;
        await fs.promises.rm(dest, { force: true });
        await fs.promises.symlink(want.target!, dest);
        continue;
      }
      const same = have !== null && have.size === want.stat.size && Math.trunc(have.mtimeMs) === Math.trunc(want.stat.mtimeMs) && (have.mode & 0o777) === (want.stat.mode & 0o777);
      if (same) continue;
      try {
        await fs.promises.rm(dest, { force: true });
        await fs.promises.copyFile(want.abs, dest);
        await fs.promises.chmod(dest, want.stat.mode & 0o777);
        await fs.promises.utimes(dest, want.stat.atime, want.stat.mtime);
      } catch (err) {
        await fs.promises.rm(dest, { force: true });
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') continue; // removed while copying: not in this copy
        if (code === 'EACCES' || code === 'EPERM') {
          warnings.push({ path: rel, reason: `not readable: ${code}` });
          continue;
        }
        throw new StowageError(POINT_ERROR_CODE, `point "${this.name}": cannot copy ${rel} into the working clone in ${this.repoDir} (${code ?? String(err)})`, { cause: err, details: { point: this.name, reason: 'source' } });
      }
    }
    return warnings;
  }
}

/** Git's ref-name rules for one branch (git check-ref-format --branch), checked without git. */
export function isValidBranch(name: string): boolean {
  if (!name || name.length > 255 || name === '@' || name.startsWith('-') || name.startsWith('/') || name.endsWith('/') || name.endsWith('.') || name.endsWith('.lock')) return false;
  if (/[\x00-\x20\x7f~^:?*[\\]|\.\.|@\{|\/\/|\/\.|^\./.test(name)) return false;
  return name.split('/').every((part) => part.length > 0 && !part.endsWith('.lock'));
}

/** The remote has commits we do not: fetch and rebuild, never force. */
function isBehindRejection(output: string): boolean {
  return /\[rejected\].*\((fetch first|non-fast-forward)\)|Updates were rejected because the (remote contains work|tip of your current branch is behind)/i.test(output);
}
