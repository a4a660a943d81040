import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { WEBHOOK_TABLES_SQL } from '../events/webhooks.js';
import { POINT_TABLES_SQL } from './point-store.js';

/**
 * The catalogue: what Stowage knows about each backup beyond the bytes in storage (status,
 * failure reason, trigger, metadata), and the persisted restore status. Storage stays the truth
 * for which archives exist; the catalogue is how a failed backup stays visible with its reason.
 *
 * SQLite (WAL) so that a CLI process and a server can share it safely.
 */
export type BackupStatus = 'started' | 'uploading' | 'completed' | 'failed';
/** How the status message of a backup being pushed to remote storage begins. */
export const UPLOADING_PREFIX = 'uploading to ';
export type BackupTrigger = 'manual' | 'schedule' | 'upload' | 'api' | 'pre-restore';
export type RestoreState = 'not_run' | 'started' | 'failed' | 'completed' | 'completed_with_errors';

export interface SourceSummary {
  name: string;
  kind: string;
  path: string;
  files: number;
  bytes: number;
}

export interface BackupRecord {
  key: string;
  id: string;
  name: string;
  description: string;
  status: BackupStatus;
  statusMessage: string;
  trigger: BackupTrigger;
  createdAt: string;
  completedAt: string | null;
  size: number;
  hostname: string;
  appName: string;
  appVersion: string;
  labels: Record<string, string>;
  sources: SourceSummary[];
  excludes: string[];
  warnings: Array<{ path: string; reason: string }>;
  encrypted: boolean;
  /** The last recorded verification (every checksum re-read): when, 'ok' | 'failed', and why. */
  verifiedAt?: string | null;
  verifyStatus?: CheckStatus | null;
  verifyMessage?: string;
  /** The last restore drill (restored into scratch space and compared): when, 'ok' | 'failed', and why. */
  drilledAt?: string | null;
  drillStatus?: CheckStatus | null;
  drillMessage?: string;
}

/** The outcome of a recorded verification or restore drill. */
export type CheckStatus = 'ok' | 'failed';

/** What `recordVerify` / `recordDrill` store on a backup. */
export interface CheckRecord {
  at: string;
  status: CheckStatus;
  message: string;
}

export interface SourceRestoreResult {
  name: string;
  kind: string;
  target: string;
  status: 'restored' | 'skipped' | 'failed' | 'rolled_back' | 'pending';
  files: number;
  bytes: number;
  errors: string[];
}

export interface RestoreStatusRecord {
  status: RestoreState;
  key: string | null;
  startedAt: string | null;
  lastRestoreTime: string | null;
  message: string;
  safetyBackupKey: string | null;
  sources: SourceRestoreResult[];
}

