import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { PassThrough, Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { isStowageError } from '../../errors.js';
import type { DecryptionKeys } from '../../encryption/archive.js';
import { createAesGcmEncryptStream, createAgeDecryptStream, parseAesKey } from '../../encryption/index.js';
import { isEncryptedKey, isValidKey, keyFromName } from '../../storage/keys.js';
import { safeEqual } from '../auth.js';
import { SECURED, errorResponses, guard, type ServerContext } from '../context.js';
import { sendArchive } from '../download.js';
import { HttpError, fieldError } from '../http-errors.js';
import { restoreStatusBody } from './system.js';
import {
  DecryptedDownloadBody,
  Backup,
  BackupDetail,
  CreateBackupBody,
  ExportBody,
  KeyParams,
  ManifestPage,
  ManifestQuery,
  ResetBody,
  RestoreBody,
  RestoreStatus,
  TokenResponse,
  UploadBody,
} from '../schemas.js';

type App = FastifyInstance<any, any, any, any, TypeBoxTypeProvider>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Keys arrive URL-decoded: `..%2f`, `%00` and `%5c` become `../`, NUL and `\`, which no key allows. */
function checkKey(key: string): string {
  if (!isValidKey(key)) {
    throw fieldError(400, 'key', 'validation_invalid_key', `"${key.replace(/[^\x20-\x7e]/g, '?')}" is not a backup key: keys are lowercase letters, digits, _ - . @, end in .zip, and never contain a path`);
  }
  return key;
}

const SERVER_EPOCH = Date.now().toString(36);

export function registerBackupRoutes(app: App, ctx: ServerContext, options: { maxUploadSize: number }): void {
  const { stowage, auth } = ctx;
  const serializedLists = new WeakMap<object, { body: string; etag: string }>();
  let listVersion = 0;
  const tags = ['backups'];

  app.get('/api/backups', {
    schema: {
      tags,
      summary: 'List backups, newest first (failed and running ones too); ETag / If-None-Match supported. While storage cannot be listed (a bucket unreachable) the list is the catalogue\'s and a Warning header (199) says why',
      security: SECURED,
      response: { 200: Type.Array(Backup), 304: Type.Null({ description: 'unchanged since the ETag given in If-None-Match' }), ...errorResponses(401, 403) },
    },
    onRequest: guard(ctx, 'backups:read'),
    handler: async (request, reply) => {
      const { backups: list, storageUnreachable } = await stowage.listBackupsReport();
      // The catalogue's list while storage cannot be listed; the Warning header says so.
      if (storageUnreachable) reply.header('Warning', `199 stowage "storage unreachable, listed from the catalogue: ${storageUnreachable.replace(/[^\x20-\x7e]|["\\]/g, ' ').slice(0, 300)}"`);
      // The engine returns the same array until something changes: serialise it once.
      let cached = serializedLists.get(list);
      if (!cached) {
        cached = { body: reply.serialize(list) as string, etag: `W/"${SERVER_EPOCH}-${(++listVersion).toString(36)}"` };
        serializedLists.set(list, cached);
      }
      reply.header('ETag', cached.etag);
      if (request.headers['if-none-match'] === cached.etag) return reply.code(304).send(null);
      return reply.type('application/json; charset=utf-8').send(cached.body as never);
    },
  });

  app.get('/api/backups/:key/info', {
    schema: { tags, summary: 'One backup', security: SECURED, params: KeyParams, response: { 200: BackupDetail, ...errorResponses(400, 401, 403, 404) } },
    onRequest: guard(ctx, 'backups:read'),
    handler: async (request) => stowage.getBackup(checkKey(request.params.key)),
  });

  app.get('/api/backups/:key/manifest', {
    schema: {
      tags,
      summary: 'The manifest of a backup, entries paginated',
      security: SECURED,
      params: KeyParams,
      querystring: ManifestQuery,
      response: { 200: ManifestPage, ...errorResponses(400, 401, 403, 404) },
    },
    onRequest: guard(ctx, 'backups:read'),
    handler: async (request) => {
      const key = checkKey(request.params.key);
      const { page, perPage } = request.query;
      const { entries, ...header } = await stowage.readManifest(key);
      const items = entries.slice((page - 1) * perPage, page * perPage);
      return { ...header, entries: { page, perPage, totalItems: entries.length, totalPages: Math.ceil(entries.length / perPage), items } };
    },
  });

  app.post('/api/backups', {
    schema: {
      tags,
      summary: 'Create a backup; waits for it, or answers 202 at once with "Prefer: respond-async"',
      security: SECURED,
      body: Type.Optional(CreateBackupBody),
      response: { 200: BackupDetail, 202: BackupDetail, ...errorResponses(400, 401, 403, 409) },
    },
    onRequest: guard(ctx, 'backups:create'),
    handler: async (request, reply) => {
      const body = request.body ?? {};
      // PocketBase's pb.backups.create('') means "pick a name".
      if (body.name === '') body.name = undefined;
      if (body.name !== undefined) {
        try {
          keyFromName(body.name);
        } catch (err) {
          throw fieldError(400, 'name', 'validation_invalid_key', (err as Error).message);
        }
      }
      const encryption = body.encryption === false ? null : body.encryption;
      const options = { name: body.name, description: body.description, excludes: body.excludes, trigger: 'api' as const, ...(encryption !== undefined ? { encryption } : {}) };
      if (/\brespond-async\b/i.test(String(request.headers.prefer ?? ''))) {
        const job = await ctx.jobs.startBackup(options);
        job.done.catch((err: unknown) => request.log.warn({ err: { message: (err as Error).message } }, 'backup failed'));
        const started = await job.started;
        return reply.code(202).header('Preference-Applied', 'respond-async').send(started);
      }
      return (await ctx.jobs.startBackup(options)).done;
    },
  });

  // GET and HEAD as one route: Fastify's automatic HEAD route would send Content-Length: 0.
  app.route({
    method: ['GET', 'HEAD'],
    url: '/api/backups/:key',
    schema: {
      tags,
      summary: 'Download a backup (Range, ETag); authorize with ?token= (a download token) or the Authorization header. HEAD: the same headers, no body',
      security: [...SECURED, { downloadToken: [] }],
      params: KeyParams,
      querystring: Type.Object({ token: Type.Optional(Type.String({ description: 'a download token from POST /api/files/token or /api/backups/{key}/download-token' })) }),
      response: {
        200: Type.Any({ description: 'the archive (application/zip)' }),
        206: Type.Any({ description: 'part of the archive' }),
        304: Type.Null({ description: 'unchanged since the ETag given in If-None-Match' }),
        ...errorResponses(400, 401, 403, 404, 416),
      },
    },
    handler: async (request, reply) => {
      const key = checkKey(request.params.key);
      const token = request.query.token;
      if (token) {
        if (!(await auth.checkFileToken(token, key))) throw new HttpError(403, 'The download token is invalid, expired (they last 3 minutes) or for another backup; ask for a new one.');
      } else {
        await guard(ctx, 'backups:download')(request);
      }
      const object = await stowage.storage.stat(key);
      if (!object) throw new HttpError(404, `No backup named ${key}.`);
      return sendArchive(request, reply, stowage.storage, object);
    },
  });

  app.post('/api/backups/:key/download-token', {
    schema: { tags, summary: 'A download token for this backup only, valid 3 minutes', security: SECURED, params: KeyParams, response: { 200: TokenResponse, ...errorResponses(400, 401, 403, 404) } },
    onRequest: guard(ctx, 'backups:download'),
    handler: async (request) => {
      const key = checkKey(request.params.key);
      if (!(await stowage.storage.stat(key))) throw new HttpError(404, `No backup named ${key}.`);
      return { token: await auth.issueFileToken(request.principal!, key) };
    },
  });

  app.post('/api/files/token', {
    schema: { tags, summary: 'A download token for any backup, valid 3 minutes (PocketBase: pb.files.getToken())', security: SECURED, response: { 200: TokenResponse, ...errorResponses(401, 403) } },
    onRequest: guard(ctx, 'backups:download'),
    handler: async (request) => ({ token: await auth.issueFileToken(request.principal!) }),
  });

  app.delete('/api/backups/:key', {
    schema: { tags, summary: 'Delete a backup (refused while a running job uses it)', security: SECURED, params: KeyParams, response: { 204: Type.Null(), ...errorResponses(400, 401, 403, 404, 409) } },
    onRequest: guard(ctx, 'backups:delete'),
    handler: async (request, reply) => {
      await stowage.deleteBackup(checkKey(request.params.key));
      return reply.code(204).send(null);
    },
  });

  app.post('/api/backups/:key/restore', {
    schema: {
      tags,
      summary: 'Restore a backup; answers 202 at once, the outcome is in GET /api/restore-status',
      security: SECURED,
      params: KeyParams,
      body: Type.Optional(RestoreBody),
      response: { 202: RestoreStatus, ...errorResponses(400, 401, 403, 404, 409) },
    },
    onRequest: guard(ctx, 'backups:restore'),
    handler: async (request, reply) => {
      const key = checkKey(request.params.key);
      if (!(await stowage.storage.stat(key))) throw new HttpError(404, `No backup named ${key}.`);
      const body = request.body ?? {};
      const decrypt = decryptionKeys(body);
      const job = await ctx.jobs.startRestore(key, { sources: body.sources, force: body.force, safetyBackup: body.safetyBackup, trigger: 'api', ...(decrypt ? { decrypt } : {}) });
      job.done.catch((err: unknown) => request.log.warn({ err: { message: (err as Error).message } }, 'restore failed'));
      return reply.code(202).send(restoreStatusBody(ctx, { ...stowage.restoreStatus(), status: 'started', key, message: `restoring ${key}` }));
    },
  });

  app.post('/api/backups/reset-factory', {
    schema: {
      tags,
      summary: 'Factory reset: a safety backup, then every configured source emptied; 202, status as for a restore',
      security: SECURED,
      body: ResetBody,
      response: { 202: RestoreStatus, ...errorResponses(400, 401, 403, 409) },
    },
    onRequest: guard(ctx, 'backups:restore'),
    handler: async (request, reply) => {
      const job = await ctx.jobs.startFactoryReset();
      job.done.catch((err: unknown) => request.log.warn({ err: { message: (err as Error).message } }, 'factory reset failed'));
      return reply.code(202).send(restoreStatusBody(ctx, { ...stowage.restoreStatus(), status: 'started', key: 'factory-reset', message: 'factory reset' }));
    },
  });

  app.post('/api/backups/export', {
    schema: {
      tags,
      summary: 'Stream a fresh backup into the response, storing nothing (needs STOWAGE_BACKUP_KEY, and a superuser or the backups:export scope)',
      security: SECURED,
      body: ExportBody,
      response: { 200: Type.Any({ description: 'the archive (application/zip)' }), ...errorResponses(400, 401, 403, 404, 409) },
    },
    onRequest: async (request) => {
      // Off unless configured: to callers it does not exist.
      if (!ctx.backupKey) throw new HttpError(404, 'Not found.');
      await guard(ctx, 'backups:export')(request);
    },
    handler: async (request, reply) => {
      if (!safeEqual(request.body.key, ctx.backupKey!)) throw fieldError(403, 'key', 'invalid_backup_key', 'The backup key is wrong.');
      const aesKey = request.body.aes_key === undefined ? null : parseExportKey(request.body.aes_key);
      const out = new PassThrough({ highWaterMark: 1024 * 1024 });
      // SysReptor-style: with aes_key the archive is sealed for the caller (AES-256-GCM), not age.
      const sink = aesKey ? createAesGcmEncryptStream(aesKey) : out;
      if (aesKey) pipeline(sink, out).catch(() => {});
      const job = await stowage.exportBackup(sink, { excludes: request.body.excludes, ...(aesKey ? { encryption: null } : {}) });
      job.done.catch((err: unknown) => {
        // Headers are gone: cutting the stream is how the client learns (the ZIP has no end record).
        request.log.warn({ err: { message: (err as Error).message } }, 'export failed');
        out.destroy(err as Error);
      });
      const name = `${stowage.config.app.name.replace(/[^A-Za-z0-9_.-]+/g, '_')}_export_${new Date().toISOString().replace(/[-:]/g, '').slice(0, 15)}.zip${aesKey ? '.aesgcm' : ''}`;
      return reply.header('Content-Type', aesKey ? 'application/octet-stream' : 'application/zip').header('Content-Disposition', `attachment; filename="${name}"`).header('Cache-Control', 'no-store').send(out);
    },
  });

  app.post('/api/backups/:key/download-decrypted', {
    schema: {
      tags,
      summary: 'Download an encrypted backup as its plain ZIP, decrypted with the identity or passphrase in the body (used for this request only); needs backups:download',
      security: SECURED,
      params: KeyParams,
      body: DecryptedDownloadBody,
      response: { 200: Type.Any({ description: 'the plain archive (application/zip)' }), ...errorResponses(400, 401, 403, 404) },
    },
    onRequest: guard(ctx, 'backups:download'),
    handler: async (request, reply) => {
      const key = checkKey(request.params.key);
      if (!(await stowage.storage.stat(key))) throw new HttpError(404, `No backup named ${key}.`);
      if (!isEncryptedKey(key)) throw fieldError(400, 'key', 'validation_not_encrypted', `${key} is not encrypted; download it with GET /api/backups/${key}`);
      const keys = decryptionKeys(request.body);
      if (!keys) throw fieldError(400, 'identity', 'validation_required', 'give the identity (the contents of an age identity file) or the passphrase');
      const copy = await stowage.storage.localCopy(key, stowage.scratchDir);
      // The header is checked (and the key found) before the response starts, so a wrong key is a 400.
      const plain = createAgeDecryptStream({ identities: keys.identities, passphrase: keys.passphrase });
      const source = fs.createReadStream(copy.path);
      source.once('error', (err) => plain.destroy(err)); // a read error must end the response, not stall it
      const first = await firstChunk(source.pipe(plain));
      const release = () => void copy.release().catch(() => {});
      const body = new PassThrough({ highWaterMark: 1024 * 1024 });
      if (first) body.write(first);
      pipeline(plain, body).then(release, (err: unknown) => {
        release();
        request.log.warn({ err: { message: (err as Error).message } }, 'decrypted download failed');
      });
      return reply
        .header('Content-Type', 'application/zip')
        .header('Content-Disposition', `attachment; filename="${key.replace(/\.age$/, '')}"`)
        .header('Cache-Control', 'no-store')
        .send(body);
    },
  });

  registerUpload(app, ctx, options.maxUploadSize);
}

