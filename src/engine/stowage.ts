import fs from 'node:fs';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Manifest } from '../archive/manifest.js';
import { ArchiveReader } from '../archive/zip-reader.js';
import { ensureDemoApp } from '../config/demo-app.js';
import { loadConfig, type LoadOptions, type StowageConfig } from '../config/load.js';
import { SecretBox } from '../config/secret-box.js';
import { SettingsStore } from '../config/settings-store.js';
import { decryptToTempFile, decryptionKeysFromEnv, isEncryptedFile, type DecryptionKeys } from '../encryption/archive.js';
import { StowageError, errorMessage, isStowageError } from '../errors.js';
import { StowageEmitter, progressThrottle } from '../events/events.js';
import { processTag } from '../fs/process.js';
import { planRetention, type RetentionDecision } from '../schedule/retention.js';
import { assertValidKey, isEncryptedKey, isValidKey, keyFromName, nameOfKey } from '../storage/keys.js';
import { OutboxStorage } from '../storage/outbox.js';
import { IncompleteListing, type Storage, type StoredObject } from '../storage/storage.js';
import { STOWAGE_VERSION } from '../version.js';
import { runBackup, type BackupOptions, type ExcludeHook } from './backup.js';
import { Catalogue, type BackupRecord, type PointRunRecord, type RestoreStatusRecord } from './catalogue.js';
import type { EngineContext } from './context.js';
import { CheckFailed, chooseBackup, runDrill, runRecordedVerify, type BackupSample, type DrillOptions, type DrillResult, type RecordedVerifyResult } from './drill.js';
import { acquireLock, describeHolder, isStale, readLock, type HeldLock } from './lock.js';
import { PointStore, type PointView } from './point-store.js';
import { runPoint } from './points.js';
import { retryPendingPushes, type RetryResult } from './push.js';
import { recover, type RecoveryReport } from './recovery.js';
import { restoreDisabledReason, runRestore, type RestoreOptions, type RestoreOutcome } from './restore.js';
import { ChosenStorage, resolveStorage } from './storage-choice.js';

/** A backup as users see it: the catalogue record plus PocketBase's `modified`. */
export interface BackupInfo extends BackupRecord {
  /** When the archive was last written (storage mtime), ISO 8601; the creation time if not stored. */
  modified: string;
}

export interface BackupListing {
  backups: readonly BackupInfo[];
  /** Why storage could not be listed (the list is then the catalogue's), or null. */
  storageUnreachable: string | null;
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

export type JobKind = 'backup' | 'restore' | 'reset' | 'export' | 'recovery' | 'drill' | 'verify' | 'point' | 'upload';

/** A job that has started; `done` settles when it ends (its errors are also in the catalogue). */
export interface Job<T> {
  id: string;
  kind: JobKind;
  key: string | null;
  done: Promise<T>;
}

/** The key a factory reset is reported under in the restore status. */
export const FACTORY_RESET_KEY = 'factory-reset';

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
  /** Runtime settings: schedules, retention, S3 (stowage.yaml gives the defaults). */
  readonly settings: SettingsStore;
  /** Backup points from stowage.yaml (read-only) and from the API (stored, credentials sealed). */
  readonly points: PointStore;
  /** Set when the embedded default (demo application) is in use. */
  readonly usingDefaultConfig: boolean;
  /** What recovery found when this instance opened (null if it did not run). */
  recovery: RecoveryReport | null = null;
  private readonly excludeHooks: ExcludeHook[] = [];
  private heldLock: HeldLock | null = null;
  private currentJob: { kind: JobKind; description: string; key: string | null } | null = null;
  private currentJobId: string | null = null;
  private decryptionKeys: DecryptionKeys | null = null;
  private listMemo: { stored: readonly StoredObject[]; records: readonly BackupRecord[]; result: readonly BackupInfo[] } | null = null;

