import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { SECURED, errorResponses, guard, type ServerContext } from '../context.js';
import { CreatePointBody, Point, PointParams, PointRun, PointRunStarted, PointRunsQuery, UpdatePointBody } from '../schemas.js';

type App = FastifyInstance<any, any, any, any, TypeBoxTypeProvider>; // eslint-disable-line @typescript-eslint/no-explicit-any

/**
 * Backup points (issue 5): list them with their last run, add, change and remove the ones
 * managed here (points from stowage.yaml answer 409), run one now, read its runs. Changing
 * points needs the `settings` scope; running one, `backups:create`; reading, `backups:read`.
 * The engine validates a point with the same schema as stowage.yaml and answers refusals with
 * a `details.reason` that http-errors.ts maps to 400, 404 or 409.
 */
export function registerPointRoutes(app: App, ctx: ServerContext): void {
  const { stowage } = ctx;
  const tags = ['points'];

  app.get('/api/points', {
    schema: { tags, summary: 'Every backup point, from stowage.yaml and the API, with its last run; credentials masked', security: SECURED, response: { 200: Type.Array(Point), ...errorResponses(401, 403) } },
    onRequest: guard(ctx, 'backups:read'),
    handler: async () => stowage.points.list(),
  });

  app.get('/api/points/:name', {
    schema: { tags, summary: 'One backup point with its last run; credentials masked', security: SECURED, params: PointParams, response: { 200: Point, ...errorResponses(401, 403, 404) } },
    onRequest: guard(ctx, 'backups:read'),
    handler: async (request) => stowage.points.describe(request.params.name),
  });

  app.post('/api/points', {
    schema: {
      tags,
      summary: 'Add a backup point; validated like stowage.yaml (URL per method, a dir source); credentials stored encrypted',
      security: SECURED,
      body: CreatePointBody,
      response: { 200: Point, ...errorResponses(400, 401, 403) },
    },
    onRequest: guard(ctx, 'settings'),
    handler: async (request) => {
      const created = stowage.points.create(request.body);
      request.log.info({ point: created.name, method: created.method }, 'point created');
      return created;
    },
  });

  app.patch('/api/points/:name', {
    schema: {
      tags,
      summary: 'Change a backup point (the fields given); a credential left out or sent back as "******" is kept. Points from stowage.yaml answer 409',
      security: SECURED,
      params: PointParams,
      body: UpdatePointBody,
      response: { 200: Point, ...errorResponses(400, 401, 403, 404, 409) },
    },
    onRequest: guard(ctx, 'settings'),
    handler: async (request) => {
      const updated = stowage.points.update(request.params.name, request.body);
      request.log.info({ point: updated.name, fields: Object.keys(request.body) }, 'point updated');
      return updated;
    },
  });

  app.delete('/api/points/:name', {
    schema: { tags, summary: 'Remove a backup point (its runs stay in the history); points from stowage.yaml answer 409', security: SECURED, params: PointParams, response: { 204: Type.Null(), ...errorResponses(401, 403, 404, 409) } },
    onRequest: guard(ctx, 'settings'),
    handler: async (request, reply) => {
      stowage.points.delete(request.params.name);
      request.log.info({ point: request.params.name }, 'point deleted');
      return reply.code(204).send(null);
    },
  });

  app.post('/api/points/:name/run', {
    schema: {
      tags,
      summary: 'Run a backup point now; waits for the run, or answers 202 at once with "Prefer: respond-async". A failed run is a 200 with status "failed" and the reason',
      security: SECURED,
      params: PointParams,
      response: { 200: PointRun, 202: PointRunStarted, ...errorResponses(401, 403, 404, 409) },
    },
    onRequest: guard(ctx, 'backups:create'),
    handler: async (request, reply) => {
      const job = await stowage.startPointRun(request.params.name);
      if (/\brespond-async\b/i.test(String(request.headers.prefer ?? ''))) {
        job.done.catch((err: unknown) => request.log.warn({ err: { message: (err as Error).message } }, 'point run failed'));
        return reply.code(202).header('Preference-Applied', 'respond-async').send({ jobId: job.id, point: request.params.name, status: 'started' as const });
      }
      return job.done;
    },
  });

  app.get('/api/points/:name/runs', {
    schema: { tags, summary: 'The runs of a backup point, newest first (the newest 100 are kept)', security: SECURED, params: PointParams, querystring: PointRunsQuery, response: { 200: Type.Array(PointRun), ...errorResponses(401, 403, 404) } },
    onRequest: guard(ctx, 'backups:read'),
    handler: async (request) => {
      stowage.points.describe(request.params.name); // 404 for an unknown point
      return stowage.catalogue.listPointRuns(request.params.name, request.query.limit);
    },
  });
}
