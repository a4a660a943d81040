import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stowage } from '../src/testing/cli.js';
import { rcloneFor, startS3Server } from '../src/testing/s3-server.js';
import { makeTempDir, removeDir, run } from '../src/testing/tmp.js';

/** `storage: { type: s3 }` through the CLI, against a real S3 server that checks signatures. */
describe('backups kept in S3', () => {
  let s3: Awaited<ReturnType<typeof startS3Server>>;
  let dir: string;
  beforeAll(async () => {
    s3 = await startS3Server({ buckets: ['stowage-e2e'] });
    dir = makeTempDir('stowage-s3e2e-');
    fs.mkdirSync(path.join(dir, 'app/nested'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'app/a.txt'), 'alpha\n');
    fs.writeFileSync(path.join(dir, 'app/nested/b.bin'), Buffer.alloc(300_000, 7));
    fs.writeFileSync(
      path.join(dir, 'stowage.yaml'),
      `dataDir: ./data
app: { name: s3app, version: "1.0.0" }
sources: [{ name: files, kind: dir, path: ./app }]
storage:
  type: s3
  bucket: stowage-e2e
  prefix: backups/
  region: ${s3.region}
  endpoint: ${s3.endpoint}
  forcePathStyle: true
  accessKeyId: \${TEST_S3_KEY}
  secretAccessKey: \${TEST_S3_SECRET}
`,
    );
  });
  afterAll(async () => {
    await s3?.stop();
    if (dir) removeDir(dir);
  });
  const env = () => ({ TEST_S3_KEY: s3.accessKeyId, TEST_S3_SECRET: s3.secretAccessKey });

  it('backs up into the bucket, lists, verifies, restores, and never shows the secret', () => {
    const b = stowage(dir, ['backup', '--name', 'first', '--json'], env());
    expect(b.status, b.stderr).toBe(0);
    expect(fs.existsSync(path.join(dir, 'data/backups/first.zip'))).toBe(false); // not kept locally
    const list = stowage(dir, ['list', '--json'], env());
    expect((list.result?.backups as Array<{ key: string; status: string }>).map((x) => `${x.key}:${x.status}`)).toEqual(['first.zip:completed']);
    expect(stowage(dir, ['verify', 'first.zip', '--json'], env()).status).toBe(0);
    fs.writeFileSync(path.join(dir, 'app/a.txt'), 'changed\n');
    const r = stowage(dir, ['restore', 'first.zip', '--yes', '--no-safety-backup', '--json'], env());
    expect(r.status, r.stderr).toBe(0);
    expect(fs.readFileSync(path.join(dir, 'app/a.txt'), 'utf8')).toBe('alpha\n');
    const shown = stowage(dir, ['show-config', '--json'], env());
    expect(shown.stdout).not.toContain(s3.secretAccessKey);
    expect(shown.stdout).toContain('******');
    // No temporary download left behind.
    const tmp = path.join(dir, 'data/tmp');
    expect(fs.existsSync(tmp) ? fs.readdirSync(tmp) : []).toEqual([]);
    if (run('sh', ['-c', 'command -v unzip']).status === 0) expect(b.result).toBeTruthy();
  });

  it('a backup deleted from the bucket behind Stowage\'s back is listed as failed, saying where it was', () => {
    const b = stowage(dir, ['backup', '--name', 'doomed', '--json'], env());
    expect(b.status, b.stderr).toBe(0);
    rcloneFor(s3)(['deletefile', 't:stowage-e2e/backups/doomed.zip']);
    const list = stowage(dir, ['list', '--json'], env());
    expect(list.status, list.stderr).toBe(0);
    const doomed = (list.result?.backups as Array<{ key: string; status: string; statusMessage: string }>).find((x) => x.key === 'doomed.zip');
    expect(doomed?.status).toBe('failed');
    expect(doomed?.statusMessage).toBe(`the archive is no longer in S3 bucket stowage-e2e/backups/ at ${s3.endpoint} (deleted outside Stowage?)`);
    expect(stowage(dir, ['delete', 'doomed.zip', '--json'], env()).status).toBe(0);
  });

  it('wrong credentials: the archive is kept locally, listed as uploading with a reason naming what to check, never the secret', () => {
    const bad = stowage(dir, ['backup', '--name', 'second', '--json'], { TEST_S3_KEY: s3.accessKeyId, TEST_S3_SECRET: 'wrong-secret-value', STOWAGE_PUSH_RETRY_DELAYS: '' });
    expect(bad.status, bad.stderr).toBe(3);
    const backup = bad.result?.backup as { status: string; statusMessage: string };
    expect(backup.status).toBe('uploading');
    expect(backup.statusMessage).toMatch(/secret|credential|access key/i);
    expect(backup.statusMessage).toMatch(/retry-uploads/);
    expect(bad.stdout + bad.stderr).not.toContain('wrong-secret-value');
    expect(fs.existsSync(path.join(dir, 'data/outbox/second.zip'))).toBe(true);
    // With the right credentials, the next command uploads it.
    const retried = stowage(dir, ['retry-uploads', '--json'], env());
    expect(retried.status, retried.stderr).toBe(0);
    expect(retried.result?.pushed).toEqual(['second.zip']);
    expect(fs.existsSync(path.join(dir, 'data/outbox/second.zip'))).toBe(false);
    const list = stowage(dir, ['list', '--json'], env());
    expect((list.result?.backups as Array<{ key: string; status: string }>).map((x) => `${x.key}:${x.status}`)).toEqual(['second.zip:completed', 'first.zip:completed']);
  });
});

