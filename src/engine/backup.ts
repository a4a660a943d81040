import crypto from 'node:crypto';
import { execSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, ManifestSpool, formatMode, type ManifestHeader, type ManifestSource } from '../archive/manifest.js';
import { ZipWriter, type ArchiveInput } from '../archive/zip-writer.js';
import { StowageError, errorMessage, isStowageError } from '../errors.js';
import { progressThrottle } from '../events/events.js';
import { ExcludeRules } from '../sources/fnmatch.js';
import { createEmptySource, createSource, PostgresSource } from '../sources/index.js';
import { failpoint } from './failpoints.js';
import { runAfterHooks, runJobHooks } from './job-hooks.js';
import type { BackupContext, Source } from '../sources/source.js';
import { encryptingUpload, wantsEncryption, type EncryptionTarget } from '../encryption/archive.js';
import { defaultKey, isEncryptedKey, keyFromName, nameOfKey } from '../storage/keys.js';
import { LocalStorage } from '../storage/local.js';
import { OutboxStorage } from '../storage/outbox.js';
import { completedMessage, pushBackup, pushDelays } from './push.js';
import { resolveStorage } from './storage-choice.js';
import type { Storage, Upload } from '../storage/storage.js';
import type { BackupRecord, BackupTrigger, SourceSummary } from './catalogue.js';
import type { EngineContext } from './context.js';

export interface BackupOptions {
  /** The key (".zip" is added if missing). Default: `<app>_<UTC timestamp>.zip`. */
  name?: string;
  description?: string;
  /** Extra exclude rules for this backup, applied to every dir source. */
  excludes?: string[];
  trigger?: BackupTrigger;
  /** Restrict to these sources (by name). */
  sources?: string[];
  /** Called once the backup is in the catalogue with status `started`. */
  onStarted?: (record: BackupRecord) => void;
  /**
   * Write the archive here instead of to storage; nothing is stored or catalogued (an export
   * streamed to a client, or the empty archive of a factory reset).
   */
  output?: Writable;
  /** Archive every source as empty (a factory reset restores this). */
  emptySources?: boolean;
  /**
   * Encrypt to these (age; the key ends in `.zip.age`), overriding `encryption:` in
   * stowage.yaml; `null` writes this backup unencrypted.
   */
  encryption?: EncryptionTarget | null;
}

/** Called at backup time for each dir source; returns more rules (relative to the source). */
export type ExcludeHook = (ctx: { source: string; path: string; excludes: readonly string[] }) => string[] | Promise<string[]>;

/** Warnings kept in the catalogue and manifest; the count beyond this is summarised. */
const MAX_WARNINGS = 1000;

const TRIGGER_PREFIX: Partial<Record<BackupTrigger, string>> = { 'pre-restore': '@pre-restore_', schedule: '@auto_' };

export function resolveAppVersion(app: EngineContext['config']['app']): string {
  if (app.version) return app.version;
  if (!app.versionCommand) return 'unknown';
  try {
    return execSync(app.versionCommand, { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'ignore'] }).trim().split('\n')[0] || 'unknown';
  } catch {
    return 'unknown';
  }
}

/**
 * `<app>_<UTC second>.zip`, or with `_2`, `_3`... when that second's key is taken (a safety
 * backup taken the second after a factory reset's would otherwise collide with it).
 */
async function freeDefaultKey(ctx: EngineContext, storage: Storage, now: Date, trigger: BackupTrigger, encrypted: boolean): Promise<string> {
  const base = nameOfKey(defaultKey(ctx.config.app.name, now, TRIGGER_PREFIX[trigger] ?? ''));
  for (let n = 1; ; n++) {
    const key = keyFromName(n === 1 ? base : `${base}_${n}`, encrypted);
    if (!(await keyTaken(storage, key)) && !ctx.catalogue.getBackup(key)) return key;
  }
}

/** Whom this backup is encrypted to: the request's choice, else stowage.yaml's; null = not encrypted. */
function backupEncryption(config: EngineContext['config'], options: BackupOptions): EncryptionTarget | null {
  const target = options.encryption === undefined ? config.encryption : options.encryption;
  return wantsEncryption(target) ? target : null;
}