const MIGRATIONS: string[] = [
  `CREATE TABLE backups (
     key TEXT PRIMARY KEY,
     id TEXT NOT NULL UNIQUE,
     name TEXT NOT NULL,
     description TEXT NOT NULL DEFAULT '',
     status TEXT NOT NULL,
     status_message TEXT NOT NULL DEFAULT '',
     trigger TEXT NOT NULL,
     created_at TEXT NOT NULL,
     completed_at TEXT,
     size INTEGER NOT NULL DEFAULT 0,
     hostname TEXT NOT NULL DEFAULT '',
     app_name TEXT NOT NULL DEFAULT '',
     app_version TEXT NOT NULL DEFAULT '',
     labels TEXT NOT NULL DEFAULT '{}',
     sources TEXT NOT NULL DEFAULT '[]',
     excludes TEXT NOT NULL DEFAULT '[]',
     warnings TEXT NOT NULL DEFAULT '[]',
     encrypted INTEGER NOT NULL DEFAULT 0,
     pid INTEGER,
     updated_at TEXT NOT NULL
   );
   CREATE INDEX backups_created ON backups(created_at);
   CREATE TABLE restore_status (
     id INTEGER PRIMARY KEY CHECK (id = 1),
     status TEXT NOT NULL,
     key TEXT,
     started_at TEXT,
     last_restore_time TEXT,
     message TEXT NOT NULL DEFAULT '',
     safety_backup_key TEXT,
     sources TEXT NOT NULL DEFAULT '[]',
     updated_at TEXT NOT NULL
   );`,
  // 2: what the server keeps (issue 3): job history, superusers, API tokens, settings.
  `CREATE TABLE jobs (
     id TEXT PRIMARY KEY,
     kind TEXT NOT NULL,
     description TEXT NOT NULL,
     key TEXT,
     status TEXT NOT NULL,
     message TEXT NOT NULL DEFAULT '',
     started_at TEXT NOT NULL,
     finished_at TEXT,
     pid INTEGER NOT NULL
   );
   CREATE INDEX jobs_started ON jobs(started_at);
   CREATE TABLE superusers (
     id TEXT PRIMARY KEY,
     email TEXT NOT NULL UNIQUE COLLATE NOCASE,
     password_hash TEXT NOT NULL,
     token_key TEXT NOT NULL,
     created_at TEXT NOT NULL,
     updated_at TEXT NOT NULL
   );
   CREATE TABLE api_tokens (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL,
     scopes TEXT NOT NULL,
     secret_hash TEXT NOT NULL,
     created_at TEXT NOT NULL,
     last_used_at TEXT,
     expires_at TEXT
   );
   CREATE TABLE settings (
     name TEXT PRIMARY KEY,
     value TEXT NOT NULL,
     updated_at TEXT NOT NULL
   );`,
  // 3: issue 4: a log per job (hook output), verification and drill results per backup.
  `ALTER TABLE jobs ADD COLUMN log TEXT NOT NULL DEFAULT '';
   ALTER TABLE backups ADD COLUMN verified_at TEXT;
   ALTER TABLE backups ADD COLUMN verify_status TEXT;
   ALTER TABLE backups ADD COLUMN verify_message TEXT NOT NULL DEFAULT '';
   ALTER TABLE backups ADD COLUMN drilled_at TEXT;
   ALTER TABLE backups ADD COLUMN drill_status TEXT;
   ALTER TABLE backups ADD COLUMN drill_message TEXT NOT NULL DEFAULT '';`,
  // 4: webhooks and their delivery log (the DDL lives with the dispatcher).
  WEBHOOK_TABLES_SQL,
  // 5: backup point runs (issue 5).
  `CREATE TABLE point_runs (
     id TEXT PRIMARY KEY,
     point TEXT NOT NULL,
     backup_key TEXT,
     status TEXT NOT NULL,
     message TEXT NOT NULL DEFAULT '',
     result TEXT NOT NULL DEFAULT '{}',
     started_at TEXT NOT NULL,
     finished_at TEXT
   );
   CREATE INDEX point_runs_by_point ON point_runs(point, started_at);`,
  // 6: backup points managed through the API (the DDL lives with the store).
  POINT_TABLES_SQL,
  // 7: where each backup was written (a storage's description), so that switching storage
  // (S3 on or off in the settings) lists the backups of the storage in force, not the others as lost.
  `ALTER TABLE backups ADD COLUMN location TEXT NOT NULL DEFAULT '';`,
];

export interface PointRunRecord {
  id: string;
  point: string;
  backupKey: string | null;
  status: 'updated' | 'unchanged' | 'failed';
  message: string;
  result: Record<string, unknown>;
  startedAt: string;
  finishedAt: string | null;
}

interface PointRunRow {
  id: string;
  point: string;
  backup_key: string | null;
  status: PointRunRecord['status'];
  message: string;
  result: string;
  started_at: string;
  finished_at: string | null;
}

function pointRunFromRow(r: PointRunRow): PointRunRecord {
  return { id: r.id, point: r.point, backupKey: r.backup_key, status: r.status, message: r.message, result: JSON.parse(r.result) as Record<string, unknown>, startedAt: r.started_at, finishedAt: r.finished_at };
}