/** S3 that is down during a backup: the backup is never lost, and reaches the bucket later. */
describe('an S3 outage during a backup', () => {
  let s3: Awaited<ReturnType<typeof startS3Server>>;
  let s3Dir: string;
  let dir: string;
  beforeAll(async () => {
    s3Dir = makeTempDir('stowage-s3data-');
    s3 = await startS3Server({ buckets: ['outage'], directory: s3Dir });
    dir = makeTempDir('stowage-s3outage-');
    fs.mkdirSync(path.join(dir, 'app'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'app/a.txt'), 'alpha\n');
  });
  afterAll(async () => {
    await s3?.stop();
    removeDir(s3Dir);
    if (dir) removeDir(dir);
  });
  const writeConfig = () =>
    fs.writeFileSync(
      path.join(dir, 'stowage.yaml'),
      `dataDir: ./data
app: { name: outage, version: "1.0.0" }
sources: [{ name: files, kind: dir, path: ./app }]
storage: { type: s3, bucket: outage, region: ${s3.region}, endpoint: ${s3.endpoint}, forcePathStyle: true, accessKeyId: ${s3.accessKeyId}, secretAccessKey: ${s3.secretAccessKey} }
`,
    );
  const env = { STOWAGE_PUSH_RETRY_DELAYS: '50,50' };
  // What the S3 server itself stores (s3rver keeps each object as <key>._S3rver_object).
  const bucketKeys = () => fs.readdirSync(path.join(s3Dir, 'outage')).filter((n) => n.endsWith('.zip._S3rver_object')).map((n) => n.replace(/\._S3rver_object$/, '')).sort();

  it('keeps the archive, lists it as uploading, restores from it, and uploads it once S3 is back', async () => {
    writeConfig();
    const ok = stowage(dir, ['backup', '--name', 'before', '--json'], env);
    expect(ok.status, ok.stderr).toBe(0);
    expect((ok.result?.backup as { status: string }).status).toBe('completed');
    expect(fs.readdirSync(path.join(dir, 'data/outbox'))).toEqual([]);

    await s3.kill();
    const down = stowage(dir, ['backup', '--name', 'during', '--json'], env);
    expect(down.status, down.stderr).toBe(3);
    const during = down.result?.backup as { status: string; statusMessage: string };
    expect(during.status).toBe('uploading');
    expect(during.statusMessage).toMatch(/failed after 3 attempts/);
    expect(during.statusMessage).toContain(path.join(dir, 'data/outbox/during.zip'));
    const events = down.lines.filter((l) => l.type === 'progress').map((l) => l.phase);
    expect(events).toContain('uploading');

    // Listing falls back to the catalogue and says why (exit 3); the local copy is verified and
    // restored meanwhile.
    const list = stowage(dir, ['list', '--json'], env);
    expect(list.status, list.stderr).toBe(3);
    expect(String(list.result?.storageUnreachable)).toMatch(/could not reach .*ECONNREFUSED/);
    expect((list.result?.backups as Array<{ key: string; status: string }>).map((b) => `${b.key}:${b.status}`)).toEqual(['during.zip:uploading', 'before.zip:completed']);
    const text = stowage(dir, ['list'], env);
    expect(text.status).toBe(3);
    expect(text.stderr).toMatch(/warning: .*could not reach[\s\S]*Listed from the catalogue/);
    expect(text.stdout).toMatch(/during\.zip[\s\S]*before\.zip/);
    expect(stowage(dir, ['verify', 'during.zip', '--json'], env).status).toBe(0);
    fs.writeFileSync(path.join(dir, 'app/a.txt'), 'changed\n');
    const restored = stowage(dir, ['restore', 'during.zip', '--yes', '--no-safety-backup', '--json'], env);
    expect(restored.status, restored.stderr).toBe(0);
    expect(fs.readFileSync(path.join(dir, 'app/a.txt'), 'utf8')).toBe('alpha\n');
    const stillDown = stowage(dir, ['retry-uploads', '--json'], env);
    expect(stillDown.status).toBe(1);
    expect((stillDown.result?.failed as Array<{ key: string }>).map((f) => f.key)).toEqual(['during.zip']);

    // S3 is back (same data, a new port): the next backup uploads itself and the one left behind.
    s3 = await startS3Server({ buckets: [], directory: s3Dir, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
    writeConfig();
    const waiting = stowage(dir, ['list', '--json'], env);
    expect((waiting.result?.backups as Array<{ key: string; status: string }>).map((b) => `${b.key}:${b.status}`)).toEqual(['during.zip:uploading', 'before.zip:completed']);
    const after = stowage(dir, ['backup', '--name', 'after', '--json'], env);
    expect(after.status, after.stderr).toBe(0);
    expect(bucketKeys()).toEqual(['after.zip', 'before.zip', 'during.zip']);
    expect(fs.readdirSync(path.join(dir, 'data/outbox'))).toEqual([]);
    const final = stowage(dir, ['list', '--json'], env);
    expect((final.result?.backups as Array<{ key: string; status: string }>).map((b) => `${b.key}:${b.status}`).sort()).toEqual(['after.zip:completed', 'before.zip:completed', 'during.zip:completed']);
  });
});