/** Keys in a request body (identity file contents, passphrase) for one encrypted backup; null if none. */
function decryptionKeys(body: { identity?: string; passphrase?: string }): DecryptionKeys | null {
  if (!body.identity && !body.passphrase) return null;
  return { ...(body.identity ? { identities: [body.identity] } : {}), ...(body.passphrase ? { passphrase: body.passphrase } : {}) };
}

function parseExportKey(text: string): Buffer {
  try {
    return parseAesKey(text);
  } catch (err) {
    throw fieldError(400, 'aes_key', 'validation_invalid_key', (err as Error).message);
  }
}

/** The first chunk a stream produces (null at its end); its errors (a wrong key) reject. */
function firstChunk(stream: Readable): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      cleanup();
      stream.pause();
      resolve(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(null);
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const cleanup = () => {
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onError);
    };
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.once('error', onError);
  });
}

/**
 * Uploads: multipart (field `file`, as PocketBase's SDK sends) or a raw body
 * (`application/octet-stream` / `application/zip` with `?name=`). The body is streamed to a
 * temporary file with a size cap, checked as a Stowage archive (manifest, every checksum),
 * and only then stored and listed.
 */
function registerUpload(app: App, ctx: ServerContext, maxUploadSize: number): void {
  app.register(async (scope) => {
    const multipart = (await import('@fastify/multipart')).default;
    await scope.register(multipart, { limits: { fileSize: maxUploadSize, files: 1, fields: 20, fieldSize: 64 * 1024, parts: 30 } });
    // Raw bodies are handed over as the request stream; the size cap is applied while writing.
    scope.addContentTypeParser(['application/octet-stream', 'application/zip'], (_request, payload, done) => done(null, payload));

    scope.post('/api/backups/upload', {
      schema: {
        tags: ['backups'],
        summary: 'Upload an archive (multipart field "file", or a raw body with ?name=); checked before it is listed',
        security: SECURED,
        querystring: Type.Object({ name: Type.Optional(Type.String({ maxLength: 150, description: 'the key for a raw-body upload' })) }),
        consumes: ['multipart/form-data', 'application/octet-stream', 'application/zip'],
        response: { 200: BackupDetail, ...errorResponses(400, 401, 403, 413, 415) },
      },
      // The body is documented, not declared: a declared body would be validated, which needs it parsed.
      config: { swaggerTransform: ({ schema, url }) => ({ schema: { ...schema, body: UploadBody }, url }) },
      onRequest: guard(ctx, 'backups:create'),
      handler: async (request, reply) => handleUpload(ctx, request, reply, maxUploadSize),
    });
  });
}

