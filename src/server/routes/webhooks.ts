import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { MASKED_SECRET, WebhookError, type WebhookInput } from '../../events/webhooks.js';
import { SECURED, errorResponses, guard, type ServerContext } from '../context.js';
import { HttpError } from '../http-errors.js';
import type { ErrorResponse } from '../schemas.js';
import { CreateWebhookBody, DeliveriesQuery, UpdateWebhookBody, Webhook, WebhookDelivery, WebhookParams } from '../schemas.js';

type App = FastifyInstance<any, any, any, any, TypeBoxTypeProvider>; // eslint-disable-line @typescript-eslint/no-explicit-any

const STATUS_BY_REASON = { invalid: 400, not_found: 404, read_only: 409 } as const;

/**
 * The dispatcher's refusals as API errors: invalid → 400 with PocketBase field errors,
 * not_found → 404, read_only (a webhook from stowage.yaml) → 409. Anything else goes on to the
 * common error handler.
 */
function toHttpError(err: unknown): unknown {
  if (!(err instanceof WebhookError)) return err;
  const data: ErrorResponse['data'] = {};
  const fields = (err.details?.fields as Array<{ field: string; message: string }> | undefined) ?? [];
  // The field is the key; its message need not repeat it ("url: not a valid ..." → "not a valid ...").
  for (const f of fields) data[f.field] = { code: 'validation_invalid_value', message: f.message.startsWith(`${f.field}: `) ? f.message.slice(f.field.length + 2) : f.message };
  return new HttpError(STATUS_BY_REASON[err.reason], err.message, data);
}

async function call<T>(fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw toHttpError(err);
  }
}

/**
 * Webhooks (issue 4): register, change and remove webhooks, read their delivery log, send a
 * test event. The dispatcher itself is created, synced with stowage.yaml and closed by the
 * server (server.ts). There is no webhook scope: the routes need `settings`.
 */
export function registerWebhookRoutes(app: App, ctx: ServerContext): void {
  const { webhooks } = ctx;
  const tags = ['webhooks'];
  const onRequest = guard(ctx, 'settings');

  app.get('/api/webhooks', {
    schema: { tags, summary: 'Every webhook, from the API and from stowage.yaml; secrets masked', security: SECURED, response: { 200: Type.Array(Webhook), ...errorResponses(401, 403) } },
    onRequest,
    handler: async () => webhooks.list(),
  });

  app.post('/api/webhooks', {
    schema: {
      tags,
      summary: 'Register a webhook; its secret (given or generated) is in this response only',
      security: SECURED,
      body: CreateWebhookBody,
      response: { 200: Webhook, ...errorResponses(400, 401, 403) },
    },
    onRequest,
    handler: async (request) => {
      const created = await call(() => webhooks.create(request.body as WebhookInput));
      request.log.info({ webhookId: created.id, events: created.events }, 'webhook created');
      return created;
    },
  });

  app.get('/api/webhooks/:id', {
    schema: { tags, summary: 'One webhook; secret masked', security: SECURED, params: WebhookParams, response: { 200: Webhook, ...errorResponses(401, 403, 404) } },
    onRequest,
    handler: async (request) => {
      const hook = webhooks.get(request.params.id);
      if (!hook) throw new HttpError(404, `No webhook ${request.params.id}.`);
      return hook;
    },
  });

  app.patch('/api/webhooks/:id', {
    schema: {
      tags,
      summary: 'Change a webhook (the fields given); a secret left out or sent back as "******" is kept. Webhooks from stowage.yaml answer 409',
      security: SECURED,
      params: WebhookParams,
      body: UpdateWebhookBody,
      response: { 200: Webhook, ...errorResponses(400, 401, 403, 404, 409) },
    },
    onRequest,
    handler: async (request) => {
      const { secret, ...rest } = request.body;
      const patch: Partial<WebhookInput> = { ...(rest as Partial<WebhookInput>), ...(secret === undefined || secret === MASKED_SECRET ? {} : { secret }) };
      const updated = await call(() => webhooks.update(request.params.id, patch));
      request.log.info({ webhookId: updated.id, secretChanged: patch.secret !== undefined }, 'webhook updated');
      return updated;
    },
  });

  app.delete('/api/webhooks/:id', {
    schema: {
      tags,
      summary: 'Remove a webhook and its delivery log; webhooks from stowage.yaml answer 409',
      security: SECURED,
      params: WebhookParams,
      response: { 204: Type.Null(), ...errorResponses(401, 403, 404, 409) },
    },
    onRequest,
    handler: async (request, reply) => {
      await call(() => webhooks.delete(request.params.id));
      request.log.info({ webhookId: request.params.id }, 'webhook deleted');
      return reply.code(204).send(null);
    },
  });

  app.get('/api/webhooks/:id/deliveries', {
    schema: {
      tags,
      summary: 'The delivery log of a webhook, newest first: status, attempts, last HTTP status and error, next retry',
      security: SECURED,
      params: WebhookParams,
      querystring: DeliveriesQuery,
      response: { 200: Type.Array(WebhookDelivery), ...errorResponses(400, 401, 403, 404) },
    },
    onRequest,
    handler: async (request) => call(() => webhooks.deliveries(request.params.id, { limit: request.query.limit })),
  });

  app.post('/api/webhooks/:id/test', {
    schema: {
      tags,
      summary: 'Send a webhook.test event now (once, no retries, even to a disabled webhook) and answer with the outcome',
      security: SECURED,
      params: WebhookParams,
      response: { 200: WebhookDelivery, ...errorResponses(401, 403, 404) },
    },
    onRequest,
    handler: async (request) => call(() => webhooks.testDelivery(request.params.id)),
  });
}
