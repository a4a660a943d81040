import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stowageAsync } from '../src/testing/cli.js';
import { startGitServer, type GitServer } from '../src/testing/git-server.js';
import { makeTempDir, removeDir } from '../src/testing/tmp.js';

/**
 * A Git backup point declared in stowage.yaml, through the CLI, against a real smart-HTTP server
 * (git http-backend behind Basic auth). Async CLI runs: the server lives in this process.
 */
describe('backup points through the CLI', () => {
  let git: GitServer;
  let dir: string;
  let repoUrl: string;
  beforeAll(async () => {
    git = await startGitServer({ username: 'stowage', password: 'git-password-123' });
    repoUrl = git.createRepo('app-config');
    dir = makeTempDir('stowage-points-');
    fs.mkdirSync(path.join(dir, 'app/conf'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'app/conf/settings.json'), '{"a":1}\n');
    fs.writeFileSync(path.join(dir, 'app/debug.log'), 'noise\n');
    const yaml = (password: string) => `dataDir: ./data
app: { name: pointapp, version: "1.0.0" }
sources: [{ name: files, kind: dir, path: ./app }]
points:
  - name: config-history
    source: files
    method: git
    url: ${repoUrl}
    username: stowage
    password: ${password}
    ignore: ["*.log"]
`;
    fs.writeFileSync(path.join(dir, 'stowage.yaml'), yaml('${GIT_PASSWORD}'));
  });
  afterAll(async () => {
    await git?.close();
    if (dir) removeDir(dir);
  });
  const env = { GIT_PASSWORD: 'git-password-123' };
  const cloneFiles = () => {
    const clone = path.join(dir, `clone-${Date.now()}`);
    execFileSync('git', ['clone', '-q', git.repoPath('app-config'), clone]);
    const files = execFileSync('git', ['-C', clone, 'ls-files'], { encoding: 'utf8' }).trim().split('\n');
    const count = Number(execFileSync('git', ['-C', clone, 'rev-list', '--count', 'HEAD'], { encoding: 'utf8' }).trim());
    return { clone, files, count };
  };

  it('pushes the source after a backup; a run with no change commits nothing; a change makes a commit', async () => {
    const b = await stowageAsync(dir, ['backup', '--name', 'one', '--json'], env);
    expect(b.status, b.stderr).toBe(0);
    expect(b.result?.points).toEqual([{ point: 'config-history', ok: true, message: expect.any(String) }]);
    let repo = cloneFiles();
    expect(repo.files).toEqual(['conf/settings.json']);
    expect(fs.readFileSync(path.join(repo.clone, 'conf/settings.json'), 'utf8')).toBe('{"a":1}\n');
    expect(repo.count).toBe(1);
    const again = await stowageAsync(dir, ['point', 'run', 'config-history', '--json'], env);
    expect(again.status).toBe(0);
    expect((again.result?.run as { status: string }).status).toBe('unchanged');
    fs.writeFileSync(path.join(dir, 'app/conf/settings.json'), '{"a":2}\n');
    expect((await stowageAsync(dir, ['point', 'run', 'config-history'], env)).status).toBe(0);
    repo = cloneFiles();
    expect(repo.count).toBe(2);
    const list = await stowageAsync(dir, ['point', 'list', '--json'], env);
    const points = list.result?.points as Array<{ name: string; lastRun: { status: string } }>;
    expect(points[0]).toMatchObject({ name: 'config-history', lastRun: { status: 'updated' } });
    expect(JSON.stringify(list.result)).not.toContain('git-password-123');
  });

  it('a point that cannot push is a warning: the backup completes, the failure is recorded, no secret shown', async () => {
    const b = await stowageAsync(dir, ['backup', '--name', 'two', '--json'], { GIT_PASSWORD: 'wrong-password-456' });
    expect(b.status).toBe(3);
    expect((b.result?.backup as { status: string }).status).toBe('completed');
    const points = b.result?.points as Array<{ ok: boolean; message: string }>;
    expect(points[0]?.ok).toBe(false);
    expect(points[0]?.message).toMatch(/password|credentials|auth/i);
    expect(b.stdout + b.stderr).not.toContain('wrong-password-456');
    const shown = await stowageAsync(dir, ['show-config', '--json'], env);
    expect(shown.stdout).not.toContain('git-password-123');
  });

  it('refuses a point whose source is not a dir source or whose URL is not http(s)', async () => {
    fs.writeFileSync(
      path.join(dir, 'bad.yaml'),
      `dataDir: ./data\nsources: [{ name: files, kind: dir, path: ./app }]\npoints:\n  - { name: p, source: nope, method: git, url: "ftp://example.com/x.git" }\n`,
    );
    const r = await stowageAsync(dir, ['--config', 'bad.yaml', 'point', 'list']);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/points\[0\]\.url/);
  });
});
