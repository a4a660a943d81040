import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

/**
 * The web panel (web/, built by Vite into dist/web): served at `/` from files read once at
 * start, with an SPA fallback for the panel's own paths (/backups, /settings, ...). Nothing here
 * answers under /api: an unknown API path stays the API's JSON 404. GET /setup?token= from a
 * browser gets the panel too (its setup screen); other clients keep the server's plain form.
 */

/**
 * The panel's policy: its scripts, styles and API calls come from this origin only; no inline
 * script, no framing, no plugins. `style-src` allows no inline <style>; styles set from script
 * (CSSOM) are not affected.
 */
export const PANEL_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "form-action 'self'",
  "base-uri 'none'",
  "object-src 'none'",
  "frame-ancestors 'none'",
].join('; ');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.webmanifest': 'application/manifest+json',
};

interface PanelFile {
  body: Buffer;
  gzip: Buffer | null;
  type: string;
  etag: string;
  /** Vite's hashed files (assets/name-HASH.js) never change under their name. */
  immutable: boolean;
}

/** Where the built panel is: dist/web beside dist/server (built), or the repository's dist/web (running from src). */
export function findPanelDir(): string | null {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const candidate of [path.resolve(here, '../web'), path.resolve(here, '../../dist/web')]) {
    if (fs.existsSync(path.join(candidate, 'index.html'))) return candidate;
  }
  return null;
}

function loadPanel(dir: string): Map<string, PanelFile> {
  const files = new Map<string, PanelFile>();
  const walk = (folder: string, prefix: string) => {
    for (const entry of fs.readdirSync(folder, { withFileTypes: true })) {
      const full = path.join(folder, entry.name);
      const urlPath = `${prefix}/${entry.name}`;
      if (entry.isDirectory()) walk(full, urlPath);
      else if (entry.isFile()) {
        const body = fs.readFileSync(full);
        const type = TYPES[path.extname(entry.name).toLowerCase()] ?? 'application/octet-stream';
        const compressible = /^(text\/|application\/(json|manifest)|image\/svg)/.test(type) && body.length > 1024;
        const stat = fs.statSync(full);
        files.set(urlPath, {
          body,
          gzip: compressible ? gzipSync(body, { level: 9 }) : null,
          type,
          etag: `"${body.length.toString(16)}-${Math.floor(stat.mtimeMs).toString(16)}"`,
          immutable: urlPath.startsWith('/assets/'),
        });
      }
    }
  };
  walk(dir, '');
  return files;
}

const NOT_BUILT = `<!doctype html><html lang="en"><meta charset="utf-8"><title>Stowage</title>
<body><h1>Stowage</h1><p>The web panel is not built. Run <code>npm run build</code> (or <code>npm start</code>, which builds it), then reload.
The REST API is at <a href="/api/health">/api</a>; its routes are in <a href="/api/openapi.json">/api/openapi.json</a>.</p></body></html>`;

/** True for a request a browser makes for a page (not fetch, not curl's default). */
function wantsHtml(request: FastifyRequest): boolean {
  return String(request.headers.accept ?? '').includes('text/html');
}

export function registerWebPanel(app: FastifyInstance, options: { dir?: string | null } = {}): void {
  const dir = options.dir === undefined ? findPanelDir() : options.dir;
  const files = dir ? loadPanel(dir) : new Map<string, PanelFile>();
  const index = files.get('/index.html') ?? null;

  const send = (request: FastifyRequest, reply: FastifyReply, file: PanelFile) => {
    reply.header('Content-Security-Policy', PANEL_CSP);
    reply.header('ETag', file.etag);
    reply.header('Cache-Control', file.immutable ? 'public, max-age=31536000, immutable' : 'no-cache');
    reply.header('Vary', 'Accept-Encoding');
    reply.type(file.type);
    if (request.headers['if-none-match'] === file.etag) return reply.code(304).send();
    if (file.gzip && /\bgzip\b/.test(String(request.headers['accept-encoding'] ?? ''))) {
      reply.header('Content-Encoding', 'gzip');
      return reply.send(file.gzip);
    }
    return reply.send(file.body);
  };

  const page = (request: FastifyRequest, reply: FastifyReply) => {
    if (index) return send(request, reply, index);
    reply.header('Content-Security-Policy', "default-src 'none'; frame-ancestors 'none'");
    return reply.code(503).type('text/html; charset=utf-8').send(NOT_BUILT);
  };

  // The setup link opens the panel's setup screen in a browser; the server's own form (routes/auth.ts) stays for everything else.
  app.addHook('onRequest', async (request, reply) => {
    if (index && request.method === 'GET' && request.url.split('?')[0] === '/setup' && wantsHtml(request)) {
      reply.header('Referrer-Policy', 'no-referrer');
      return send(request, reply, index);
    }
  });

  const handler = async (request: FastifyRequest, reply: FastifyReply) => {
    const urlPath = decodeURIComponentSafe(request.url.split('?')[0] ?? '/');
    // Never shadow the API: an unknown /api path is the API's 404 (JSON).
    if (urlPath === '/api' || urlPath.startsWith('/api/')) return reply.callNotFound();
    const file = urlPath === '/' ? index : files.get(urlPath);
    if (file) return send(request, reply, file);
    // A file that is not there (an old asset, a typo) is a 404, not the page.
    if (path.posix.extname(urlPath) || !wantsHtml(request)) return reply.callNotFound();
    return page(request, reply);
  };
  app.get('/', { schema: { hide: true } }, handler);
  app.get('/*', { schema: { hide: true } }, handler);
}

function decodeURIComponentSafe(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}
