import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { HTTP_ADDRESS } from '../config/schema.js';
import { JobThread, inlineJobs, type JobRunner } from '../engine/job-thread.js';
import type { Stowage } from '../engine/stowage.js';
import { StowageError, errorMessage, isStowageError } from '../errors.js';
import { WebhookDispatcher, deliverPendingBeforeExit, syncWebhooksFromConfig } from '../events/webhooks.js';
import { STOWAGE_VERSION } from '../version.js';
import { AuthService, LoginLimiter } from './auth.js';
import type { ServerContext } from './context.js';
import { HttpError, sendError } from './http-errors.js';
import { registerAuthRoutes } from './routes/auth.js';
import { registerBackupRoutes } from './routes/backups.js';
import { registerPointRoutes } from './routes/points.js';
import { registerSettingsRoutes } from './routes/settings.js';
import { registerSystemRoutes } from './routes/system.js';
import { registerWebhookRoutes } from './routes/webhooks.js';

export const MIN_BACKUP_KEY_LENGTH = 20;

export interface ServerOptions {
  /** Pino logger options, or false for none (tests). Default: info level to stdout. */
  logger?: boolean | Record<string, unknown>;
  /** The export key; default process.env.STOWAGE_BACKUP_KEY. */
  backupKey?: string;
  /**
   * Where jobs run: 'thread' (default) keeps request handling responsive during a backup;
   * 'inline' runs them on this thread, which library exclude hooks need.
   */
  jobs?: 'thread' | 'inline';
}

