import { Type, type Static, type TSchema } from 'typebox';

/**
 * Every request and response shape of the API, as JSON Schema (TypeBox). Fastify validates
 * and serialises with these, the OpenAPI document is generated from them, and the SDK's types
 * are `Static<>` of them: one definition, no drift between server, document and client.
 *
 * This module is imported by the SDK for types only; it must stay free of Node-only imports.
 */

export { SCOPES, type Scope } from './scopes.js';
import { SCOPES } from './scopes.js';

const IsoDate = (description: string) => Type.String({ format: 'date-time', description });

export const ErrorResponse = Type.Object(
  {
    status: Type.Integer({ description: 'the HTTP status, repeated' }),
    message: Type.String({ description: 'what went wrong and what to do next' }),
    data: Type.Record(Type.String(), Type.Object({ code: Type.String(), message: Type.String() }), {
      description: 'field errors: field name -> {code, message}; empty when the error is not about a field',
    }),
  },
  { description: 'Every error response' },
);
export type ErrorResponse = Static<typeof ErrorResponse>;

export const SourceSummary = Type.Object({
  name: Type.String(),
  kind: Type.String({ description: 'dir | sqlite | postgres' }),
  path: Type.String({ description: 'where it was backed up from' }),
  files: Type.Integer(),
  bytes: Type.Integer(),
});

const backupFields = {
  key: Type.String({ description: 'the backup key (its file name), e.g. demo_app_20261122071700.zip' }),
  size: Type.Integer({ description: 'archive size in bytes' }),
  modified: IsoDate('when the archive was last written'),
  id: Type.String(),
  name: Type.String(),
  description: Type.String(),
  createdAt: IsoDate('when the backup started'),
  completedAt: Type.Union([IsoDate('when it completed'), Type.Null()]),
  status: Type.Union([Type.Literal('started'), Type.Literal('uploading'), Type.Literal('completed'), Type.Literal('failed')]),
  statusMessage: Type.String({ description: 'why it failed, or its warnings count' }),
  trigger: Type.String({ description: 'manual | schedule | upload | api | pre-restore' }),
  hostname: Type.String(),
  appName: Type.String(),
  appVersion: Type.String(),
  labels: Type.Record(Type.String(), Type.String(), { description: 'model, serial, ... from the configuration' }),
  encrypted: Type.Boolean(),
  sources: Type.Array(SourceSummary),
  verifiedAt: Type.Optional(Type.Union([IsoDate('when the backup was last verified (every checksum re-read)'), Type.Null()])),
  verifyStatus: Type.Optional(Type.Union([Type.Literal('ok'), Type.Literal('failed'), Type.Null()])),
  verifyMessage: Type.Optional(Type.String()),
  drilledAt: Type.Optional(Type.Union([IsoDate('when the backup was last restored in a drill'), Type.Null()])),
  drillStatus: Type.Optional(Type.Union([Type.Literal('ok'), Type.Literal('failed'), Type.Null()])),
  drillMessage: Type.Optional(Type.String()),
};

export const Backup = Type.Object(backupFields, { description: 'A backup as listed; `key`, `size` and `modified` are what PocketBase clients read' });
export type Backup = Static<typeof Backup>;

export const BackupDetail = Type.Object(
  {
    ...backupFields,
    excludes: Type.Array(Type.String(), { description: 'exclude rules in force' }),
    warnings: Type.Array(Type.Object({ path: Type.String(), reason: Type.String() }), { description: 'what was left out, and why' }),
  },
  {},
);
export type BackupDetail = Static<typeof BackupDetail>;

export const KeyParams = Type.Object({
  key: Type.String({ description: 'backup key: lowercase letters, digits, _ - . @, ending in .zip', maxLength: 150 }),
});

