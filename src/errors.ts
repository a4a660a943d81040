/**
 * Typed errors with a stable `code`. Library users and the CLI switch on `code`, never on the
 * message text (which is written for people and may change).
 */
export type StowageErrorCode =
  | 'CONFIG_NOT_FOUND'
  | 'CONFIG_INVALID'
  | 'INVALID_KEY'
  | 'BACKUP_EXISTS'
  | 'BACKUP_NOT_FOUND'
  | 'BUSY'
  | 'SOURCE_FAILED'
  | 'BACKUP_FAILED'
  | 'ARCHIVE_INVALID'
  | 'ARCHIVE_UNSAFE'
  | 'FORMAT_UNSUPPORTED'
  | 'CHECKSUM_MISMATCH'
  | 'RESTORE_DISABLED'
  | 'VERSION_POLICY'
  | 'RESTORE_FAILED'
  | 'STORAGE_FAILED'
  | 'HOOK_FAILED'
  | 'POINT_FAILED'
  /** An encrypted backup could not be opened: no key or passphrase given, or the wrong one. */
  | 'DECRYPT_FAILED'
  | 'USAGE';

export class StowageError extends Error {
  readonly code: StowageErrorCode;
  /** Extra machine-readable detail (field errors, the lock holder, ...). */
  readonly details: Record<string, unknown> | undefined;

  constructor(code: StowageErrorCode, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'StowageError';
    this.code = code;
    this.details = options?.details;
  }

  toJSON(): { code: StowageErrorCode; message: string; details?: Record<string, unknown> } {
    return this.details ? { code: this.code, message: this.message, details: this.details } : { code: this.code, message: this.message };
  }
}

export function isStowageError(err: unknown, code?: StowageErrorCode): err is StowageError {
  return err instanceof StowageError && (code === undefined || err.code === code);
}

/** The message of anything thrown, for status fields and logs. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
