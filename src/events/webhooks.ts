import crypto from 'node:crypto';
import type Database from 'better-sqlite3';
import { StowageError, errorMessage } from '../errors.js';
import { STOWAGE_VERSION } from '../version.js';
import type { StowageEmitter, StowageEventName, StowageEvents } from './events.js';

/**
 * Webhooks (issue 4): every matching event from the bus is POSTed as signed JSON to the
 * registered URLs, with a persistent delivery log and retries.
 *
 * Wire format, for receivers:
 *
 *   POST <url>
 *   Content-Type: application/json
 *   User-Agent: Stowage-Webhook/<version>
 *   Stowage-Webhook-Id: <webhook id>
 *   Stowage-Delivery-Id: <delivery id, also the body's "id"; the same on every retry: dedupe on it>
 *   Stowage-Event: <event type>
 *   Stowage-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
 *
 *   { "id": "...", "type": "backup.created", "createdAt": "<ISO 8601>", "data": { ...event payload } }
 *
 * The signature is Stripe's scheme: the HMAC key is the webhook secret (its UTF-8 bytes), the
 * message is the timestamp, a literal ".", and the raw request body bytes exactly as received
 * (verify before parsing JSON; re-serialising changes the bytes). Receivers recompute it, compare
 * in constant time against every `v1=` in the header (more than one may appear), and reject a
 * timestamp more than a few minutes from their clock (replays). `verifyWebhookSignature` does all
 * of that. `t` is the time of the attempt, so each retry carries a fresh signature.
 *
 * Delivery: 2xx is success. Anything else (3xx included: redirects are not followed), a network
 * error or no answer within 10 s is retried with exponential backoff and jitter (2 s, 4 s, 8 s,
 * ... capped at 10 min) until `maxAttempts` or the retry window has passed. 410 Gone stops at
 * once and disables the webhook. Deliveries are rows in `webhook_deliveries` before the first
 * attempt, so `resume()` resends what a crash left pending.
 */

/** The schema. The lead moves it into the catalogue's migrations; until then `ensureSchema()` runs it. */
export const WEBHOOK_TABLES_SQL = `
CREATE TABLE IF NOT EXISTS webhooks (
  id TEXT PRIMARY KEY,
  url TEXT NOT NULL,
  events TEXT NOT NULL,
  secret TEXT NOT NULL,
  enabled INTEGER NOT NULL DEFAULT 1,
  description TEXT NOT NULL DEFAULT '',
  origin TEXT NOT NULL CHECK (origin IN ('api', 'config')),
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS webhooks_config_url ON webhooks(url) WHERE origin = 'config';
CREATE TABLE IF NOT EXISTS webhook_deliveries (
  id TEXT PRIMARY KEY,
  webhook_id TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
  event TEXT NOT NULL,
  payload TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
  attempts INTEGER NOT NULL DEFAULT 0,
  last_status INTEGER,
  last_error TEXT NOT NULL DEFAULT '',
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  next_attempt_at INTEGER,
  delivered_at TEXT
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_webhook ON webhook_deliveries(webhook_id, created_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_pending ON webhook_deliveries(status) WHERE status = 'pending';
`;

// ---------------------------------------------------------------------------------------------
// Signatures

export const SIGNATURE_HEADER = 'Stowage-Signature';

function hmacHex(secret: string, timestamp: number, rawBody: string | Buffer): string {
  return crypto.createHmac('sha256', secret).update(`${timestamp}.`).update(rawBody).digest('hex');
}

/** The `Stowage-Signature` header value for a body sent at `timestampSeconds`. */
export function signWebhookPayload(secret: string, timestampSeconds: number, rawBody: string | Buffer): string {
  return `t=${timestampSeconds},v1=${hmacHex(secret, timestampSeconds, rawBody)}`;
}

/**
 * For receivers: true when `header` carries a valid `v1` signature of `rawBody` (the bytes exactly
 * as received) made with `secret`, and its timestamp is within `toleranceSeconds` of `nowSeconds`
 * (unix seconds; 0 disables the time check). Comparisons are constant-time.
 */
export function verifyWebhookSignature(
  secret: string,
  header: string | null | undefined,
  rawBody: string | Buffer,
  toleranceSeconds = 300,
  nowSeconds: number = Math.floor(Date.now() / 1000),
): boolean {
  if (!header) return false;
  let timestamp: number | null = null;
  const signatures: string[] = [];
  for (const part of header.split(',')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const name = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (name === 't' && /^\d{1,12}$/.test(value)) timestamp = Number(value);
    else if (name === 'v1') signatures.push(value);
  }
  if (timestamp === null || !signatures.length) return false;
  if (toleranceSeconds > 0 && Math.abs(nowSeconds - timestamp) > toleranceSeconds) return false;
  const expected = Buffer.from(hmacHex(secret, timestamp, rawBody), 'utf8');
  let ok = false;
  for (const s of signatures) {
    const given = Buffer.from(s, 'utf8');
    // Lengths are public (a hex SHA-256 is always 64 characters); compare every candidate.
    if (given.length === expected.length && crypto.timingSafeEqual(given, expected)) ok = true;
  }
  return ok;
}