/** Who can read a backup (age): public keys or one passphrase; `false` writes it unencrypted. */
const EncryptionRequest = Type.Union(
  [
    Type.Object(
      {
        recipients: Type.Optional(Type.Array(Type.String({ maxLength: 200 }), { maxItems: 50, description: 'age public keys (age1...)' })),
        passphrase: Type.Optional(Type.String({ minLength: 12, maxLength: 1000, description: 'instead of recipients; never returned or logged' })),
      },
      { additionalProperties: false },
    ),
    Type.Literal(false),
  ],
  { description: 'overrides encryption: in stowage.yaml for this backup; false = not encrypted' },
);

/** Keys that open an encrypted backup; used for this request only, never stored or logged. */
const DecryptionRequest = {
  identity: Type.Optional(Type.String({ maxLength: 100_000, description: 'an age identity file\'s contents (AGE-SECRET-KEY-1...)' })),
  passphrase: Type.Optional(Type.String({ maxLength: 1000 })),
};

export const CreateBackupBody = Type.Object(
  {
    name: Type.Optional(Type.String({ maxLength: 146, description: 'the key without .zip (default: <app>_<UTC timestamp>)' })),
    description: Type.Optional(Type.String({ maxLength: 1000 })),
    excludes: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 1000 }), { maxItems: 1000, description: 'extra fnmatch rules for this backup' })),
    encryption: Type.Optional(EncryptionRequest),
  },
  { additionalProperties: false },
);
export type CreateBackupBody = Static<typeof CreateBackupBody>;

/**
 * POST /api/backups/upload, for the OpenAPI document only: the route reads the body as a stream
 * (multipart or raw) into a temporary file, so Fastify must not parse or validate it. The route
 * adds this to its documented schema through `config.swaggerTransform`.
 */
export const UploadBody = {
  content: {
    'multipart/form-data': {
      schema: Type.Object({
        file: Type.String({ format: 'binary', description: 'the archive; its key is the part\'s file name (a name clash is a 400 on "file")' }),
      }),
    },
    'application/octet-stream': { schema: Type.String({ format: 'binary', description: 'the archive itself; its key comes from ?name=, else from its manifest' }) },
    'application/zip': { schema: Type.String({ format: 'binary', description: 'as application/octet-stream' }) },
  },
};

export const ManifestEntry = Type.Object({
  path: Type.String(),
  type: Type.String({ description: 'file | dir | symlink' }),
  size: Type.Integer(),
  mode: Type.String(),
  mtime: Type.String(),
  sha256: Type.Optional(Type.String()),
  target: Type.Optional(Type.String({ description: 'symlink target' })),
});

export const ManifestQuery = Type.Object({
  page: Type.Integer({ minimum: 1, default: 1 }),
  perPage: Type.Integer({ minimum: 1, maximum: 5000, default: 500 }),
});

export const ManifestPage = Type.Object(
  {
    format: Type.String(),
    formatVersion: Type.Integer(),
    id: Type.String(),
    key: Type.String(),
    name: Type.String(),
    description: Type.String(),
    createdAt: Type.String(),
    trigger: Type.String(),
    hostname: Type.String(),
    app: Type.Object({ name: Type.String(), version: Type.String(), labels: Type.Record(Type.String(), Type.String()) }),
    stowage: Type.Object({ version: Type.String() }),
    sources: Type.Array(
      Type.Object({
        name: Type.String(),
        kind: Type.String({ description: 'dir | sqlite | postgres' }),
        path: Type.String(),
        files: Type.Integer(),
        dirs: Type.Integer(),
        symlinks: Type.Integer(),
        bytes: Type.Integer(),
        excludes: Type.Array(Type.String()),
        postgres: Type.Optional(
          Type.Object(
            { serverVersion: Type.String(), serverVersionNum: Type.Integer(), pgDumpVersion: Type.String(), database: Type.String() },
            { description: 'postgres sources: the server the dump came from (restore.versionPolicy compares its major version)' },
          ),
        ),
      }),
    ),
    excludes: Type.Array(Type.String()),
    warnings: Type.Array(Type.Object({ path: Type.String(), reason: Type.String() })),
    entries: Type.Object({
      page: Type.Integer(),
      perPage: Type.Integer(),
      totalItems: Type.Integer(),
      totalPages: Type.Integer(),
      items: Type.Array(ManifestEntry),
    }),
  },
  { description: 'The manifest (stowage.json) with its entries paginated' },
);
export type ManifestPage = Static<typeof ManifestPage>;

