import type { ErrorResponse } from '../server/schemas.js';

/** Field errors of a response: field name -> `{ code, message }`; empty when no field is at fault. */
export type FieldErrors = ErrorResponse['data'];

/**
 * Every failure of an SDK call: an error response from the server (`status` is its HTTP status,
 * `message` its explanation, `data` the field errors), or no response at all (`status` 0: the
 * network failed, or the call was aborted, then `isAbort` is true). The underlying error, when
 * there is one, is in `cause`.
 */
export class StowageApiError extends Error {
  override readonly name = 'StowageApiError';
  /** The HTTP status; 0 when no response arrived (network failure or abort). */
  readonly status: number;
  /** Field errors, e.g. `{ file: { code: 'validation_invalid_archive', message: '...' } }`. */
  readonly data: FieldErrors;
  /** True when the request was aborted through an AbortSignal (or unsubscribed). */
  readonly isAbort: boolean;
  /** The URL requested (download tokens in it are masked). */
  readonly url: string;

  constructor(init: { status: number; message: string; data?: FieldErrors; isAbort?: boolean; url: string; cause?: unknown }) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.status = init.status;
    this.data = init.data ?? {};
    this.isAbort = init.isAbort ?? false;
    this.url = init.url.replace(/([?&]token=)[^&#]*/g, '$1***');
  }

  /** The JSON body the server would have sent: `{ status, message, data }`. */
  toJSON(): ErrorResponse & { isAbort: boolean; url: string } {
    return { status: this.status, message: this.message, data: this.data, isAbort: this.isAbort, url: this.url };
  }
}

/** Narrowing helper: `if (isStowageApiError(err) && err.status === 404) ...`. */
export function isStowageApiError(value: unknown): value is StowageApiError {
  return value instanceof StowageApiError;
}

/** True for the error a fetch rejects with when its signal aborts (DOMException in browsers and Node). */
export function isAbortError(err: unknown): boolean {
  return typeof err === 'object' && err !== null && ((err as { name?: unknown }).name === 'AbortError' || (err as { name?: unknown }).name === 'TimeoutError');
}

/** The StowageApiError for a response that is not 2xx, from its `{status, message, data}` body when it has one. */
export async function errorFromResponse(response: Response, url: string): Promise<StowageApiError> {
  let body: unknown = null;
  const text = await response.text().catch(() => '');
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null; // not JSON: a proxy's error page, say
  }
  const parsed = body as Partial<ErrorResponse> | null;
  const message =
    parsed && typeof parsed.message === 'string' && parsed.message
      ? parsed.message
      : `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ''} from ${url.replace(/\?.*$/, '')}`;
  const data = parsed && typeof parsed.data === 'object' && parsed.data !== null ? parsed.data : {};
  return new StowageApiError({ status: response.status, message, data, url });
}

/** Wraps what fetch threw (no response): an abort, or a network failure. */
export function errorFromFailure(err: unknown, url: string): StowageApiError {
  if (err instanceof StowageApiError) return err;
  if (isAbortError(err)) return new StowageApiError({ status: 0, message: 'The request was aborted.', isAbort: true, url, cause: err });
  const reason = err instanceof Error ? (err.cause instanceof Error ? `${err.message}: ${err.cause.message}` : err.message) : String(err);
  return new StowageApiError({ status: 0, message: `Could not reach the Stowage server at ${url.replace(/\?.*$/, '')} (${reason}).`, url, cause: err });
}
