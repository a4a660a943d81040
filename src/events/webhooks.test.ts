import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StowageEmitter } from './events.js';
import {
  MASKED_SECRET,
  WebhookDispatcher,
  WebhookError,
  deliverPendingBeforeExit,
  syncWebhooksFromConfig,
  signWebhookPayload,
  verifyWebhookSignature,
  type WebhookClock,
  type WebhookDispatcherOptions,
  type WebhookPayload,
} from './webhooks.js';

/** Time that moves only when a test says so; due timers run in order. */
class FakeClock implements WebhookClock {
  private current = Date.parse('2031-05-06T07:08:09.000Z');
  private seq = 0;
  private readonly timers = new Map<number, { at: number; fn: () => void }>();

  now(): number {
    return this.current;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.seq;
    this.timers.set(id, { at: this.current + ms, fn });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.timers.delete(handle as number);
  }

  get pendingTimers(): number {
    return this.timers.size;
  }

  /**
   * Moves to the earliest timer and runs it (and any due at the same moment). Jumping further in
   * one go would also fire the request timeout of an attempt that timer just started.
   */
  runNext(): void {
    let at = Infinity;
    for (const t of this.timers.values()) at = Math.min(at, t.at);
    if (at !== Infinity) this.advance(at - this.current);
  }

  advance(ms: number): void {
    const target = this.current + ms;
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const entry of this.timers) if (entry[1].at <= target && (!next || entry[1].at < next[1].at)) next = entry;
      if (!next) break;
      this.timers.delete(next[0]);
      this.current = Math.max(this.current, next[1].at);
      next[1].fn();
    }
    this.current = target;
  }
}

interface Received {
  headers: http.IncomingHttpHeaders;
  raw: string;
  body: WebhookPayload;
  signatureValid: boolean;
  path: string;
}

type Behaviour = { kind: 'ok' } | { kind: 'status'; status: number; times: number } | { kind: 'hang' } | { kind: 'redirect'; location: string };

/** A real HTTP receiver on a loopback port that checks every signature. */
class Receiver {
  readonly received: Received[] = [];
  secret = '';
  behaviour: Behaviour = { kind: 'ok' };
  private readonly server: http.Server;
  private arrivals: Array<() => void> = [];