export const RestoreBody = Type.Object(
  {
    sources: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { description: 'restore only these sources (default: all)' })),
    force: Type.Optional(Type.Boolean({ description: 'restore despite the version policy' })),
    safetyBackup: Type.Optional(Type.Boolean({ description: 'override restore.safetyBackup for this run' })),
    ...DecryptionRequest,
  },
  { additionalProperties: false },
);
export type RestoreBody = Static<typeof RestoreBody>;

export const DecryptedDownloadBody = Type.Object(DecryptionRequest, { additionalProperties: false });

export const SourceRestoreResult = Type.Object({
  name: Type.String(),
  kind: Type.String(),
  target: Type.String(),
  status: Type.String({ description: 'restored | skipped | failed | rolled_back | pending' }),
  files: Type.Integer(),
  bytes: Type.Integer(),
  errors: Type.Array(Type.String()),
});

export const Progress = Type.Object({
  phase: Type.String(),
  files: Type.Integer(),
  filesTotal: Type.Integer(),
  bytes: Type.Integer(),
  bytesTotal: Type.Integer(),
  elapsedMs: Type.Integer(),
});
export type Progress = Static<typeof Progress>;

export const RestoreStatus = Type.Object(
  {
    status: Type.Union([Type.Literal('not_run'), Type.Literal('started'), Type.Literal('failed'), Type.Literal('completed'), Type.Literal('completed_with_errors')]),
    key: Type.Union([Type.String(), Type.Null()], { description: 'the backup restored (factory-reset for a factory reset)' }),
    startedAt: Type.Union([Type.String(), Type.Null()]),
    lastRestoreTime: Type.Union([Type.String(), Type.Null()], { description: 'when the last restore completed' }),
    statusMessage: Type.String(),
    safetyBackupKey: Type.Union([Type.String(), Type.Null()], { description: 'the backup taken just before, to undo the restore' }),
    progress: Type.Union([Progress, Type.Null()], { description: 'while a restore runs' }),
    sources: Type.Array(SourceRestoreResult),
  },
  {},
);
export type RestoreStatus = Static<typeof RestoreStatus>;

export const ResetBody = Type.Object({ confirm: Type.Literal('reset', { description: 'must be "reset"' }) }, { additionalProperties: false });

export const ExportBody = Type.Object(
  {
    key: Type.String({ description: 'the backup key (STOWAGE_BACKUP_KEY)', maxLength: 1000 }),
    excludes: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { maxItems: 1000 })),
    aes_key: Type.Optional(Type.String({ maxLength: 200, description: 'a 256-bit key (64 hex digits or base64): the export is sent encrypted with AES-256-GCM (docs/FORMAT.md section 7; stowage decrypt reads it)' })),
  },
  { additionalProperties: false },
);

