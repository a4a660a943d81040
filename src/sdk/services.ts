import type { RequestOptions, StowageClient } from './client.js';
import { errorFromFailure } from './errors.js';
import { SseParser } from './sse.js';
import type {
  ApiToken,
  BackupDetail,
  Backup,
  CreateApiTokenBody,
  CreateBackupBody,
  CreatedApiToken,
  CronPreview,
  DecryptionKeys,
  DownloadToken,
  ManifestPage,
  RestoreBody,
  RestoreStatus,
  S3TestBody,
  S3TestResult,
  ServerEvent,
  SettingsBody,
  SettingsPatch,
} from './types.js';
import type { CreatePointBody, CreateWebhookBody, Point, PointRun, UpdatePointBody, UpdateWebhookBody, Webhook, WebhookDelivery } from '../server/schemas.js';

const backupPath = (key: string) => `/api/backups/${encodeURIComponent(key)}`;

/** What `backups.upload` sends: a Blob or File (multipart), or bytes / a stream (raw body). */
export type UploadSource = Blob | ReadableStream<Uint8Array> | Uint8Array | ArrayBuffer;

/** Backups: list, create, download, upload, restore, delete. */
export class BackupsService {
  constructor(private readonly client: StowageClient) {}

  /** Every backup, newest first (running and failed ones too; check `status`). */
  list(options: RequestOptions = {}): Promise<Backup[]> {
    return this.client.sendJson('/api/backups', options);
  }

  /** One backup, with its exclude rules and warnings. */
  get(key: string, options: RequestOptions = {}): Promise<BackupDetail> {
    return this.client.sendJson(`${backupPath(key)}/info`, options);
  }

  /**
   * Creates a backup. By default the call returns when the backup is complete; with
   * `{ async: true }` it returns at once (202) with the backup in status "started": follow it
   * with `events.subscribe` or `get(key)`. A second job while one runs rejects with status 409.
   */
  create(body: CreateBackupBody = {}, params: { async?: boolean } & RequestOptions = {}): Promise<BackupDetail> {
    const { async: respondAsync, ...options } = params;
    return this.client.sendJson('/api/backups', {
      ...options,
      method: 'POST',
      json: body,
      headers: { ...options.headers, ...(respondAsync ? { Prefer: 'respond-async' } : {}) },
    });
  }

  /**
   * Downloads an archive: the Response's `body` is a ReadableStream of the ZIP, its headers
   * carry Content-Length and ETag. `range` asks for part of it (e.g. `bytes=1000-` to resume).
   */
  download(key: string, params: { range?: string } & RequestOptions = {}): Promise<Response> {
    const { range, ...options } = params;
    return this.client.send(backupPath(key), { ...options, headers: { ...options.headers, ...(range ? { Range: range } : {}) } });
  }

  /** Downloads an archive whole into memory; for large backups prefer `download` (a stream). */
  async downloadBlob(key: string, options: RequestOptions = {}): Promise<Blob> {
    const response = await this.download(key, options);
    try {
      return await response.blob();
    } catch (err) {
      throw errorFromFailure(err, response.url);
    }
  }

  /**
   * Downloads an encrypted backup (`.zip.age`) as its plain ZIP, decrypted on the server with the
   * identity file's contents or the passphrase given here (used for this request only). A wrong
   * key rejects with a 400 before any byte is sent.
   */
  downloadDecrypted(key: string, keys: DecryptionKeys, options: RequestOptions = {}): Promise<Response> {
    return this.client.send(`${backupPath(key)}/download-decrypted`, { ...options, method: 'POST', json: keys });
  }

  /** A download token for this backup only, valid 3 minutes. */
  downloadToken(key: string, options: RequestOptions = {}): Promise<DownloadToken> {
    return this.client.sendJson(`${backupPath(key)}/download-token`, { ...options, method: 'POST' });
  }

  /**
   * A URL that downloads the archive without an Authorization header, for 3 minutes (for an
   * `<a href download>`, a browser redirect, or curl). The token in it works for this key only.
   */
  async getDownloadURL(key: string, options: RequestOptions = {}): Promise<string> {
    const { token } = await this.downloadToken(key, options);
    return this.client.buildUrl(backupPath(key), { token });
  }