/** A job's log is bounded: the newest 64 KiB are kept. */
const MAX_JOB_LOG = 64 * 1024;

export type JobStatus = 'running' | 'completed' | 'failed';

export interface JobRecord {
  id: string;
  kind: string;
  description: string;
  key: string | null;
  status: JobStatus;
  message: string;
  startedAt: string;
  finishedAt: string | null;
}

interface BackupRow {
  key: string;
  id: string;
  name: string;
  description: string;
  status: BackupStatus;
  status_message: string;
  trigger: BackupTrigger;
  created_at: string;
  completed_at: string | null;
  size: number;
  hostname: string;
  app_name: string;
  app_version: string;
  labels: string;
  sources: string;
  excludes: string;
  warnings: string;
  encrypted: number;
  verified_at: string | null;
  verify_status: CheckStatus | null;
  verify_message: string;
  drilled_at: string | null;
  drill_status: CheckStatus | null;
  drill_message: string;
}

function fromRow(r: BackupRow): BackupRecord {
  return {
    key: r.key,
    id: r.id,
    name: r.name,
    description: r.description,
    status: r.status,
    statusMessage: r.status_message,
    trigger: r.trigger,
    createdAt: r.created_at,
    completedAt: r.completed_at,
    size: r.size,
    hostname: r.hostname,
    appName: r.app_name,
    appVersion: r.app_version,
    labels: JSON.parse(r.labels) as Record<string, string>,
    sources: JSON.parse(r.sources) as SourceSummary[],
    excludes: JSON.parse(r.excludes) as string[],
    warnings: JSON.parse(r.warnings) as Array<{ path: string; reason: string }>,
    encrypted: r.encrypted === 1,
    verifiedAt: r.verified_at,
    verifyStatus: r.verify_status,
    verifyMessage: r.verify_message,
    drilledAt: r.drilled_at,
    drillStatus: r.drill_status,
    drillMessage: r.drill_message,
  };
}

export class Catalogue {
  private readonly db: Database.Database;
  private listCache: { version: string; records: readonly BackupRecord[]; locations: ReadonlyMap<string, string> } | null = null;
  private readonly versionQuery: Database.Statement;
  private settingQuery: Database.Statement | null = null;

  constructor(dataDir: string) {
    fs.mkdirSync(dataDir, { recursive: true });
    this.db = new Database(path.join(dataDir, 'stowage.db'), { timeout: 10_000 });
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.migrate();
    this.versionQuery = this.db.prepare('SELECT total_changes() AS changes');
  }

  private migrate(): void {
    const version = this.db.pragma('user_version', { simple: true }) as number;
    for (let v = version; v < MIGRATIONS.length; v++) {
      this.db.transaction(() => {
        this.db.exec(MIGRATIONS[v]!);
        this.db.pragma(`user_version = ${v + 1}`);
      }).immediate();
    }
  }

  close(): void {
    this.db.close();
  }

  /** The database itself, for the server's tables (superusers, tokens, settings). */
  get database(): Database.Database {
    return this.db;
  }

  /** A value of the `settings` table (auth secret, runtime settings, schedule state), or null. */
  getSetting(name: string): string | null {
    this.settingQuery ??= this.db.prepare('SELECT value FROM settings WHERE name = ?');
    return (this.settingQuery.get(name) as { value: string } | undefined)?.value ?? null;
  }

  /** Sets (or with null, removes) a value of the `settings` table. */
  setSetting(name: string, value: string | null): void {
    if (value === null) this.db.prepare('DELETE FROM settings WHERE name = ?').run(name);
    else this.db.prepare('INSERT INTO settings (name, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at').run(name, value, new Date().toISOString());
  }

