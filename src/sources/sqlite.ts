import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { ArchiveInput } from '../archive/zip-writer.js';
import { StowageError } from '../errors.js';
import type { BackupContext, Source, SourceEstimate } from './source.js';

/**
 * A live SQLite database, snapshotted with `VACUUM INTO`: one read transaction, so the copy is
 * consistent while other processes keep writing (in WAL mode they are not even blocked), and
 * unlike the online backup API it never restarts when the source changes mid-copy. A raw copy
 * of the file and its -wal is never taken: it can be torn.
 */
export class SqliteSource implements Source {
  readonly kind = 'sqlite' as const;
  private snapshots: string[] = [];

  constructor(
    readonly name: string,
    readonly path: string,
  ) {}

  /** The file name inside the source's archive folder. */
  get fileName(): string {
    return path.basename(this.path);
  }

  private checkExists(): fs.Stats {
    const st = fs.statSync(this.path, { throwIfNoEntry: false });
    if (!st?.isFile()) {
      throw new StowageError('SOURCE_FAILED', `source "${this.name}": SQLite database ${this.path} does not exist; fix its path in stowage.yaml`);
    }
    return st;
  }

  async estimate(): Promise<SourceEstimate> {
    const st = this.checkExists();
    return { files: 1, bytes: st.size };
  }

  async snapshot(tempDir: string): Promise<string> {
    this.checkExists();
    await fs.promises.mkdir(tempDir, { recursive: true });
    const out = path.join(tempDir, `sqlite-${this.name}-${crypto.randomBytes(6).toString('hex')}.db`);
    this.snapshots.push(out);
    let db: Database.Database | undefined;
    try {
      db = new Database(this.path, { readonly: true, fileMustExist: true, timeout: 30_000 });
      db.prepare('VACUUM INTO ?').run(out);
    } catch (err) {
      throw new StowageError('SOURCE_FAILED', `source "${this.name}": could not snapshot SQLite database ${this.path}: ${(err as Error).message}`, { cause: err });
    } finally {
      db?.close();
    }
    return out;
  }

  async *entries(ctx: BackupContext): AsyncGenerator<ArchiveInput> {
    const fileStat = this.checkExists();
    const snap = await this.snapshot(ctx.tempDir);
    const st = await fs.promises.stat(snap);
    const dirStat = await fs.promises.stat(path.dirname(this.path));
    yield { kind: 'dir', name: '', mode: dirStat.mode, mtimeMs: dirStat.mtimeMs, uid: dirStat.uid, gid: dirStat.gid };
    yield { kind: 'file', name: this.fileName, path: snap, size: st.size, mode: fileStat.mode, mtimeMs: fileStat.mtimeMs, uid: fileStat.uid, gid: fileStat.gid };
  }

  async release(): Promise<void> {
    for (const s of this.snapshots) await fs.promises.rm(s, { force: true });
    this.snapshots = [];
  }
}