/** `?token=...` and other secrets never reach the log. */
export function redactUrl(url: string): string {
  return url.replace(/([?&](?:token|password|key)=)[^&#]*/gi, '$1***');
}

/**
 * Builds the HTTP API on an open engine (it does not listen; see `listen`). Every route has a
 * JSON schema: Fastify validates requests and serialises responses with it, and the OpenAPI
 * document at /api/openapi.json is generated from the same schemas.
 */
export async function buildServer(stowage: Stowage, options: ServerOptions = {}): Promise<{ app: FastifyInstance; context: ServerContext }> {
  const server = stowage.config.server;
  const rawKey = options.backupKey ?? process.env.STOWAGE_BACKUP_KEY ?? '';
  let log: FastifyBaseLogger | undefined; // Fastify's logger, set once the app exists
  const context: ServerContext = {
    stowage,
    jobs: options.jobs === 'inline' ? inlineJobs(stowage) : new JobThread(stowage),
    auth: new AuthService(stowage.catalogue),
    limiter: new LoginLimiter(),
    backupKey: rawKey.length >= MIN_BACKUP_KEY_LENGTH ? rawKey : null,
    restoreProgress: null,
    // Every engine event, jobs on the job thread included (it re-emits them on `stowage`).
    webhooks: new WebhookDispatcher({ db: stowage.catalogue.database, events: stowage, log: (level, msg, data) => log?.[level](data, msg) }),
  };

  const app = Fastify({
    logger:
      options.logger === false
        ? false
        : {
            level: 'info',
            ...(typeof options.logger === 'object' ? options.logger : {}),
            serializers: {
              req: (req: { method: string; url: string; ip?: string }) => ({ method: req.method, url: redactUrl(req.url), ip: req.ip }),
            },
            redact: { paths: ['req.headers.authorization', 'req.headers.cookie'], censor: '***' },
          },
    bodyLimit: server.maxJsonSize,
    // One reverse proxy in front: trust the peer (the proxy), and take the client as the address
    // it appended to X-Forwarded-For. Fastify's `true` trusts every hop, so a client could put any
    // address first and dodge the login limiter.
    trustProxy: server.trustProxy ? (_address: string, hop: number) => hop === 0 : false,
    routerOptions: { maxParamLength: 500 },
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', useDefaults: true } },
  }).withTypeProvider<TypeBoxTypeProvider>();
  log = app.log;
  try {
    syncWebhooksFromConfig(context.webhooks, stowage.config); // an invalid entry fails start, naming the field
  } catch (err) {
    await context.webhooks.close();
    await context.jobs.close();
    throw err;
  }

  app.decorateRequest('principal', null);
  app.setErrorHandler((error, request, reply) => sendError(error, request, reply));
  app.setNotFoundHandler((request, reply) => sendError(new HttpError(404, `Not found: ${request.method} ${redactUrl(request.url)}. The routes are listed in /api/openapi.json.`), request, reply));

  // Security headers on every response; the API serves JSON and files, never pages to frame.
  app.addHook('onSend', async (request, reply) => {
    reply.header('X-Content-Type-Options', 'nosniff');
    reply.header('X-Frame-Options', 'DENY');
    reply.header('Referrer-Policy', 'no-referrer');
    reply.header('Cross-Origin-Resource-Policy', 'same-origin');
    if (!reply.hasHeader('Content-Security-Policy')) {
      reply.header(
        'Content-Security-Policy',
        request.url.startsWith('/setup') ? "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'" : "default-src 'none'; frame-ancestors 'none'",
      );
    }
    if (!reply.hasHeader('Cache-Control')) reply.header('Cache-Control', 'no-store');
  });

  // HTML form posts (the setup page); JSON stays the API's format.
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 16 * 1024 }, (_req, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(body as string)));
  });

  // PocketBase's SDK sends "Content-Type: application/json" with no body on body-less POSTs
  // (pb.files.getToken(), authRefresh(), backups.restore()): read an empty JSON body as {}.
  const jsonParser = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (body.length === 0) done(null, {});
    else jsonParser(request, body as string, done);
  });

  // A POST with no body at all (curl -X POST) means "no options", like an empty JSON object.
  app.addHook('preValidation', async (request) => {
    if (request.body === undefined || request.body === null) request.body = {};
  });

  if (server.corsOrigins.length) {
    const cors = (await import('@fastify/cors')).default;
    await app.register(cors, { origin: server.corsOrigins, credentials: false, exposedHeaders: ['Content-Disposition', 'Content-Length', 'Content-Range', 'ETag'] });
  }

  const swagger = (await import('@fastify/swagger')).default;
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Stowage API',
        version: STOWAGE_VERSION,
        description: 'Backups of an application\'s data: list, create, download, upload, restore, delete. Errors are {status, message, data}. See docs/API.md.',
      },
      components: {
        securitySchemes: {
          token: { type: 'apiKey', in: 'header', name: 'Authorization', description: 'A superuser session token or an API token, with or without "Bearer "' },
          downloadToken: { type: 'apiKey', in: 'query', name: 'token', description: 'A 3-minute download token' },
        },
      },
      tags: [
        { name: 'backups', description: 'Backups and their archives' },
        { name: 'restore', description: 'Restore status' },
        { name: 'auth', description: 'Superusers' },
        { name: 'tokens', description: 'API tokens for scripts' },
        { name: 'system', description: 'Health, events, jobs' },
        { name: 'webhooks', description: 'Signed event deliveries to your URLs' },
        { name: 'settings', description: 'Schedules, retention, S3 settings' },
        { name: 'points', description: 'Backup points: a source\'s files pushed to Git or S3' },
      ],
    },
  });

  // Keep the restore progress for GET /api/restore-status.
  stowage.on('restore.started', () => (context.restoreProgress = null));
  stowage.on('restore.progress', ({ key: _key, ...p }) => (context.restoreProgress = p));

  registerAuthRoutes(app, context);
  registerBackupRoutes(app, context, { maxUploadSize: server.maxUploadSize });
  registerSystemRoutes(app, context);
  registerWebhookRoutes(app, context);
  registerSettingsRoutes(app, context);
  registerPointRoutes(app, context);
  app.get('/api/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  (await import('./web.js')).registerWebPanel(app); // the web panel at / (dist/web), never under /api

  // Webhook deliveries a crash or a CLI process left pending: at start, then every minute.
  let resumeTimer: NodeJS.Timeout | undefined;
  let uploadTimer: NodeJS.Timeout | undefined;
  // Closing the server waits for a running job, then stops the job thread; then webhook
  // attempts on the wire get 3 s, and what is left stays pending for the next start.
  app.addHook('onClose', async () => {
    await context.jobs.close();
    clearInterval(resumeTimer);
    clearInterval(uploadTimer);
    await deliverPendingBeforeExit(context.webhooks, 3_000);
  });
  await app.ready();
  context.webhooks.resume();
  resumeTimer = setInterval(() => context.webhooks.resume(), 60_000).unref();
  // Backups that S3 refused wait in the outbox; try them again every 5 minutes when idle.
  uploadTimer = setInterval(() => void retryUploadsWhenIdle(stowage, context.jobs, log), UPLOAD_RETRY_MS).unref();
  return { app, context };
}

export function parseHttpAddress(value: string): { host: string; port: number } {
  const m = HTTP_ADDRESS.exec(value);
  const port = Number(m?.[2]);
  if (!m || port > 65535) throw new StowageError('USAGE', `"${value}" is not an address to listen on: use host:port, e.g. 127.0.0.1:8090 or 0.0.0.0:8090`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

const UPLOAD_RETRY_MS = 5 * 60_000;

async function retryUploadsWhenIdle(stowage: Stowage, jobs: JobRunner, log: { warn(data: unknown, msg: string): void } | undefined): Promise<void> {
  try {
    if (stowage.runningJob || jobs.runningJob || !(await stowage.pendingUploads()).length) return;
    const result = await stowage.retryUploads();
    for (const f of result.failed) log?.warn({ key: f.key }, f.message);
  } catch (err) {
    // Another process holds the lock (BUSY) or S3 is still down: the next round tries again.
    if (!isStowageError(err, 'BUSY')) log?.warn({ err: { message: errorMessage(err) } }, 'retrying uploads failed');
  }
}