export const Health = Type.Object(
  {
    status: Type.Literal('ok'),
    version: Type.String(),
    canBackup: Type.Boolean({ description: 'false while a backup or restore runs' }),
    restoreEnabled: Type.Boolean(),
    demo: Type.Object({
      enabled: Type.Boolean({ description: 'true when no configuration file is in use and Stowage protects its demo application' }),
      message: Type.String(),
    }),
    backups: Type.Object(
      {
        lastSuccessAt: Type.Union([Type.String(), Type.Null()], {
          description: 'when the newest completed backup that Stowage made here (manual, api, schedule, pre-restore; never an upload) started, i.e. the time of the data it holds',
        }),
        lastScheduledAt: Type.Union([Type.String(), Type.Null()], { description: 'when the newest completed scheduled backup started' }),
        lastFailureAt: Type.Union([Type.String(), Type.Null()], { description: 'when the newest failed backup (not an unusable upload) was started' }),
        schedule: Type.Union([Type.String(), Type.Null()], { description: 'backups.cron, or null without a schedule' }),
        nextRunAt: Type.Union([Type.String(), Type.Null()]),
        overdue: Type.Boolean({
          description: 'a scheduled backup was due more than an hour ago and no scheduled backup has completed since (manual backups and uploads do not count: they do not show that the schedule runs)',
        }),
        lastVerifiedAt: Type.Union([Type.String(), Type.Null()], { description: 'the newest successful verification of a backup' }),
        lastVerifiedRestoreAt: Type.Union([Type.String(), Type.Null()], { description: 'the newest successful restore drill' }),
        uploadsPending: Type.Array(
          Type.Object({ key: Type.String(), createdAt: Type.String(), message: Type.String({ description: 'why it is not in remote storage yet, and when it is retried' }) }),
          { description: 'backups written locally that remote storage (S3) has not taken yet: not off-site' },
        ),
      },
      { description: 'so that weeks without a backup do not go unnoticed' },
    ),
    storage: Type.String({ description: 'where backups are kept now: a local folder, or an S3 bucket (stowage.yaml, or backups.s3 in the settings)' }),
  },
  {},
);
export type Health = Static<typeof Health>;

export const Superuser = Type.Object(
  {
    id: Type.String(),
    email: Type.String(),
    collectionName: Type.Literal('_superusers'),
    collectionId: Type.String(),
    created: Type.String(),
    updated: Type.String(),
  },
  {},
);
export type Superuser = Static<typeof Superuser>;

export const AuthWithPasswordBody = Type.Object({
  identity: Type.String({ minLength: 1, maxLength: 320, description: 'the superuser email' }),
  password: Type.String({ minLength: 1, maxLength: 1024 }),
});

export const AuthResponse = Type.Object({ token: Type.String({ description: 'send as Authorization: <token> (with or without "Bearer ")' }), record: Superuser });
export type AuthResponse = Static<typeof AuthResponse>;

export const TokenResponse = Type.Object({ token: Type.String({ description: 'valid for 3 minutes' }) });

export const ApiToken = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    scopes: Type.Array(Type.String()),
    createdAt: Type.String(),
    lastUsedAt: Type.Union([Type.String(), Type.Null()]),
    expiresAt: Type.Union([Type.String(), Type.Null()]),
  },
  {},
);
export type ApiToken = Static<typeof ApiToken>;

export const CreateApiTokenBody = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 100 }),
    scopes: Type.Array(Type.Enum(SCOPES), { minItems: 1, uniqueItems: true }),
    expiresInDays: Type.Optional(Type.Integer({ minimum: 1, maximum: 3650 })),
  },
  { additionalProperties: false },
);
export type CreateApiTokenBody = Static<typeof CreateApiTokenBody>;

export const CreatedApiToken = Type.Object({ token: Type.String({ description: 'shown once; store it now' }), record: ApiToken });
export type CreatedApiToken = Static<typeof CreatedApiToken>;

export const SetupBody = Type.Object({
  token: Type.String({ minLength: 1, maxLength: 200 }),
  email: Type.String({ format: 'email', maxLength: 320 }),
  password: Type.String({ minLength: 10, maxLength: 1024 }),
});

export const Job = Type.Object({
  id: Type.String(),
  kind: Type.String(),
  description: Type.String(),
  key: Type.Union([Type.String(), Type.Null()]),
  status: Type.String({ description: 'running | completed | failed' }),
  message: Type.String(),
  startedAt: Type.String(),
  finishedAt: Type.Union([Type.String(), Type.Null()]),
});
export type Job = Static<typeof Job>;

/** One message of GET /api/events (Server-Sent Events: `event:` is `type`, `data:` the JSON). */
export interface ServerEvent {
  type: string;
  data: Record<string, unknown>;
}

