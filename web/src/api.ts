/**
 * The panel's one SDK client (the project's own, bundled from src/sdk) and the session kept in
 * localStorage. Every call of the panel goes through it.
 */
import { StowageApiError, StowageClient, type FieldErrors } from '../../src/sdk/index.js';

export { StowageApiError };
export type * from '../../src/sdk/index.js';

const SESSION_KEY = 'stowage.session';

export const client = new StowageClient(location.origin);

interface Saved {
  token: string;
  email: string;
}

export function loadSession(): Saved | null {
  try {
    const saved = JSON.parse(localStorage.getItem(SESSION_KEY) ?? 'null') as Saved | null;
    if (saved && typeof saved.token === 'string') {
      client.token = saved.token;
      return saved;
    }
  } catch {
    // a damaged entry: log in again
  }
  return null;
}

export function saveSession(token: string, email: string): void {
  client.token = token;
  localStorage.setItem(SESSION_KEY, JSON.stringify({ token, email }));
}

export function clearSession(): void {
  client.auth.logout();
  localStorage.removeItem(SESSION_KEY);
}

/** What to show for a failed call: the server's message (it says what to do next). */
export function errorText(err: unknown): string {
  if (err instanceof StowageApiError) return err.message;
  return err instanceof Error ? err.message : String(err);
}

/** The field errors of a failed call, by field name ({} when none). */
export function fieldErrors(err: unknown): FieldErrors {
  return err instanceof StowageApiError ? err.data : {};
}

/**
 * A fetch over XMLHttpRequest for uploads: fetch cannot report upload progress, so the SDK's
 * upload runs on a client with this fetch (same SDK, same error handling).
 */
export function progressFetch(onProgress: (sent: number, total: number) => void): typeof fetch {
  return (input, init = {}) =>
    new Promise<Response>((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open(init.method ?? 'GET', String(input instanceof Request ? input.url : input));
      new Headers(init.headers).forEach((value, name) => xhr.setRequestHeader(name, value));
      xhr.responseType = 'blob';
      xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : 0);
      xhr.onload = () => {
        const headers = new Headers();
        for (const line of xhr.getAllResponseHeaders().trim().split(/[\r\n]+/)) {
          const at = line.indexOf(':');
          if (at > 0) headers.append(line.slice(0, at).trim(), line.slice(at + 1).trim());
        }
        const empty = xhr.status === 204 || xhr.status === 304;
        resolve(new Response(empty ? null : (xhr.response as Blob), { status: xhr.status, statusText: xhr.statusText, headers }));
      };
      xhr.onerror = () => reject(new TypeError('network error'));
      xhr.onabort = () => reject(new DOMException('The upload was cancelled.', 'AbortError'));
      init.signal?.addEventListener('abort', () => xhr.abort(), { once: true });
      xhr.send(init.body as XMLHttpRequestBodyInit | null);
    });
}

/** A client sharing the session, whose uploads report progress. */
export function uploadClient(onProgress: (sent: number, total: number) => void): StowageClient {
  return new StowageClient(location.origin, { token: client.token ?? undefined, fetch: progressFetch(onProgress) });
}
