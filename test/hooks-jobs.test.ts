import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { stowage } from '../src/testing/cli.js';
import { oneSourceYaml, startTestServer, waitFor } from '../src/testing/server.js';
import { makeTempDir, removeDir } from '../src/testing/tmp.js';

/**
 * Command hooks around real jobs, through the CLI: the order they run in relative to the job,
 * what they see, and what their failures do to the job.
 */
let project: string;

function writeConfig(hooks: string) {
  fs.writeFileSync(
    path.join(project, 'stowage.yaml'),
    `dataDir: data
app: { name: hooked, version: "1.0.0" }
sources:
  - { name: files, kind: dir, path: ./app }
hooks:
${hooks}`,
  );
}

/** A hook that appends "<label> <env...>" to trace.log. */
const trace = (label: string, mode = 'essential') =>
  `      - command: ["sh", "-c", "echo ${label} \\"$STOWAGE_EVENT\\" \\"$STOWAGE_BACKUP_KEY\\" \\"$STOWAGE_STATUS\\" >> ../trace.log"]
        cwd: ./app
        mode: ${mode}`;

const lines = () => (fs.existsSync(path.join(project, 'trace.log')) ? fs.readFileSync(path.join(project, 'trace.log'), 'utf8').trim().split('\n').map((l) => l.trimEnd()) : []);

beforeEach(() => {
  project = makeTempDir('stowage-hooks-');
  fs.mkdirSync(path.join(project, 'app'));
  fs.writeFileSync(path.join(project, 'app/data.txt'), 'v1\n');
});
afterEach(() => removeDir(project));