async function handleUpload(ctx: ServerContext, request: FastifyRequest, reply: FastifyReply, maxUploadSize: number): Promise<FastifyReply> {
  // Refuse what is declared too large before reading any of it (multipart adds a little framing).
  const declared = Number(request.headers['content-length'] ?? NaN);
  if (declared > maxUploadSize + (request.isMultipart() ? 64 * 1024 : 0)) throw tooLarge(maxUploadSize);
  let input: Readable;
  let name: string | undefined;
  if (request.isMultipart()) {
    const file = await request.file();
    if (!file || file.fieldname !== 'file') throw fieldError(400, 'file', 'validation_required', 'Send the archive in the multipart field "file".');
    input = file.file;
    name = file.filename || undefined;
  } else {
    const type = String(request.headers['content-type'] ?? '');
    if (!/^application\/(octet-stream|zip)\b/.test(type)) throw new HttpError(415, 'Send the archive as multipart/form-data (field "file") or as application/octet-stream with ?name=KEY.');
    input = request.body as Readable;
    name = (request.query as { name?: string }).name;
  }
  if (name !== undefined) {
    try {
      name = keyFromName(name);
    } catch (err) {
      input.resume();
      throw fieldError(400, 'file', 'validation_invalid_key', (err as Error).message);
    }
    if (await ctx.stowage.storage.stat(name)) {
      input.resume();
      throw fieldError(400, 'file', 'validation_backup_exists', `A backup named ${name} already exists; upload it under another name or delete that one first.`);
    }
  }
  const dir = path.join(ctx.stowage.scratchDir, 'uploads');
  await fs.promises.mkdir(dir, { recursive: true });
  const temp = path.join(dir, `upload-${crypto.randomBytes(6).toString('hex')}.zip`);
  try {
    let received = 0;
    const cap = new Transform({
      transform(chunk: Buffer, _enc, done) {
        received += chunk.length;
        if (received > maxUploadSize) done(tooLarge(maxUploadSize));
        else done(null, chunk);
      },
    });
    await pipeline(input, cap, fs.createWriteStream(temp, { flags: 'wx' }));
    if ((input as Readable & { truncated?: boolean }).truncated) throw tooLarge(maxUploadSize);
    if (received === 0) throw fieldError(400, 'file', 'validation_empty', 'The upload is empty.');
    const backup = await ctx.stowage.importArchive(temp, name);
    return reply.send(backup);
  } catch (err) {
    if (isStowageError(err) && ['ARCHIVE_INVALID', 'ARCHIVE_UNSAFE', 'FORMAT_UNSUPPORTED', 'CHECKSUM_MISMATCH'].includes(err.code)) {
      // The message names the file it read: the server's scratch path is nobody's business.
      const message = err.message.split(temp).join(name ?? 'the upload');
      throw fieldError(400, 'file', 'validation_invalid_archive', `Not a usable Stowage backup: ${message}`);
    }
    if (isStowageError(err, 'BACKUP_EXISTS')) throw fieldError(400, 'file', 'validation_backup_exists', err.message);
    if ((err as { code?: string }).code === 'FST_REQ_FILE_TOO_LARGE') throw tooLarge(maxUploadSize);
    throw err;
  } finally {
    await fs.promises.rm(temp, { force: true });
  }
}

function tooLarge(max: number): HttpError {
  // Connection: close, because the rest of the body is not read.
  return new HttpError(413, `The upload is larger than the server accepts (server.maxUploadSize, ${max} bytes).`, {}, { Connection: 'close' });
}