// ---------------------------------------------------------------------------------------------
// Types

/** Every event name the bus emits; `satisfies` makes the compiler flag one added to StowageEvents and not here. */
const EVENT_NAME_SET = {
  'backup.started': true,
  'backup.progress': true,
  'backup.created': true,
  'backup.failed': true,
  'backup.deleted': true,
  'backup.uploaded': true,
  'export.progress': true,
  'restore.started': true,
  'restore.progress': true,
  'restore.completed': true,
  'restore.failed': true,
  'verify.progress': true,
  'verify.completed': true,
  'verify.failed': true,
  'drill.completed': true,
  'drill.failed': true,
  'prune.completed': true,
  'schedule.missed': true,
  'schedule.delayed': true,
  'point.completed': true,
  'point.failed': true,
  'backup.pushed': true,
  'backup.push_failed': true,
} as const satisfies Record<StowageEventName, true>;

/** The names a webhook may subscribe to. `"*"` means every event except `*.progress` (several a second during a job); progress events are delivered only when named. */
export const WEBHOOK_EVENT_NAMES = Object.keys(EVENT_NAME_SET) as StowageEventName[];

export type WebhookEventFilter = StowageEventName | '*';
/** The body's `type`: a bus event, or `webhook.test` from `testDelivery`. */
export type WebhookEventType = StowageEventName | 'webhook.test';
export type WebhookOrigin = 'api' | 'config';
export type DeliveryStatus = 'pending' | 'delivered' | 'failed';

/** The JSON body of every delivery. */
export interface WebhookPayload<T = unknown> {
  id: string;
  type: WebhookEventType;
  createdAt: string;
  data: T;
}

export interface WebhookInput {
  url: string;
  events: WebhookEventFilter[];
  /** Generated (32 random bytes, hex) when left out. */
  secret?: string;
  enabled?: boolean;
  description?: string;
}

export interface WebhookRecord {
  id: string;
  url: string;
  events: WebhookEventFilter[];
  /** The secret only in what `create` returns; `"******"` everywhere else. */
  secret: string;
  enabled: boolean;
  description: string;
  origin: WebhookOrigin;
  createdAt: string;
  updatedAt: string;
}

export interface WebhookDeliveryRecord {
  id: string;
  webhookId: string;
  event: WebhookEventType;
  payload: WebhookPayload;
  status: DeliveryStatus;
  attempts: number;
  /** The last HTTP status, null when there was none (network error, timeout). */
  lastStatus: number | null;
  lastError: string;
  createdAt: string;
  updatedAt: string;
  /** When a pending delivery is tried next (ISO), null once it is delivered or failed. */
  nextAttemptAt: string | null;
  deliveredAt: string | null;
}

export interface WebhookClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export type WebhookLogLevel = 'debug' | 'info' | 'warn' | 'error';
export type WebhookLogger = (level: WebhookLogLevel, msg: string, data: Record<string, unknown>) => void;

export interface WebhookDispatcherOptions {
  db: Database.Database;
  events: StowageEmitter;
  clock?: WebhookClock;
  fetch?: typeof fetch;
  log?: WebhookLogger;
  /** Attempts per delivery, the first included (default 8). */
  maxAttempts?: number;
  /** No retry is scheduled later than this after the event (default 1 h). */
  maxRetryWindowMs?: number;
  /** How long one attempt may take, answer included (default 10 s). */
  requestTimeoutMs?: number;
  /** Deliveries kept per webhook, newest first (default 1,000). */
  maxDeliveriesPerWebhook?: number;
}

/** Why a webhook call was refused, for the API to choose 400 / 404 / 409. The code is `USAGE`. */
export type WebhookErrorReason = 'invalid' | 'not_found' | 'read_only';

export class WebhookError extends StowageError {
  readonly reason: WebhookErrorReason;

  constructor(reason: WebhookErrorReason, message: string, field?: string) {
    super('USAGE', message, { details: field ? { reason, fields: [{ field, message }] } : { reason } });
    this.name = 'WebhookError';
    this.reason = reason;
  }
}

export const MASKED_SECRET = '******';
const BASE_DELAY_MS = 2_000;
const MAX_DELAY_MS = 10 * 60_000;
const TEST_EVENT = 'webhook.test';

interface WebhookRow {
  id: string;
  url: string;
  events: string;
  secret: string;
  enabled: number;
  description: string;
  origin: WebhookOrigin;
  created_at: string;
  updated_at: string;
}