  /**
   * Uploads an archive; the server checks it (manifest, every checksum) before listing it.
   * A File, or a Blob with `name`, goes as multipart (field "file", the name as file name);
   * bytes, a stream, or a Blob without a name go as a raw body (`?name=` when given; without a
   * name the key is the one recorded in the archive). A damaged or foreign file rejects with
   * status 400 and `data.file`. Streaming an upload from a browser needs HTTP/2 there; use a
   * Blob in browsers.
   */
  upload(file: UploadSource, params: { name?: string } & RequestOptions = {}): Promise<BackupDetail> {
    const { name, ...options } = params;
    const fileName = isFile(file) ? file.name : undefined;
    if (file instanceof Blob && (name !== undefined || fileName)) {
      const form = new FormData();
      form.append('file', file, name ?? fileName);
      return this.client.sendJson('/api/backups/upload', { ...options, method: 'POST', body: form });
    }
    return this.client.sendJson('/api/backups/upload', {
      ...options,
      method: 'POST',
      query: { name },
      headers: { ...options.headers, 'Content-Type': 'application/octet-stream' },
      body: file as RequestInit['body'],
    });
  }

  /**
   * Starts a restore and returns at once (the status is "started"); poll
   * `client.restoreStatus()` until it is completed, completed_with_errors or failed.
   */
  restore(key: string, body: RestoreBody = {}, options: RequestOptions = {}): Promise<RestoreStatus> {
    return this.client.sendJson(`${backupPath(key)}/restore`, { ...options, method: 'POST', json: body });
  }

  /** Deletes a backup (refused with 409 while a running job uses it). */
  async delete(key: string, options: RequestOptions = {}): Promise<void> {
    await this.client.send(backupPath(key), { ...options, method: 'DELETE' });
  }

  /** The manifest of a backup, its entries paginated (default 500 a page, at most 5000). */
  manifest(key: string, params: { page?: number; perPage?: number } & RequestOptions = {}): Promise<ManifestPage> {
    const { page, perPage, ...options } = params;
    return this.client.sendJson(`${backupPath(key)}/manifest`, { ...options, query: { page, perPage } });
  }

  /** Factory reset: a safety backup, then every configured source emptied; poll `restoreStatus()`. */
  resetFactory(options: RequestOptions = {}): Promise<RestoreStatus> {
    return this.client.sendJson('/api/backups/reset-factory', { ...options, method: 'POST', json: { confirm: 'reset' } });
  }

  /**
   * Streams a fresh backup into the response without storing it (the server must have
   * STOWAGE_BACKUP_KEY set; `backupKey` is that key). If the backup fails midway the stream is
   * cut, so a truncated ZIP is never mistaken for a whole one.
   */
  export(backupKey: string, params: { excludes?: string[] } & RequestOptions = {}): Promise<Response> {
    const { excludes, ...options } = params;
    return this.client.send('/api/backups/export', { ...options, method: 'POST', json: { key: backupKey, ...(excludes ? { excludes } : {}) } });
  }
}

function isFile(value: unknown): value is Blob & { name: string } {
  const name = (value as { name?: unknown }).name;
  return value instanceof Blob && typeof name === 'string' && name !== '';
}

/** API tokens for scripts (superusers only). */
export class TokensService {
  constructor(private readonly client: StowageClient) {}

  list(options: RequestOptions = {}): Promise<ApiToken[]> {
    return this.client.sendJson('/api/tokens', options);
  }

  /** Creates a token; its secret is in this answer only. */
  create(body: CreateApiTokenBody, options: RequestOptions = {}): Promise<CreatedApiToken> {
    return this.client.sendJson('/api/tokens', { ...options, method: 'POST', json: body });
  }

  async revoke(id: string, options: RequestOptions = {}): Promise<void> {
    await this.client.send(`/api/tokens/${encodeURIComponent(id)}`, { ...options, method: 'DELETE' });
  }
}

const webhookPath = (id: string) => `/api/webhooks/${encodeURIComponent(id)}`;

/**
 * Webhooks: signed POSTs of engine events to your URLs, with retries and a delivery log (needs
 * the `settings` scope). Receivers check the `Stowage-Signature` header (HMAC-SHA256 of
 * `<t>.<raw body>` with the secret; see docs/API.md) and dedupe on `Stowage-Delivery-Id`.
 */
export class WebhooksService {
  constructor(private readonly client: StowageClient) {}

