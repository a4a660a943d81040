import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StowageClient } from '../src/sdk/index.js';
import { startGitServer, type GitServer } from '../src/testing/git-server.js';
import { startTestServer } from '../src/testing/server.js';
import { stowageAsync } from '../src/testing/cli.js';

/**
 * Backup points through /api/points and the SDK: the same validation as stowage.yaml, the
 * credentials sealed at rest and masked in every answer, config points read-only, runs
 * recorded, against a real Git smart-HTTP server checked with git clone.
 */
const GIT_PASSWORD = 'git-password-for-api-987';
const YAML = (repoUrl: string) => `dataDir: ./data
app: { name: testapp, version: "1.0.0" }
sources:
  - { name: files, kind: dir, path: ./app/files }
  - { name: db, kind: sqlite, path: ./app/app.db }
points:
  - { name: from-file, source: files, method: git, url: "${repoUrl}", username: stowage, password: "${GIT_PASSWORD}", afterBackup: false }
server:
  http: 127.0.0.1:0
`;

describe('backup points through the API', () => {
  let git: GitServer;
  let fileRepo: string;
  let apiRepo: string;
  beforeAll(async () => {
    git = await startGitServer({ username: 'stowage', password: GIT_PASSWORD });
    fileRepo = git.createRepo('from-file');
    apiRepo = git.createRepo('from-api');
  });
  afterAll(async () => {
    await git?.close();
  });

  const gitPoint = (over: Record<string, unknown> = {}) => ({ name: 'mirror', source: 'files', method: 'git', url: apiRepo, username: 'stowage', password: GIT_PASSWORD, ...over });

  it('creates, shows masked, changes, runs and deletes a point; the credential is sealed in the database', async () => {
    const s = await startTestServer({ yaml: YAML(fileRepo) });
    try {
      const created = await s.request('/api/points', { method: 'POST', token: s.adminToken, json: gitPoint({ ignore: ['*.json'] }) });
      expect(created.status).toBe(200);
      const body = (await created.json()) as Record<string, unknown>;
      expect(body).toMatchObject({ name: 'mirror', method: 'git', source: 'files', password: '******', origin: 'api', afterBackup: true, ignore: ['*.json'], lastRun: null });

      // Sealed at rest: neither the database nor its WAL holds the password.
      const dbFiles = fs.readdirSync(path.join(s.root, 'data')).filter((f) => f.startsWith('stowage.db'));
      expect(dbFiles.length).toBeGreaterThan(0);
      for (const f of dbFiles) expect(fs.readFileSync(path.join(s.root, 'data', f)).includes(GIT_PASSWORD), f).toBe(false);
      const row = new Database(path.join(s.root, 'data/stowage.db'), { readonly: true }).prepare("SELECT config FROM points WHERE name = 'mirror'").get() as { config: string };
      expect(JSON.parse(row.config).password).toMatch(/^sbx1:[0-9a-f]{8}:/);
      const key = fs.statSync(path.join(s.root, 'data/secret.key'));
      expect(key.mode & 0o777).toBe(0o600);

      const list = (await (await s.request('/api/points', { token: s.tokenWith('backups:read') })).json()) as Array<Record<string, unknown>>;
      expect(list.map((p) => `${p.name}:${p.origin}:${p.password}`)).toEqual(['from-file:config:******', 'mirror:api:******']);

      // A change that leaves the password out (or sends the mask back) keeps it: the run below pushes.
      const patched = await s.request('/api/points/mirror', { method: 'PATCH', token: s.adminToken, json: { ignore: [], password: '******', branch: 'main' } });
      expect(patched.status).toBe(200);
      expect(await patched.json()).toMatchObject({ ignore: [], branch: 'main', password: '******' });

      const run = await s.request('/api/points/mirror/run', { method: 'POST', token: s.tokenWith('backups:create') });
      expect(run.status).toBe(200);
      const result = (await run.json()) as { status: string; message: string; result: { commit?: string } };
      expect(result.status, result.message).toBe('updated');
      const clone = path.join(s.root, 'clone');
      execFileSync('git', ['clone', '-q', '-b', 'main', git.repoPath('from-api'), clone]);
      expect(fs.readFileSync(path.join(clone, 'docs/a.json'), 'utf8')).toBe('{"a":1}\n');
      expect(execFileSync('git', ['-C', clone, 'rev-parse', 'HEAD'], { encoding: 'utf8' }).trim()).toBe(result.result.commit);

      const again = (await (await s.request('/api/points/mirror/run', { method: 'POST', token: s.adminToken })).json()) as { status: string };
      expect(again.status).toBe('unchanged');
      const runs = (await (await s.request('/api/points/mirror/runs', { token: s.adminToken })).json()) as Array<{ status: string }>;
      expect(runs.map((r) => r.status)).toEqual(['unchanged', 'updated']);
      expect(((await (await s.request('/api/points/mirror', { token: s.adminToken })).json()) as { lastRun: { status: string } }).lastRun.status).toBe('unchanged');

      // A backup of the source runs the API point (afterBackup defaults to true), not the file one (false).
      const backup = await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: { name: 'with_points' } });
      expect(backup.status).toBe(200);
      const afterBackup = (await (await s.request('/api/points/mirror/runs', { token: s.adminToken })).json()) as Array<{ backupKey: string | null }>;
      expect(afterBackup[0]!.backupKey).toBe('with_points.zip');
      expect(((await (await s.request('/api/points/from-file/runs', { token: s.adminToken })).json()) as unknown[]).length).toBe(0);

      // The CLI, with the server's data folder, sees and runs the same point (same key file).
      // Async: the Git server lives in this process.
      const cliList = await stowageAsync(s.root, ['point', 'list', '--json']);
      expect(cliList.status).toBe(0);
      expect((cliList.result?.points as Array<{ name: string }>).map((p) => p.name)).toEqual(['from-file', 'mirror']);
      expect(cliList.stdout + cliList.stderr).not.toContain(GIT_PASSWORD);
      const cliRun = await stowageAsync(s.root, ['point', 'run', 'mirror', '--json']);
      expect(cliRun.status, cliRun.stderr).toBe(0);

      expect((await s.request('/api/points/mirror', { method: 'DELETE', token: s.adminToken })).status).toBe(204);
      expect((await s.request('/api/points/mirror', { token: s.adminToken })).status).toBe(404);
    } finally {
      await s.close();
    }
  });

  it('validates like stowage.yaml and names the field; refuses duplicates, unknown points and changes to file points', async () => {
    const s = await startTestServer({ yaml: YAML(fileRepo) });
    try {
      const post = async (json: unknown) => {
        const r = await s.request('/api/points', { method: 'POST', token: s.adminToken, json });
        return { status: r.status, body: (await r.json()) as { message: string; data: Record<string, { message: string }> } };
      };
      const ssh = await post(gitPoint({ url: 'git@github.com:me/repo.git' }));
      expect(ssh.status).toBe(400);
      expect(ssh.body.data.url?.message).toMatch(/SSH addresses .* not supported/);
      const creds = await post(gitPoint({ url: 'https://user:pw@git.example.com/me/repo.git' }));
      expect(creds.body.data.url?.message).toMatch(/must not contain credentials/);
      expect(JSON.stringify(creds.body)).not.toContain(':pw@');
      const sqlite = await post(gitPoint({ source: 'db' }));
      expect(sqlite.body.data.source?.message).toMatch(/"db" is a sqlite source/);
      const missing = await post(gitPoint({ source: 'nope' }));
      expect(missing.body.data.source?.message).toMatch(/no source named "nope"/);
      const zip = await post({ name: 's3zip', source: 'files', method: 's3', url: 'https://s3.eu-north-1.amazonaws.com/bucket/folder', archive: true });
      expect(zip.body.data.url?.message).toMatch(/must end in \.zip/);
      const badName = await post(gitPoint({ name: 'Bad Name' }));
      expect(badName.body.data.name?.message).toMatch(/1-64 characters/);
      const unknownField = await post(gitPoint({ colour: 'red' }));
      expect(unknownField.status).toBe(400);

      expect((await post(gitPoint())).status).toBe(200);
      const dup = await post(gitPoint());
      expect(dup.status).toBe(400);
      expect(dup.body.data.name?.message).toMatch(/already used/);
      const dupFile = await post(gitPoint({ name: 'from-file' }));
      expect(dupFile.status).toBe(400);

      const patchFile = await s.request('/api/points/from-file', { method: 'PATCH', token: s.adminToken, json: { branch: 'x' } });
      expect(patchFile.status).toBe(409);
      expect(((await patchFile.json()) as { message: string }).message).toMatch(/declared in stowage.yaml/);
      expect((await s.request('/api/points/from-file', { method: 'DELETE', token: s.adminToken })).status).toBe(409);
      expect((await s.request('/api/points/nope', { method: 'PATCH', token: s.adminToken, json: { branch: 'x' } })).status).toBe(404);
      expect((await s.request('/api/points/nope/run', { method: 'POST', token: s.adminToken })).status).toBe(404);
      const badPatch = await s.request('/api/points/mirror', { method: 'PATCH', token: s.adminToken, json: { url: 'ftp://x/y' } });
      expect(badPatch.status).toBe(400);
      expect(((await badPatch.json()) as { data: Record<string, unknown> }).data).toHaveProperty('url');
    } finally {
      await s.close();
    }
  });

  it('a point that cannot push is a run with status failed and a reason, without the secret', async () => {
    const s = await startTestServer({ yaml: YAML(fileRepo) });
    try {
      await s.request('/api/points', { method: 'POST', token: s.adminToken, json: gitPoint({ password: 'a-wrong-password-42' }) });
      const run = (await (await s.request('/api/points/mirror/run', { method: 'POST', token: s.adminToken })).json()) as { status: string; message: string };
      expect(run.status).toBe('failed');
      expect(run.message).toMatch(/credentials|password|authentication/i);
      expect(run.message).not.toContain('a-wrong-password-42');
    } finally {
      await s.close();
    }
  });

  it('guards every route by scope, and the SDK reads and runs points', async () => {
    const s = await startTestServer({ yaml: YAML(fileRepo) });
    try {
      const routes: Array<[string, string, string, unknown?]> = [
        ['GET', '/api/points', 'backups:read'],
        ['GET', '/api/points/from-file', 'backups:read'],
        ['GET', '/api/points/from-file/runs', 'backups:read'],
        ['POST', '/api/points', 'settings', gitPoint()],
        ['PATCH', '/api/points/from-file', 'settings', { branch: 'x' }],
        ['DELETE', '/api/points/from-file', 'settings'],
        ['POST', '/api/points/from-file/run', 'backups:create'],
      ];
      for (const [method, url, scope, json] of routes) {
        expect((await s.request(url, { method, json })).status, `${method} ${url} without auth`).toBe(401);
        const other = scope === 'backups:read' ? 'backups:delete' : 'backups:read';
        expect((await s.request(url, { method, json, token: s.tokenWith(other as 'backups:read') })).status, `${method} ${url} without ${scope}`).toBe(403);
      }

      const client = new StowageClient(s.url, { token: s.tokenWith('backups:read', 'backups:create', 'settings') });
      const created = await client.points.create(gitPoint({ name: 'sdk-point' }) as never);
      expect(created.password).toBe('******');
      expect((await client.points.list()).map((p) => p.name)).toEqual(['from-file', 'sdk-point']);
      const run = await client.points.run('from-file');
      expect(run.status, run.message).toBe('updated');
      expect((await client.points.runs('from-file')).length).toBe(1);
      await expect(client.points.update('from-file', { branch: 'x' })).rejects.toMatchObject({ status: 409 });
      await client.points.delete('sdk-point');
      await expect(client.points.get('sdk-point')).rejects.toMatchObject({ status: 404 });
    } finally {
      await s.close();
    }
  });
});