interface DeliveryRow {
  id: string;
  webhook_id: string;
  event: WebhookEventType;
  payload: string;
  status: DeliveryStatus;
  attempts: number;
  last_status: number | null;
  last_error: string;
  created_at: string;
  updated_at: string;
  next_attempt_at: number | null;
  delivered_at: string | null;
}

interface AttemptResult {
  ok: boolean;
  status: number | null;
  error: string;
  /** Aborted by close(): not an attempt, the delivery stays pending for resume(). */
  cancelled?: boolean;
}

// ---------------------------------------------------------------------------------------------
// Validation

/** The URL for logs: no userinfo, no query, no fragment. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return '<invalid URL>';
  }
}

function validateUrl(url: unknown, field = 'url'): string {
  if (typeof url !== 'string' || !url.trim()) throw new WebhookError('invalid', `${field}: a URL is required`, field);
  if (url.length > 2048) throw new WebhookError('invalid', `${field}: the URL is longer than 2,048 characters`, field);
  let u: URL;
  try {
    u = new URL(url.trim());
  } catch {
    throw new WebhookError('invalid', `${field}: not a valid absolute URL (expected https://host/path)`, field);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new WebhookError('invalid', `${field}: only http and https URLs are allowed, not ${u.protocol.replace(/:$/, '')}`, field);
  }
  if (u.username || u.password) {
    throw new WebhookError('invalid', `${field}: the URL must not contain credentials (user:password@); the receiver checks the Stowage-Signature header instead`, field);
  }
  if (!u.hostname) throw new WebhookError('invalid', `${field}: the URL has no host`, field);
  return u.toString();
}

function validateEvents(events: unknown, field = 'events'): WebhookEventFilter[] {
  if (!Array.isArray(events) || !events.length) {
    throw new WebhookError('invalid', `${field}: list at least one event name, or "*" for every event`, field);
  }
  const out = new Set<WebhookEventFilter>();
  for (const e of events) {
    if (e === '*' || (typeof e === 'string' && Object.hasOwn(EVENT_NAME_SET, e))) out.add(e as WebhookEventFilter);
    else throw new WebhookError('invalid', `${field}: unknown event ${JSON.stringify(e)}; known events: ${WEBHOOK_EVENT_NAMES.join(', ')}, or "*"`, field);
  }
  if (out.has('*')) {
    // "*" already covers the non-progress events; keep progress events named beside it.
    return ['*', ...[...out].filter((e) => e !== '*' && e.endsWith('.progress'))];
  }
  return [...out];
}

function validateSecret(secret: unknown, field = 'secret'): string {
  if (typeof secret !== 'string' || secret.length < 16 || secret.length > 256 || /\s/.test(secret)) {
    throw new WebhookError('invalid', `${field}: a secret must be 16 to 256 characters without spaces (leave it out to have one generated)`, field);
  }
  return secret;
}

function validateDescription(description: unknown, field = 'description'): string {
  if (description === undefined) return '';
  if (typeof description !== 'string' || description.length > 500) throw new WebhookError('invalid', `${field}: at most 500 characters of text`, field);
  return description;
}

function validateEnabled(enabled: unknown, field = 'enabled'): boolean {
  if (enabled === undefined) return true;
  if (typeof enabled !== 'boolean') throw new WebhookError('invalid', `${field}: true or false`, field);
  return enabled;
}

function matches(filters: WebhookEventFilter[], event: StowageEventName): boolean {
  return filters.includes(event) || (filters.includes('*') && !event.endsWith('.progress'));
}

/** 2 s, 4 s, 8 s, ... capped at 10 min, plus up to 25 % jitter so receivers coming back are not hit by every sender at once. */
export function retryDelayMs(attempt: number, random: () => number = Math.random): number {
  const base = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** Math.max(0, attempt - 1));
  return Math.min(MAX_DELAY_MS, Math.round(base * (1 + 0.25 * random())));
}

