/**
 * The typed client of the Stowage REST API (`import { StowageClient } from 'stowage/sdk'`).
 * It runs wherever `fetch` does: browsers, Node 20+, Deno, Bun, workers. The types are the
 * server's own schemas, so a request the server would reject does not type-check.
 *
 * ```ts
 * import { StowageClient, StowageApiError } from 'stowage/sdk';
 *
 * const client = new StowageClient('http://127.0.0.1:8090');
 * await client.auth.login('admin@example.com', 'a long password'); // or { token: 'stw_...' }
 *
 * const backup = await client.backups.create({ name: 'before_upgrade' });
 * console.log(backup.key, backup.size);
 *
 * const unsubscribe = client.events.subscribe(({ type, data }) => console.log(type, data));
 * await unsubscribe.ready;
 * await client.backups.create({}, { async: true }); // 202 at once; progress arrives as events
 * unsubscribe();
 *
 * try {
 *   await client.backups.restore('missing.zip');
 * } catch (err) {
 *   if (err instanceof StowageApiError) console.log(err.status, err.message, err.data); // 404 ...
 * }
 * ```
 *
 * Every failure is a `StowageApiError` (also exported as `StowageError`): `status` (0 when
 * no response came), `message`, `data` (field errors), `isAbort`.
 */
export { StowageClient, AuthService, type RequestOptions, type SendOptions, type StowageClientOptions } from './client.js';
export { BackupsService, EventsService, PointsService, SettingsService, TokensService, WebhooksService, type SubscribeOptions, type Subscription, type UploadSource } from './services.js';
export { StowageApiError, StowageApiError as StowageError, isStowageApiError, type FieldErrors } from './errors.js';
export { SseParser, type SseMessage } from './sse.js';
export type * from './types.js';