describe('command hooks around jobs', () => {
  it('run before and after a backup and a restore, with the job context, in order', () => {
    writeConfig(`  beforeBackup:\n${trace('before-backup')}\n  afterBackup:\n${trace('after-backup')}\n  beforeRestore:\n${trace('before-restore')}\n  afterRestore:\n${trace('after-restore')}`);
    expect(stowage(project, ['backup', '--name', 'one', '--json']).status).toBe(0);
    expect(lines()).toEqual(['before-backup backup.before one.zip', 'after-backup backup.after one.zip completed']);
    fs.writeFileSync(path.join(project, 'app/data.txt'), 'v2\n');
    const r = stowage(project, ['restore', 'one.zip', '--yes', '--no-safety-backup', '--json']);
    expect(r.status).toBe(0);
    expect(lines().slice(2)).toEqual(['before-restore restore.before one.zip', 'after-restore restore.after one.zip completed']);
    expect(fs.readFileSync(path.join(project, 'app/data.txt'), 'utf8')).toBe('v1\n');
  });

  it('an essential beforeBackup hook that fails fails the backup with its output, listed as failed; afterBackup still runs', () => {
    writeConfig(`  beforeBackup:\n      - command: ["sh", "-c", "echo cannot flush the cache >&2; exit 3"]\n  afterBackup:\n${trace('after-backup')}`);
    const r = stowage(project, ['backup', '--name', 'two', '--json']);
    expect(r.status).toBe(1);
    expect(String(r.result?.message)).toMatch(/cannot flush the cache/);
    const list = stowage(project, ['list', '--json']);
    const backups = list.result?.backups as Array<{ key: string; status: string; statusMessage: string }>;
    expect(backups.find((b) => b.key === 'two.zip')).toMatchObject({ status: 'failed', statusMessage: expect.stringMatching(/cannot flush the cache/) });
    expect(lines()).toEqual(['after-backup backup.after two.zip failed']);
    expect(fs.existsSync(path.join(project, 'data/backups/two.zip'))).toBe(false);
  });

  it('an optional hook that fails is a warning: the backup completes and says so', () => {
    writeConfig(`  beforeBackup:\n      - command: ["false"]\n        mode: optional`);
    const r = stowage(project, ['backup', '--name', 'three', '--json']);
    expect(r.status).toBe(3);
    const backups = stowage(project, ['list', '--json']).result?.backups as Array<{ key: string; status: string; statusMessage: string }>;
    expect(backups.find((b) => b.key === 'three.zip')).toMatchObject({ status: 'completed', statusMessage: 'completed with 1 warning' });
  });

  it('an essential beforeRestore hook that fails: nothing is changed, the status says why, afterRestore starts the app again', () => {
    writeConfig(`  beforeRestore:\n      - command: ["sh", "-c", "echo app would not stop; exit 1"]\n  afterRestore:\n${trace('after-restore')}`);
    expect(stowage(project, ['backup', '--name', 'four', '--json']).status).toBe(0);
    fs.writeFileSync(path.join(project, 'app/data.txt'), 'v2\n');
    const r = stowage(project, ['restore', 'four.zip', '--yes', '--json']);
    expect(r.status).toBe(1);
    expect(String(r.result?.message)).toMatch(/app would not stop/);
    expect(fs.readFileSync(path.join(project, 'app/data.txt'), 'utf8')).toBe('v2\n');
    expect(lines()).toEqual(['after-restore restore.after four.zip failed']);
    const status = stowage(project, ['restore-status', '--json']).result as { status: { status: string; message: string } } | undefined;
    expect(JSON.stringify(status)).toMatch(/failed/);
  });

  it('restore hooks get STOWAGE_TRIGGER and STOWAGE_BACKUP_PATH, as backup hooks do', () => {
    const dump = (label: string) =>
      `      - command: ["sh", "-c", "echo ${label} \\"$STOWAGE_TRIGGER\\" \\"$STOWAGE_BACKUP_PATH\\" >> ../env.log"]
        cwd: ./app`;
    writeConfig(`  afterBackup:\n${dump('after-backup')}\n  beforeRestore:\n${dump('before-restore')}\n  afterRestore:\n${dump('after-restore')}`);
    expect(stowage(project, ['backup', '--name', 'six', '--json']).status).toBe(0);
    expect(stowage(project, ['restore', 'six.zip', '--yes', '--no-safety-backup', '--json']).status).toBe(0);
    // A FILE given by path is restored from there.
    const copy = path.join(project, 'copy-of-six.zip');
    fs.copyFileSync(path.join(project, 'data/backups/six.zip'), copy);
    expect(stowage(project, ['restore', copy, '--yes', '--no-safety-backup', '--json']).status).toBe(0);
    const env = fs.readFileSync(path.join(project, 'env.log'), 'utf8').trim().split('\n');
    expect(env.map((l) => l.replace(/"/g, '').replace(fs.realpathSync(project), '<project>'))).toEqual([
      'after-backup manual <project>/data/backups/six.zip',
      'before-restore manual <project>/data/backups/six.zip',
      'after-restore manual <project>/data/backups/six.zip',
      'before-restore manual <project>/copy-of-six.zip',
      'after-restore manual <project>/copy-of-six.zip',
    ]);
  });

  it('hooks that time out are killed and reported', () => {
    writeConfig(`  beforeBackup:\n      - command: ["sleep", "30"]\n        timeout: 300ms`);
    const r = stowage(project, ['backup', '--name', 'five', '--json']);
    expect(r.status).toBe(1);
    expect(String(r.result?.message)).toMatch(/timed out|timeout/i);
  });
});

describe('command hooks in the server', () => {
  it('a restore through the API runs its hooks with STOWAGE_TRIGGER=api, and hook output is in GET /api/jobs/{id}', async () => {
    const s = await startTestServer({
      yaml: oneSourceYaml(`hooks:
  beforeBackup:
    - command: ["sh", "-c", "echo flushing the cache for $STOWAGE_BACKUP_KEY; echo cache warning >&2"]
  beforeRestore:
    - command: ["sh", "-c", "echo stopping the app for $STOWAGE_TRIGGER $STOWAGE_BACKUP_PATH"]`),
    });
    try {
      const made = await s.request('/api/backups', { method: 'POST', token: s.adminToken, json: { name: 'hooked' } });
      expect(made.status).toBe(200);
      await waitFor(() => !s.stowage.runningJob, 30_000, 'the backup job to end');
      const r = await s.request('/api/backups/hooked.zip/restore', { method: 'POST', token: s.adminToken, json: { safetyBackup: false } });
      expect(r.status).toBe(202);
      await waitFor(async () => ((await (await s.request('/api/restore-status', { token: s.adminToken })).json()) as { status: string }).status === 'completed', 30_000, 'restore');
      await waitFor(() => !s.stowage.runningJob, 30_000, 'the restore job to end');
      const jobs = (await (await s.request('/api/jobs', { token: s.adminToken })).json()) as Array<{ id: string; kind: string; key: string | null }>;
      const job = async (kind: string) => {
        const found = jobs.find((j) => j.kind === kind && j.key === 'hooked.zip')!;
        const res = await s.request(`/api/jobs/${found.id}`, { token: s.tokenWith('backups:read') });
        expect(res.status).toBe(200);
        return (await res.json()) as { id: string; kind: string; status: string; log: string };
      };
      const backup = await job('backup');
      expect(backup.status).toBe('completed');
      expect(backup.log).toContain('beforeBackup[0] stdout: flushing the cache for hooked.zip');
      expect(backup.log).toContain('beforeBackup[0] stderr: cache warning');
      const restore = await job('restore');
      expect(restore.log).toContain(`beforeRestore[0] stdout: stopping the app for api ${path.join(s.root, 'data/backups/hooked.zip')}`);
      expect((await s.request('/api/jobs/nope', { token: s.adminToken })).status).toBe(404);

      // A factory reset's restore hooks say so.
      const reset = await s.request('/api/backups/reset-factory', { method: 'POST', token: s.adminToken, json: { confirm: 'reset' } });
      expect(reset.status).toBe(202);
      await waitFor(async () => ((await (await s.request('/api/restore-status', { token: s.adminToken })).json()) as { status: string }).status !== 'started', 30_000, 'reset');
      await waitFor(() => !s.stowage.runningJob, 30_000, 'the reset job to end');
      const resetJob = ((await (await s.request('/api/jobs', { token: s.adminToken })).json()) as Array<{ id: string; kind: string }>).find((j) => j.kind === 'reset')!;
      const resetLog = ((await (await s.request(`/api/jobs/${resetJob.id}`, { token: s.adminToken })).json()) as { log: string }).log;
      expect(resetLog).toContain('beforeRestore[0] stdout: stopping the app for factory-reset');
    } finally {
      await s.close();
    }
  });
});
