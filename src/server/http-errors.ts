import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { isStowageError, type StowageErrorCode } from '../errors.js';
import type { ErrorResponse } from './schemas.js';

/** The exact text PocketBase clients show when a second backup or restore is refused. */
export const BUSY_MESSAGE = 'Try again later - another backup/restore process has already been started.';

/** An error with an HTTP status, thrown by route code. */
export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
    readonly data: ErrorResponse['data'] = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export function fieldError(status: number, field: string, code: string, message: string): HttpError {
  return new HttpError(status, message, { [field]: { code, message } });
}

const STATUS_BY_CODE: Record<StowageErrorCode, number> = {
  CONFIG_NOT_FOUND: 500,
  CONFIG_INVALID: 500,
  INVALID_KEY: 400,
  BACKUP_EXISTS: 400,
  BACKUP_NOT_FOUND: 404,
  BUSY: 409,
  SOURCE_FAILED: 500,
  BACKUP_FAILED: 500,
  ARCHIVE_INVALID: 400,
  ARCHIVE_UNSAFE: 400,
  FORMAT_UNSUPPORTED: 400,
  CHECKSUM_MISMATCH: 400,
  RESTORE_DISABLED: 400,
  VERSION_POLICY: 400,
  RESTORE_FAILED: 500,
  STORAGE_FAILED: 502,
  USAGE: 400,
  HOOK_FAILED: 500,
  POINT_FAILED: 502,
  DECRYPT_FAILED: 400,
};

/** Refusals of managed records (points): `details.reason` decides the status. */
const STATUS_BY_REASON: Record<string, number> = { invalid: 400, exists: 400, not_found: 404, read_only: 409 };

function body(status: number, message: string, data: ErrorResponse['data'] = {}): ErrorResponse {
  return { status, message, data };
}

/** AJV's errors as PocketBase-style field errors: `{ name: { code, message } }`. */
function validationData(error: FastifyError): ErrorResponse['data'] {
  const data: ErrorResponse['data'] = {};
  for (const v of error.validation ?? []) {
    const params = v.params as { missingProperty?: string; additionalProperty?: string };
    const field =
      params.missingProperty ?? params.additionalProperty ?? (v.instancePath.replace(/^\//, '').replace(/\//g, '.') || (error.validationContext ?? 'body'));
    const message = params.additionalProperty ? `unknown field "${params.additionalProperty}"` : params.missingProperty ? 'is required' : (v.message ?? 'is invalid');
    data[field] ??= { code: `validation_${v.keyword}`, message };
  }
  return data;
}

export function sendError(error: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  if (error instanceof HttpError) {
    for (const [k, v] of Object.entries(error.headers)) reply.header(k, v);
    return reply.code(error.statusCode).send(body(error.statusCode, error.message, error.data));
  }
  if (isStowageError(error)) {
    const reason = error.details?.reason;
    const status = (typeof reason === 'string' ? STATUS_BY_REASON[reason] : undefined) ?? STATUS_BY_CODE[error.code] ?? 500;
    if (error.code === 'BUSY') return reply.code(409).send(body(409, BUSY_MESSAGE));
    const fields = (error.details?.fields as Array<{ field: string; message: string }> | undefined) ?? [];
    const data: ErrorResponse['data'] = {};
    for (const f of fields) data[f.field] = { code: 'validation_invalid_value', message: f.message };
    if (error.code === 'BACKUP_EXISTS') data.name ??= { code: 'validation_backup_exists', message: error.message };
    if (error.code === 'INVALID_KEY') data.key ??= { code: 'validation_invalid_key', message: error.message };
    if (status >= 500) request.log.error({ code: error.code, message: error.message }, 'request failed');
    return reply.code(status).send(body(status, error.message, data));
  }
  const fe = error as FastifyError;
  if (fe.validation) {
    const data = validationData(fe);
    const summary = Object.entries(data).map(([k, v]) => `${k}: ${v.message}`).join('; ');
    return reply.code(400).send(body(400, `Invalid request ${fe.validationContext ?? 'body'}: ${summary}`, data));
  }
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    const messages: Record<number, string> = {
      413: 'The request body is too large.',
      415: 'Unsupported Content-Type; send application/json (or multipart/form-data for uploads).',
    };
    return reply.code(fe.statusCode).send(body(fe.statusCode, messages[fe.statusCode] ?? fe.message));
  }
  request.log.error({ err: { message: fe.message, code: fe.code } }, 'unexpected error');
  return reply.code(500).send(body(500, 'Something went wrong while processing the request; the server log has the details.'));
}