  /** Every webhook (from the API and from stowage.yaml, `origin`); secrets are `"******"`. */
  list(options: RequestOptions = {}): Promise<Webhook[]> {
    return this.client.sendJson('/api/webhooks', options);
  }

  get(id: string, options: RequestOptions = {}): Promise<Webhook> {
    return this.client.sendJson(webhookPath(id), options);
  }

  /** Registers a webhook; the secret (yours, or generated when left out) is in this answer only. */
  create(body: CreateWebhookBody, options: RequestOptions = {}): Promise<Webhook> {
    return this.client.sendJson('/api/webhooks', { ...options, method: 'POST', json: body });
  }

  /** Changes the fields given; without `secret` the secret is kept. A webhook from stowage.yaml rejects with 409. */
  update(id: string, body: UpdateWebhookBody, options: RequestOptions = {}): Promise<Webhook> {
    return this.client.sendJson(webhookPath(id), { ...options, method: 'PATCH', json: body });
  }

  /** Removes a webhook and its delivery log (409 for one from stowage.yaml). */
  async delete(id: string, options: RequestOptions = {}): Promise<void> {
    await this.client.send(webhookPath(id), { ...options, method: 'DELETE' });
  }

  /** The delivery log, newest first (default 50, at most 1000): status, attempts, last error, next retry. */
  deliveries(id: string, params: { limit?: number } & RequestOptions = {}): Promise<WebhookDelivery[]> {
    const { limit, ...options } = params;
    return this.client.sendJson(`${webhookPath(id)}/deliveries`, { ...options, query: { limit } });
  }

  /** Sends a `webhook.test` event now, once, and resolves with the outcome (`status` delivered or failed, `lastError`). */
  test(id: string, options: RequestOptions = {}): Promise<WebhookDelivery> {
    return this.client.sendJson(`${webhookPath(id)}/test`, { ...options, method: 'POST' });
  }
}

/**
 * Settings: the schedule, retention, S3 storage, verify and drill (needs the `settings` scope).
 * `stowage.yaml` gives the defaults; what is changed here is stored on top of it.
 */
export class SettingsService {
  constructor(private readonly client: StowageClient) {}

  /** The settings in force; secrets (the S3 secret) are `"******"`. */
  get(options: RequestOptions = {}): Promise<SettingsBody> {
    return this.client.sendJson('/api/settings', options);
  }

  /**
   * Changes settings with a JSON merge patch: objects merge, a value replaces, `null` puts a
   * field back to its stowage.yaml default; a secret left out or sent back as `"******"` is kept.
   * Resolves with the settings now in force; invalid values reject with a 400 whose `data` names
   * each field by its path (`"backups.cron"`), and nothing is saved.
   */
  update(patch: SettingsPatch, options: RequestOptions = {}): Promise<SettingsBody> {
    return this.client.sendJson('/api/settings', { ...options, method: 'PATCH', json: patch });
  }

  /** What a cron expression means in words and its next 5 run times, in `timezone` (default: the configured one). */
  cronPreview(cron: string, timezone?: string, options: RequestOptions = {}): Promise<CronPreview> {
    return this.client.sendJson('/api/settings/cron-preview', { ...options, query: { cron, timezone } });
  }

  /**
   * Tries S3 settings (list, write, read back, delete a probe object) without saving them; fields
   * left out, and a secret sent as `"******"`, come from the stored settings. A failed step
   * resolves with `ok: false` and the step's reason; only a request without any bucket rejects (400).
   */
  testS3(body: S3TestBody = {}, options: RequestOptions = {}): Promise<S3TestResult> {
    return this.client.sendJson('/api/settings/test-s3', { ...options, method: 'POST', json: body });
  }
}

const pointPath = (name: string) => `/api/points/${encodeURIComponent(name)}`;

/**
 * Backup points: a source's files pushed to a Git repository or an S3 bucket after its backups.
 * Reading needs `backups:read`, running `backups:create`, changing `settings`. Points from
 * stowage.yaml are listed (`origin: "config"`) but changing them rejects with 409.
 */
export class PointsService {
  constructor(private readonly client: StowageClient) {}

  /** Every point with its last run; credentials are `"******"`. */
  list(options: RequestOptions = {}): Promise<Point[]> {
    return this.client.sendJson('/api/points', options);
  }

  get(name: string, options: RequestOptions = {}): Promise<Point> {
    return this.client.sendJson(pointPath(name), options);
  }