const defaultClock: WebhookClock = {
  now: () => Date.now(),
  // Unref'd: a pending retry must not keep a CLI process alive; resume() picks it up next time.
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

function fromWebhookRow(r: WebhookRow, showSecret = false): WebhookRecord {
  return {
    id: r.id,
    url: r.url,
    events: JSON.parse(r.events) as WebhookEventFilter[],
    secret: showSecret ? r.secret : MASKED_SECRET,
    enabled: r.enabled === 1,
    description: r.description,
    origin: r.origin,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

function fromDeliveryRow(r: DeliveryRow): WebhookDeliveryRecord {
  return {
    id: r.id,
    webhookId: r.webhook_id,
    event: r.event,
    payload: JSON.parse(r.payload) as WebhookPayload,
    status: r.status,
    attempts: r.attempts,
    lastStatus: r.last_status,
    lastError: r.last_error,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    nextAttemptAt: r.next_attempt_at === null ? null : new Date(r.next_attempt_at).toISOString(),
    deliveredAt: r.delivered_at,
  };
}

/** Up to `limit` characters of a response body, on one line, for last_error. */
async function bodySnippet(res: Response, limit = 200): Promise<string> {
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < limit * 4) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  const text = Buffer.concat(chunks).toString('utf8').replace(/\s+/g, ' ').trim();
  return text.length > limit ? `${text.slice(0, limit)}…` : text;
}

function networkErrorMessage(err: unknown): string {
  const cause = (err as { cause?: unknown }).cause;
  if (cause instanceof Error) {
    const code = (cause as NodeJS.ErrnoException).code;
    return `network error: ${code && !cause.message.includes(code) ? `${code} ` : ''}${cause.message}`;
  }
  return `network error: ${errorMessage(err)}`;
}

// ---------------------------------------------------------------------------------------------
// The dispatcher

const CLOSED = Symbol('closed');

export class WebhookDispatcher {
  private readonly db: Database.Database;
  private readonly clock: WebhookClock;
  private readonly fetchFn: typeof fetch;
  private readonly log: WebhookLogger;
  private readonly maxAttempts: number;
  private readonly maxRetryWindowMs: number;
  private readonly requestTimeoutMs: number;
  private readonly maxDeliveriesPerWebhook: number;
  /** Scheduled retries, by delivery id. */
  private readonly timers = new Map<string, unknown>();
  /** Attempts on the wire, by delivery id: one at a time per delivery. */
  private readonly inFlight = new Map<string, { promise: Promise<WebhookDeliveryRecord | null>; controller: AbortController }>();
  private readonly unsubscribe: () => void;
  private closed = false;

  constructor(options: WebhookDispatcherOptions) {
    this.db = options.db;
    this.clock = options.clock ?? defaultClock;
    this.fetchFn = options.fetch ?? globalThis.fetch;
    this.log = options.log ?? (() => undefined);
    this.maxAttempts = Math.max(1, options.maxAttempts ?? 8);
    this.maxRetryWindowMs = options.maxRetryWindowMs ?? 60 * 60_000;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.maxDeliveriesPerWebhook = Math.max(1, options.maxDeliveriesPerWebhook ?? 1_000);
    this.ensureSchema();
    this.unsubscribe = options.events.onAny((event, payload) => this.onEvent(event, payload));
  }

  /** Creates the tables when missing (idempotent). */
  ensureSchema(): void {
    this.db.exec(WEBHOOK_TABLES_SQL);
  }

  // --- CRUD -----------------------------------------------------------------------------------

  /** Registers a webhook; the returned record is the only one that shows the secret. */
  create(input: WebhookInput): WebhookRecord {
    const row = this.rowFromInput(input, 'api');
    this.insertWebhook(row);
    this.log('info', 'webhook created', { webhookId: row.id, url: redactUrl(row.url), events: JSON.parse(row.events) as unknown });
    return fromWebhookRow(row, true);
  }

  list(): WebhookRecord[] {
    return (this.db.prepare('SELECT * FROM webhooks ORDER BY created_at, rowid').all() as WebhookRow[]).map((r) => fromWebhookRow(r));
  }

  get(id: string): WebhookRecord | null {
    const row = this.webhookRow(id);
    return row ? fromWebhookRow(row) : null;
  }

  /** Changes an API webhook; a patch without `secret` keeps the current one. */
  update(id: string, patch: Partial<WebhookInput>): WebhookRecord {
    const row = this.requireWritable(id);
    const next: WebhookRow = {
      ...row,
      url: patch.url === undefined ? row.url : validateUrl(patch.url),
      events: patch.events === undefined ? row.events : JSON.stringify(validateEvents(patch.events)),
      secret: patch.secret === undefined ? row.secret : validateSecret(patch.secret),
      enabled: patch.enabled === undefined ? row.enabled : validateEnabled(patch.enabled) ? 1 : 0,
      description: patch.description === undefined ? row.description : validateDescription(patch.description),
      updated_at: this.isoNow(),
    };
    this.db
      .prepare('UPDATE webhooks SET url = @url, events = @events, secret = @secret, enabled = @enabled, description = @description, updated_at = @updated_at WHERE id = @id')
      .run(next);
    if (row.enabled === 1 && next.enabled === 0) this.failPending(id, 'the webhook was disabled before this delivery succeeded');
    this.log('info', 'webhook updated', { webhookId: id, url: redactUrl(next.url) });
    return fromWebhookRow(next);
  }

  /** Removes an API webhook and its delivery log. */
  delete(id: string): void {
    this.requireWritable(id);
    this.removeWebhook(id);
    this.log('info', 'webhook deleted', { webhookId: id });
  }

  /** The delivery log of one webhook, newest first. */
  deliveries(webhookId: string, options: { limit?: number } = {}): WebhookDeliveryRecord[] {
    if (!this.webhookRow(webhookId)) throw new WebhookError('not_found', `webhook ${webhookId} not found`);
    const limit = Math.min(this.maxDeliveriesPerWebhook, Math.max(1, Math.floor(options.limit ?? 50)));
    const rows = this.db
      .prepare('SELECT * FROM webhook_deliveries WHERE webhook_id = ? ORDER BY created_at DESC, rowid DESC LIMIT ?')
      .all(webhookId, limit) as DeliveryRow[];
    return rows.map(fromDeliveryRow);
  }

  /** Sends a `webhook.test` event now (even to a disabled webhook), once, and returns the outcome. */
  async testDelivery(id: string): Promise<WebhookDeliveryRecord> {
    const row = this.webhookRow(id);
    if (!row) throw new WebhookError('not_found', `webhook ${id} not found`);
    const deliveryId = this.insertDelivery(id, TEST_EVENT, { webhookId: id, message: 'A test delivery from Stowage.' });
    await this.send(deliveryId);
    const done = this.deliveryRow(deliveryId);
    if (!done) throw new WebhookError('not_found', `webhook ${id} was deleted during the test delivery`);
    return fromDeliveryRow(done);
  }

  /**
   * Makes the `config` webhooks match stowage.yaml: matched by URL, created, changed, or removed
   * (with their logs) when gone from the file. A config entry without a secret gets a generated
   * one, kept across syncs. Everything is validated before anything changes.
   */
  syncFromConfig(list: WebhookInput[]): { added: string[]; updated: string[]; removed: string[] } {
    const wanted = list.map((input, i) => this.rowFromInput(input, 'config', `webhooks[${i}]`));
    const seen = new Map<string, number>();
    wanted.forEach((w, i) => {
      const first = seen.get(w.url);
      if (first !== undefined) throw new WebhookError('invalid', `webhooks[${i}].url: the same URL as webhooks[${first}]`, `webhooks[${i}].url`);
      seen.set(w.url, i);
    });
    const result = { added: [] as string[], updated: [] as string[], removed: [] as string[] };
    const disabled: string[] = [];
    this.db.transaction(() => {
      const existing = new Map((this.db.prepare(`SELECT * FROM webhooks WHERE origin = 'config'`).all() as WebhookRow[]).map((r) => [r.url, r]));
      wanted.forEach((w, i) => {
        const old = existing.get(w.url);
        existing.delete(w.url);
        if (!old) {
          this.insertWebhook(w);
          result.added.push(w.id);
          return;
        }
        const secret = list[i]!.secret === undefined ? old.secret : w.secret;
        if (old.events === w.events && old.secret === secret && old.enabled === w.enabled && old.description === w.description) return;
        this.db
          .prepare('UPDATE webhooks SET events = ?, secret = ?, enabled = ?, description = ?, updated_at = ? WHERE id = ?')
          .run(w.events, secret, w.enabled, w.description, w.updated_at, old.id);
        if (old.enabled === 1 && w.enabled === 0) disabled.push(old.id);
        result.updated.push(old.id);
      });
      for (const gone of existing.values()) {
        this.removeWebhook(gone.id);
        result.removed.push(gone.id);
      }
    })();
    for (const id of disabled) this.failPending(id, 'the webhook was disabled in stowage.yaml before this delivery succeeded');
    if (result.added.length || result.updated.length || result.removed.length) this.log('info', 'webhooks synced from config', { ...result });
    return result;
  }

  // --- Lifecycle ------------------------------------------------------------------------------

  /**
   * Picks up the deliveries a previous process left pending: due ones are sent now, the rest at
   * their time; those whose retry window passed while nothing ran are marked failed.
   * Returns how many were scheduled.
   */
  resume(): number {
    if (this.closed) return 0;
    const rows = this.db.prepare(`SELECT * FROM webhook_deliveries WHERE status = 'pending' ORDER BY created_at, rowid`).all() as DeliveryRow[];
    let scheduled = 0;
    for (const r of rows) {
      if (this.inFlight.has(r.id) || this.timers.has(r.id)) continue;
      const now = this.clock.now();
      if (Date.parse(r.created_at) + this.maxRetryWindowMs < now) {
        this.finish(r.id, 'failed', {
          error: `${r.last_error ? `${r.last_error}; ` : ''}gave up: the retry window passed while Stowage was not running (${r.attempts} attempt${r.attempts === 1 ? '' : 's'})`,
        });
        continue;
      }
      this.schedule(r.id, Math.max(0, (r.next_attempt_at ?? now) - now));
      scheduled++;
    }
    if (scheduled) this.log('info', 'resuming pending webhook deliveries', { count: scheduled });
    return scheduled;
  }

  /** Resolves once no attempt is on the wire (scheduled retries are not waited for). */
  async whenIdle(): Promise<void> {
    while (this.inFlight.size) await Promise.allSettled([...this.inFlight.values()].map((f) => f.promise));
  }

  /** Stops listening and cancels timers and attempts; pending deliveries stay for `resume()`. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe();
    for (const handle of this.timers.values()) this.clock.clearTimeout(handle);
    this.timers.clear();
    for (const { controller } of this.inFlight.values()) controller.abort(CLOSED);
    await this.whenIdle();
  }

  // --- Delivery -------------------------------------------------------------------------------

  private onEvent(event: StowageEventName, data: StowageEvents[StowageEventName]): void {
    if (this.closed) return;
    try {
      const hooks = (this.db.prepare('SELECT id, events FROM webhooks WHERE enabled = 1').all() as Array<Pick<WebhookRow, 'id' | 'events'>>).filter((h) =>
        matches(JSON.parse(h.events) as WebhookEventFilter[], event),
      );
      if (!hooks.length) return;
      const ids = this.db.transaction(() => hooks.map((h) => this.insertDelivery(h.id, event, data)))();
      for (const id of ids) void this.send(id);
    } catch (err) {
      // A webhook problem must never break the job that emitted the event.
      this.log('error', 'could not queue webhook deliveries', { event, error: errorMessage(err) });
    }
  }

  private insertDelivery(webhookId: string, type: WebhookEventType, data: unknown): string {
    const id = crypto.randomUUID();
    const now = this.clock.now();
    const createdAt = new Date(now).toISOString();
    const payload: WebhookPayload = { id, type, createdAt, data };
    this.db
      .prepare(
        `INSERT INTO webhook_deliveries (id, webhook_id, event, payload, status, attempts, last_error, created_at, updated_at, next_attempt_at)
         VALUES (?, ?, ?, ?, 'pending', 0, '', ?, ?, ?)`,
      )
      .run(id, webhookId, type, JSON.stringify(payload), createdAt, createdAt, now);
    // Bound the log: keep the newest N per webhook (never a pending one).
    this.db
      .prepare(
        `DELETE FROM webhook_deliveries WHERE webhook_id = @webhookId AND status != 'pending' AND rowid NOT IN
           (SELECT rowid FROM webhook_deliveries WHERE webhook_id = @webhookId ORDER BY created_at DESC, rowid DESC LIMIT @keep)`,
      )
      .run({ webhookId, keep: this.maxDeliveriesPerWebhook });
    return id;
  }

  private schedule(deliveryId: string, delayMs: number): void {
    if (this.closed) return;
    if (delayMs <= 0) {
      void this.send(deliveryId);
      return;
    }
    this.clearTimer(deliveryId);
    this.timers.set(
      deliveryId,
      this.clock.setTimeout(() => {
        this.timers.delete(deliveryId);
        void this.send(deliveryId);
      }, delayMs),
    );
  }

  private clearTimer(deliveryId: string): void {
    const handle = this.timers.get(deliveryId);
    if (handle === undefined) return;
    this.clock.clearTimeout(handle);
    this.timers.delete(deliveryId);
  }

  /** One attempt; never rejects. */
  private send(deliveryId: string): Promise<WebhookDeliveryRecord | null> {
    const running = this.inFlight.get(deliveryId);
    if (running) return running.promise;
    if (this.closed) return Promise.resolve(null);
    this.clearTimer(deliveryId);
    const controller = new AbortController();
    const promise = this.attempt(deliveryId, controller)
      .catch((err: unknown) => {
        this.log('error', 'webhook delivery failed unexpectedly', { deliveryId, error: errorMessage(err) });
        return null;
      })
      .finally(() => this.inFlight.delete(deliveryId));
    this.inFlight.set(deliveryId, { promise, controller });
    return promise;
  }

  private async attempt(deliveryId: string, controller: AbortController): Promise<WebhookDeliveryRecord | null> {
    const delivery = this.deliveryRow(deliveryId);
    if (!delivery || delivery.status !== 'pending') return delivery ? fromDeliveryRow(delivery) : null;
    const hook = this.webhookRow(delivery.webhook_id);
    if (!hook) return null;
    const isTest = delivery.event === TEST_EVENT;
    if (hook.enabled !== 1 && !isTest) return this.finish(deliveryId, 'failed', { error: 'the webhook is disabled' });

    const result = await this.post(hook, delivery, controller);
    if (result.cancelled) return null;
    const attempts = delivery.attempts + 1;
    const logData = { webhookId: hook.id, deliveryId, event: delivery.event, url: redactUrl(hook.url), attempt: attempts, status: result.status };

    if (result.ok) {
      this.log('debug', 'webhook delivered', logData);
      return this.finish(deliveryId, 'delivered', { attempts, status: result.status });
    }
    if (result.status === 410) {
      const error = 'HTTP 410 Gone: the receiver no longer accepts this webhook, so Stowage disabled it; re-enable it once the URL is right';
      this.db.prepare('UPDATE webhooks SET enabled = 0, updated_at = ? WHERE id = ?').run(this.isoNow(), hook.id);
      this.log('warn', 'webhook disabled: the receiver answered 410 Gone', logData);
      const record = this.finish(deliveryId, 'failed', { attempts, status: 410, error });
      this.failPending(hook.id, 'the receiver answered 410 Gone to another delivery and the webhook was disabled');
      return record;
    }
    if (isTest) return this.finish(deliveryId, 'failed', { attempts, status: result.status, error: result.error });
    if (attempts >= this.maxAttempts) {
      this.log('warn', 'webhook delivery failed, giving up', { ...logData, error: result.error });
      return this.finish(deliveryId, 'failed', { attempts, status: result.status, error: `${result.error} (gave up after ${attempts} attempts)` });
    }
    const delay = retryDelayMs(attempts);
    const nextAt = this.clock.now() + delay;
    if (nextAt > Date.parse(delivery.created_at) + this.maxRetryWindowMs) {
      this.log('warn', 'webhook delivery failed, retry window passed', { ...logData, error: result.error });
      return this.finish(deliveryId, 'failed', {
        attempts,
        status: result.status,
        error: `${result.error} (gave up after ${attempts} attempts: the retry window of ${Math.round(this.maxRetryWindowMs / 60_000)} min passed)`,
      });
    }
    this.db
      .prepare('UPDATE webhook_deliveries SET attempts = ?, last_status = ?, last_error = ?, next_attempt_at = ?, updated_at = ? WHERE id = ?')
      .run(attempts, result.status, result.error, nextAt, this.isoNow(), deliveryId);
    this.log('info', 'webhook delivery failed, will retry', { ...logData, error: result.error, retryInMs: delay });
    this.schedule(deliveryId, delay);
    const row = this.deliveryRow(deliveryId);
    return row ? fromDeliveryRow(row) : null;
  }

  private async post(hook: WebhookRow, delivery: DeliveryRow, controller: AbortController): Promise<AttemptResult> {
    const seconds = Math.floor(this.clock.now() / 1000);
    const timeout = this.clock.setTimeout(() => controller.abort(new Error('timeout')), this.requestTimeoutMs);
    try {
      const res = await this.fetchFn(hook.url, {
        method: 'POST',
        redirect: 'manual',
        signal: controller.signal,
        body: delivery.payload,
        headers: {
          'Content-Type': 'application/json',
          'User-Agent': `Stowage-Webhook/${STOWAGE_VERSION}`,
          'Stowage-Webhook-Id': hook.id,
          'Stowage-Delivery-Id': delivery.id,
          'Stowage-Event': delivery.event,
          [SIGNATURE_HEADER]: signWebhookPayload(hook.secret, seconds, delivery.payload),
        },
      });
      const snippet = await bodySnippet(res);
      if (res.status >= 200 && res.status < 300) return { ok: true, status: res.status, error: '' };
      if (res.status >= 300 && res.status < 400) {
        const location = res.headers.get('location');
        const to = location ? ` to ${redactUrl(new URL(location, hook.url).toString())}` : '';
        return { ok: false, status: res.status, error: `HTTP ${res.status} redirect${to}: redirects are not followed; set the webhook URL to the final address` };
      }
      return { ok: false, status: res.status, error: `HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}${snippet ? `: ${snippet}` : ''}` };
    } catch (err) {
      if (controller.signal.aborted) {
        if (controller.signal.reason === CLOSED) return { ok: false, status: null, error: 'cancelled: Stowage is stopping', cancelled: true };
        return { ok: false, status: null, error: `timed out after ${this.requestTimeoutMs / 1000} s without a complete answer` };
      }
      return { ok: false, status: null, error: networkErrorMessage(err) };
    } finally {
      this.clock.clearTimeout(timeout);
    }
  }

  private finish(deliveryId: string, status: 'delivered' | 'failed', r: { attempts?: number; status?: number | null; error?: string }): WebhookDeliveryRecord | null {
    const now = this.isoNow();
    this.clearTimer(deliveryId);
    this.db
      .prepare(
        `UPDATE webhook_deliveries SET status = @status, attempts = COALESCE(@attempts, attempts), last_status = COALESCE(@lastStatus, last_status),
           last_error = @error, next_attempt_at = NULL, updated_at = @now, delivered_at = @deliveredAt WHERE id = @id`,
      )
      .run({ id: deliveryId, status, attempts: r.attempts ?? null, lastStatus: r.status ?? null, error: r.error ?? '', now, deliveredAt: status === 'delivered' ? now : null });
    const row = this.deliveryRow(deliveryId);
    return row ? fromDeliveryRow(row) : null;
  }

  /** Pending deliveries of a webhook that will not be sent: failed, with the reason. */
  private failPending(webhookId: string, reason: string): void {
    const ids = this.db.prepare(`SELECT id FROM webhook_deliveries WHERE webhook_id = ? AND status = 'pending'`).pluck().all(webhookId) as string[];
    for (const id of ids) {
      if (this.inFlight.has(id)) continue; // its own attempt settles it
      this.finish(id, 'failed', { error: reason });
    }
  }

  // --- Rows -----------------------------------------------------------------------------------

  private rowFromInput(input: WebhookInput, origin: WebhookOrigin, prefix = ''): WebhookRow {
    const f = (name: string) => (prefix ? `${prefix}.${name}` : name);
    if (typeof input !== 'object' || input === null) throw new WebhookError('invalid', `${prefix || 'webhook'}: an object with url and events is required`);
    const now = this.isoNow();
    return {
      id: crypto.randomUUID(),
      url: validateUrl(input.url, f('url')),
      events: JSON.stringify(validateEvents(input.events, f('events'))),
      secret: input.secret === undefined ? crypto.randomBytes(32).toString('hex') : validateSecret(input.secret, f('secret')),
      enabled: validateEnabled(input.enabled, f('enabled')) ? 1 : 0,
      description: validateDescription(input.description, f('description')),
      origin,
      created_at: now,
      updated_at: now,
    };
  }

  private insertWebhook(row: WebhookRow): void {
    this.db
      .prepare(
        `INSERT INTO webhooks (id, url, events, secret, enabled, description, origin, created_at, updated_at)
         VALUES (@id, @url, @events, @secret, @enabled, @description, @origin, @created_at, @updated_at)`,
      )
      .run(row);
  }

  private removeWebhook(id: string): void {
    const ids = this.db.prepare('SELECT id FROM webhook_deliveries WHERE webhook_id = ?').pluck().all(id) as string[];
    for (const d of ids) this.clearTimer(d);
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM webhook_deliveries WHERE webhook_id = ?').run(id);
      this.db.prepare('DELETE FROM webhooks WHERE id = ?').run(id);
    })();
  }

  private requireWritable(id: string): WebhookRow {
    const row = this.webhookRow(id);
    if (!row) throw new WebhookError('not_found', `webhook ${id} not found`);
    if (row.origin === 'config') {
      throw new WebhookError('read_only', `webhook ${id} (${redactUrl(row.url)}) comes from stowage.yaml and is read-only here: change or remove it in the config file`);
    }
    return row;
  }

  private webhookRow(id: string): WebhookRow | undefined {
    return this.db.prepare('SELECT * FROM webhooks WHERE id = ?').get(id) as WebhookRow | undefined;
  }

  private deliveryRow(id: string): DeliveryRow | undefined {
    return this.db.prepare('SELECT * FROM webhook_deliveries WHERE id = ?').get(id) as DeliveryRow | undefined;
  }

  private isoNow(): string {
    return new Date(this.clock.now()).toISOString();
  }
}