// ---- settings, retention (issue 4)

const RetentionFields = {
  keepLast: Type.Integer({ minimum: 0, description: 'the newest N scheduled backups' }),
  keepHourly: Type.Integer({ minimum: 0, description: 'the newest backup of each of the last N hours that have one' }),
  keepDaily: Type.Integer({ minimum: 0 }),
  keepWeekly: Type.Integer({ minimum: 0, description: 'ISO weeks, Monday to Sunday' }),
  keepMonthly: Type.Integer({ minimum: 0 }),
  keepYearly: Type.Integer({ minimum: 0 }),
  keepWithin: Type.String({ description: 'every backup within this duration of the newest one, e.g. "30d", "1y6m" (y, m, w, d, h)' }),
};

const S3Fields = {
  enabled: Type.Boolean(),
  bucket: Type.String({ maxLength: 255 }),
  region: Type.String({ maxLength: 100, description: 'default us-east-1' }),
  endpoint: Type.String({ maxLength: 2000, description: 'http(s) URL for MinIO and other S3-compatible services; empty for AWS' }),
  accessKey: Type.String({ maxLength: 1000 }),
  secret: Type.String({ maxLength: 1000, description: 'masked as ****** in responses; ****** or left out keeps the stored one' }),
  forcePathStyle: Type.Boolean({ description: 'bucket in the path (MinIO) instead of the host name' }),
  prefix: Type.String({ maxLength: 1000, description: 'a folder inside the bucket' }),
};

const BackupsFields = {
  cron: Type.String({ maxLength: 200, description: '5-field cron or a macro (@daily, ...); empty: no schedule' }),
  cronMaxKeep: Type.Integer({ description: 'scheduled backups to keep when no retention rule is set (1 or more)' }),
  timezone: Type.String({ description: 'IANA time zone for the cron and the retention buckets, e.g. "UTC", "Europe/Berlin"' }),
  runMissed: Type.Boolean({ description: 'run a schedule missed while Stowage was down, once, at start' }),
};

const VerifyFields = {
  cron: Type.String({ maxLength: 200, description: 'when to re-read a backup and check every checksum; empty: never' }),
  sample: Type.String({ description: 'newest | rotate' }),
};
const DrillFields = { cron: Type.String({ maxLength: 200, description: 'when to restore the newest backup into scratch space and compare; empty: never' }) };

export const SettingsBody = Type.Object({
  backups: Type.Object({
    ...BackupsFields,
    retention: Type.Object(Object.fromEntries(Object.entries(RetentionFields).map(([k, v]) => [k, Type.Optional(v)])) as { [K in keyof typeof RetentionFields]: ReturnType<typeof Type.Optional<(typeof RetentionFields)[K]>> }),
    s3: Type.Object(S3Fields),
  }),
  verify: Type.Object(VerifyFields),
  drill: Type.Object(DrillFields),
});
export type SettingsBody = Static<typeof SettingsBody>;

/**
 * `T` or null, as a JSON Schema type list (`"type": ["string", "null"]`). Not an anyOf: with the
 * server's type coercion, the first branch of an anyOf would turn a null into "" or 0, and a null
 * in a PATCH means "back to the default".
 */
const orNull = <T extends TSchema>(schema: T) => Type.Unsafe<Static<T> | null>({ ...schema, type: [(schema as { type?: string }).type, 'null'] });

type PatchOf<F extends Record<string, TSchema>> = { [K in keyof F]: ReturnType<typeof Type.Optional<ReturnType<typeof orNull<F[K]>>>> };
/** Every field optional and nullable (a JSON merge patch). */
const patchOf = <F extends Record<string, TSchema>>(fields: F): PatchOf<F> =>
  Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, Type.Optional(orNull(v))])) as PatchOf<F>;
const patchObject = <P extends Record<string, TSchema>>(properties: P, description?: string) => Type.Optional(orNull(Type.Object(properties, description ? { description } : {})));

