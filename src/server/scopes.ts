/** What an API token may do (superusers may do everything). Kept apart so the CLI can list them without loading the schemas. */
export const SCOPES = ['backups:read', 'backups:create', 'backups:download', 'backups:restore', 'backups:delete', 'backups:export', 'settings'] as const;
export type Scope = (typeof SCOPES)[number];