  startJob(kind: string, description: string, key: string | null): string {
    const id = crypto.randomUUID();
    this.db
      .prepare(`INSERT INTO jobs (id, kind, description, key, status, started_at, pid) VALUES (?, ?, ?, ?, 'running', ?, ?)`)
      .run(id, kind, description, key, new Date().toISOString(), process.pid);
    return id;
  }

  finishJob(id: string, status: Exclude<JobStatus, 'running'>, message: string): void {
    this.db.prepare('UPDATE jobs SET status = ?, message = ?, finished_at = ? WHERE id = ?').run(status, message, new Date().toISOString(), id);
  }

  appendJobLog(id: string, text: string): void {
    this.db.prepare(`UPDATE jobs SET log = substr(log || ?, -${MAX_JOB_LOG}) WHERE id = ?`).run(text.endsWith('\n') ? text : `${text}\n`, id);
  }

  getJob(id: string): (JobRecord & { log: string }) | null {
    const r = this.db.prepare('SELECT * FROM jobs WHERE id = ?').get(id) as
      | { id: string; kind: string; description: string; key: string | null; status: JobStatus; message: string; started_at: string; finished_at: string | null; log: string }
      | undefined;
    return r ? { id: r.id, kind: r.kind, description: r.description, key: r.key, status: r.status, message: r.message, startedAt: r.started_at, finishedAt: r.finished_at, log: r.log } : null;
  }

