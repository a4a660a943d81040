/**
 * Stowage as a library: `import { Stowage } from 'stowage'`.
 * The same engine the CLI and the server run. An application can also serve the API itself:
 * `await startServer(stowage, { http: '127.0.0.1:8090' })`, or `buildServer` for a Fastify
 * instance to listen on as it likes.
 */
export { Stowage, FACTORY_RESET_KEY, type BackupInfo, type BackupListing, type VerifyResult, type StowageOptions, type Job, type JobKind } from './engine/stowage.js';
export { buildServer, type ServerOptions } from './server/server.js';
export { startServer, type StartOptions, type RunningServer } from './server/start.js';
export type { BackupOptions, ExcludeHook } from './engine/backup.js';
export type { RestoreOptions, RestoreOutcome } from './engine/restore.js';
export type { SourcePlan } from './engine/restore-plan.js';
export type { DrillResult, DrillOptions, RecordedVerifyResult, BackupSample } from './engine/drill.js';
export type { BackupRecord, BackupStatus, BackupTrigger, JobRecord, RestoreState, RestoreStatusRecord, SourceRestoreResult } from './engine/catalogue.js';
export type { StowageEvents, StowageEventName, Progress } from './events/events.js';
export { StowageError, isStowageError, type StowageErrorCode } from './errors.js';
export { loadConfig, type StowageConfig } from './config/load.js';
export type { Manifest, ManifestEntry } from './archive/manifest.js';
export type { Storage, Upload, StoredObject } from './storage/storage.js';
export type { Source } from './sources/source.js';
export { STOWAGE_VERSION } from './version.js';
export { verifyWebhookSignature, signWebhookPayload } from './events/webhooks.js';
export { Scheduler, type Clock } from './schedule/scheduler.js';
export { planRetention, type RetentionDecision } from './schedule/retention.js';
