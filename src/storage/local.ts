import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { StowageError } from '../errors.js';
import { fsyncDir } from '../fs/durable.js';
import { processTag } from '../fs/process.js';
import { assertValidKey, isValidKey } from './keys.js';
import type { LocalCopy, Storage, StoredObject, Upload } from './storage.js';

const TEMP_PREFIX = '.stowage-upload-';

/**
 * Archives as files in one folder. Uploads go to a hidden temporary file in the same folder
 * (same filesystem), are fsynced, then renamed over nothing (link + unlink, so an existing key
 * is never replaced), and the folder is fsynced so the name survives a power cut.
 */
export class LocalStorage implements Storage {
  readonly description: string;
  private listCache: { stamp: string; objects: readonly StoredObject[] } | null = null;

  constructor(readonly root: string) {
    this.description = `local folder ${root}`;
  }

  private pathOf(key: string): string {
    return path.join(this.root, assertValidKey(key));
  }

  async createUpload(key: string): Promise<Upload> {
    const final = this.pathOf(key);
    await fs.promises.mkdir(this.root, { recursive: true });
    const temp = path.join(this.root, `${TEMP_PREFIX}${key}.${processTag()}.${crypto.randomBytes(6).toString('hex')}`);
    const stream = fs.createWriteStream(temp, { flags: 'wx', highWaterMark: 1024 * 1024 });
    let opened: Promise<void> = new Promise((resolve, reject) => {
      stream.once('open', () => resolve());
      stream.once('error', reject);
    });
    await opened;
    opened = Promise.resolve();
    let done = false;
    return {
      stream,
      commit: async () => {
        if (done) throw new Error('upload already finished');
        done = true;
        await new Promise<void>((resolve, reject) => {
          stream.once('error', reject);
          stream.end(() => resolve());
        });
        const handle = await fs.promises.open(temp, 'r+');
        try {
          await handle.sync();
        } finally {
          await handle.close();
        }
        try {
          await publishNoClobber(temp, final);
        } catch (err) {
          await fs.promises.rm(temp, { force: true });
          if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new StowageError('BACKUP_EXISTS', `a backup named ${key} already exists`);
          throw err;
        }
        await fsyncDir(this.root);
        const st = await fs.promises.stat(final);
        return { key, size: st.size, modified: st.mtime };
      },
      abort: async () => {
        done = true;
        stream.destroy();
        await fs.promises.rm(temp, { force: true });
      },
    };
  }

  async get(key: string, range?: { start: number; end?: number }): Promise<Readable> {
    const p = this.pathOf(key);
    const handle = await fs.promises.open(p, 'r').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') throw new StowageError('BACKUP_NOT_FOUND', `no backup named ${key} in ${this.description}`);
      throw err;
    });
    return handle.createReadStream({ start: range?.start, end: range?.end, highWaterMark: 1024 * 1024 });
  }

  async stat(key: string): Promise<StoredObject | null> {
    try {
      const st = await fs.promises.stat(this.pathOf(key));
      return st.isFile() ? { key, size: st.size, modified: st.mtime } : null;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  /**
   * Every archive, newest first. The result is cached until the folder changes (its mtime and
   * ctime move with every file added, renamed or removed): a server lists on every request,
   * and 1,000 stat calls queued behind a running backup's I/O took over a second
   * (bench/README.md, API load). Archives never change under their key, so known names keep
   * their stat; only new names are stat'ed. The returned array is shared: do not modify it.
   */
  async list(): Promise<readonly StoredObject[]> {
    // Synchronous on purpose: one stat of the folder is microseconds, and a thread-pool hop
    // would wait behind a running backup's reads.
    const dir = fs.statSync(this.root, { bigint: true, throwIfNoEntry: false });
    if (!dir) return [];
    const stamp = `${dir.mtimeNs}:${dir.ctimeNs}:${dir.ino}`;
    // Folder timestamps come from a coarse clock (a few ms): two changes in one tick leave the
    // same stamp. A folder changed within the last second is therefore always re-read (git's
    // "racy" index entries are handled the same way).
    const settled = Date.now() - Number(dir.mtimeNs / 1_000_000n) > 1000;
    if (settled && this.listCache?.stamp === stamp) return this.listCache.objects;
    const known = new Map((this.listCache?.objects ?? []).map((o) => [o.key, o]));
    const names = (await fs.promises.readdir(this.root)).filter(isValidKey);
    const found = await Promise.all(
      names.map(async (name) => {
        const cached = known.get(name);
        if (cached) return cached;
        const st = await fs.promises.lstat(path.join(this.root, name)).catch(() => null);
        return st?.isFile() ? { key: name, size: st.size, modified: st.mtime } : null;
      }),
    );
    const objects = found.filter((o): o is StoredObject => o !== null);
    objects.sort((a, b) => b.modified.getTime() - a.modified.getTime() || b.key.localeCompare(a.key));
    // Unchanged (known names keep their objects): keep the same array, so callers' caches hold.
    const previous = this.listCache?.objects;
    if (previous && previous.length === objects.length && previous.every((o, i) => o === objects[i])) {
      this.listCache = { stamp, objects: previous };
      return previous;
    }
    this.listCache = { stamp, objects: Object.freeze(objects) };
    return this.listCache.objects;
  }

  async delete(key: string): Promise<void> {
    await fs.promises.rm(this.pathOf(key), { force: true });
    await fsyncDir(this.root).catch(() => {});
  }

  async localCopy(key: string): Promise<LocalCopy> {
    const p = this.pathOf(key);
    if (!(await this.stat(key))) throw new StowageError('BACKUP_NOT_FOUND', `no backup named ${key} in ${this.description}`);
    return { path: p, release: async () => {} };
  }

  async cleanupIncomplete(isWriterAlive: (owner: string) => boolean): Promise<number> {
    let names: string[];
    try {
      names = await fs.promises.readdir(this.root);
    } catch {
      return 0;
    }
    let removed = 0;
    for (const name of names) {
      if (!name.startsWith(TEMP_PREFIX)) continue;
      const owner = /\.(\d+-\d+)\.[0-9a-f]{12}$/.exec(name)?.[1];
      if (owner && isWriterAlive(owner)) continue;
      await fs.promises.rm(path.join(this.root, name), { force: true });
      removed++;
    }
    return removed;
  }
}

/**
 * link() then unlink() publishes without ever replacing an existing key (rename would clobber
 * it). Filesystems without hard links (vfat, some FUSE mounts) fall back to a checked rename;
 * the engine's lock already keeps two writers apart there.
 */
async function publishNoClobber(temp: string, final: string): Promise<void> {
  try {
    await fs.promises.link(temp, final);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw err;
    if (fs.existsSync(final)) throw Object.assign(new Error('exists'), { code: 'EEXIST' });
    await fs.promises.rename(temp, final);
    return;
  }
  await fs.promises.rm(temp, { force: true });
}
