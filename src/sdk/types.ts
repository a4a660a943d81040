/**
 * The API's shapes, as the server defines them (`Static<>` of its TypeBox schemas). Type-only
 * imports: none of the server's runtime code reaches the SDK bundle.
 */
import type { Backup, ManifestPage, RestoreStatus } from '../server/schemas.js';

export type {
  ApiToken,
  AuthResponse,
  Backup,
  BackupDetail,
  CreateApiTokenBody,
  CreateBackupBody,
  CreatedApiToken,
  ErrorResponse,
  Health,
  Job,
  ManifestPage,
  Progress,
  RestoreBody,
  RestoreStatus,
  Scope,
  ServerEvent,
  Superuser,
  Webhook,
  WebhookDelivery,
  CreateWebhookBody,
  UpdateWebhookBody,
  SettingsBody,
  Point,
  PointRun,
  CreatePointBody,
  UpdatePointBody,
} from '../server/schemas.js';

/** One file, folder or symlink of a backup's manifest. */
export type ManifestEntry = ManifestPage['entries']['items'][number];
/** One source of a backup as listed. */
export type SourceSummary = Backup['sources'][number];
/** How one source fared in a restore. */
export type SourceRestoreResult = RestoreStatus['sources'][number];
/** A backup's status: started | uploading | completed | failed. */
export type BackupStatus = Backup['status'];
/** A restore's status: not_run | started | failed | completed | completed_with_errors. */
export type RestoreState = RestoreStatus['status'];

/** A download token (valid 3 minutes). */
export interface DownloadToken {
  token: string;
}
