import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { previewCron } from '../../config/settings-store.js';
import { SECURED, errorResponses, guard, type ServerContext } from '../context.js';
import { MASK } from '../../config/settings.js';
import { fieldError } from '../http-errors.js';
import { CronPreview, PruneBody, PruneResult, S3TestBody, S3TestResult, SettingsBody, SettingsPatch } from '../schemas.js';

type App = FastifyInstance<any, any, any, any, TypeBoxTypeProvider>; // eslint-disable-line @typescript-eslint/no-explicit-any

export function registerSettingsRoutes(app: App, ctx: ServerContext): void {
  const { stowage } = ctx;
  const tags = ['settings'];

  app.get('/api/settings', {
    schema: { tags, summary: 'The settings in force (stowage.yaml defaults with API changes on top); secrets masked', security: SECURED, response: { 200: SettingsBody, ...errorResponses(401, 403) } },
    onRequest: guard(ctx, 'settings'),
    handler: async () => stowage.settings.masked(),
  });

  app.patch('/api/settings', {
    schema: {
      tags,
      summary: 'Change settings (a partial object, merged); a secret left out or sent back masked keeps its value; schedules reload at once',
      security: SECURED,
      body: SettingsPatch,
      response: { 200: SettingsBody, ...errorResponses(400, 401, 403) },
    },
    onRequest: guard(ctx, 'settings'),
    handler: async (request) => {
      const updated = stowage.settings.patch(request.body);
      request.log.info('settings changed');
      return stowage.settings.masked(updated);
    },
  });

  app.get('/api/settings/cron-preview', {
    schema: {
      tags,
      summary: 'The next 5 run times of a cron expression, and what it means in words',
      security: SECURED,
      querystring: Type.Object({ cron: Type.String({ maxLength: 200 }), timezone: Type.Optional(Type.String({ maxLength: 100 })) }),
      response: { 200: CronPreview, ...errorResponses(400, 401, 403) },
    },
    onRequest: guard(ctx, 'settings'),
    handler: async (request) => previewCron(request.query.cron, request.query.timezone ?? stowage.settings.get().backups.timezone),
  });

  app.post('/api/settings/test-s3', {
    schema: {
      tags,
      summary: 'Check S3 settings: list, write, read back and delete a probe object; says which step failed and why',
      security: SECURED,
      body: S3TestBody,
      response: { 200: S3TestResult, ...errorResponses(400, 401, 403) },
    },
    onRequest: guard(ctx, 'settings'),
    handler: async (request) => {
      const stored = stowage.settings.get().backups.s3;
      const given = request.body;
      const s3 = { ...stored, ...given, secret: given.secret === undefined || given.secret === MASK ? stored.secret : given.secret };
      if (!s3.bucket) throw fieldError(400, 'bucket', 'validation_required', 'Give a bucket (in the request or in backups.s3).');
      const { S3Storage } = await import('../../storage/s3.js');
      const storage = new S3Storage({
        bucket: s3.bucket,
        prefix: s3.prefix,
        region: s3.region || 'us-east-1',
        endpoint: s3.endpoint || undefined,
        accessKeyId: s3.accessKey,
        secretAccessKey: s3.secret,
        forcePathStyle: s3.forcePathStyle,
      });
      const steps = await storage.probe();
      return { ok: steps.length === 4 && steps.every((st) => st.ok), target: storage.description, steps };
    },
  });

  app.post('/api/backups/prune', {
    schema: {
      tags: ['backups'],
      summary: 'Apply retention to scheduled backups (dryRun: only say what would go); every backup with kept/removed and why',
      security: SECURED,
      body: PruneBody,
      response: { 200: PruneResult, ...errorResponses(400, 401, 403) },
    },
    onRequest: guard(ctx, 'backups:delete'),
    handler: async (request) => stowage.prune({ dryRun: request.body.dryRun ?? false, trigger: 'api' }),
  });
}
