import fs from 'node:fs';
import path from 'node:path';
import type { Manifest } from '../archive/manifest.js';
import { ArchiveReader } from '../archive/zip-reader.js';
import { ensureDemoApp } from '../config/demo-app.js';
import { loadConfig, type LoadOptions, type StowageConfig } from '../config/load.js';
import { StowageError, errorMessage, isStowageError } from '../errors.js';
import { StowageEmitter, progressThrottle } from '../events/events.js';
import { isValidKey } from '../storage/keys.js';
import { LocalStorage } from '../storage/local.js';
import type { Storage } from '../storage/storage.js';
import { STOWAGE_VERSION } from '../version.js';
import { runBackup, type BackupOptions, type ExcludeHook } from './backup.js';
import { Catalogue, type BackupRecord, type RestoreStatusRecord } from './catalogue.js';
import type { EngineContext } from './context.js';
import { acquireLock, isStale, readLock, type HeldLock } from './lock.js';
import { recover, type RecoveryReport } from './recovery.js';
import { runRestore, type RestoreOptions, type RestoreOutcome } from './restore.js';

/** A backup as users see it: the catalogue record plus PocketBase's `modified`. */
export interface BackupInfo extends BackupRecord {
  /** When the archive was last written (storage mtime), ISO 8601; the creation time if not stored. */
  modified: string;
}

export interface VerifyResult {
  key: string;
  ok: boolean;
  entries: number;
  files: number;
  bytes: number;
  /** Every entry that failed, with the reason (empty when ok). */
  errors: Array<{ path: string; message: string }>;
}

export interface StowageOptions extends LoadOptions {
  /** Use this configuration instead of loading one. */
  config?: StowageConfig;
  /** Skip recovery of interrupted jobs at open (for read-only tools). */
  skipRecovery?: boolean;
}

/**
 * The engine, as a library: everything the CLI and the server do goes through here.
 *
 *   const stowage = await Stowage.open();
 *   stowage.on('backup.created', (e) => console.log(e.key, e.size));
 *   stowage.addExcludeHook(({ source, excludes }) => (excludes.includes('uploads') ? ['thumbnails'] : []));
 *   const backup = await stowage.createBackup({ description: 'before upgrade' });
 */
export class Stowage extends StowageEmitter {
  readonly config: StowageConfig;
  readonly storage: Storage;
  readonly catalogue: Catalogue;
  /** Set when the embedded default (demo application) is in use. */
  readonly usingDefaultConfig: boolean;
  /** What recovery found when this instance opened (null if it did not run). */
  recovery: RecoveryReport | null = null;
  private readonly excludeHooks: ExcludeHook[] = [];
  private heldLock: HeldLock | null = null;

  private constructor(config: StowageConfig) {
    super();
    this.config = config;
    this.usingDefaultConfig = config.configPath === null;
    this.storage = new LocalStorage(config.storage.path);
    this.catalogue = new Catalogue(config.dataDir);
  }

  static async open(options: StowageOptions = {}): Promise<Stowage> {
    const config = options.config ?? loadConfig(options);
    fs.mkdirSync(config.dataDir, { recursive: true });
    if (config.configPath === null) ensureDemoApp(config);
    const stowage = new Stowage(config);
    if (!options.skipRecovery) await stowage.recoverIfIdle();
    return stowage;
  }

  private get context(): EngineContext {
    return {
      config: this.config,
      storage: this.storage,
      catalogue: this.catalogue,
      events: this,
      excludeHooks: this.excludeHooks,
      tempDir: path.join(this.config.dataDir, 'tmp'),
      stowageVersion: STOWAGE_VERSION,
    };
  }

  /** Adds a hook that returns more exclude rules at backup time; returns a function that removes it. */
  addExcludeHook(hook: ExcludeHook): () => void {
    this.excludeHooks.push(hook);
    return () => {
      const i = this.excludeHooks.indexOf(hook);
      if (i >= 0) this.excludeHooks.splice(i, 1);
    };
  }

  /** Finishes or rolls back interrupted work, unless a live job holds the lock. */
  async recoverIfIdle(): Promise<RecoveryReport | null> {
    const holder = readLock(this.config.dataDir);
    if (holder && !isStale(holder)) return null;
    try {
      return await this.withLock('recovery', async () => this.recovery);
    } catch (err) {
      if (isStowageError(err, 'BUSY')) return null;
      throw err;
    }
  }

  private async withLock<T>(job: string, fn: () => Promise<T>): Promise<T> {
    if (this.heldLock) return fn(); // re-entrant: the safety backup runs inside a restore
    this.heldLock = acquireLock(this.config.dataDir, job);
    try {
      this.recovery = await recover(this.context);
      return await fn();
    } finally {
      this.heldLock.release();
      this.heldLock = null;
    }
  }

