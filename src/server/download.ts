import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Storage, StoredObject } from '../storage/storage.js';
import { HttpError } from './http-errors.js';

/**
 * Sends a stored archive: streamed from storage, with Content-Length, an ETag (archives under
 * a key never change: they are created or deleted, so size + mtime identify the bytes), a
 * single `Range` (resumed downloads), If-None-Match and If-Range.
 */
export async function sendArchive(request: FastifyRequest, reply: FastifyReply, storage: Storage, object: StoredObject): Promise<FastifyReply> {
  const etag = `"${object.size.toString(16)}-${object.modified.getTime().toString(16)}"`;
  reply.header('ETag', etag);
  reply.header('Last-Modified', object.modified.toUTCString());
  reply.header('Accept-Ranges', 'bytes');
  reply.header('Content-Type', 'application/zip');
  reply.header('Content-Disposition', `attachment; filename="${object.key}"`);
  reply.header('Cache-Control', 'private, no-store');

  const ifNoneMatch = request.headers['if-none-match'];
  if (ifNoneMatch && ifNoneMatch.split(',').some((t) => t.trim() === etag || t.trim() === '*')) return reply.code(304).send();

  let range = parseRange(request.headers.range, object.size);
  const ifRange = request.headers['if-range'];
  if (range && ifRange && ifRange !== etag) range = null; // changed since: send it whole
  if (range === 'unsatisfiable') {
    throw new HttpError(416, `Range not satisfiable: the archive is ${object.size} bytes`, {}, { 'Content-Range': `bytes */${object.size}` });
  }
  if (range) {
    reply.code(206);
    reply.header('Content-Range', `bytes ${range.start}-${range.end}/${object.size}`);
    reply.header('Content-Length', String(range.end - range.start + 1));
    if (request.method === 'HEAD') return reply.send();
    return reply.send(await storage.get(object.key, range));
  }
  reply.header('Content-Length', String(object.size));
  if (request.method === 'HEAD') return reply.send();
  return reply.send(await storage.get(object.key));
}

/**
 * One `bytes=` range (RFC 9110): `a-b`, `a-`, `-n`. Several ranges, or a header we do not
 * understand, are ignored (the whole archive is sent, as the RFC allows).
 */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | 'unsatisfiable' | null {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null;
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) return 'unsatisfiable';
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (m[2] !== '' && Number(m[2]) < start) return null; // invalid: ignore
  }
  if (start >= size || size === 0) return 'unsatisfiable';
  return { start, end };
}
