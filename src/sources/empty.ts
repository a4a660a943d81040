import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { ArchiveInput } from '../archive/zip-writer.js';
import type { SourceConfig } from '../config/schema.js';
import { redactPostgresUrl } from './postgres.js';
import type { BackupContext, Source, SourceEstimate } from './source.js';

/**
 * A source as it is on a fresh install: an empty folder, or an empty SQLite database. A factory
 * reset restores an archive of these, so it gets a restore's staging, journal and rollback.
 * A PostgreSQL source is archived as an empty folder with no dump: a factory reset does not
 * empty a database server's database (the restore skips it and says so); dropping an
 * application's tables is for the application's own reset, not for a backup tool.
 */
export class EmptySource implements Source {
  private files: string[] = [];

  constructor(
    readonly name: string,
    readonly kind: 'dir' | 'sqlite' | 'postgres',
    readonly path: string,
  ) {}

  async estimate(): Promise<SourceEstimate> {
    return { files: this.kind === 'sqlite' ? 1 : 0, bytes: 0 };
  }

  async *entries(ctx: BackupContext): AsyncGenerator<ArchiveInput> {
    const now = Date.now();
    yield { kind: 'dir', name: '', mode: 0o755, mtimeMs: now };
    if (this.kind !== 'sqlite') return;
    await fs.promises.mkdir(ctx.tempDir, { recursive: true });
    const file = path.join(ctx.tempDir, `empty-${this.name}-${crypto.randomBytes(6).toString('hex')}.db`);
    this.files.push(file);
    // A valid database with no tables (a zero-byte file would fail the restore's integrity check).
    const db = new Database(file);
    db.pragma('user_version = 0');
    db.exec('VACUUM');
    db.close();
    const st = await fs.promises.stat(file);
    yield { kind: 'file', name: path.basename(this.path), path: file, size: st.size, mode: 0o644, mtimeMs: now };
  }

  async release(): Promise<void> {
    for (const f of this.files) await fs.promises.rm(f, { force: true });
    this.files = [];
  }
}

export function createEmptySource(config: SourceConfig): Source {
  return new EmptySource(config.name, config.kind, config.kind === 'postgres' ? redactPostgresUrl(config.url) : config.path);
}
