/**
 * The API's shapes, as the server defines them (`Static<>` of its TypeBox schemas). Type-only
 * imports: none of the server's runtime code reaches the SDK bundle.
 */
import type { Static } from 'typebox';
import type { Backup, CronPreview as CronPreviewSchema, CreateBackupBody, DecryptedDownloadBody, ManifestPage, RestoreStatus, S3TestResult as S3TestResultSchema, SetupBody as SetupBodySchema } from '../server/schemas.js';

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
  SettingsPatch,
  S3TestBody,
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

/** GET /api/settings/cron-preview: what a cron expression means and its next 5 run times. */
export type CronPreview = Static<typeof CronPreviewSchema>;
/** POST /api/settings/test-s3: whether the S3 settings work, step by step (list, write, read, delete). */
export type S3TestResult = Static<typeof S3TestResultSchema>;
/** POST /api/setup: the one-time setup token and the first superuser's email and password. */
export type SetupBody = Static<typeof SetupBodySchema>;
/** Who can read a new backup: public keys or a passphrase, or `false` for not encrypted (`CreateBackupBody.encryption`). */
export type EncryptionRequest = NonNullable<CreateBackupBody['encryption']>;
/** What opens an encrypted backup: an age identity file's contents, or the passphrase (used for one request, never stored). */
export type DecryptionKeys = Static<typeof DecryptedDownloadBody>;

/** A download token (valid 3 minutes). */
export interface DownloadToken {
  token: string;
}