  private constructor(config: StowageConfig) {
    super();
    this.config = config;
    this.usingDefaultConfig = config.configPath === null;
    this.catalogue = new Catalogue(config.dataDir);
    // Opened on first use: only stored credentials need the key file (or STOWAGE_SECRET).
    let box: SecretBox | null = null;
    const secrets = () => (box ??= SecretBox.forDataDir(config.dataDir));
    this.settings = new SettingsStore(this.catalogue, config.settings, secrets);
    // stowage.yaml's storage, or S3 from the settings when enabled there (switchable at run time).
    this.storage = new ChosenStorage(config, () => this.settings.get());
    this.points = new PointStore({
      db: this.catalogue.database,
      configPoints: config.points,
      sources: config.sources,
      secrets,
      lastRun: (name) => this.catalogue.lastPointRun(name),
    });
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
      tempDir: path.join(this.config.dataDir, 'tmp', processTag()),
      stowageVersion: STOWAGE_VERSION,
      jobLog: (text: string) => {
        if (this.currentJobId) this.catalogue.appendJobLog(this.currentJobId, text);
      },
    };
  }

  /** This process's scratch folder inside the data folder (removed by close()). */
  get scratchDir(): string {
    return this.context.tempDir;
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
    if (this.heldLock) return null;
    const holder = readLock(this.config.dataDir);
    if (holder && !isStale(holder)) return null;
    try {
      const job = await this.startJob('recovery', 'recovery', null, async () => this.recovery, async (report) => report);
      return await job.done;
    } catch (err) {
      if (isStowageError(err, 'BUSY')) return null;
      throw err;
    }
  }

  /** The job this instance is running now (null when idle). */
  get runningJob(): { kind: JobKind; description: string; key: string | null; startedAt: string } | null {
    if (!this.heldLock || !this.currentJob) return null;
    return { ...this.currentJob, startedAt: this.heldLock.info.startedAt };
  }

  /**
   * Takes the data-folder lock (BUSY if any job holds it, in this process or another), runs
   * recovery, then `prepare` (whose errors are the caller's, e.g. an unknown key), and returns
   * once the job is running: `done` settles when it ends. The server answers 202 in between.
   */
  private async startJob<P, T>(kind: JobKind, description: string, key: string | null, prepare: () => Promise<P>, run?: (prepared: P) => Promise<T>): Promise<Job<T>> {
    if (this.heldLock) {
      throw new StowageError('BUSY', `busy: ${this.heldLock.info.job} is already running in this process (since ${this.heldLock.info.startedAt}); wait for it to finish`, {
        details: { holder: this.heldLock.info },
      });
    }
    const lock = acquireLock(this.config.dataDir, description, key ?? undefined);
    this.heldLock = lock;
    this.currentJob = { kind, description, key };
    const release = () => {
      lock.release();
      if (this.heldLock === lock) {
        this.heldLock = null;
        this.currentJob = null;
        this.currentJobId = null;
      }
    };
    let prepared: P;
    try {
      this.recovery = await recover(this.context);
      prepared = await prepare();
    } catch (err) {
      release();
      throw err;
    }
    // Recovery runs on every open; only real jobs go into the history.
    const id = kind === 'recovery' ? '' : this.catalogue.startJob(kind, description, key);
    this.currentJobId = id || null;
    const done = (async () => {
      try {
        const result = run ? await run(prepared) : (prepared as unknown as T);
        if (id) this.catalogue.finishJob(id, 'completed', '');
        return result;
      } catch (err) {
        if (id) this.catalogue.finishJob(id, 'failed', errorMessage(err));
        throw err;
      } finally {
        release();
      }
    })();
    return { id, kind, key, done };
  }

  async createBackup(options: BackupOptions = {}): Promise<BackupInfo> {
    return (await this.startBackup(options)).done;
  }

  /**
   * Starts a backup and returns once it is running: `started` resolves with its record (status
   * `started`) as soon as it is in the catalogue, `done` with the finished backup.
   */
  async startBackup(options: BackupOptions = {}): Promise<Job<BackupInfo> & { started: Promise<BackupInfo> }> {
    let onStarted: (r: BackupRecord) => void = () => {};
    const started = new Promise<BackupInfo>((resolve) => {
      onStarted = (r) => resolve(this.toInfo(r, null));
    });
    const key = options.name ? keyFromName(options.name) : null;
    const job = await this.startJob('backup', `backup${options.name ? ` ${options.name}` : ''}`, key, async () => undefined, async () => {
      const record = await runBackup(this.context, { ...options, onStarted: (r) => { options.onStarted?.(r); onStarted(r); } });
      // Backup points of the sources just backed up, inside the same job (one job at a time);
      // a point that fails is recorded and reported, and never fails the backup.
      const backedUp = new Set(record.sources.map((s) => s.name));
      for (const point of this.points.all()) if (point.afterBackup && backedUp.has(point.source)) await runPoint(this.context, point, record.key);
      // Remote storage took this one: older backups still waiting in the outbox go too.
      if (record.status === 'completed') await retryPendingPushes(this.context, { except: record.key });
      return this.toInfo(record, null);
    });
    const startedOrFailed = Promise.race([started, job.done]);
    startedOrFailed.catch(() => {}); // callers that only await `done` must not see an unhandled rejection
    return { ...job, started: startedOrFailed };
  }

  /**
   * Streams a fresh backup into `output` without storing or listing it (SysReptor's backup-key
   * export: an external backup system pulls it). One job at a time, like any backup.
   */
  async exportBackup(output: Writable, options: Omit<BackupOptions, 'name' | 'trigger' | 'output'> = {}): Promise<Job<BackupRecord>> {
    return this.startJob('export', 'export', null, async () => undefined, () => runBackup(this.context, { ...options, trigger: 'api', output }));
  }

  /**
   * Every backup, newest first: completed ones from storage, plus failed and running ones.
   * The same array comes back while neither storage nor the catalogue changed (both cache
   * their listings), so a server can reuse its serialised response. Do not modify it.
   */
  async listBackups(): Promise<readonly BackupInfo[]> {
    return (await this.listBackupsReport()).backups;
  }

  /**
   * The backups, and whether storage could be listed. While it cannot (a bucket unreachable),
   * the list is the catalogue's, with whatever storage could still list (the outbox): nothing
   * is marked missing and nothing imported, and `storageUnreachable` says why.
   */
  async listBackupsReport(): Promise<BackupListing> {
    let stored: readonly StoredObject[];
    try {
      stored = await this.storage.list();
    } catch (err) {
      if (!(err instanceof IncompleteListing) && !isStowageError(err, 'STORAGE_FAILED')) throw err;
      return {
        backups: this.backupsFrom(this.catalogue.listBackups(), err instanceof IncompleteListing ? err.available : [], false),
        storageUnreachable: err instanceof Error ? err.message : String(err),
      };
    }
    let records = this.catalogue.listBackups();
    if (this.listMemo && this.listMemo.stored === stored && this.listMemo.records === records) return { backups: this.listMemo.result, storageUnreachable: null };
    const recordsByKey = new Map(records.map((r) => [r.key, r]));
    let imported = false;
    for (const obj of stored) {
      // Archives the catalogue does not know, or a failed record whose key now holds another
      // file. A file already judged unusable (same size) is not read again on every list.
      const known = recordsByKey.get(obj.key);
      if (!known || (known.status === 'failed' && known.size !== obj.size)) {
        if (await this.importStored(obj.key, obj.modified)) imported = true;
      }
    }
    if (imported) {
      stored = await this.storage.list();
      records = this.catalogue.listBackups();
    }
    const result = this.backupsFrom(records, stored, true);
    this.listMemo = { stored, records, result };
    return { backups: result, storageUnreachable: null };
  }

  /** Catalogue records joined with storage; `complete`: a record storage lacks is really gone. */
  private backupsFrom(records: readonly BackupRecord[], stored: readonly StoredObject[], complete: boolean): readonly BackupInfo[] {
    const storedByKey = new Map(stored.map((o) => [o.key, o]));
    // Backups written to another storage (before S3 was switched on or off) are not listed.
    const elsewhere = this.catalogue.keysElsewhere(this.storage.description);
    const out: BackupInfo[] = [];
    for (const record of records) {
      const obj = storedByKey.get(record.key);
      if (!obj && elsewhere.has(record.key)) continue;
      const gone = complete && !obj && record.status === 'completed';
      const shown = gone ? { ...record, status: 'failed' as const, statusMessage: `the archive is no longer in ${this.storage.description} (deleted outside Stowage?)` } : record;
      out.push(this.toInfo(shown, obj?.modified ?? null, obj?.size));
    }
    out.sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.key.localeCompare(a.key));
    return Object.freeze(out);
  }

  async getBackup(key: string): Promise<BackupInfo> {
    const found = (await this.listBackups()).find((b) => b.key === key);
    if (!found) throw new StowageError('BACKUP_NOT_FOUND', `no backup named ${key}; "stowage list" shows the backups there are`);
    return found;
  }

  /** An archive found in storage but not in the catalogue (copied in, or the catalogue was lost). */
  private async importStored(key: string, modified: Date, trigger?: BackupRecord['trigger']): Promise<BackupRecord | null> {
    const existing = this.catalogue.getBackup(key);
    try {
      const manifest = await this.readManifest(key);
      // A copy of a backup under another key (an upload of a download) carries the same id.
      const idTaken = this.catalogue.findKeyById(manifest.id);
      const record: BackupRecord = {
        key,
        id: idTaken && idTaken !== key ? `${manifest.id}@${key}` : manifest.id,
        name: manifest.name,
        description: manifest.description,
        status: 'completed',
        statusMessage: '',
        trigger: trigger ?? ((['manual', 'schedule', 'upload', 'api', 'pre-restore'].includes(manifest.trigger) ? manifest.trigger : 'upload') as BackupRecord['trigger']),
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
        encrypted: isEncryptedKey(key),
      };
      this.catalogue.insertBackup(record, this.storage.description);
      return record;
    } catch (err) {
      // An encrypted archive this process has no key for: listed, its details unknown until decrypted.
      if (isStowageError(err, 'DECRYPT_FAILED') && isEncryptedKey(key) && !existing) {
        const size = (await this.storage.stat(key))?.size ?? 0;
        const record: BackupRecord = {
          key, id: `encrypted-${key}`, name: nameOfKey(key), description: '', status: 'completed',
          statusMessage: 'encrypted, found in storage without a catalogue entry: its sources and versions are known once it is decrypted (stowage show KEY --identity FILE)',
          trigger: 'upload', createdAt: modified.toISOString(), completedAt: modified.toISOString(), size, hostname: '', appName: '', appVersion: '',
          labels: {}, sources: [], excludes: [], warnings: [], encrypted: true,
        };
        this.catalogue.insertBackup(record, this.storage.description);
        return record;
      }
      if (existing) {
        this.catalogue.updateBackup(key, { statusMessage: `not a usable Stowage backup: ${errorMessage(err)}`, size: (await this.storage.stat(key))?.size ?? 0 });
        return this.catalogue.getBackup(key);
      }
      const record: BackupRecord = {
        key,
        id: `foreign-${key}`,
        name: nameOfKey(key),
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
      this.catalogue.insertBackup(record, this.storage.description);
      return record;
    }
  }

  private toInfo(record: BackupRecord, modified: Date | null, size?: number): BackupInfo {
    return { ...record, size: size ?? record.size, modified: (modified ?? new Date(record.completedAt ?? record.createdAt)).toISOString() };
  }

  /**
   * Keys for encrypted backups, used when a call gives none (the CLI sets them from --identity
   * and --passphrase); STOWAGE_IDENTITY / STOWAGE_PASSPHRASE otherwise.
   */
  useDecryptionKeys(keys: DecryptionKeys): void {
    this.decryptionKeys = keys;
  }

  /** Resolves KEY or FILE to a local archive path; an encrypted one is decrypted into scratch space first. */
  private async openArchive(keyOrFile: string, keys?: DecryptionKeys): Promise<{ file: string; key: string; release: () => Promise<void> }> {
    const local = await this.locateArchive(keyOrFile);
    if (!isEncryptedFile(local.file)) return local;
    try {
      const given = keys ?? this.decryptionKeys ?? decryptionKeysFromEnv();
      const file = await decryptToTempFile(local.file, given, this.context.tempDir, local.key);
      return { file, key: local.key, release: async () => {
        await fs.promises.rm(file, { force: true });
        await local.release();
      } };
    } catch (err) {
      await local.release();
      throw err;
    }
  }

  private async locateArchive(keyOrFile: string): Promise<{ file: string; key: string; release: () => Promise<void> }> {
    if (isValidKey(keyOrFile) && !keyOrFile.includes('/')) {
      if (await this.storage.stat(keyOrFile)) {
        const copy = await this.storage.localCopy(keyOrFile, this.context.tempDir);
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

  async readManifest(keyOrFile: string, keys?: DecryptionKeys): Promise<Manifest> {
    const archive = await this.openArchive(keyOrFile, keys);
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
  async verify(keyOrFile: string, keys?: DecryptionKeys): Promise<VerifyResult> {
    const archive = await this.openArchive(keyOrFile, keys);
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
    if (options.dryRun) {
      // A dry run reads only; it does not wait for (or block) other jobs.
      const archive = await this.openArchive(keyOrFile, options.decrypt);
      try {
        return await runRestore(this.context, archive, options, null);
      } finally {
        await archive.release();
      }
    }
    return (await this.startRestore(keyOrFile, options)).done;
  }

  /**
   * Starts a restore and returns once it runs (after the lock is taken, the archive found and
   * restore found enabled); progress and the outcome go to events and `restoreStatus()`.
   */
  async startRestore(keyOrFile: string, options: Omit<RestoreOptions, 'dryRun'> = {}): Promise<Job<RestoreOutcome>> {
    const key = isValidKey(keyOrFile) ? keyOrFile : null;
    return this.startJob(
      'restore',
      `restore ${keyOrFile}`,
      key,
      async () => {
        const disabled = restoreDisabledReason(this.context);
        if (disabled) throw new StowageError('RESTORE_DISABLED', `${disabled}; nothing was changed`);
        const archive = await this.openArchive(keyOrFile, options.decrypt);
        this.markRestoreStarted(archive.key);
        return archive;
      },
      async (archive) => {
        try {
          return await this.reportRestoreFailure(archive.key, () => runRestore(this.context, archive, options, this.safetyBackupFor(archive.key, options)));
        } finally {
          await archive.release();
        }
      },
    );
  }

  /**
   * Factory reset: a safety backup, then every configured source emptied, with the same staging,
   * journal and rollback as a restore (it restores an archive of empty sources). Paths a source
   * excludes, and Stowage's own folders, are left alone, as in a restore.
   */
  async startFactoryReset(): Promise<Job<RestoreOutcome>> {
    return this.startJob(
      'reset',
      'factory reset',
      null,
      async () => {
        const disabled = restoreDisabledReason(this.context);
        if (disabled) throw new StowageError('RESTORE_DISABLED', `${disabled}; a factory reset is a restore, so nothing was changed`);
        this.markRestoreStarted(FACTORY_RESET_KEY);
      },
      async () => this.reportRestoreFailure(FACTORY_RESET_KEY, async () => {
        await fs.promises.mkdir(this.context.tempDir, { recursive: true });
        const file = path.join(this.context.tempDir, `factory-reset-${Date.now()}.zip`);
        try {
          const out = fs.createWriteStream(file);
          await runBackup(this.context, { trigger: 'api', output: out, emptySources: true, description: 'factory reset: every source empty' });
          const archive = { file, key: FACTORY_RESET_KEY, release: async () => {} };
          return await runRestore(this.context, archive, { force: true, trigger: 'factory-reset' }, this.safetyBackupFor(FACTORY_RESET_KEY, {}));
        } finally {
          await fs.promises.rm(file, { force: true });
        }
      }),
    );
  }

  /** The restore status says `started` from the moment a restore job starts (a 202 is honest). */
  private markRestoreStarted(key: string): void {
    const previous = this.catalogue.getRestoreStatus();
    this.catalogue.setRestoreStatus({ status: 'started', key, startedAt: new Date().toISOString(), lastRestoreTime: previous.lastRestoreTime, message: `restoring ${key}`, safetyBackupKey: null, sources: [] });
  }

  /** A restore that fails before staging (version policy, unknown source) must not stay `started`. */
  private async reportRestoreFailure<T>(key: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      const status = this.catalogue.getRestoreStatus();
      if (status.status === 'started') this.catalogue.setRestoreStatus({ ...status, status: 'failed', message: `restore of ${key} failed: ${errorMessage(err)}; nothing was changed` });
      throw err;
    }
  }

  /**
   * Adds an archive that came from elsewhere (an upload): checked to be a Stowage archive with
   * every checksum right before it appears under `key` (default: its file name in the manifest).
   */
  async importArchive(file: string, key?: string): Promise<BackupInfo> {
    const target = key ? keyFromName(key) : null;
    const checked = await this.verify(file);
    if (!checked.ok) {
      throw new StowageError('ARCHIVE_INVALID', `the archive is damaged: ${checked.errors.slice(0, 3).map((e) => `${e.path}: ${e.message}`).join('; ')}${checked.errors.length > 3 ? ` (+${checked.errors.length - 3} more)` : ''}`);
    }
    const finalKey = target ?? keyFromName((await this.readManifest(file)).key.replace(/\.zip$/, ''));
    if (await this.storage.stat(finalKey)) throw new StowageError('BACKUP_EXISTS', `a backup named ${finalKey} already exists; upload it under another name or delete that one first`);
    const upload = await this.storage.createUpload(finalKey);
    try {
      await pipeline(fs.createReadStream(file, { highWaterMark: 1024 * 1024 }), upload.stream, { end: false });
      const stored = await upload.commit();
      const record = await this.importStored(finalKey, stored.modified, 'upload');
      if (!record) throw new StowageError('ARCHIVE_INVALID', `${finalKey} could not be read back after the upload`);
      const info = this.toInfo(record, stored.modified, stored.size);
      this.emit('backup.uploaded', { key: finalKey, size: stored.size, backup: record });
      return info;
    } catch (err) {
      await upload.abort().catch(() => {});
      throw err;
    }
  }

  /** A pre-restore backup of the sources that exist now; null when there is nothing to protect. */
  private safetyBackupFor(key: string, options: RestoreOptions): (() => Promise<string>) | null {
    if (options.targetDir) return null; // the configured data is not touched
    // A PostgreSQL database is always there to protect (if it cannot be dumped, the safety backup fails and says why).
    const present = this.config.sources.filter((s) => (s.kind === 'postgres' || fs.existsSync(s.path)) && (!options.sources?.length || options.sources.includes(s.name))).map((s) => s.name);
    if (!present.length) return null;
    return async () => (await runBackup(this.context, { trigger: 'pre-restore', description: `automatic backup before restoring ${key}`, sources: present })).key;
  }

  /**
   * Deletes a backup. Refused (BUSY) only while a running job uses that key; other jobs do not
   * block it, because a stored archive is never modified, only created or removed.
   */
  async deleteBackup(key: string): Promise<void> {
    assertValidKey(key);
    const holder = this.heldLock?.info ?? readLock(this.config.dataDir);
    if (holder && holder.key === key && (this.heldLock || !isStale(holder))) {
      throw new StowageError('BUSY', `${key} is in use by a running job (${describeHolder(holder)}); delete it when that job has finished`, { details: { holder } });
    }
    const exists = await this.storage.stat(key);
    const record = this.catalogue.getBackup(key);
    if (!exists && !record) throw new StowageError('BACKUP_NOT_FOUND', `no backup named ${key}; "stowage list" shows the backups there are`);
    await this.storage.delete(key);
    this.catalogue.deleteBackup(key);
    this.emit('backup.deleted', { key });
  }

  /**
   * Retention: which backups the settings keep (scheduled ones only; manual, uploaded and
   * pre-restore backups are never pruned, nor the last completed backup), and removes the rest
   * unless `dryRun`. Backups a running job uses are kept this time and listed as such.
   */
  async prune(options: { dryRun?: boolean; trigger?: string; now?: Date } = {}): Promise<{ dryRun: boolean; decisions: RetentionDecision[]; removed: string[] }> {
    const { backups } = this.settings.get();
    const hasPolicy = Object.values(backups.retention).some((v) => v !== undefined && v !== 0 && v !== '');
    const decisions = planRetention(this.catalogue.listBackups(), {
      cronMaxKeep: backups.cronMaxKeep,
      policy: hasPolicy ? backups.retention : undefined,
      timezone: backups.timezone,
      now: options.now ?? new Date(),
    });
    const removed: string[] = [];
    if (!options.dryRun) {
      for (const d of decisions) {
        if (d.keep) continue;
        try {
          await this.deleteBackup(d.key);
          removed.push(d.key);
        } catch (err) {
          d.keep = true;
          d.reasons.push(`not removed: ${errorMessage(err)}`);
        }
      }
    }
    this.emit('prune.completed', { dryRun: Boolean(options.dryRun), removed, kept: decisions.filter((d) => d.keep).length, trigger: options.trigger ?? 'manual' });
    return { dryRun: Boolean(options.dryRun), decisions, removed };
  }

  /**
   * Restore drill (src/engine/drill.ts): restores `key` (default: the newest completed backup)
   * into a scratch folder in the data folder, compares it with its manifest, runs SQLite's
   * integrity_check, removes it, and records the outcome on the backup (drilledAt, drillStatus,
   * drillMessage). A job (BUSY while another runs). Never touches the configured targets or the
   * restore status, runs no restore hooks, and runs even when restore is disabled. Resolves with
   * ok: false when the backup does not restore correctly.
   */
  async drill(key?: string, options: DrillOptions = {}): Promise<DrillResult> {
    const chosen = chooseBackup(await this.listBackups(), key, 'newest', 'drill');
    const job = await this.startJob('drill', `drill ${chosen}`, chosen, () => this.openArchive(chosen), async (archive) => {
      try {
        const result = await runDrill(this.context, archive, options);
        if (!result.ok) throw new CheckFailed(result, result.error!.code, result.message); // the job history says failed
        return result;
      } finally {
        await archive.release();
      }
    });
    return job.done.catch((err: unknown) => {
      if (err instanceof CheckFailed) return err.result as DrillResult;
      throw err;
    });
  }

  /**
   * `verify` as a recorded job: `key`, else the newest completed backup, or with sample
   * 'rotate' the one verified least recently (never-verified first); records verifiedAt,
   * verifyStatus, verifyMessage and emits verify.completed / verify.failed.
   */
  async verifyRecorded(key?: string, options: { trigger?: string; sample?: BackupSample } = {}): Promise<RecordedVerifyResult> {
    const chosen = chooseBackup(await this.listBackups(), key, options.sample ?? 'newest', 'verify');
    const job = await this.startJob('verify', `verify ${chosen}`, chosen, async () => undefined, async () => {
      const result = await runRecordedVerify(this.context, chosen, options.trigger ?? 'manual', (k) => this.verify(k));
      if (!result.ok) throw new CheckFailed(result, 'CHECKSUM_MISMATCH', result.message);
      return result;
    });
    return job.done.catch((err: unknown) => {
      if (err instanceof CheckFailed) return err.result as RecordedVerifyResult;
      throw err;
    });
  }

  /** Runs a backup point now (`stowage point run`, POST /api/points/{name}/run), as a job; its outcome is in the returned record. */
  async runPoint(name: string): Promise<PointRunRecord> {
    return (await this.startPointRun(name)).done;
  }

  /** Starts a point run; returns once it holds the lock (BUSY otherwise), like startBackup. */
  async startPointRun(name: string): Promise<Job<PointRunRecord>> {
    this.points.describe(name); // an unknown name is refused before taking the lock
    return this.startJob('point', `point ${name}`, null, async () => undefined, async () => {
      const point = this.points.get(name);
      if (!point) throw new StowageError('USAGE', `backup point "${name}" was deleted before it could run`);
      return runPoint(this.context, point, null);
    });
  }

  /**
   * Uploads backups that wait in the local outbox because remote storage (S3) refused them
   * (`stowage retry-uploads`; the server calls it every few minutes). One attempt each.
   */
  async retryUploads(): Promise<RetryResult> {
    return (await this.startJob('upload', 'retry uploads', null, async () => undefined, () => retryPendingPushes(this.context))).done;
  }

  /** Backups written locally and not yet in remote storage (none with local storage). */
  async pendingUploads(): Promise<StoredObject[]> {
    const storage = await resolveStorage(this.storage);
    return storage instanceof OutboxStorage ? storage.pending() : [];
  }

  /** Every point (stowage.yaml and API) with its last run; credentials masked. */
  listPoints(): PointView[] {
    return this.points.list();
  }

  restoreStatus(): RestoreStatusRecord {
    return this.catalogue.getRestoreStatus();
  }

  /** Closes the catalogue and removes this process's scratch folder. */
  close(): void {
    this.catalogue.close();
    fs.rmSync(this.context.tempDir, { recursive: true, force: true });
  }
}
