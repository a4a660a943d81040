import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { BackupRecord, RestoreStatusRecord } from '../../engine/catalogue.js';
import type { Settings } from '../../config/settings.js';
import { restoreDisabledReason } from '../../engine/restore.js';
import { readLock, isStale } from '../../engine/lock.js';
import { STOWAGE_VERSION } from '../../version.js';
import { SECURED, errorResponses, guard, type ServerContext } from '../context.js';
import { HttpError } from '../http-errors.js';
import { Health, Job, RestoreStatus, type RestoreStatus as RestoreStatusBody } from '../schemas.js';
import { Cron } from 'croner';

type App = FastifyInstance<any, any, any, any, TypeBoxTypeProvider>; // eslint-disable-line @typescript-eslint/no-explicit-any

export function restoreStatusBody(ctx: ServerContext, s: RestoreStatusRecord): RestoreStatusBody {
  return {
    status: s.status,
    key: s.key,
    startedAt: s.startedAt,
    lastRestoreTime: s.lastRestoreTime,
    statusMessage: s.message,
    safetyBackupKey: s.safetyBackupKey,
    progress: s.status === 'started' ? ctx.restoreProgress : null,
    sources: s.sources,
  };
}

export const DEMO_MESSAGE =
  'No configuration file: Stowage protects its demo application in <dataDir>/demo-app. To protect your own data, run "stowage init" ' +
  'in your application folder (or set STOWAGE_CONFIG), list your folders and SQLite databases under sources:, and restart.';

/** How long after a scheduled time a backup counts as overdue. */
const OVERDUE_GRACE_MS = 3600_000;

/**
 * Backups that Stowage made of this application's data. Uploads are not: their createdAt is
 * another machine's (or an old) capture and their completedAt the upload time, so an old archive
 * uploaded today would otherwise read as "backed up today". A pre-restore backup is a full backup
 * of the configured data, so it counts as a success; it says nothing about the schedule, though.
 */
const MADE_HERE = new Set(['manual', 'schedule', 'api', 'pre-restore']);

/**
 * Health of the backups. Every time is a backup's createdAt, the moment its data was read (an
 * archive copied into storage by hand keeps the createdAt of its manifest, never the copy time).
 * `overdue` is about the schedule: the newest scheduled time more than an hour ago has no
 * completed scheduled backup created at or after it. A manual backup does not clear it: it does
 * not show that the schedule runs, and the next weeks would go unprotected all the same.
 */
export function backupHealth(records: readonly BackupRecord[], settings: Pick<Settings, 'backups'>, now = Date.now()): Health['backups'] {
  const newest = (pick: (r: BackupRecord) => string | null | undefined) =>
    records.reduce<string | null>((best, r) => {
      const v = pick(r);
      return v && (!best || v > best) ? v : best;
    }, null);
  const madeHere = (r: BackupRecord) => MADE_HERE.has(r.trigger);
  const lastSuccessAt = newest((r) => (r.status === 'completed' && madeHere(r) ? r.createdAt : null));
  const lastScheduledAt = newest((r) => (r.status === 'completed' && r.trigger === 'schedule' ? r.createdAt : null));
  const cron = settings.backups.cron || null;
  let nextRunAt: string | null = null;
  let overdue = false;
  if (cron) {
    const schedule = new Cron(cron, { paused: true, timezone: settings.backups.timezone });
    nextRunAt = schedule.nextRun(new Date(now))?.toISOString() ?? null;
    const [due] = schedule.previousRuns(1, new Date(now - OVERDUE_GRACE_MS));
    overdue = Boolean(due && (!lastScheduledAt || Date.parse(lastScheduledAt) < due.getTime()));
  }
  return {
    lastSuccessAt,
    lastScheduledAt,
    lastFailureAt: newest((r) => (r.status === 'failed' && madeHere(r) ? r.createdAt : null)),
    schedule: cron,
    nextRunAt,
    overdue,
    lastVerifiedAt: newest((r) => (r.verifyStatus === 'ok' ? r.verifiedAt : null)),
    lastVerifiedRestoreAt: newest((r) => (r.drillStatus === 'ok' ? r.drilledAt : null)),
    // Kept locally because remote storage refused them (or still being pushed): not off-site yet.
    uploadsPending: records.filter((r) => r.status === 'uploading').map((r) => ({ key: r.key, createdAt: r.createdAt, message: r.statusMessage })),
  };
}