  /** Adds a point; invalid fields reject with a 400 whose `data` names each field. */
  create(body: CreatePointBody, options: RequestOptions = {}): Promise<Point> {
    return this.client.sendJson('/api/points', { ...options, method: 'POST', json: body });
  }

  /** Changes the fields given; a credential left out (or `"******"`) is kept, `null` clears it. */
  update(name: string, body: UpdatePointBody, options: RequestOptions = {}): Promise<Point> {
    return this.client.sendJson(pointPath(name), { ...options, method: 'PATCH', json: body });
  }

  async delete(name: string, options: RequestOptions = {}): Promise<void> {
    await this.client.send(pointPath(name), { ...options, method: 'DELETE' });
  }

  /** Runs the point now and resolves with the run; a run that could not push has `status: "failed"` and the reason in `message`. */
  run(name: string, options: RequestOptions = {}): Promise<PointRun> {
    return this.client.sendJson(`${pointPath(name)}/run`, { ...options, method: 'POST' });
  }

  /** The point's runs, newest first (default 20, at most 100). */
  runs(name: string, params: { limit?: number } & RequestOptions = {}): Promise<PointRun[]> {
    const { limit, ...options } = params;
    return this.client.sendJson(`${pointPath(name)}/runs`, { ...options, query: { limit } });
  }
}

export interface SubscribeOptions {
  /** Ends the subscription when it aborts (as calling the returned function does). */
  signal?: AbortSignal;
  /**
   * Called when the stream fails after it was open (a StowageApiError), when a message is not
   * JSON, or with what the handler threw. Failures before it opens reject `ready` instead.
   */
  onError?: (error: unknown) => void;
}

/** Calling it unsubscribes. */
export interface Subscription {
  (): void;
  /** Resolves once the stream is open (events from then on arrive); rejects if it could not open (401, 403, network). */
  readonly ready: Promise<void>;
  /** Resolves when the stream has ended: unsubscribed, aborted, failed, or closed by the server. */
  readonly closed: Promise<void>;
}

/** The server's event stream (GET /api/events). */
export class EventsService {
  constructor(private readonly client: StowageClient) {}

  /**
   * Calls `handler` with every engine event (`backup.started`, `backup.progress`,
   * `backup.created`, `restore.*`, ...), the first being `hello`. It reads Server-Sent Events
   * over fetch, so the Authorization header is sent (EventSource cannot). There is no
   * automatic reconnection: when `closed` resolves without you unsubscribing, subscribe again.
   */
  subscribe(handler: (event: ServerEvent) => void, options: SubscribeOptions = {}): Subscription {
    const controller = new AbortController();
    const unsubscribe = () => controller.abort();
    if (options.signal?.aborted) controller.abort();
    else options.signal?.addEventListener('abort', unsubscribe, { once: true });

    let opened = false;
    let resolveReady!: () => void;
    let rejectReady!: (err: unknown) => void;
    const ready = new Promise<void>((resolve, reject) => {
      resolveReady = resolve;
      rejectReady = reject;
    });
    ready.catch(() => {}); // reported to whoever awaits it; never an unhandled rejection

    const report = (err: unknown) => {
      try {
        options.onError?.(err);
      } catch {
        // an error handler that throws has nowhere left to report to
      }
    };

    const parser = new SseParser((message) => {
      let data: Record<string, unknown>;
      try {
        data = JSON.parse(message.data) as Record<string, unknown>;
      } catch (err) {
        report(err);
        return;
      }
      try {
        handler({ type: message.event, data });
      } catch (err) {
        report(err);
      }
    });

    const read = async () => {
      const response = await this.client.send('/api/events', { headers: { Accept: 'text/event-stream' }, signal: controller.signal });
      opened = true;
      resolveReady();
      if (!response.body) return;
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          parser.push(decoder.decode(value, { stream: true }));
        }
        parser.push(decoder.decode());
        parser.end();
      } finally {
        reader.releaseLock();
      }
    };

    const closed = read().then(
      () => undefined,
      (err: unknown) => {
        const error = errorFromFailure(err, this.client.buildUrl('/api/events'));
        if (!opened) rejectReady(error);
        else if (!error.isAbort) report(error);
      },
    ).finally(() => options.signal?.removeEventListener('abort', unsubscribe));

    return Object.assign(unsubscribe, { ready, closed });
  }
}