/**
 * The body of PATCH /api/settings: the shape of SettingsBody, every field optional, as a JSON
 * merge patch (RFC 7396: objects merge, a value replaces, null puts a field back to its
 * stowage.yaml default). SettingsBody itself cannot validate it: every field of it is required.
 * This schema checks the shape and the types; the meaning (a valid cron, an IANA time zone,
 * cronMaxKeep >= 1, a bucket when S3 is enabled, unknown fields) is checked by the settings
 * store's zod schema, whose field errors name the full path ("backups.cron").
 */
export const SettingsPatch = Type.Object(
  {
    backups: patchObject({
      ...patchOf(BackupsFields),
      retention: patchObject(patchOf(RetentionFields), 'restic forget rules, OR\'ed; with none set, cronMaxKeep applies'),
      s3: patchObject(patchOf(S3Fields)),
    }),
    verify: patchObject(patchOf(VerifyFields)),
    drill: patchObject(patchOf(DrillFields)),
  },
  { description: 'A partial settings object, merged into the stored one; null resets a field. e.g. {"backups": {"cron": "0 3 * * *", "cronMaxKeep": 7}}' },
);
export type SettingsPatch = Static<typeof SettingsPatch>;

/** The body of POST /api/settings/test-s3: backups.s3 fields to try; what is left out comes from the stored settings. */
export const S3TestBody = Type.Object(
  Object.fromEntries(Object.entries(S3Fields).map(([k, v]) => [k, Type.Optional(v)])) as { [K in keyof typeof S3Fields]: ReturnType<typeof Type.Optional<(typeof S3Fields)[K]>> },
  { additionalProperties: false, description: 'S3 settings to test (the backups.s3 shape); fields left out, and a secret sent as ******, come from the stored settings' },
);
export type S3TestBody = Static<typeof S3TestBody>;

export const CronPreview = Type.Object({
  cron: Type.String(),
  timezone: Type.String(),
  description: Type.String({ description: 'e.g. "at 00:00, every day"' }),
  next: Type.Array(Type.String({ format: 'date-time' })),
});

export const S3TestResult = Type.Object({
  ok: Type.Boolean(),
  target: Type.String({ description: 'bucket, prefix and endpoint tested (no credentials)' }),
  steps: Type.Array(Type.Object({ step: Type.String({ description: 'list | write | read | delete' }), ok: Type.Boolean(), message: Type.String(), ms: Type.Integer() })),
});

export const PruneBody = Type.Object({ dryRun: Type.Optional(Type.Boolean()) }, { additionalProperties: false });

export const PruneResult = Type.Object({
  dryRun: Type.Boolean(),
  removed: Type.Array(Type.String()),
  decisions: Type.Array(Type.Object({ key: Type.String(), createdAt: Type.String(), keep: Type.Boolean(), reasons: Type.Array(Type.String()) })),
});

// ---- webhooks (issue 4)

const WebhookEvents = Type.Array(Type.String({ maxLength: 100 }), {
  minItems: 1,
  maxItems: 50,
  description: 'event names (backup.created, backup.failed, restore.completed, ...), or "*" for every event except *.progress',
});

export const Webhook = Type.Object(
  {
    id: Type.String(),
    url: Type.String({ description: 'where events are POSTed (http or https, no user:password@)' }),
    events: Type.Array(Type.String()),
    secret: Type.String({ description: 'signs every delivery (Stowage-Signature); "******" except in the answer to POST /api/webhooks' }),
    enabled: Type.Boolean(),
    description: Type.String(),
    origin: Type.Union([Type.Literal('api'), Type.Literal('config')], { description: 'config: from stowage.yaml, read-only through the API' }),
    createdAt: IsoDate('when it was registered'),
    updatedAt: IsoDate('when it last changed'),
  },
  { description: 'A webhook' },
);
export type Webhook = Static<typeof Webhook>;