/** Whether `key` is in use in `storage` (an outbox answers even when its bucket is unreachable). */
function keyTaken(storage: Storage, key: string): Promise<boolean> {
  return storage instanceof OutboxStorage ? storage.keyTaken(key) : storage.stat(key).then((o) => o !== null);
}

/** Runs one backup. The caller holds the data-folder lock. */
export async function runBackup(ctx: EngineContext, options: BackupOptions = {}): Promise<BackupRecord> {
  const { config, events } = ctx;
  // Resolved once: a settings change mid-backup must not split the job between two storages.
  const storage = await resolveStorage(ctx.storage);
  const trigger = options.trigger ?? 'manual';
  const now = new Date();
  const output = options.output;
  const encryption = backupEncryption(config, options);
  const encrypted = encryption !== null;
  const key = options.name || output ? keyFromName(options.name ?? defaultKey(config.app.name, now, TRIGGER_PREFIX[trigger] ?? ''), encrypted) : await freeDefaultKey(ctx, storage, now, trigger, encrypted);
  if (isEncryptedKey(key) !== encrypted) {
    throw new StowageError('USAGE', encrypted ? `${key}: an encrypted backup's key ends in .zip.age` : `${key} ends in .zip.age, but this backup is not encrypted (no recipients or passphrase configured or given)`);
  }
  // An archive written to `output` is not stored: it goes nowhere near storage or the catalogue.
  const catalogue = output ? null : ctx.catalogue;
  if (!output && (await keyTaken(storage, key))) throw new StowageError('BACKUP_EXISTS', `a backup named ${key} already exists; choose another name or delete it first`);
  const existing = catalogue?.getBackup(key);
  if (existing && existing.status !== 'failed') throw new StowageError('BACKUP_EXISTS', `a backup named ${key} is already ${existing.status}`);

  const selected = options.sources?.length ? config.sources.filter((s) => options.sources!.includes(s.name)) : config.sources;
  const unknown = (options.sources ?? []).filter((n) => !config.sources.some((s) => s.name === n));
  if (unknown.length) throw new StowageError('USAGE', `unknown source ${unknown.join(', ')}; configured: ${config.sources.map((s) => s.name).join(', ')}`);
  const sources: Source[] = selected.map(options.emptySources ? createEmptySource : createSource);

  const record: BackupRecord = {
    key,
    id: crypto.randomUUID(),
    name: nameOfKey(key),
    description: options.description ?? '',
    status: 'started',
    statusMessage: '',
    trigger,
    createdAt: now.toISOString(),
    completedAt: null,
    size: 0,
    hostname: os.hostname(),
    appName: config.app.name,
    appVersion: resolveAppVersion(config.app),
    labels: config.app.labels,
    sources: [],
    excludes: [],
    warnings: [],
    encrypted,
  };
  if (catalogue) {
    catalogue.insertBackup(record, storage.description);
    options.onStarted?.(record);
    events.emit('backup.started', { key, trigger, sources: sources.map((s) => s.name) });
  }
  await new Promise((r) => setImmediate(r)); // let a waiting caller see `started` first
  failpoint('backup.started');

  const warnings: Array<{ path: string; reason: string }> = [];
  let warningCount = 0;
  const warn = (p: string, reason: string) => {
    warningCount++;
    if (warnings.length < MAX_WARNINGS) warnings.push({ path: p, reason });
  };
  const tempDir = ctx.tempDir;
  await fs.promises.mkdir(tempDir, { recursive: true });
  const token = crypto.randomBytes(6).toString('hex');
  const manifestSpool = new ManifestSpool(path.join(tempDir, `manifest-${token}.spool`));
  const manifestPath = path.join(tempDir, `manifest-${token}.json`);
  const startedAt = Date.now();
  const progress = { phase: 'scanning', files: 0, filesTotal: 0, bytes: 0, bytesTotal: 0 };
  const report = progressThrottle((p) => (output ? events.emit('export.progress', p) : events.emit('backup.progress', { key, ...p })));
  const emitProgress = (force = false) => report({ ...progress, elapsedMs: Date.now() - startedAt }, force);
  const perSource = new Map<string, ManifestSource>();
  const neverInclude = [config.dataDir, config.storage.path];
  let manifestBytes = 0;

  let upload: Upload | undefined;
  let writer: ZipWriter | undefined;
  const newWriter = (output: Upload) => new ZipWriter(output.stream, {
    level: config.compression.level,
    spoolPath: path.join(tempDir, `central-${token}.spool`),
    onProgress: (n) => {
      progress.bytes += n;
      emitProgress();
    },
    onSkip: (s) => warn(s.name, s.reason),
    onEntry: (e) => {
      if (e.name === MANIFEST_NAME) return;
      const slash = e.name.indexOf('/');
      const src = perSource.get(e.name.slice(0, slash));
      if (src) {
        if (e.kind === 'file') {
          src.files++;
          src.bytes += e.size;
          progress.files++;
        } else if (e.kind === 'dir') src.dirs++;
        else src.symlinks++;
      }
      manifestSpool.add({
        path: e.name,
        type: e.kind,
        size: e.size,
        mode: formatMode(e.mode),
        mtime: new Date(e.mtimeMs).toISOString(),
        ...(e.sha256 ? { sha256: e.sha256 } : {}),
        ...(e.uid !== undefined ? { uid: e.uid } : {}),
        ...(e.gid !== undefined ? { gid: e.gid } : {}),
      });
    },
  });

  // Hooks belong to backups people asked for; the empty archive of a factory reset has none.
  const withHooks = !options.emptySources;
  const hookContext = { backupKey: key, trigger, sources: sources.map((s) => s.name) };
  try {
    if (withHooks) {
      for (const w of await runJobHooks(ctx, 'beforeBackup', { ...hookContext, event: 'backup.before' })) warn('', w);
    }
    upload = output ? streamUpload(key, output) : await storage.createUpload(key);
    if (encryption) upload = encryptingUpload(upload, encryption);
    writer = newWriter(upload);
    // Source contexts with their exclude rules, hooks included.
    const contexts: BackupContext[] = [];
    for (const source of sources) {
      const cfg = selected.find((s) => s.name === source.name)!;
      let rules: string[] = [];
      if (cfg.kind === 'dir') {
        rules = [...cfg.exclude, ...config.excludes, ...(options.excludes ?? [])];
        for (const hook of ctx.excludeHooks) {
          const more = await hook({ source: source.name, path: source.path, excludes: [...rules] });
          if (Array.isArray(more)) rules.push(...more.filter((r) => typeof r === 'string'));
        }
      }
      const excludes = new ExcludeRules(rules);
      contexts.push({ excludes, neverInclude, tempDir, warn: (p, reason) => warn(`${source.name}/${p}`, reason) });
      perSource.set(source.name, { name: source.name, kind: source.kind, path: source.path, files: 0, dirs: 0, symlinks: 0, bytes: 0, excludes: excludes.rules.slice() });
    }

    // Totals for the progress bar come from a metadata-only walk that runs alongside the backup.
    void Promise.all(sources.map((s, i) => s.estimate(contexts[i]!)))
      .then((estimates) => {
        progress.filesTotal = estimates.reduce((a, e) => a + e.files, 0);
        progress.bytesTotal = estimates.reduce((a, e) => a + e.bytes, 0) + manifestBytes;
      })
      .catch(() => {});

    progress.phase = 'archiving';
    for (let i = 0; i < sources.length; i++) {
      const source = sources[i]!;
      for await (const entry of source.entries(contexts[i]!)) {
        await writer.add(prefixed(source.name, entry));
      }
      // The server a PostgreSQL dump came from, for restore.versionPolicy (docs/FORMAT.md).
      if (source instanceof PostgresSource && source.metadata) {
        const { serverVersion, serverVersionNum, pgDumpVersion, database } = source.metadata;
        perSource.get(source.name)!.postgres = { serverVersion, serverVersionNum, pgDumpVersion, database };
      }
    }
    progress.phase = 'finishing';
    emitProgress(true);

    const header: ManifestHeader = {
      format: FORMAT_NAME,
      formatVersion: FORMAT_VERSION,
      id: record.id,
      key,
      name: record.name,
      description: record.description,
      createdAt: record.createdAt,
      trigger,
      hostname: record.hostname,
      app: { name: config.app.name, version: record.appVersion, labels: config.app.labels },
      stowage: { version: ctx.stowageVersion },
      sources: [...perSource.values()],
      excludes: [...new Set([...config.excludes, ...(options.excludes ?? [])])],
      warnings: warningCount > warnings.length ? [...warnings, { path: '', reason: `${warningCount - warnings.length} more warnings not listed` }] : warnings,
    };
    // Wait for every data entry to be written before the manifest is built from them.
    await writer.flushed();
    manifestSpool.finish(header, manifestPath);
    const manifestStat = await fs.promises.stat(manifestPath);
    // The manifest is archived like any entry; count it so the bar ends at 100%.
    manifestBytes = manifestStat.size;
    progress.bytesTotal += manifestBytes;
    await writer.add({ kind: 'file', name: MANIFEST_NAME, path: manifestPath, size: manifestStat.size, mode: 0o644, mtimeMs: now.getTime() });
    await writer.finish();
    const stored = await upload.commit();

    const sourceSummaries: SourceSummary[] = header.sources.map((s) => ({ name: s.name, kind: s.kind, path: s.path, files: s.files, bytes: s.bytes }));
    if (withHooks) {
      const backupPath = !output && storage instanceof LocalStorage ? path.join(storage.root, key) : null;
      for (const w of await runAfterHooks(ctx, 'afterBackup', { ...hookContext, event: 'backup.after', status: 'completed', backupPath })) warn('', w);
      header.warnings = warningCount > warnings.length ? [...warnings, { path: '', reason: `${warningCount - warnings.length} more warnings not listed` }] : [...warnings];
    }
    const statusMessage = completedMessage(warningCount);
    if (!catalogue) {
      progress.phase = 'completed';
      emitProgress(true);
      return { ...record, status: 'completed', statusMessage, size: stored.size, completedAt: new Date().toISOString(), sources: sourceSummaries, warnings: header.warnings, excludes: header.excludes };
    }
    const summary = { size: stored.size, sources: sourceSummaries, warnings: header.warnings, excludes: header.excludes };
    if (storage instanceof OutboxStorage) {
      // Committed in the local outbox; it is complete once remote storage holds it.
      catalogue.updateBackup(key, summary);
      progress.phase = 'uploading';
      emitProgress(true);
      const pushed = await pushBackup(ctx, storage, key, pushDelays());
      if (!pushed.ok) {
        progress.phase = 'upload-pending';
        emitProgress(true);
        return catalogue.getBackup(key)!;
      }
    }
    catalogue.updateBackup(key, { ...summary, status: 'completed', statusMessage, completedAt: new Date().toISOString() });
    const done = catalogue.getBackup(key)!;
    progress.phase = 'completed';
    emitProgress(true);
    events.emit('backup.created', {
      key,
      path: storage instanceof LocalStorage ? path.join(storage.root, key) : null,
      size: stored.size,
      excludes: header.excludes,
      trigger,
      backup: done,
    });
    return done;
  } catch (err) {
    await writer?.abort(err).catch(() => {});
    await upload?.abort().catch(() => {});
    manifestSpool.discard();
    const message = isStowageError(err) ? err.message : `backup failed: ${errorMessage(err)}`;
    // After-hooks run after a failure too: they restart what before-hooks stopped.
    if (withHooks) await runAfterHooks(ctx, 'afterBackup', { ...hookContext, event: 'backup.after', status: 'failed', error: message });
    if (catalogue) {
      catalogue.updateBackup(key, { status: 'failed', statusMessage: message, warnings });
      events.emit('backup.failed', { key, trigger, error: { code: isStowageError(err) ? err.code : 'BACKUP_FAILED', message } });
    }
    throw isStowageError(err) ? err : new StowageError('BACKUP_FAILED', message, { cause: err });
  } finally {
    for (const s of sources) await s.release().catch(() => {});
    await fs.promises.rm(manifestPath, { force: true });
  }
}

/** An Upload that writes into a caller's stream (nothing to publish: committing ends it). */
function streamUpload(key: string, output: Writable): Upload {
  let size = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      size += chunk.length;
      done(null, chunk);
    },
  });
  const piped = pipeline(counter, output);
  piped.catch(() => {});
  return {
    stream: counter,
    commit: async () => {
      counter.end();
      await piped;
      return { key, size, modified: new Date() };
    },
    abort: async () => {
      counter.destroy();
      output.destroy();
    },
  };
}

function prefixed(sourceName: string, entry: ArchiveInput): ArchiveInput {
  return { ...entry, name: entry.name === '' ? `${sourceName}/` : `${sourceName}/${entry.name}` };
}
