import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CLI, stowage } from '../src/testing/cli.js';
import { makeTempDir, removeDir } from '../src/testing/tmp.js';

/** `stowage serve` as a real process (what `npm start` runs), with the CLI managing its users. */
describe('stowage serve, superuser and token commands', () => {
  const dirs: string[] = [];
  const children: ChildProcess[] = [];
  afterEach(() => {
    for (const c of children.splice(0)) c.kill('SIGKILL');
    for (const d of dirs.splice(0)) removeDir(d);
  });

  /** Starts `stowage serve --http 127.0.0.1:0` in `cwd` and resolves with its URL and output. */
  async function serve(cwd: string, env: NodeJS.ProcessEnv = {}, args = ['--http', '127.0.0.1:0']): Promise<{ url: string; child: ChildProcess; output: () => string }> {
    const child = spawn(process.execPath, [CLI, 'serve', ...args], { cwd, env: { ...process.env, ...env } });
    children.push(child);
    let output = '';
    child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setInterval(() => {
        const m = /Stowage (http:\/\/127\.0\.0\.1:\d+)/.exec(output);
        if (m) {
          clearInterval(timer);
          resolve(m[1]!);
        }
      }, 50);
      child.on('exit', (code) => {
        clearInterval(timer);
        reject(new Error(`serve exited with ${code}: ${output}`));
      });
    });
    return { url, child, output: () => output };
  }

  it('with no configuration: serves the demo application, says so, and prints a setup link', async () => {
    const dir = makeTempDir();
    dirs.push(dir);
    const { url, output } = await serve(dir);
    const health = (await (await fetch(`${url}/api/health`)).json()) as { demo: { enabled: boolean; message: string } };
    expect(health.demo.enabled).toBe(true);
    expect(health.demo.message).toContain('stowage init');
    expect(fs.existsSync(path.join(dir, 'stowage-data/demo-app/data.db'))).toBe(true);
    expect(output()).toMatch(/\/setup\?token=[A-Za-z0-9_-]{20,}/);
    expect(output()).toContain('demo application');
  });

  it('manages superusers and tokens while the server is stopped, and the server accepts them; SIGTERM stops it cleanly', async () => {
    const dir = makeTempDir();
    dirs.push(dir);
    const short = stowage(dir, ['superuser', 'create', 'me@example.com', 'short', '--json']);
    expect(short.status).toBe(2);
    expect(String(short.result?.message)).toMatch(/at least 10 characters/);
    const created = stowage(dir, ['superuser', 'create', 'me@example.com', '--json'], {}, 'first password 1\n');
    expect(created.status).toBe(0);
    expect(JSON.stringify(created.result)).not.toContain('first password 1');
    expect(stowage(dir, ['superuser', 'create', 'me@example.com', 'another password'], {}).status).toBe(2);
    expect(stowage(dir, ['superuser', 'update', 'me@example.com', '--json'], {}, 'second password 2\n').status).toBe(0);
    const list = stowage(dir, ['superuser', 'list', '--json']);
    expect((list.result?.superusers as Array<{ email: string }>).map((u) => u.email)).toEqual(['me@example.com']);
    const token = stowage(dir, ['token', 'create', 'monitor', '--scope', 'backups:read', '--json']);
    expect(token.status).toBe(0);
    const secret = String(token.result?.token);
    expect(secret).toMatch(/^stw_/);
    const badScope = stowage(dir, ['token', 'create', 'x', '--scope', 'everything']);
    expect(badScope.status).toBe(2);
    expect(badScope.stderr).toMatch(/unknown scope everything/);
    expect(stowage(dir, ['token', 'list']).stdout).toContain('monitor');
    expect(stowage(dir, ['token', 'list']).stdout).not.toContain(secret);

    const { url, child, output } = await serve(dir);
    expect(output()).not.toContain('/setup?token='); // a superuser exists
    const login = await fetch(`${url}/api/collections/_superusers/auth-with-password`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ identity: 'me@example.com', password: 'second password 2' }),
    });
    expect(login.status).toBe(200);
    expect((await fetch(`${url}/api/backups`, { headers: { Authorization: secret } })).status).toBe(200);
    expect((await fetch(`${url}/api/backups`, { method: 'POST', headers: { Authorization: secret } })).status).toBe(403);
    // Revoked from the CLI while the server runs: refused at once.
    const id = String((token.result?.record as { id: string }).id);
    expect(stowage(dir, ['token', 'revoke', id]).status).toBe(0);
    expect((await fetch(`${url}/api/backups`, { headers: { Authorization: secret } })).status).toBe(401);
    expect(stowage(dir, ['superuser', 'delete', 'me@example.com']).status).toBe(0);
    const session = ((await login.json()) as { token: string }).token;
    expect((await fetch(`${url}/api/backups`, { headers: { Authorization: session } })).status).toBe(401);

    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });

  it('serves CORS headers only for configured origins', async () => {
    const dir = makeTempDir();
    dirs.push(dir);
    fs.mkdirSync(path.join(dir, 'data'));
    fs.writeFileSync(
      path.join(dir, 'stowage.yaml'),
      'sources: [{ name: files, kind: dir, path: ./data }]\nserver: { corsOrigins: ["https://admin.example.com"] }\n',
    );
    const { url } = await serve(dir);
    const allowed = await fetch(`${url}/api/health`, { headers: { Origin: 'https://admin.example.com' } });
    expect(allowed.headers.get('access-control-allow-origin')).toBe('https://admin.example.com');
    const other = await fetch(`${url}/api/health`, { headers: { Origin: 'https://evil.example.com' } });
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('listens where STOWAGE_HTTP says when --http is not given, over server.http; --http wins over both', async () => {
    const dir = makeTempDir();
    dirs.push(dir);
    fs.mkdirSync(path.join(dir, 'data'));
    // 192.0.2.1 (TEST-NET) is no address of this machine: listening there would fail.
    fs.writeFileSync(path.join(dir, 'stowage.yaml'), 'sources: [{ name: files, kind: dir, path: ./data }]\nserver: { http: "192.0.2.1:8090" }\n');
    const fromEnv = await serve(dir, { STOWAGE_HTTP: '127.0.0.1:0' }, []);
    expect((await fetch(`${fromEnv.url}/api/health`)).status).toBe(200);
    fromEnv.child.kill('SIGTERM');
    const fromFlag = await serve(dir, { STOWAGE_HTTP: '192.0.2.1:1' });
    expect((await fetch(`${fromFlag.url}/api/health`)).status).toBe(200);
  });

  it('listens on 127.0.0.1:8090 by default, with or without a configuration file (loopback only)', async () => {
    const { listenAddress } = await import('../src/server/start.js');
    const { defaultConfig, loadConfigFile } = await import('../src/config/load.js');
    const dir = makeTempDir();
    dirs.push(dir);
    fs.mkdirSync(path.join(dir, 'data'));
    fs.writeFileSync(path.join(dir, 'stowage.yaml'), 'sources: [{ name: files, kind: dir, path: ./data }]\n');
    const fromFile = loadConfigFile(path.join(dir, 'stowage.yaml'), {});
    expect(fromFile.server.http).toBe('127.0.0.1:8090');
    expect(listenAddress(undefined, {}, fromFile)).toEqual({ host: '127.0.0.1', port: 8090 });
    expect(listenAddress(undefined, {}, defaultConfig(dir, {}))).toEqual({ host: '127.0.0.1', port: 8090 });
    // An empty STOWAGE_HTTP (a compose file's "STOWAGE_HTTP=") is no setting.
    expect(listenAddress(undefined, { STOWAGE_HTTP: '' }, fromFile)).toEqual({ host: '127.0.0.1', port: 8090 });
    expect(listenAddress(undefined, { STOWAGE_HTTP: '0.0.0.0:9000' }, fromFile)).toEqual({ host: '0.0.0.0', port: 9000 });
    expect(listenAddress('[::1]:9001', { STOWAGE_HTTP: '0.0.0.0:9000' }, fromFile)).toEqual({ host: '::1', port: 9001 });
  });

  it('refuses a bad --http address with a clear message', () => {
    const dir = makeTempDir();
    dirs.push(dir);
    const r = stowage(dir, ['serve', '--http', 'localhost']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/host:port/);
  });
});