  async createBackup(options: BackupOptions = {}): Promise<BackupInfo> {
    const record = await this.withLock(`backup${options.name ? ` ${options.name}` : ''}`, () => runBackup(this.context, options));
    return this.toInfo(record, null);
  }

  /** Every backup, newest first: completed ones from storage, plus failed and running ones. */
  async listBackups(): Promise<BackupInfo[]> {
    const stored = await this.storage.list();
    const storedByKey = new Map(stored.map((o) => [o.key, o]));
    const records = new Map(this.catalogue.listBackups().map((r) => [r.key, r]));
    for (const obj of stored) {
      // Archives the catalogue does not know, or a failed record whose key now holds another
      // file. A file already judged unusable (same size) is not read again on every list.
      const known = records.get(obj.key);
      if (!known || (known.status === 'failed' && known.size !== obj.size)) {
        const imported = await this.importStored(obj.key, obj.modified);
        if (imported) records.set(obj.key, imported);
      }
    }
    const out: BackupInfo[] = [];
    for (const record of records.values()) {
      const obj = storedByKey.get(record.key);
      if (!obj && record.status === 'completed') {
        record.status = 'failed';
        record.statusMessage = `the archive is no longer in ${this.storage.description} (deleted outside Stowage?)`;
      }
      out.push(this.toInfo(record, obj?.modified ?? null, obj?.size));
    }
    return out.sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.key.localeCompare(a.key));
  }

  async getBackup(key: string): Promise<BackupInfo> {
    const found = (await this.listBackups()).find((b) => b.key === key);
    if (!found) throw new StowageError('BACKUP_NOT_FOUND', `no backup named ${key}; "stowage list" shows the backups there are`);
    return found;
  }

  /** An archive found in storage but not in the catalogue (copied in, or the catalogue was lost). */
  private async importStored(key: string, modified: Date): Promise<BackupRecord | null> {
    const existing = this.catalogue.getBackup(key);
    try {
      const manifest = await this.readManifest(key);
      const record: BackupRecord = {
        key,
        id: manifest.id,
        name: manifest.name,
        description: manifest.description,
        status: 'completed',
        statusMessage: '',
        trigger: (['manual', 'schedule', 'upload', 'api', 'pre-restore'].includes(manifest.trigger) ? manifest.trigger : 'upload') as BackupRecord['trigger'],
        createdAt: manifest.createdAt,
        completedAt: modified.toISOString(),
        size: (await this.storage.stat(key))?.size ?? 0,
        hostname: manifest.hostname,
        appName: manifest.app.name,
        appVersion: manifest.app.version,
        labels: manifest.app.labels,
        sources: manifest.sources.map((s) => ({ name: s.name, kind: s.kind, path: s.path, files: s.files, bytes: s.bytes })),
        excludes: manifest.excludes,
        warnings: manifest.warnings,
        encrypted: false,
      };
      this.catalogue.insertBackup(record);
      return record;
    } catch (err) {
      if (existing) {
        this.catalogue.updateBackup(key, { statusMessage: `not a usable Stowage backup: ${errorMessage(err)}`, size: (await this.storage.stat(key))?.size ?? 0 });
        return this.catalogue.getBackup(key);
      }
      const record: BackupRecord = {
        key,
        id: `foreign-${key}`,
        name: key.replace(/\.zip$/, ''),
        description: '',
        status: 'failed',
        statusMessage: `not a usable Stowage backup: ${errorMessage(err)}`,
        trigger: 'upload',
        createdAt: modified.toISOString(),
        completedAt: null,
        size: (await this.storage.stat(key))?.size ?? 0,
        hostname: '',
        appName: '',
        appVersion: '',
        labels: {},
        sources: [],
        excludes: [],
        warnings: [],
        encrypted: false,
      };
      this.catalogue.insertBackup(record);
      return record;
    }
  }

  private toInfo(record: BackupRecord, modified: Date | null, size?: number): BackupInfo {
    return { ...record, size: size ?? record.size, modified: (modified ?? new Date(record.completedAt ?? record.createdAt)).toISOString() };
  }

  /** Resolves KEY or FILE to a local archive path. */
  private async openArchive(keyOrFile: string): Promise<{ file: string; key: string; release: () => Promise<void> }> {
    if (isValidKey(keyOrFile) && !keyOrFile.includes('/')) {
      if (await this.storage.stat(keyOrFile)) {
        const copy = await this.storage.localCopy(keyOrFile, path.join(this.config.dataDir, 'tmp'));
        return { file: copy.path, key: keyOrFile, release: () => copy.release() };
      }
      if (!fs.existsSync(keyOrFile)) {
        const record = this.catalogue.getBackup(keyOrFile);
        const why = record?.status === 'failed' ? ` (that backup failed: ${record.statusMessage})` : '';
        throw new StowageError('BACKUP_NOT_FOUND', `no backup named ${keyOrFile} in ${this.storage.description}${why}; "stowage list" shows the backups there are`);
      }
    }
    const file = path.resolve(keyOrFile);
    const st = fs.statSync(file, { throwIfNoEntry: false });
    if (!st?.isFile()) throw new StowageError('BACKUP_NOT_FOUND', `${keyOrFile} is neither a backup key in ${this.storage.description} nor a file`);
    return { file, key: path.basename(file), release: async () => {} };
  }

  async readManifest(keyOrFile: string): Promise<Manifest> {
    const archive = await this.openArchive(keyOrFile);
    try {
      const reader = await ArchiveReader.open(archive.file);
      try {
        return await reader.readManifest();
      } finally {
        reader.close();
      }
    } finally {
      await archive.release();
    }
  }

  /** Re-reads every entry and checks its SHA-256 against the manifest. */
  async verify(keyOrFile: string): Promise<VerifyResult> {
    const archive = await this.openArchive(keyOrFile);
    const result: VerifyResult = { key: archive.key, ok: true, entries: 0, files: 0, bytes: 0, errors: [] };
    try {
      const reader = await ArchiveReader.open(archive.file);
      try {
        const t0 = Date.now();
        let totalBytes = 0;
        let totalFiles = 0;
        for (const entry of reader.order) {
          if (reader.type(entry) !== 'file') continue;
          totalFiles++;
          totalBytes += reader.size(entry);
        }
        const report = progressThrottle((p) => this.emit('verify.progress', { key: archive.key, ...p }));
        let next = 0;
        const worker = async () => {
          while (next < reader.order.length) {
            const entry = reader.order[next++]!;
            result.entries++;
            try {
              await reader.verifyEntry(entry, (n) => {
                result.bytes += n;
                report({ phase: 'verifying', files: result.files, filesTotal: totalFiles, bytes: result.bytes, bytesTotal: totalBytes, elapsedMs: Date.now() - t0 });
              });
              if (reader.type(entry) === 'file') result.files++;
            } catch (err) {
              result.ok = false;
              result.errors.push({ path: reader.name(entry), message: errorMessage(err) });
            }
          }
        };
        await Promise.all(Array.from({ length: 4 }, worker));
        report({ phase: result.ok ? 'completed' : 'failed', files: result.files, filesTotal: totalFiles, bytes: result.bytes, bytesTotal: totalBytes, elapsedMs: Date.now() - t0 }, true);
      } finally {
        reader.close();
      }
    } finally {
      await archive.release();
    }
    return result;
  }

  async restore(keyOrFile: string, options: RestoreOptions = {}): Promise<RestoreOutcome> {
    const run = async () => {
      const archive = await this.openArchive(keyOrFile);
      try {
        return await runRestore(this.context, archive, options, this.safetyBackupFor(archive.key, options));
      } finally {
        await archive.release();
      }
    };
    // A dry run reads only; it does not wait for (or block) other jobs.
    return options.dryRun ? run() : this.withLock(`restore ${keyOrFile}`, run);
  }

  /** A pre-restore backup of the sources that exist now; null when there is nothing to protect. */
  private safetyBackupFor(key: string, options: RestoreOptions): (() => Promise<string>) | null {
    if (options.targetDir) return null; // the configured data is not touched
    const present = this.config.sources.filter((s) => fs.existsSync(s.path) && (!options.sources?.length || options.sources.includes(s.name))).map((s) => s.name);
    if (!present.length) return null;
    return async () => (await runBackup(this.context, { trigger: 'pre-restore', description: `automatic backup before restoring ${key}`, sources: present })).key;
  }

  async deleteBackup(key: string): Promise<void> {
    await this.withLock(`delete ${key}`, async () => {
      const exists = await this.storage.stat(key);
      const record = this.catalogue.getBackup(key);
      if (!exists && !record) throw new StowageError('BACKUP_NOT_FOUND', `no backup named ${key}; "stowage list" shows the backups there are`);
      await this.storage.delete(key);
      this.catalogue.deleteBackup(key);
      this.emit('backup.deleted', { key });
    });
  }

  restoreStatus(): RestoreStatusRecord {
    return this.catalogue.getRestoreStatus();
  }

  close(): void {
    this.catalogue.close();
  }
}