export const CreateWebhookBody = Type.Object(
  {
    url: Type.String({ maxLength: 2048 }),
    events: WebhookEvents,
    secret: Type.Optional(Type.String({ maxLength: 256, description: '16 to 256 characters without spaces; generated when left out' })),
    enabled: Type.Optional(Type.Boolean({ default: true })),
    description: Type.Optional(Type.String({ maxLength: 500 })),
  },
  { additionalProperties: false },
);
export type CreateWebhookBody = Static<typeof CreateWebhookBody>;

export const UpdateWebhookBody = Type.Object(
  {
    url: Type.Optional(Type.String({ maxLength: 2048 })),
    events: Type.Optional(WebhookEvents),
    secret: Type.Optional(Type.String({ maxLength: 256, description: 'left out (or sent back as "******"): the secret is kept' })),
    enabled: Type.Optional(Type.Boolean()),
    description: Type.Optional(Type.String({ maxLength: 500 })),
  },
  { additionalProperties: false },
);
export type UpdateWebhookBody = Static<typeof UpdateWebhookBody>;

export const WebhookParams = Type.Object({ id: Type.String({ maxLength: 100 }) });

export const WebhookDelivery = Type.Object(
  {
    id: Type.String({ description: 'also the Stowage-Delivery-Id header and the body\'s id; the same on every retry' }),
    webhookId: Type.String(),
    event: Type.String({ description: 'the event type, or webhook.test' }),
    payload: Type.Object({ id: Type.String(), type: Type.String(), createdAt: Type.String(), data: Type.Unknown() }, { description: 'the JSON body sent' }),
    status: Type.Union([Type.Literal('pending'), Type.Literal('delivered'), Type.Literal('failed')]),
    attempts: Type.Integer(),
    lastStatus: Type.Union([Type.Integer(), Type.Null()], { description: 'the last HTTP status; null after a network error or timeout' }),
    lastError: Type.String(),
    createdAt: Type.String(),
    updatedAt: Type.String(),
    nextAttemptAt: Type.Union([Type.String(), Type.Null()], { description: 'when a pending delivery is retried' }),
    deliveredAt: Type.Union([Type.String(), Type.Null()]),
  },
  { description: 'One event sent (or being sent) to one webhook' },
);
export type WebhookDelivery = Static<typeof WebhookDelivery>;

export const DeliveriesQuery = Type.Object({ limit: Type.Integer({ minimum: 1, maximum: 1000, default: 50 }) });

// ---- backup points (issue 5)

const PointMethod = Type.Union([Type.Literal('git'), Type.Literal('s3')], { description: 'git: commit and push to a repository over HTTP(S); s3: mirror the files (or one ZIP) into a bucket' });

/** Every field a point may have; which apply depends on `method` (the engine checks them together). */
const pointFields = {
  name: Type.String({ maxLength: 64, description: 'unique; a-z, 0-9, "_", "-", "."' }),
  source: Type.String({ maxLength: 64, description: 'the name of a dir source' }),
  method: PointMethod,
  url: Type.String({ maxLength: 2048, description: 'git: https://host/owner/repo; s3: https://s3.<region>.amazonaws.com/bucket/folder, https://bucket.s3.<region>.amazonaws.com/folder or http://host:port/bucket/folder (…/file.zip with archive)' }),
  ignore: Type.Array(Type.String({ minLength: 1, maxLength: 1000 }), { maxItems: 1000, description: 'fnmatch rules, like excludes' }),
  afterBackup: Type.Boolean({ description: 'run after every backup of the source (default true)' }),
  username: Type.String({ maxLength: 500, description: 'git' }),
  password: Type.String({ maxLength: 4096, description: 'git; "******" in responses' }),
  branch: Type.String({ maxLength: 250, description: 'git; "" = the repository\'s default branch' }),
  accessKeyId: Type.String({ maxLength: 500, description: 's3' }),
  secretAccessKey: Type.String({ maxLength: 4096, description: 's3; "******" in responses' }),
  region: Type.String({ maxLength: 100, description: 's3; taken from the URL when it names one' }),
  archive: Type.Boolean({ description: 's3: true = one ZIP at the URL; false = mirror the files' }),
  prune: Type.Boolean({ description: 's3 mirror: delete objects no longer in the source' }),
};

