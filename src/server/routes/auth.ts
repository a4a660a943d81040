import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { isStowageError } from '../../errors.js';
import { SECURED, errorResponses, guard, type ServerContext } from '../context.js';
import { HttpError } from '../http-errors.js';
import { ApiToken, AuthResponse, AuthWithPasswordBody, CreateApiTokenBody, CreatedApiToken, SetupBody, Superuser } from '../schemas.js';

type App = FastifyInstance<any, any, any, any, TypeBoxTypeProvider>; // eslint-disable-line @typescript-eslint/no-explicit-any

export function registerAuthRoutes(app: App, ctx: ServerContext): void {
  const { auth, limiter } = ctx;

  app.post('/api/collections/_superusers/auth-with-password', {
    schema: {
      tags: ['auth'],
      summary: 'Log in as a superuser (PocketBase-compatible); failed attempts are rate-limited per address and per account',
      body: AuthWithPasswordBody,
      response: { 200: AuthResponse, ...errorResponses(400, 429) },
    },
    handler: async (request) => {
      const { identity, password } = request.body;
      const wait = limiter.retryAfter(request.ip, identity);
      if (wait > 0) throw new HttpError(429, `Too many failed logins; try again in ${wait} s.`, {}, { 'Retry-After': String(wait) });
      const user = await auth.login(identity, password);
      if (!user) {
        limiter.fail(request.ip, identity);
        request.log.info({ ip: request.ip }, 'failed superuser login');
        throw new HttpError(400, 'Failed to authenticate: wrong email or password.', { identity: { code: 'validation_invalid_credentials', message: 'wrong email or password' } });
      }
      limiter.succeed(identity);
      return { token: await auth.issueSession(user), record: user };
    },
  });

  app.post('/api/collections/_superusers/auth-refresh', {
    schema: { tags: ['auth'], summary: 'A fresh session token for the current superuser', security: SECURED, response: { 200: AuthResponse, ...errorResponses(401, 403) } },
    onRequest: guard(ctx, 'superuser'),
    handler: async (request) => {
      const principal = request.principal!;
      const user = auth.listSuperusers().find((u) => principal.kind === 'superuser' && u.id === principal.id)!;
      return { token: await auth.issueSession(user), record: user };
    },
  });

  app.post('/api/setup', {
    schema: {
      tags: ['auth'],
      summary: 'Create the first superuser with the one-time setup token printed at first start (JSON or an HTML form post)',
      body: SetupBody,
      response: { 200: Superuser, ...errorResponses(400) },
    },
    handler: async (request, reply) => {
      const { token, email, password } = request.body;
      let user;
      try {
        user = await auth.completeSetup(token, email, password);
      } catch (err) {
        if (isStowageError(err)) throw new HttpError(400, err.message, { token: { code: 'validation_invalid_token', message: err.message } });
        throw err;
      }
      request.log.info('first superuser created through the setup link');
      if (String(request.headers['content-type']).startsWith('application/x-www-form-urlencoded')) {
        // A form post gets a page back (a string payload is sent as-is, not serialised).
        return reply.type('text/html; charset=utf-8').send(page('Superuser created', `<p>${escapeHtml(user.email)} can now log in to the API.</p>`) as never);
      }
      return user;
    },
  });

  app.get('/setup', {
    schema: { hide: true },
    handler: async (request, reply) => {
      const token = (request.query as { token?: string }).token ?? '';
      const form = auth.countSuperusers() > 0
        ? '<p>A superuser already exists; this link is no longer needed.</p>'
        : `<form method="post" action="/api/setup">
  <input type="hidden" name="token" value="${escapeHtml(token)}">
  <label>Email <input name="email" type="email" required autocomplete="username"></label>
  <label>Password (at least 10 characters) <input name="password" type="password" minlength="10" required autocomplete="new-password"></label>
  <button>Create superuser</button>
</form>`;
      return reply.type('text/html; charset=utf-8').header('Referrer-Policy', 'no-referrer').send(page('Create the first superuser', form));
    },
  });

  const tags = ['tokens'];
  app.get('/api/tokens', {
    schema: { tags, summary: 'API tokens (their secrets are never shown again)', security: SECURED, response: { 200: Type.Array(ApiToken), ...errorResponses(401, 403) } },
    onRequest: guard(ctx, 'superuser'),
    handler: async () => auth.listApiTokens(),
  });

  app.post('/api/tokens', {
    schema: { tags, summary: 'Create an API token with scopes; the token is in this response only', security: SECURED, body: CreateApiTokenBody, response: { 200: CreatedApiToken, ...errorResponses(400, 401, 403) } },
    onRequest: guard(ctx, 'superuser'),
    handler: async (request) => auth.createApiToken(request.body.name, request.body.scopes, request.body.expiresInDays),
  });

  app.delete('/api/tokens/:id', {
    schema: { tags, summary: 'Revoke an API token', security: SECURED, params: Type.Object({ id: Type.String({ pattern: '^[0-9a-f]{12}$' }) }), response: { 204: Type.Null(), ...errorResponses(400, 401, 403, 404) } },
    onRequest: guard(ctx, 'superuser'),
    handler: async (request, reply) => {
      try {
        auth.revokeApiToken(request.params.id);
      } catch {
        throw new HttpError(404, `No API token ${request.params.id}.`);
      }
      return reply.code(204).send(null);
    },
  });
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title: string, content: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Stowage: ${title}</title>
<style>body{font:16px system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}label{display:block;margin:1rem 0}input{display:block;width:100%;padding:.4rem}</style>
</head><body><h1>${title}</h1>${content}</body></html>`;
}
