import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { timingSafeEqual } from 'node:crypto';
import { makeTempDir, removeDir } from './tmp.js';

/** One request the server saw, for assertions (the Authorization header is never kept). */
export interface GitServerRequest {
  method: string;
  path: string;
  query: string;
  /** 401: no or wrong credentials; otherwise what `git http-backend` answered. */
  status: number;
  user: string | null;
}

export interface GitServer {
  /** http://127.0.0.1:<port> */
  url: string;
  /** The folder holding the bare repositories (GIT_PROJECT_ROOT). */
  root: string;
  requests: GitServerRequest[];
  /** Creates `<name>.git` as a bare repository accepting pushes; returns its URL. */
  createRepo(name: string, options?: { defaultBranch?: string }): string;
  /** The absolute path of a repository on disk, for inspection with `git -C`. */
  repoPath(name: string): string;
  /**
   * Runs before each authenticated request reaches git (the request waits for it): lets a test
   * change a repository between a client's fetch and its push.
   */
  beforeBackend: ((request: GitServerRequest) => Promise<void> | void) | null;
  close(): Promise<void>;
}

/** A clean environment for git on the server side: no user or system configuration. */
function serverGitEnv(home: string): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, XDG_CONFIG_HOME: home, GIT_CONFIG_NOSYSTEM: '1', LC_ALL: 'C' };
}

/**
 * A real Git smart-HTTP server on an ephemeral loopback port: every request runs
 * `git http-backend` as a CGI program, behind HTTP Basic authentication when credentials are
 * given (a wrong or missing password gets 401 with WWW-Authenticate, so a client asks its
 * askpass helper, exactly as with a hosted forge). Test-only.
 */
export async function startGitServer(options: { username?: string; password?: string } = {}): Promise<GitServer> {
  const root = makeTempDir('stowage-git-server-');
  const home = path.join(root, '.home');
  const projects = path.join(root, 'repos');
  fs.mkdirSync(home);
  fs.mkdirSync(projects);
  const env = serverGitEnv(home);
  const requests: GitServerRequest[] = [];
  const auth = options.password !== undefined || options.username !== undefined;

  const checkAuth = (header: string | undefined): string | null => {
    if (!header?.startsWith('Basic ')) return null;
    const decoded = Buffer.from(header.slice(6), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return null;
    const user = decoded.slice(0, colon);
    const pass = decoded.slice(colon + 1);
    const same = (a: string, b: string): boolean => {
      const x = Buffer.from(a);
      const y = Buffer.from(b);
      return x.length === y.length && timingSafeEqual(x, y);
    };
    return same(user, options.username ?? '') && same(pass, options.password ?? '') ? user : null;
  };

  const server = http.createServer((req, res) => {
    void handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain' });
      res.end(String(err));
    });
  });
  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const record: GitServerRequest = { method: req.method ?? 'GET', path: decodeURIComponent(url.pathname), query: url.search.slice(1), status: 0, user: null };
    requests.push(record);
    let user: string | null = null;
    if (auth) {
      user = checkAuth(req.headers.authorization);
      if (user === null) {
        record.status = 401;
        req.resume();
        res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="stowage-test-git"', 'Content-Type': 'text/plain' });
        res.end('authentication required\n');
        return;
      }
      record.user = user;
    }
    await api.beforeBackend?.(record);
    const cgiEnv: NodeJS.ProcessEnv = {
      ...env,
      GIT_PROJECT_ROOT: projects,
      GIT_HTTP_EXPORT_ALL: '1',
      GATEWAY_INTERFACE: 'CGI/1.1',
      SERVER_PROTOCOL: 'HTTP/1.1',
      REQUEST_METHOD: record.method,
      PATH_INFO: record.path,
      QUERY_STRING: record.query,
      CONTENT_TYPE: req.headers['content-type'] ?? '',
      REMOTE_ADDR: req.socket.remoteAddress ?? '127.0.0.1',
      REMOTE_USER: user ?? '',
    };
    if (req.headers['content-length'] !== undefined) cgiEnv.CONTENT_LENGTH = req.headers['content-length'];
    if (req.headers['content-encoding'] !== undefined) cgiEnv.HTTP_CONTENT_ENCODING = req.headers['content-encoding'];
    const gitProtocol = req.headers['git-protocol'];
    if (typeof gitProtocol === 'string') cgiEnv.GIT_PROTOCOL = gitProtocol;

    const child = spawn('git', ['http-backend'], { env: cgiEnv, stdio: ['pipe', 'pipe', 'pipe'] });
    req.pipe(child.stdin);
    child.stdin.on('error', () => {});
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));

    // The CGI response: header lines, a blank line, then the body.
    let head = Buffer.alloc(0);
    let headersSent = false;
    const onData = (chunk: Buffer): void => {
      if (headersSent) {
        res.write(chunk);
        return;
      }
      head = Buffer.concat([head, chunk]);
      let end = head.indexOf('\r\n\r\n');
      let sep = 4;
      if (end < 0) {
        end = head.indexOf('\n\n');
        sep = 2;
      }
      if (end < 0) return;
      let status = 200;
      const headers: Record<string, string> = {};
      for (const line of head.subarray(0, end).toString('latin1').split(/\r?\n/)) {
        const colon = line.indexOf(':');
        if (colon <= 0) continue;
        const name = line.slice(0, colon).trim();
        const value = line.slice(colon + 1).trim();
        if (name.toLowerCase() === 'status') status = Number.parseInt(value, 10) || 500;
        else headers[name] = value;
      }
      record.status = status;
      res.writeHead(status, headers);
      headersSent = true;
      const rest = head.subarray(end + sep);
      if (rest.length) res.write(rest);
    };
    child.stdout.on('data', onData);
    child.on('error', (err) => {
      if (!res.headersSent) res.writeHead(500).end(String(err));
    });
    child.on('close', (code) => {
      if (!headersSent) {
        record.status = 500;
        res.writeHead(500, { 'Content-Type': 'text/plain' });
        res.end(`git http-backend exited ${code}: ${stderr}`);
        return;
      }
      res.end();
    });
  };

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const base = `http://127.0.0.1:${port}`;

  const repoPath = (name: string): string => path.join(projects, `${name}.git`);
  const git = (args: string[]): void => {
    const r = spawnSync('git', args, { env, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`git ${args.join(' ')} failed: ${r.stderr}`);
  };

  const api: GitServer = {
    beforeBackend: null,
    url: base,
    root: projects,
    requests,
    repoPath,
    createRepo(name, repoOptions = {}) {
      const dir = repoPath(name);
      git(['init', '--quiet', '--bare', `--initial-branch=${repoOptions.defaultBranch ?? 'main'}`, dir]);
      git(['-C', dir, 'config', 'http.receivepack', 'true']);
      return `${base}/${name}.git`;
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      removeDir(root);
    },
  };
  return api;
}