export const PointRun = Type.Object(
  {
    id: Type.String(),
    point: Type.String(),
    backupKey: Type.Union([Type.String(), Type.Null()], { description: 'the backup this run followed; null for a run by hand' }),
    status: Type.Union([Type.Literal('updated'), Type.Literal('unchanged'), Type.Literal('failed')]),
    message: Type.String(),
    result: Type.Record(Type.String(), Type.Unknown(), { description: 'commit and branch (git), objectsWritten / objectsDeleted, warnings' }),
    startedAt: Type.String(),
    finishedAt: Type.Union([Type.String(), Type.Null()]),
  },
  { description: 'One run of a backup point' },
);
export type PointRun = Static<typeof PointRun>;

/** The fields of one method or the other: optional in every shape. */
const methodFields = {
  username: Type.Optional(pointFields.username),
  password: Type.Optional(pointFields.password),
  branch: Type.Optional(pointFields.branch),
  accessKeyId: Type.Optional(pointFields.accessKeyId),
  secretAccessKey: Type.Optional(pointFields.secretAccessKey),
  region: Type.Optional(pointFields.region),
  archive: Type.Optional(pointFields.archive),
  prune: Type.Optional(pointFields.prune),
};

export const Point = Type.Object(
  {
    name: pointFields.name,
    source: pointFields.source,
    method: PointMethod,
    url: Type.String({ description: 'without credentials' }),
    ignore: pointFields.ignore,
    afterBackup: pointFields.afterBackup,
    ...methodFields,
    origin: Type.Union([Type.Literal('api'), Type.Literal('config')], { description: 'config: from stowage.yaml, read-only through the API' }),
    createdAt: Type.Union([Type.String(), Type.Null()]),
    updatedAt: Type.Union([Type.String(), Type.Null()]),
    lastRun: Type.Union([PointRun, Type.Null()]),
  },
  { description: 'A backup point; credentials masked' },
);
export type Point = Static<typeof Point>;

export const CreatePointBody = Type.Object(
  {
    name: pointFields.name,
    source: pointFields.source,
    method: PointMethod,
    url: pointFields.url,
    ignore: Type.Optional(pointFields.ignore),
    afterBackup: Type.Optional(pointFields.afterBackup),
    ...methodFields,
  },
  { additionalProperties: false },
);
export type CreatePointBody = Static<typeof CreatePointBody>;

const clearable = <T extends TSchema>(t: T) => Type.Optional(Type.Union([t, Type.Null()]));

export const UpdatePointBody = Type.Object(
  {
    source: Type.Optional(pointFields.source),
    method: Type.Optional(PointMethod),
    url: Type.Optional(pointFields.url),
    ignore: Type.Optional(pointFields.ignore),
    afterBackup: Type.Optional(pointFields.afterBackup),
    username: clearable(pointFields.username),
    password: clearable(pointFields.password),
    branch: Type.Optional(pointFields.branch),
    accessKeyId: clearable(pointFields.accessKeyId),
    secretAccessKey: clearable(pointFields.secretAccessKey),
    region: clearable(pointFields.region),
    archive: Type.Optional(pointFields.archive),
    prune: Type.Optional(pointFields.prune),
  },
  { additionalProperties: false, description: 'the fields to change; a credential left out or sent back as "******" is kept; null clears it' },
);
export type UpdatePointBody = Static<typeof UpdatePointBody>;

export const PointParams = Type.Object({ name: Type.String({ maxLength: 64 }) });
export const PointRunsQuery = Type.Object({ limit: Type.Integer({ minimum: 1, maximum: 100, default: 20 }) });
export const PointRunStarted = Type.Object({ jobId: Type.String(), point: Type.String(), status: Type.Literal('started') });