  constructor(private readonly clock: FakeClock) {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        const header = req.headers['stowage-signature'];
        this.received.push({
          headers: req.headers,
          raw,
          body: JSON.parse(raw) as WebhookPayload,
          signatureValid: verifyWebhookSignature(this.secret, typeof header === 'string' ? header : undefined, raw, 300, Math.floor(this.clock.now() / 1000)),
          path: req.url ?? '',
        });
        for (const wake of this.arrivals.splice(0)) wake();
        const b = this.behaviour;
        if (b.kind === 'hang') return;
        if (b.kind === 'redirect') {
          res.writeHead(302, { Location: b.location }).end();
          return;
        }
        if (b.kind === 'status' && b.times > 0) {
          b.times--;
          res.writeHead(b.status, { 'Content-Type': 'text/plain' }).end(`nope ${b.status}`);
          return;
        }
        res.writeHead(200).end('ok');
      });
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Resolves when the next request has fully arrived. */
  nextRequest(): Promise<void> {
    return new Promise((resolve) => this.arrivals.push(resolve));
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

let db: Database.Database;
let events: StowageEmitter;
let clock: FakeClock;
let receiver: Receiver;
let base: string;
const dispatchers: WebhookDispatcher[] = [];
let logs: Array<{ level: string; msg: string; data: Record<string, unknown> }>;

function dispatcher(extra: Partial<WebhookDispatcherOptions> = {}): WebhookDispatcher {
  const d = new WebhookDispatcher({ db, events, clock, log: (level, msg, data) => logs.push({ level, msg, data }), ...extra });
  dispatchers.push(d);
  return d;
}

function deleted(key: string): void {
  events.emit('backup.deleted', { key });
}

beforeEach(async () => {
  db = new Database(':memory:');
  events = new StowageEmitter();
  clock = new FakeClock();
  receiver = new Receiver(clock);
  base = await receiver.listen();
  logs = [];
});

afterEach(async () => {
  for (const d of dispatchers.splice(0)) await d.close();
  await receiver.close();
  db.close();
});

describe('signatures', () => {
  const secret = 'a-shared-secret-of-some-length';
  const body = '{"id":"1","type":"backup.deleted","createdAt":"x","data":{"key":"k"}}';

  it('accepts a valid signature and rejects tampering, other secrets, stale times and junk', () => {
    const header = signWebhookPayload(secret, 1_000_000, body);
    expect(header).toMatch(/^t=1000000,v1=[0-9a-f]{64}$/);
    expect(verifyWebhookSignature(secret, header, body, 300, 1_000_100)).toBe(true);
    expect(verifyWebhookSignature(secret, header, Buffer.from(body), 300, 1_000_100)).toBe(true);
    expect(verifyWebhookSignature(secret, header, body.replace('"k"', '"K"'), 300, 1_000_100)).toBe(false);
    expect(verifyWebhookSignature('another-secret-entirely', header, body, 300, 1_000_100)).toBe(false);
    expect(verifyWebhookSignature(secret, header, body, 300, 1_000_301)).toBe(false);
    expect(verifyWebhookSignature(secret, header, body, 0, 9_000_000)).toBe(true);
    expect(verifyWebhookSignature(secret, header.replace('t=1000000', 't=1000001'), body, 300, 1_000_100)).toBe(false);
    expect(verifyWebhookSignature(secret, undefined, body)).toBe(false);
    expect(verifyWebhookSignature(secret, 'garbage', body)).toBe(false);
    expect(verifyWebhookSignature(secret, 't=1000000', body, 300, 1_000_000)).toBe(false);
  });

  it('accepts any of several v1 signatures (secret rotation)', () => {
    const good = signWebhookPayload(secret, 5, body).split(',')[1]!;
    const bad = signWebhookPayload('an-old-secret-value!', 5, body).split(',')[1]!;
    expect(verifyWebhookSignature(secret, `t=5,${bad},${good}`, body, 0)).toBe(true);
    expect(verifyWebhookSignature(secret, `t=5,${bad}`, body, 0)).toBe(false);
  });
});

describe('WebhookDispatcher delivery', () => {
  it('posts a signed JSON event with the documented headers and logs the delivery', async () => {
    const d = dispatcher();
    const hook = d.create({ url: `${base}/hooks/stowage?token=querysecret`, events: ['backup.deleted'], description: 'ci' });
    receiver.secret = hook.secret;
    deleted('app_20310506070809.zip');
    await d.whenIdle();

    expect(receiver.received).toHaveLength(1);
    const got = receiver.received[0]!;
    expect(got.signatureValid).toBe(true);
    expect(verifyWebhookSignature(hook.secret, got.headers['stowage-signature'] as string, `${got.raw} `, 0)).toBe(false);
    expect(got.path).toBe('/hooks/stowage?token=querysecret');
    expect(got.headers['content-type']).toBe('application/json');
    expect(got.headers['user-agent']).toMatch(/^Stowage-Webhook\/\d+\.\d+\.\d+/);
    expect(got.headers['stowage-webhook-id']).toBe(hook.id);
    expect(got.headers['stowage-event']).toBe('backup.deleted');
    expect(got.body).toEqual({ id: got.headers['stowage-delivery-id'], type: 'backup.deleted', createdAt: new Date(clock.now()).toISOString(), data: { key: 'app_20310506070809.zip' } });

    const [delivery] = d.deliveries(hook.id);
    expect(delivery).toMatchObject({ id: got.body.id, webhookId: hook.id, event: 'backup.deleted', status: 'delivered', attempts: 1, lastStatus: 200, lastError: '', nextAttemptAt: null });
    expect(delivery!.deliveredAt).not.toBeNull();
    expect(delivery!.payload).toEqual(got.body);

    // Secrets and query strings never reach the log.
    const logged = JSON.stringify(logs);
    expect(logged).not.toContain(hook.secret);
    expect(logged).not.toContain('querysecret');
    expect(logged).toContain(`${base}/hooks/stowage`);
  });

  it('delivers only the events a webhook asked for; "*" leaves out progress events; disabled hooks get nothing', async () => {
    const d = dispatcher();
    const only = d.create({ url: `${base}/only`, events: ['backup.failed'] });
    const all = d.create({ url: `${base}/all`, events: ['*'] });
    const progress = d.create({ url: `${base}/progress`, events: ['backup.progress'] });
    d.create({ url: `${base}/off`, events: ['*'], enabled: false });
    receiver.secret = only.secret;

    events.emit('backup.failed', { key: 'k1', trigger: 'manual', error: { code: 'SOURCE_FAILED', message: 'boom' } });
    events.emit('backup.progress', { key: 'k1', phase: 'archiving', files: 1, filesTotal: 2, bytes: 3, bytesTotal: 4, elapsedMs: 5 });
    deleted('k2');
    await d.whenIdle();

    const byPath = (p: string) => receiver.received.filter((r) => r.path === p).map((r) => r.body.type);
    expect(byPath('/only')).toEqual(['backup.failed']);
    expect(byPath('/all').sort()).toEqual(['backup.deleted', 'backup.failed']);
    expect(byPath('/progress')).toEqual(['backup.progress']);
    expect(byPath('/off')).toEqual([]);
    expect(d.deliveries(all.id)).toHaveLength(2);
    expect(d.deliveries(progress.id)[0]!.payload.data).toMatchObject({ phase: 'archiving' });
  });

  it('retries failures with growing delays, a fresh signature each time, then succeeds', async () => {
    const d = dispatcher();
    const hook = d.create({ url: `${base}/flaky`, events: ['backup.deleted'] });
    receiver.secret = hook.secret;
    receiver.behaviour = { kind: 'status', status: 500, times: 3 };
    deleted('k');
    await d.whenIdle();

    const delays: number[] = [];
    for (let attempt = 1; attempt <= 3; attempt++) {
      const [pending] = d.deliveries(hook.id);
      expect(pending).toMatchObject({ status: 'pending', attempts: attempt, lastStatus: 500, lastError: 'HTTP 500 Internal Server Error: nope 500' });
      const delay = Date.parse(pending!.nextAttemptAt!) - clock.now();
      delays.push(delay);
      clock.advance(delay - 1);
      expect(receiver.received).toHaveLength(attempt); // not before it is due
      clock.advance(1);
      await d.whenIdle();
    }
    expect(delays[0]).toBeGreaterThanOrEqual(2_000);
    expect(delays[1]).toBeGreaterThan(delays[0]!);
    expect(delays[2]).toBeGreaterThan(delays[1]!);

    const [done] = d.deliveries(hook.id);
    expect(done).toMatchObject({ status: 'delivered', attempts: 4, lastStatus: 200, lastError: '', nextAttemptAt: null });
    expect(receiver.received).toHaveLength(4);
    expect(receiver.received.every((r) => r.signatureValid)).toBe(true);
    expect(new Set(receiver.received.map((r) => r.body.id)).size).toBe(1);
    expect(new Set(receiver.received.map((r) => r.headers['stowage-signature'])).size).toBe(4);
    expect(clock.pendingTimers).toBe(0);
  });

  it('gives up after maxAttempts and keeps the last status and error', async () => {
    const d = dispatcher({ maxAttempts: 3 });
    const hook = d.create({ url: `${base}/down`, events: ['*'] });
    receiver.secret = hook.secret;
    receiver.behaviour = { kind: 'status', status: 503, times: 100 };
    deleted('k');
    await d.whenIdle();
    while (clock.pendingTimers) {
      clock.runNext();
      await d.whenIdle();
    }
    expect(receiver.received).toHaveLength(3);
    const log = d.deliveries(hook.id);
    expect(log).toHaveLength(1);
    expect(log[0]).toMatchObject({ status: 'failed', attempts: 3, lastStatus: 503, nextAttemptAt: null, deliveredAt: null, event: 'backup.deleted' });
    expect(log[0]!.lastError).toBe('HTTP 503 Service Unavailable: nope 503 (gave up after 3 attempts)');
    expect(clock.pendingTimers).toBe(0);
    expect(d.get(hook.id)!.enabled).toBe(true);
  });

  it('gives up when the retry window has passed', async () => {
    const d = dispatcher({ maxRetryWindowMs: 5_000 });
    const hook = d.create({ url: `${base}/down`, events: ['*'] });
    receiver.secret = hook.secret;
    receiver.behaviour = { kind: 'status', status: 500, times: 100 };
    deleted('k');
    await d.whenIdle();
    while (clock.pendingTimers) {
      clock.runNext();
      await d.whenIdle();
    }
    const [delivery] = d.deliveries(hook.id);
    expect(delivery!.status).toBe('failed');
    expect(delivery!.attempts).toBeLessThan(8);
    expect(delivery!.lastError).toMatch(/retry window/);
  });

  it('stops at once on 410 Gone and disables the webhook', async () => {
    const d = dispatcher();
    const hook = d.create({ url: `${base}/gone`, events: ['*'] });
    receiver.secret = hook.secret;
    receiver.behaviour = { kind: 'status', status: 410, times: 100 };
    deleted('k1');
    await d.whenIdle();
    const [delivery] = d.deliveries(hook.id);
    expect(delivery).toMatchObject({ status: 'failed', attempts: 1, lastStatus: 410 });
    expect(delivery!.lastError).toMatch(/410 Gone.*disabled/);
    expect(d.get(hook.id)!.enabled).toBe(false);
    expect(clock.pendingTimers).toBe(0);
    deleted('k2');
    await d.whenIdle();
    expect(receiver.received).toHaveLength(1);
  });

  it('counts a receiver that does not answer within the timeout as a failure, then retries', async () => {
    const d = dispatcher();
    const hook = d.create({ url: `${base}/slow`, events: ['*'] });
    receiver.secret = hook.secret;
    receiver.behaviour = { kind: 'hang' };
    const arrived = receiver.nextRequest();
    deleted('k');
    await arrived;
    clock.advance(10_000);
    await d.whenIdle();
    const [pending] = d.deliveries(hook.id);
    expect(pending).toMatchObject({ status: 'pending', attempts: 1, lastStatus: null });
    expect(pending!.lastError).toMatch(/timed out after 10 s/);

    receiver.behaviour = { kind: 'ok' };
    clock.advance(Date.parse(pending!.nextAttemptAt!) - clock.now());
    await d.whenIdle();
    expect(d.deliveries(hook.id)[0]).toMatchObject({ status: 'delivered', attempts: 2 });
  });

  it('treats a refused connection and a redirect as failures without following the redirect', async () => {
    const d = dispatcher({ maxAttempts: 1 });
    const closed = new Receiver(clock);
    const closedUrl = await closed.listen();
    await closed.close();
    const refused = d.create({ url: `${closedUrl}/x`, events: ['*'] });
    const redirected = d.create({ url: `${base}/moved`, events: ['*'] });
    receiver.secret = redirected.secret;
    receiver.behaviour = { kind: 'redirect', location: `${base}/elsewhere?sig=hidden` };
    deleted('k');
    await d.whenIdle();

    const [r1] = d.deliveries(refused.id);
    expect(r1).toMatchObject({ status: 'failed', attempts: 1, lastStatus: null });
    expect(r1!.lastError).toMatch(/^network error: .*ECONNREFUSED/);
    const [r2] = d.deliveries(redirected.id);
    expect(r2).toMatchObject({ status: 'failed', attempts: 1, lastStatus: 302 });
    expect(r2!.lastError).toContain(`redirect to ${base}/elsewhere: redirects are not followed`);
    expect(r2!.lastError).not.toContain('hidden');
    expect(receiver.received.map((r) => r.path)).toEqual(['/moved']);
  });

  it('keeps the newest deliveries per webhook', async () => {
    const d = dispatcher({ maxDeliveriesPerWebhook: 3 });
    const hook = d.create({ url: `${base}/many`, events: ['backup.deleted'] });
    receiver.secret = hook.secret;
    for (let i = 1; i <= 5; i++) {
      deleted(`k${i}`);
      await d.whenIdle();
      clock.advance(1_000);
    }
    const log = d.deliveries(hook.id, { limit: 100 });
    expect(log.map((l) => (l.payload.data as { key: string }).key)).toEqual(['k5', 'k4', 'k3']);
    expect(d.deliveries(hook.id, { limit: 1 })).toHaveLength(1);
  });
});

describe('WebhookDispatcher after a restart', () => {
  it('resends pending deliveries from the same database', async () => {
    const first = dispatcher();
    const hook = first.create({ url: `${base}/later`, events: ['*'] });
    receiver.secret = hook.secret;

    // One delivery failed once and waits for its retry; one was on the wire when the process stopped.
    receiver.behaviour = { kind: 'status', status: 500, times: 1 };
    deleted('retrying');
    await first.whenIdle();
    receiver.behaviour = { kind: 'hang' };
    const arrived = receiver.nextRequest();
    deleted('in-flight');
    await arrived;
    await first.close();
    expect(clock.pendingTimers).toBe(0);
    expect(first.deliveries(hook.id).map((l) => l.status)).toEqual(['pending', 'pending']);

    receiver.behaviour = { kind: 'ok' };
    const received = receiver.received.length;
    const second = dispatcher();
    expect(second.resume()).toBe(2);
    await second.whenIdle();
    expect(receiver.received.slice(received).map((r) => (r.body.data as { key: string }).key)).toEqual(['in-flight']);
    clock.runNext();
    await second.whenIdle();

    const after = receiver.received.slice(received);
    expect(after.map((r) => (r.body.data as { key: string }).key).sort()).toEqual(['in-flight', 'retrying']);
    expect(after.every((r) => r.signatureValid)).toBe(true);
    const log = second.deliveries(hook.id);
    expect(log.map((l) => l.status)).toEqual(['delivered', 'delivered']);
    expect(log.find((l) => (l.payload.data as { key: string }).key === 'retrying')!.attempts).toBe(2);
    expect(log.find((l) => (l.payload.data as { key: string }).key === 'in-flight')!.attempts).toBe(1);
  });

  it('marks pending deliveries failed when their retry window passed while nothing ran', async () => {
    const first = dispatcher();
    const hook = first.create({ url: `${base}/later`, events: ['*'] });
    receiver.secret = hook.secret;
    receiver.behaviour = { kind: 'status', status: 500, times: 1 };
    deleted('old');
    await first.whenIdle();
    await first.close();
    clock.advance(2 * 60 * 60_000);
    const second = dispatcher();
    expect(second.resume()).toBe(0);
    const [delivery] = second.deliveries(hook.id);
    expect(delivery).toMatchObject({ status: 'failed', attempts: 1, lastStatus: 500 });
    expect(delivery!.lastError).toMatch(/retry window passed while Stowage was not running/);
  });
});

describe('WebhookDispatcher management', () => {
  it('shows the secret once, masks it afterwards and keeps it when a patch leaves it out', async () => {
    const d = dispatcher();
    const hook = d.create({ url: `${base}/a`, events: ['backup.deleted'] });
    expect(hook.secret).toMatch(/^[0-9a-f]{64}$/);
    expect(hook.origin).toBe('api');
    expect(d.get(hook.id)!.secret).toBe(MASKED_SECRET);
    expect(d.list().map((h) => h.secret)).toEqual([MASKED_SECRET]);

    const patched = d.update(hook.id, { description: 'renamed', events: ['*', 'backup.progress'] });
    expect(patched).toMatchObject({ description: 'renamed', events: ['*', 'backup.progress'], secret: MASKED_SECRET });
    receiver.secret = hook.secret;
    deleted('k1');
    await d.whenIdle();
    expect(receiver.received[0]!.signatureValid).toBe(true);

    d.update(hook.id, { secret: 'a-brand-new-secret-0123' });
    receiver.secret = 'a-brand-new-secret-0123';
    deleted('k2');
    await d.whenIdle();
    expect(receiver.received[1]!.signatureValid).toBe(true);
    expect(JSON.stringify(logs)).not.toMatch(new RegExp(`${hook.secret}|a-brand-new-secret`));

    d.delete(hook.id);
    expect(d.get(hook.id)).toBeNull();
    expect(d.list()).toEqual([]);
    expect(db.prepare('SELECT COUNT(*) FROM webhook_deliveries').pluck().get()).toBe(0);
  });

  it('rejects bad URLs, unknown events and weak secrets with clear errors', () => {
    const d = dispatcher();
    const invalid = (input: Parameters<WebhookDispatcher['create']>[0]) => {
      try {
        d.create(input);
      } catch (err) {
        expect(err).toBeInstanceOf(WebhookError);
        expect((err as WebhookError).reason).toBe('invalid');
        expect((err as WebhookError).code).toBe('USAGE');
        return (err as Error).message;
      }
      throw new Error('expected an error');
    };
    expect(invalid({ url: 'ftp://example.com/x', events: ['*'] })).toMatch(/only http and https/);
    expect(invalid({ url: 'javascript:alert(1)', events: ['*'] })).toMatch(/only http and https/);
    expect(invalid({ url: 'not a url', events: ['*'] })).toMatch(/not a valid absolute URL/);
    const withCredentials = invalid({ url: 'https://bob:hunter2@example.com/x', events: ['*'] });
    expect(withCredentials).toMatch(/must not contain credentials/);
    expect(withCredentials).not.toContain('hunter2');
    expect(invalid({ url: 'https://example.com/x', events: [] })).toMatch(/at least one event/);
    expect(invalid({ url: 'https://example.com/x', events: ['backup.exploded' as never] })).toMatch(/unknown event "backup.exploded"/);
    expect(invalid({ url: 'https://example.com/x', events: ['*'], secret: 'short' })).toMatch(/16 to 256 characters/);
    expect(d.list()).toEqual([]);

    expect(d.get('missing')).toBeNull();
    expect(() => d.update('missing', { description: 'x' })).toThrow(expect.objectContaining({ reason: 'not_found' }));
    expect(() => d.delete('missing')).toThrow(expect.objectContaining({ reason: 'not_found' }));
    expect(() => d.deliveries('missing')).toThrow(expect.objectContaining({ reason: 'not_found' }));
  });

  it('syncs config webhooks by URL and keeps them read-only', () => {
    const d = dispatcher();
    const api = d.create({ url: `${base}/api`, events: ['*'] });
    const first = d.syncFromConfig([
      { url: `${base}/a`, events: ['backup.created'], secret: 'config-secret-0123456789' },
      { url: `${base}/b`, events: ['*'], description: 'ops' },
    ]);
    expect(first.added).toHaveLength(2);
    const [a, b] = first.added as [string, string];
    expect(d.get(a)).toMatchObject({ origin: 'config', url: `${base}/a`, secret: MASKED_SECRET, events: ['backup.created'] });
    expect(() => d.update(a, { enabled: false })).toThrow(/comes from stowage.yaml and is read-only/);
    expect(() => d.delete(b)).toThrow(expect.objectContaining({ reason: 'read_only' }));
    const secretOf = (id: string) => db.prepare('SELECT secret FROM webhooks WHERE id = ?').pluck().get(id) as string;
    const generatedB = secretOf(b);

    // Unchanged: nothing to do. Changed: same id, new fields, secret kept when the entry has none.
    expect(d.syncFromConfig([{ url: `${base}/a`, events: ['backup.created'], secret: 'config-secret-0123456789' }, { url: `${base}/b`, events: ['*'], description: 'ops' }])).toEqual({ added: [], updated: [], removed: [] });
    expect(d.syncFromConfig([{ url: `${base}/b`, events: ['backup.failed'] }])).toEqual({ added: [], updated: [b], removed: [a] });
    expect(d.get(b)).toMatchObject({ events: ['backup.failed'], description: '' });
    expect(secretOf(b)).toBe(generatedB);
    expect(d.get(a)).toBeNull();

    // Bad config changes nothing and names the entry.
    expect(() => d.syncFromConfig([{ url: `${base}/c`, events: ['*'] }, { url: 'ftp://x/y', events: ['*'] }])).toThrow(/webhooks\[1\]\.url: only http and https/);
    expect(() => d.syncFromConfig([{ url: `${base}/c`, events: ['*'] }, { url: `${base}/c`, events: ['*'] }])).toThrow(/webhooks\[1\]\.url: the same URL as webhooks\[0\]/);
    expect(d.list().map((h) => h.id).sort()).toEqual([api.id, b].sort());

    expect(d.syncFromConfig([])).toEqual({ added: [], updated: [], removed: [b] });
    expect(d.list().map((h) => h.id)).toEqual([api.id]);
  });

  it('sends a test delivery once and returns its outcome, even to a disabled webhook', async () => {
    const d = dispatcher();
    const hook = d.create({ url: `${base}/test`, events: ['backup.created'], enabled: false });
    receiver.secret = hook.secret;
    const ok = await d.testDelivery(hook.id);
    expect(ok).toMatchObject({ webhookId: hook.id, event: 'webhook.test', status: 'delivered', attempts: 1, lastStatus: 200 });
    expect(receiver.received[0]!.body).toMatchObject({ type: 'webhook.test', data: { webhookId: hook.id } });
    expect(receiver.received[0]!.signatureValid).toBe(true);

    receiver.behaviour = { kind: 'status', status: 500, times: 1 };
    const failed = await d.testDelivery(hook.id);
    expect(failed).toMatchObject({ status: 'failed', attempts: 1, lastStatus: 500, nextAttemptAt: null });
    expect(clock.pendingTimers).toBe(0);
    expect(d.deliveries(hook.id).map((l) => l.status)).toEqual(['failed', 'delivered']);
    await expect(d.testDelivery('missing')).rejects.toMatchObject({ reason: 'not_found' });
  });

  it('creates its tables idempotently', () => {
    const d = dispatcher();
    d.ensureSchema();
    d.ensureSchema();
    const tables = db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`).pluck().all();
    expect(tables).toEqual(['webhook_deliveries', 'webhooks']);
  });
});

describe('process lifecycle helpers', () => {
  it('deliverPendingBeforeExit: waits for attempts on the wire, then closes', async () => {
    const d = dispatcher();
    const hook = d.create({ url: `${base}/exit`, events: ['backup.deleted'] });
    receiver.secret = hook.secret;
    deleted('a.zip');
    expect(await deliverPendingBeforeExit(d, 5_000)).toBe(true);
    expect(receiver.received).toHaveLength(1);
    expect(d.deliveries(hook.id)[0]).toMatchObject({ status: 'delivered', attempts: 1 });
    deleted('b.zip'); // closed: no longer listening
    await d.whenIdle();
    expect(receiver.received).toHaveLength(1);
  });

  it('deliverPendingBeforeExit: an attempt past the deadline stays pending, and the next dispatcher sends it', async () => {
    const d = dispatcher();
    const hook = d.create({ url: `${base}/slow`, events: ['backup.deleted'] });
    receiver.secret = hook.secret;
    receiver.behaviour = { kind: 'hang' };
    const arrived = receiver.nextRequest();
    deleted('a.zip');
    await arrived;
    expect(await deliverPendingBeforeExit(d, 50)).toBe(false);
    expect(d.deliveries(hook.id)[0]).toMatchObject({ status: 'pending', attempts: 0, lastError: '' });

    receiver.behaviour = { kind: 'ok' };
    const next = dispatcher();
    const sent = receiver.nextRequest();
    expect(next.resume()).toBe(1);
    await sent;
    await next.whenIdle();
    expect(next.deliveries(hook.id)[0]).toMatchObject({ status: 'delivered', attempts: 1 });
    expect(receiver.received.map((r) => r.body.id)).toEqual([receiver.received[0]!.body.id, receiver.received[0]!.body.id]); // the same delivery id: receivers dedupe
    expect(receiver.received[1]!.signatureValid).toBe(true);
  });

  it('syncWebhooksFromConfig: an invalid entry is CONFIG_INVALID naming the file and the field', () => {
    const d = dispatcher();
    const config = { configPath: '/srv/app/stowage.yaml', webhooks: [{ url: `${base}/a`, events: ['*'] }, { url: `${base}/b`, events: ['backup.exploded'] }] };
    let err: unknown;
    try {
      syncWebhooksFromConfig(d, config);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'CONFIG_INVALID' });
    expect((err as Error).message).toMatch(/^\/srv\/app\/stowage\.yaml: webhooks\[1\]\.events: unknown event "backup\.exploded"/);
    expect(d.list()).toEqual([]);
    expect(syncWebhooksFromConfig(d, { configPath: null, webhooks: config.webhooks.slice(0, 1) }).added).toHaveLength(1);
  });
});