// ---------------------------------------------------------------------------------------------
// Process lifecycle

/**
 * `syncFromConfig` for a process starting up (the server, a CLI command): an invalid entry of
 * stowage.yaml's `webhooks:` becomes CONFIG_INVALID naming the file and the field
 * (`webhooks[1].events: unknown event ...`), like any other configuration error.
 */
export function syncWebhooksFromConfig(
  dispatcher: WebhookDispatcher,
  config: { configPath: string | null; webhooks: ReadonlyArray<Omit<WebhookInput, 'events'> & { events: string[] }> },
): ReturnType<WebhookDispatcher['syncFromConfig']> {
  try {
    return dispatcher.syncFromConfig(config.webhooks as WebhookInput[]);
  } catch (err) {
    if (!(err instanceof WebhookError)) throw err;
    throw new StowageError('CONFIG_INVALID', `${config.configPath ?? 'stowage.yaml'}: ${err.message}`, { details: err.details });
  }
}

/**
 * For a process about to end (a CLI command, a server stopping): waits up to `ms` for the
 * attempts already on the wire, then closes the dispatcher. What is still pending (an attempt
 * cut off by the deadline, a failed one waiting for its retry) stays in `webhook_deliveries`,
 * and the next dispatcher on this data folder sends it (`resume()`; a running server calls it
 * every minute). Resolves true when nothing was cut off.
 */
export async function deliverPendingBeforeExit(dispatcher: WebhookDispatcher, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const idle = await Promise.race([
    dispatcher.whenIdle().then(() => true),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), ms);
    }),
  ]);
  clearTimeout(timer);
  await dispatcher.close();
  return idle;
}
