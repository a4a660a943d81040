import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { Stowage } from '../engine/stowage.js';
import { AuthService } from '../server/auth.js';
import type { Scope } from '../server/schemas.js';
import { startServer, type RunningServer } from '../server/start.js';
import { makeTempDir, removeDir, writeTree } from './tmp.js';

export const ADMIN_EMAIL = 'admin@example.com';
export const ADMIN_PASSWORD = 'correct horse battery';

export interface TestServer {
  /** http://127.0.0.1:<port> */
  url: string;
  root: string;
  stowage: Stowage;
  server: RunningServer;
  auth: AuthService;
  /** A superuser session token. */
  adminToken: string;
  /** An API token holding exactly these scopes. */
  tokenWith(...scopes: Scope[]): string;
  /** fetch against the server, with `token` as the Authorization header when given. */
  request(pathname: string, init?: RequestInit & { token?: string | null; json?: unknown }): Promise<Response>;
  /** Everything the server printed for its operator (setup link, ...). */
  notices: string[];
  close(): Promise<void>;
}

/**
 * A `stowage.yaml` for startTestServer with one folder source (app/files), `extra` sections
 * (hooks:, backups:, ...) and `server` fields added to the loopback address.
 */
export function oneSourceYaml(extra = '', server = ''): string {
  return `dataDir: ./data
app: { name: testapp, version: "1.0.0" }
sources:
  - { name: files, kind: dir, path: ./app/files }
${extra}${extra && !extra.endsWith('\n') ? '\n' : ''}server: { http: 127.0.0.1:0${server ? `, ${server}` : ''} }
`;
}

/**
 * A real server on an ephemeral loopback port, over a project with a folder source and a
 * live SQLite database, its own data folder and configuration file. Each test gets its own.
 */
export async function startTestServer(
  options: { yaml?: string; backupKey?: string; env?: Record<string, string>; logLines?: string[]; jobs?: 'thread' | 'inline'; scheduler?: boolean } = {},
): Promise<TestServer> {
  const root = makeTempDir('stowage-server-');
  writeTree(root, {
    'app/files/readme.txt': 'hello\n',
    'app/files/docs/a.json': '{"a":1}\n',
    'app/logs/app.log': 'log line\n',
  });
  const db = new Database(path.join(root, 'app/app.db'));
  db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes (body) VALUES ('one'), ('two');");
  db.close();
  fs.writeFileSync(
    path.join(root, 'stowage.yaml'),
    options.yaml ??
      `dataDir: ./data
app: { name: testapp, version: "1.0.0", labels: { model: m1, serial: S1 } }
sources:
  - { name: files, kind: dir, path: ./app/files }
  - { name: db, kind: sqlite, path: ./app/app.db }
server:
  http: 127.0.0.1:0
  maxUploadSize: 5MB
`,
  );
  const saved: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(options.env ?? {})) {
    saved[k] = process.env[k];
    process.env[k] = v;
  }
  const stowage = await Stowage.open({ configPath: path.join(root, 'stowage.yaml') });
  const notices: string[] = [];
  const logger = options.logLines ? { level: 'debug', stream: { write: (line: string) => options.logLines!.push(line) } } : false;
  // Inline by default: tests hold jobs open with library exclude hooks, which need this thread.
  const server = await startServer(stowage, { jobs: options.jobs ?? 'inline', scheduler: options.scheduler ?? false, logger, backupKey: options.backupKey ?? '', notice: (l) => notices.push(l) });
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  const auth = new AuthService(stowage.catalogue);
  if (!auth.listSuperusers().some((u) => u.email === ADMIN_EMAIL)) await auth.createSuperuser(ADMIN_EMAIL, ADMIN_PASSWORD);
  const adminToken = await auth.issueSession(auth.listSuperusers().find((u) => u.email === ADMIN_EMAIL)!);
  const url = server.url;
  return {
    url,
    root,
    stowage,
    server,
    auth,
    adminToken,
    notices,
    tokenWith: (...scopes) => auth.createApiToken(`test ${scopes.join(' ')}`, scopes).token,
    request: (pathname, init = {}) => {
      const headers = new Headers(init.headers);
      if (init.token) headers.set('Authorization', init.token);
      let body = init.body;
      if (init.json !== undefined) {
        headers.set('Content-Type', 'application/json');
        body = JSON.stringify(init.json);
      }
      return fetch(`${url}${pathname}`, { ...init, headers, body });
    },
    close: async () => {
      await server.close(); // waits for a job a test started
      stowage.close();
      removeDir(root);
    },
  };
}

/** Waits until `check` returns a truthy value (polling), or fails after `ms`. */
export async function waitFor<T>(check: () => Promise<T> | T, ms = 30_000, what = 'condition'): Promise<NonNullable<T>> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v as NonNullable<T>;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
