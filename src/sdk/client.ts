import { StowageApiError, errorFromFailure, errorFromResponse } from './errors.js';
import { BackupsService, EventsService, PointsService, SettingsService, TokensService, WebhooksService } from './services.js';
import type { AuthResponse, Health, Job, RestoreStatus, SetupBody, Superuser } from './types.js';

/** Options every call accepts. */
export interface RequestOptions {
  /** Aborts the call; it then rejects with a StowageApiError whose `isAbort` is true. */
  signal?: AbortSignal;
  /** Extra headers for this call. */
  headers?: Record<string, string>;
}

/** What `StowageClient.send` accepts: a request relative to the base URL. */
export interface SendOptions extends RequestOptions {
  method?: string;
  /** Query parameters; undefined values are left out. */
  query?: Record<string, string | number | boolean | undefined>;
  /** A JSON body (sets Content-Type: application/json). */
  json?: unknown;
  /** Any other body (FormData, Blob, bytes, a stream). */
  body?: RequestInit['body'];
  /** Send the Authorization header (default true, when a token is set). */
  auth?: boolean;
}

export interface StowageClientOptions {
  /** A superuser session token or an API token (`stw_...`). */
  token?: string;
  /** The fetch to use (default: the global one); e.g. one with a proxy agent, or a test double. */
  fetch?: typeof fetch;
}

/**
 * A client of the Stowage REST API. Runs wherever `fetch` does (browsers, Node 20+, Deno, Bun,
 * workers); it needs no Node-only module.
 */
export class StowageClient {
  /** The server's address without a trailing slash, e.g. `https://backups.example.com`. */
  readonly baseUrl: string;
  /** The Authorization token sent with every call; set by `auth.login`, or by hand. */
  token: string | null;
  readonly auth: AuthService;
  readonly backups: BackupsService;
  readonly tokens: TokensService;
  readonly events: EventsService;
  readonly webhooks: WebhooksService;
  readonly points: PointsService;
  readonly settings: SettingsService;
  private readonly fetchImpl: typeof fetch;

  constructor(baseUrl: string, options: StowageClientOptions = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.token = options.token ?? null;
    // Called through a wrapper: browsers refuse `window.fetch` called with another `this`.
    this.fetchImpl = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.auth = new AuthService(this);
    this.backups = new BackupsService(this);
    this.tokens = new TokensService(this);
    this.events = new EventsService(this);
    this.webhooks = new WebhooksService(this);
    this.points = new PointsService(this);
    this.settings = new SettingsService(this);
  }

  /** The absolute (or, with a relative base URL, root-relative) URL of an API path. */
  buildUrl(path: string, query: SendOptions['query'] = {}): string {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined) params.set(k, String(v));
    const qs = params.toString();
    return `${this.baseUrl}${path}${qs ? `?${qs}` : ''}`;
  }

  /**
   * Sends a request and returns the response when it is 2xx; anything else rejects with a
   * StowageApiError (the server's `{status, message, data}`), as does a network failure.
   * The building block of every method; use it for routes the SDK does not wrap yet.
   */
  async send(path: string, options: SendOptions = {}): Promise<Response> {
    const url = this.buildUrl(path, options.query);
    const headers = new Headers(options.headers);
    if (options.auth !== false && this.token && !headers.has('Authorization')) headers.set('Authorization', this.token);
    let body = options.body;
    if (options.json !== undefined) {
      headers.set('Content-Type', 'application/json');
      body = JSON.stringify(options.json);
    }
    const init: RequestInit & { duplex?: 'half' } = { method: options.method ?? 'GET', headers, body, signal: options.signal };
    // A stream body needs half-duplex in fetch (Node, and browsers that stream uploads).
    if (typeof ReadableStream !== 'undefined' && body instanceof ReadableStream) init.duplex = 'half';
    let response: Response;
    try {
      response = await this.fetchImpl(url, init);
    } catch (err) {
      throw errorFromFailure(err, url);
    }
    if (!response.ok) throw await errorFromResponse(response, url);
    return response;
  }

  /** `send`, then the JSON body (undefined for 204 No Content). */
  async sendJson<T>(path: string, options: SendOptions = {}): Promise<T> {
    const response = await this.send(path, options);
    if (response.status === 204) return undefined as T;
    try {
      return (await response.json()) as T;
    } catch (err) {
      if (err instanceof SyntaxError) {
        throw new StowageApiError({ status: response.status, message: `The server's answer to ${path} is not JSON.`, url: response.url || path, cause: err });
      }
      throw errorFromFailure(err, response.url || path);
    }
  }

  /** Liveness, version, and whether a backup could start now (no token needed). */
  health(options: RequestOptions = {}): Promise<Health> {
    return this.sendJson('/api/health', options);
  }

  /** The state of the last restore or factory reset (poll it after `backups.restore`). */
  restoreStatus(options: RequestOptions = {}): Promise<RestoreStatus> {
    return this.sendJson('/api/restore-status', options);
  }

  /** Job history (backups, restores, resets, exports), newest first. */
  jobs(params: { limit?: number } = {}, options: RequestOptions = {}): Promise<Job[]> {
    return this.sendJson('/api/jobs', { ...options, query: { limit: params.limit } });
  }
}

/** Superuser sessions. */
export class AuthService {
  /** The superuser logged in through this client, if any. */
  record: Superuser | null = null;

  constructor(private readonly client: StowageClient) {}

  /** Logs in as a superuser; the session token is kept in `client.token` for the next calls. */
  async login(email: string, password: string, options: RequestOptions = {}): Promise<AuthResponse> {
    const result = await this.client.sendJson<AuthResponse>('/api/collections/_superusers/auth-with-password', {
      ...options,
      method: 'POST',
      auth: false,
      json: { identity: email, password },
    });
    this.client.token = result.token;
    this.record = result.record;
    return result;
  }

  /**
   * Creates the first superuser with the one-time setup token the server printed at its first
   * start (its `/setup?token=...` link). Sent without Authorization; it logs nobody in (call
   * `login` next). A used, expired or wrong token rejects with a 400 on `data.token`.
   */
  completeSetup(body: SetupBody, options: RequestOptions = {}): Promise<Superuser> {
    return this.client.sendJson('/api/setup', { ...options, method: 'POST', auth: false, json: body });
  }

  /** Swaps the current session token for a fresh one (sessions last 14 days). */
  async refresh(options: RequestOptions = {}): Promise<AuthResponse> {
    const result = await this.client.sendJson<AuthResponse>('/api/collections/_superusers/auth-refresh', { ...options, method: 'POST' });
    this.client.token = result.token;
    this.record = result.record;
    return result;
  }

  /**
   * Forgets the token in this client. Session tokens are signed and not stored by the server,
   * so a token copied elsewhere stays valid until it expires or the superuser's password changes.
   */
  logout(): void {
    this.client.token = null;
    this.record = null;
  }

  /** True when the client holds a token (it is not checked with the server). */
  get isLoggedIn(): boolean {
    return this.client.token !== null;
  }
}
