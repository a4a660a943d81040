import type { FastifyRequest } from 'fastify';
import type { JobRunner } from '../engine/job-thread.js';
import type { Stowage } from '../engine/stowage.js';
import type { WebhookDispatcher } from '../events/webhooks.js';
import { AuthService, LoginLimiter, can, type Principal } from './auth.js';
import { HttpError } from './http-errors.js';
import { ErrorResponse, type Progress, type Scope } from './schemas.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Who is calling, set by `guard`; null on public routes. */
    principal: Principal | null;
  }
}

/** What every route module gets. */
export interface ServerContext {
  stowage: Stowage;
  /** Where backups, restores and resets run: a worker thread (serve) or this thread. */
  jobs: JobRunner;
  auth: AuthService;
  limiter: LoginLimiter;
  /** STOWAGE_BACKUP_KEY when the export endpoint is enabled (>= 20 characters), else null. */
  backupKey: string | null;
  /** The latest restore progress while a restore or reset runs (for GET /api/restore-status). */
  restoreProgress: Progress | null;
  /** Webhook registrations and deliveries (issue 4); synced with stowage.yaml at start, closed with the server. */
  webhooks: WebhookDispatcher;
}

export const AUTH_HINT = 'send "Authorization: <token>" with a superuser token (POST /api/collections/_superusers/auth-with-password) or an API token';

/**
 * An onRequest hook that admits a superuser, or an API token holding `scope`. It runs before
 * the body is read or validated: an unauthorised upload is refused without receiving it.
 */
export function guard(ctx: ServerContext, scope: Scope | 'superuser') {
  return async (request: FastifyRequest): Promise<void> => {
    const principal = await ctx.auth.authenticate(request.headers.authorization);
    if (!principal) throw new HttpError(401, `The request requires authorization: ${AUTH_HINT}.`);
    if (scope === 'superuser' ? principal.kind !== 'superuser' : !can(principal, scope)) {
      throw new HttpError(403, scope === 'superuser' ? 'Only a superuser may do this; API tokens cannot.' : `This API token does not have the "${scope}" scope; create one that does (POST /api/tokens).`);
    }
    request.principal = principal;
  };
}

/** Error responses for the OpenAPI document, by status. */
export function errorResponses(...statuses: number[]): Record<number, typeof ErrorResponse> {
  return Object.fromEntries(statuses.map((s) => [s, ErrorResponse]));
}

export const SECURED = [{ token: [] as string[] }];