/** Nothing runs in this process, and no other process holds the data-folder lock. */
function isIdle(ctx: ServerContext): boolean {
  if (ctx.stowage.runningJob || ctx.jobs.runningJob) return false;
  const holder = readLock(ctx.stowage.config.dataDir);
  return !holder || isStale(holder);
}

export function registerSystemRoutes(app: App, ctx: ServerContext): void {
  const { stowage } = ctx;
  // Event streams never end by themselves: end them when the server closes.
  const streams = new Set<() => void>();
  app.addHook('preClose', async () => {
    for (const end of streams) end();
  });

  app.get('/api/health', {
    schema: { tags: ['system'], summary: 'Liveness, version, and whether a backup could start now (public)', response: { 200: Health } },
    handler: async () => ({
      status: 'ok' as const,
      version: STOWAGE_VERSION,
      canBackup: isIdle(ctx),
      restoreEnabled: restoreDisabledReason({ config: stowage.config }) === null,
      backups: backupHealth(stowage.catalogue.listBackups(), stowage.settings.get()),
      storage: stowage.storage.description,
      demo: stowage.usingDefaultConfig
        ? { enabled: true, message: DEMO_MESSAGE.replace('<dataDir>', stowage.config.dataDir) }
        : { enabled: false, message: `configuration: ${stowage.config.configPath}` },
    }),
  });

  app.get('/api/restore-status', {
    schema: { tags: ['restore'], summary: 'The state of the last restore or factory reset', security: SECURED, response: { 200: RestoreStatus, ...errorResponses(401, 403) } },
    onRequest: guard(ctx, 'backups:read'),
    handler: async () => restoreStatusBody(ctx, stowage.restoreStatus()),
  });

  app.get('/api/jobs', {
    schema: {
      tags: ['system'],
      summary: 'Job history: backups, restores, resets and exports, newest first',
      security: SECURED,
      querystring: Type.Object({ limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }) }),
      response: { 200: Type.Array(Job), ...errorResponses(401, 403) },
    },
    onRequest: guard(ctx, 'backups:read'),
    handler: async (request) => stowage.catalogue.listJobs(request.query.limit),
  });

  app.get('/api/jobs/:id', {
    schema: {
      tags: ['system'],
      summary: 'One job, with its log (command hook output)',
      security: SECURED,
      params: Type.Object({ id: Type.String({ maxLength: 100 }) }),
      response: { 200: Type.Object({ ...Job.properties, log: Type.String() }), ...errorResponses(401, 403, 404) },
    },
    onRequest: guard(ctx, 'backups:read'),
    handler: async (request) => {
      const job = stowage.catalogue.getJob(request.params.id);
      if (!job) throw new HttpError(404, `No job ${request.params.id}; GET /api/jobs lists them.`);
      return job;
    },
  });

  app.get('/api/events', {
    schema: {
      tags: ['system'],
      summary: 'Server-Sent Events: every engine event (backup.*, restore.*, verify.progress, ...) as it happens',
      security: SECURED,
      response: { 200: Type.String({ description: 'text/event-stream: "event: <type>" and "data: <JSON>" per message' }), ...errorResponses(401, 403) },
    },
    onRequest: guard(ctx, 'backups:read'),
    handler: async (request, reply) => {
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        'Content-Type': 'text/event-stream; charset=utf-8',
        'Cache-Control': 'no-store',
        Connection: 'keep-alive',
        'X-Content-Type-Options': 'nosniff',
        'X-Accel-Buffering': 'no', // nginx: do not buffer the stream
      });
      const send = (type: string, data: unknown) => res.write(`event: ${type}\ndata: ${JSON.stringify(data)}\n\n`);
      send('hello', { version: STOWAGE_VERSION, running: ctx.jobs.runningJob ?? stowage.runningJob });
      const off = stowage.onAny((type, payload) => send(type, payload));
      // A comment every 15 s keeps proxies from closing an idle stream.
      const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
      const stop = () => {
        clearInterval(heartbeat);
        off();
        streams.delete(end);
      };
      const end = () => {
        stop();
        res.end();
      };
      streams.add(end);
      request.raw.on('close', stop);
      res.on('error', stop);
    },
  });
}
