/**
 * Stowage as a library: `import { Stowage } from 'stowage'`.
 * The same engine the CLI (and later the server) runs.
 */
export { Stowage, type BackupInfo, type VerifyResult, type StowageOptions } from './engine/stowage.js';
export type { BackupOptions, ExcludeHook } from './engine/backup.js';
export type { RestoreOptions, RestoreOutcome } from './engine/restore.js';
export type { SourcePlan } from './engine/restore-plan.js';
export type { BackupRecord, BackupStatus, BackupTrigger, RestoreState, RestoreStatusRecord, SourceRestoreResult } from './engine/catalogue.js';
export type { StowageEvents, StowageEventName, Progress } from './events/events.js';
export { StowageError, isStowageError, type StowageErrorCode } from './errors.js';
export { loadConfig, type StowageConfig } from './config/load.js';
export type { Manifest, ManifestEntry } from './archive/manifest.js';
export type { Storage, Upload, StoredObject } from './storage/storage.js';
export type { Source } from './sources/source.js';
export { STOWAGE_VERSION } from './version.js';