  recordPointRun(run: PointRunRecord): void {
    this.db
      .prepare('INSERT INTO point_runs (id, point, backup_key, status, message, result, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
      .run(run.id, run.point, run.backupKey, run.status, run.message, JSON.stringify(run.result), run.startedAt, run.finishedAt);
    // The newest 100 runs per point are history enough.
    this.db.prepare('DELETE FROM point_runs WHERE point = ? AND id NOT IN (SELECT id FROM point_runs WHERE point = ? ORDER BY started_at DESC LIMIT 100)').run(run.point, run.point);
  }

  lastPointRun(point: string): PointRunRecord | null {
    const r = this.db.prepare('SELECT * FROM point_runs WHERE point = ? ORDER BY started_at DESC LIMIT 1').get(point) as PointRunRow | undefined;
    return r ? pointRunFromRow(r) : null;
  }

  /** A point's runs, newest first. */
  listPointRuns(point: string, limit = 20): PointRunRecord[] {
    const rows = this.db.prepare('SELECT * FROM point_runs WHERE point = ? ORDER BY started_at DESC LIMIT ?').all(point, limit) as PointRunRow[];
    return rows.map(pointRunFromRow);
  }

  /** Jobs left running by a process that is gone: they failed. */
  failInterruptedJobs(isRunning: (pid: number) => boolean): void {
    const rows = this.db.prepare(`SELECT id, pid FROM jobs WHERE status = 'running'`).all() as Array<{ id: string; pid: number }>;
    for (const r of rows) if (!isRunning(r.pid)) this.finishJob(r.id, 'failed', 'interrupted: the Stowage process stopped before the job finished');
  }

  listJobs(limit = 100): JobRecord[] {
    const rows = this.db.prepare('SELECT * FROM jobs ORDER BY started_at DESC LIMIT ?').all(limit) as Array<{
      id: string; kind: string; description: string; key: string | null; status: JobStatus; message: string; started_at: string; finished_at: string | null;
    }>;
    return rows.map((r) => ({ id: r.id, kind: r.kind, description: r.description, key: r.key, status: r.status, message: r.message, startedAt: r.started_at, finishedAt: r.finished_at }));
  }

  /** `location`: the description of the storage the archive is written to ('' = unknown). */
  insertBackup(record: BackupRecord, location = ''): void {
    this.db
      .prepare(
        `INSERT INTO backups (key, id, name, description, status, status_message, trigger, created_at, completed_at, size, hostname,
           app_name, app_version, labels, sources, excludes, warnings, encrypted, pid, updated_at, location)
         VALUES (@key, @id, @name, @description, @status, @statusMessage, @trigger, @createdAt, @completedAt, @size, @hostname,
           @appName, @appVersion, @labels, @sources, @excludes, @warnings, @encrypted, @pid, @updatedAt, @location)
         ON CONFLICT(key) DO UPDATE SET id = excluded.id, name = excluded.name, description = excluded.description, status = excluded.status,
           status_message = excluded.status_message, trigger = excluded.trigger, created_at = excluded.created_at,
           completed_at = excluded.completed_at, size = excluded.size, hostname = excluded.hostname, app_name = excluded.app_name,
           app_version = excluded.app_version, labels = excluded.labels, sources = excluded.sources, excludes = excluded.excludes,
           warnings = excluded.warnings, encrypted = excluded.encrypted, pid = excluded.pid, updated_at = excluded.updated_at,
           location = excluded.location`,
      )
      .run({
        ...record,
        labels: JSON.stringify(record.labels),
        sources: JSON.stringify(record.sources),
        excludes: JSON.stringify(record.excludes),
        warnings: JSON.stringify(record.warnings),
        encrypted: record.encrypted ? 1 : 0,
        pid: process.pid,
        updatedAt: new Date().toISOString(),
        location,
      });
  }

  updateBackup(key: string, patch: Partial<Pick<BackupRecord, 'status' | 'statusMessage' | 'size' | 'completedAt' | 'sources' | 'warnings' | 'excludes' | 'appVersion'>>): void {
    const sets: string[] = [];
    const values: Record<string, unknown> = { key, updatedAt: new Date().toISOString() };
    const columns: Record<string, string> = {
      status: 'status',
      statusMessage: 'status_message',
      size: 'size',
      completedAt: 'completed_at',
      sources: 'sources',
      warnings: 'warnings',
      excludes: 'excludes',
      appVersion: 'app_version',
    };
    for (const [k, v] of Object.entries(patch)) {
      const column = columns[k];
      if (!column) continue;
      sets.push(`${column} = @${k}`);
      values[k] = typeof v === 'object' && v !== null ? JSON.stringify(v) : v;
    }
    if (!sets.length) return;
    this.db.prepare(`UPDATE backups SET ${sets.join(', ')}, updated_at = @updatedAt WHERE key = @key`).run(values);
  }

  /** Records a verification's outcome on a backup (a no-op for a key the catalogue does not hold). */
  recordVerify(key: string, check: CheckRecord): void {
    this.db.prepare('UPDATE backups SET verified_at = ?, verify_status = ?, verify_message = ?, updated_at = ? WHERE key = ?').run(check.at, check.status, check.message, new Date().toISOString(), key);
  }

  /** Records a restore drill's outcome on a backup (a no-op for a key the catalogue does not hold). */
  recordDrill(key: string, check: CheckRecord): void {
    this.db.prepare('UPDATE backups SET drilled_at = ?, drill_status = ?, drill_message = ?, updated_at = ? WHERE key = ?').run(check.at, check.status, check.message, new Date().toISOString(), key);
  }

  getBackup(key: string): BackupRecord | null {
    const row = this.db.prepare('SELECT * FROM backups WHERE key = ?').get(key) as BackupRow | undefined;
    return row ? fromRow(row) : null;
  }

  findKeyById(id: string): string | null {
    return (this.db.prepare('SELECT key FROM backups WHERE id = ?').get(id) as { key: string } | undefined)?.key ?? null;
  }

  /**
   * Every backup record, newest first. Cached until the database changes (data_version moves
   * when another process commits, total_changes when this connection writes): a server lists
   * on every request, and parsing 1,000 rows costs ~10 ms. The array is shared: do not modify it.
   */
  listBackups(): readonly BackupRecord[] {
    return this.cachedList().records;
  }

  /** Keys of backups written to another storage than `location` (a storage's description). */
  keysElsewhere(location: string): ReadonlySet<string> {
    const { locations } = this.cachedList();
    const keys = new Set<string>();
    for (const [key, where] of locations) if (where && where !== location) keys.add(key);
    return keys;
  }

  private cachedList(): { records: readonly BackupRecord[]; locations: ReadonlyMap<string, string> } {
    const version = this.dataVersion();
    if (this.listCache?.version === version) return this.listCache;
    const rows = this.db.prepare('SELECT * FROM backups ORDER BY created_at DESC, key DESC').all() as Array<BackupRow & { location: string }>;
    this.listCache = { version, records: Object.freeze(rows.map(fromRow)), locations: new Map(rows.map((r) => [r.key, r.location])) };
    return this.listCache;
  }

  private dataVersion(): string {
    const row = this.versionQuery.get() as { changes: number };
    return `${this.db.pragma('data_version', { simple: true })}:${row.changes}`;
  }

  deleteBackup(key: string): void {
    this.db.prepare('DELETE FROM backups WHERE key = ?').run(key);
  }

  /**
   * Backups left `started`/`uploading` by a process that is gone: they failed, say so. One whose
   * archive still waits in the outbox (`isPending`) is whole: it stays `uploading`, to be retried.
   */
  failInterrupted(isRunning: (pid: number) => boolean, isPending: (key: string) => boolean = () => false): string[] {
    const rows = this.db.prepare(`SELECT key, pid, status, status_message FROM backups WHERE status IN ('started', 'uploading')`).all() as Array<{ key: string; pid: number | null; status: BackupStatus; status_message: string }>;
    const failed: string[] = [];
    for (const r of rows) {
      if (r.pid !== null && isRunning(r.pid)) continue;
      if (r.status === 'uploading' && isPending(r.key)) {
        // Still "uploading to ..." from the process that died; a failed retry's message is kept.
        if (r.status_message.startsWith(UPLOADING_PREFIX)) this.updateBackup(r.key, { statusMessage: 'the upload was interrupted (the Stowage process stopped); the archive is kept locally and the upload will be retried' });
        continue;
      }
      this.updateBackup(r.key, { status: 'failed', statusMessage: 'interrupted: the Stowage process stopped before the backup completed (crash, kill or power loss); run the backup again' });
      failed.push(r.key);
    }
    return failed;
  }

  getRestoreStatus(): RestoreStatusRecord {
    const row = this.db.prepare('SELECT * FROM restore_status WHERE id = 1').get() as
      | { status: RestoreState; key: string | null; started_at: string | null; last_restore_time: string | null; message: string; safety_backup_key: string | null; sources: string }
      | undefined;
    if (!row) return { status: 'not_run', key: null, startedAt: null, lastRestoreTime: null, message: 'no restore has been run', safetyBackupKey: null, sources: [] };
    return {
      status: row.status,
      key: row.key,
      startedAt: row.started_at,
      lastRestoreTime: row.last_restore_time,
      message: row.message,
      safetyBackupKey: row.safety_backup_key,
      sources: JSON.parse(row.sources) as SourceRestoreResult[],
    };
  }

  setRestoreStatus(s: RestoreStatusRecord): void {
    this.db
      .prepare(
        `INSERT INTO restore_status (id, status, key, started_at, last_restore_time, message, safety_backup_key, sources, updated_at)
         VALUES (1, @status, @key, @startedAt, @lastRestoreTime, @message, @safetyBackupKey, @sources, @updatedAt)
         ON CONFLICT(id) DO UPDATE SET status = excluded.status, key = excluded.key, started_at = excluded.started_at,
           last_restore_time = excluded.last_restore_time, message = excluded.message, safety_backup_key = excluded.safety_backup_key,
           sources = excluded.sources, updated_at = excluded.updated_at`,
      )
      .run({ ...s, sources: JSON.stringify(s.sources), updatedAt: new Date().toISOString() });
  }
}
