import { Type, type Static } from 'typebox';

/**
 * Every request and response shape of the API, as JSON Schema (TypeBox). Fastify validates
 * and serialises with these, the OpenAPI document is generated from them, and the SDK's types
 * are `Static<>` of them: one definition, no drift between server, document and client.
 *
 * This module is imported by the SDK for types only; it must stay free of Node-only imports.
 */

export const SCOPES = ['backups:read', 'backups:create', 'backups:download', 'backups:restore', 'backups:delete', 'backups:export', 'settings'] as const;
export type Scope = (typeof SCOPES)[number];

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
  kind: Type.String({ description: 'dir | sqlite' }),
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

export const CreateBackupBody = Type.Object(
  {
    name: Type.Optional(Type.String({ maxLength: 146, description: 'the key without .zip (default: <app>_<UTC timestamp>)' })),
    description: Type.Optional(Type.String({ maxLength: 1000 })),
    excludes: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 1000 }), { maxItems: 1000, description: 'extra fnmatch rules for this backup' })),
  },
  { additionalProperties: false },
);
export type CreateBackupBody = Static<typeof CreateBackupBody>;

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
    sources: Type.Array(Type.Object({ name: Type.String(), kind: Type.String(), path: Type.String(), files: Type.Integer(), dirs: Type.Integer(), symlinks: Type.Integer(), bytes: Type.Integer(), excludes: Type.Array(Type.String()) })),
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
  },
  { additionalProperties: false },
);
export type RestoreBody = Static<typeof RestoreBody>;

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
