import fs from 'node:fs';
import path from 'node:path';
import type { ArchiveInput } from '../archive/zip-writer.js';
import { StowageError } from '../errors.js';
import { estimateInWorker } from './estimate-worker.js';
import { RESTORE_STAGING_PREFIX, type BackupContext, type Source, type SourceEstimate } from './source.js';

/** How many lstat calls run at once while walking one folder. */
const STAT_BATCH = 64;

export interface WalkedEntry {
  rel: string;
  abs: string;
  stat: fs.Stats;
}

function lstatCb(p: string): Promise<fs.Stats | NodeJS.ErrnoException> {
  return new Promise((resolve) => fs.lstat(p, (err, st) => resolve(err ?? st)));
}

function readdirCb(p: string): Promise<string[]> {
  return new Promise((resolve, reject) => fs.readdir(p, (err, names) => (err ? reject(err) : resolve(names))));
}

/**
 * Walks a folder in a stable order (names sorted by byte value, each folder's contents right
 * after it), never following symlinks, skipping excluded paths (a folder rule prunes its
 * subtree), paths in `neverInclude`, and restore staging folders. Unreadable folders and
 * special files are warnings. Iterative with the callback fs API: a recursive `yield*` chain
 * and fs.promises made the walk of 25,000 entries three times slower.
 */
export async function* walkDir(root: string, ctx: BackupContext): AsyncGenerator<WalkedEntry> {
  const never = new Set(ctx.neverInclude.map((p) => path.resolve(p)));
  // A stack of folder listings still being emitted; each frame is one folder.
  interface Frame {
    abs: string;
    rel: string;
    names: string[];
    next: number;
    stats: Array<fs.Stats | NodeJS.ErrnoException>;
    statsFrom: number;
  }
  const open = async (abs: string, rel: string): Promise<Frame | null> => {
    try {
      const names = (await readdirCb(abs)).sort(compareNames);
      return { abs, rel, names, next: 0, stats: [], statsFrom: 0 };
    } catch (err) {
      ctx.warn(rel || '.', `folder not readable: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      return null;
    }
  };
  const first = await open(root, '');
  const stack: Frame[] = first ? [first] : [];
  while (stack.length) {
    const frame = stack[stack.length - 1]!;
    if (frame.next >= frame.names.length) {
      stack.pop();
      continue;
    }
    const i = frame.next++;
    if (i >= frame.statsFrom + frame.stats.length) {
      const batch = frame.names.slice(i, i + STAT_BATCH);
      frame.stats = await Promise.all(batch.map((n) => lstatCb(path.join(frame.abs, n))));
      frame.statsFrom = i;
    }
    const name = frame.names[i]!;
    const st = frame.stats[i - frame.statsFrom]!;
    const rel = frame.rel ? `${frame.rel}/${name}` : name;
    const abs = path.join(frame.abs, name);
    if (name.startsWith(RESTORE_STAGING_PREFIX) || ctx.excludes.matches(rel) || never.has(abs)) continue;
    if (st instanceof Error) {
      if ((st as NodeJS.ErrnoException).code !== 'ENOENT') ctx.warn(rel, `cannot stat: ${(st as NodeJS.ErrnoException).code ?? st.message}`);
      continue;
    }
    if (st.isDirectory()) {
      yield { rel, abs, stat: st };
      const child = await open(abs, rel);
      if (child) stack.push(child);
    } else if (st.isFile() || st.isSymbolicLink()) {
      yield { rel, abs, stat: st };
    } else {
      const what = st.isSocket() ? 'a socket' : st.isFIFO() ? 'a FIFO' : 'a device';
      ctx.warn(rel, `skipped: ${what} cannot be backed up`);
    }
  }
}

/** Byte order of the UTF-8 names, so archives are identical whatever the locale. */
function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** A symlink is kept only if it is relative and stays inside the source when resolved. */
export function symlinkStaysInside(linkRel: string, target: string): boolean {
  if (path.isAbsolute(target) || target.includes('\\')) return false;
  const resolved = path.posix.normalize(path.posix.join(path.posix.dirname(linkRel), target));
  return resolved !== '..' && !resolved.startsWith('../') && !path.posix.isAbsolute(resolved);
}

export class DirSource implements Source {
  readonly kind = 'dir' as const;

  constructor(
    readonly name: string,
    readonly path: string,
  ) {}

  private async checkRoot(): Promise<fs.Stats> {
    try {
      const st = await fs.promises.stat(this.path);
      if (!st.isDirectory()) throw new StowageError('SOURCE_FAILED', `source "${this.name}": ${this.path} is not a folder; fix its path in stowage.yaml`);
      return st;
    } catch (err) {
      if (err instanceof StowageError) throw err;
      throw new StowageError('SOURCE_FAILED', `source "${this.name}": folder ${this.path} cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)}); fix its path in stowage.yaml or create it`);
    }
  }

  /** Totals for the progress bar, counted on a worker thread (see estimate-worker.ts). */
  async estimate(ctx: BackupContext): Promise<SourceEstimate> {
    await this.checkRoot();
    if (ctx.excludes.excludesEverything) return { files: 0, bytes: 0 };
    return estimateInWorker(this.path, ctx.excludes.rules, ctx.neverInclude.map((p) => path.resolve(p)));
  }

  async *entries(ctx: BackupContext): AsyncGenerator<ArchiveInput> {
    const rootStat = await this.checkRoot();
    yield { kind: 'dir', name: '', mode: rootStat.mode, mtimeMs: rootStat.mtimeMs, uid: rootStat.uid, gid: rootStat.gid };
    if (ctx.excludes.excludesEverything) return;
    for await (const e of walkDir(this.path, ctx)) {
      const { stat } = e;
      if (stat.isDirectory()) {
        yield { kind: 'dir', name: `${e.rel}/`, mode: stat.mode, mtimeMs: stat.mtimeMs, uid: stat.uid, gid: stat.gid };
      } else if (stat.isSymbolicLink()) {
        const target = await insideSymlinkTarget(e, ctx, 'stored');
        if (target === null) continue;
        yield { kind: 'symlink', name: e.rel, target, mode: stat.mode, mtimeMs: stat.mtimeMs, uid: stat.uid, gid: stat.gid };
      } else {
        yield { kind: 'file', name: e.rel, path: e.abs, size: stat.size, mode: stat.mode, mtimeMs: stat.mtimeMs, uid: stat.uid, gid: stat.gid };
      }
    }
  }

  async release(): Promise<void> {}
}

/**
 * The target of a symlink found by walkDir, or null (with a warning) when it cannot be read or
 * leaves the source: such links are `what` ("stored", "copied") only if they stay inside.
 */
export async function insideSymlinkTarget(e: { abs: string; rel: string }, ctx: Pick<BackupContext, 'warn'>, what: string): Promise<string | null> {
  let target: string;
  try {
    target = await fs.promises.readlink(e.abs);
  } catch (err) {
    ctx.warn(e.rel, `symlink not readable: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    return null;
  }
  if (!symlinkStaysInside(e.rel, target)) {
    ctx.warn(e.rel, `symlink to ${target} skipped: only relative links that stay inside the source are ${what}`);
    return null;
  }
  return target;
}
