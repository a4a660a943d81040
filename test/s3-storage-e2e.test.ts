import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stowage } from '../src/testing/cli.js';
import { startS3Server } from '../src/testing/s3-server.js';
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

  it('wrong credentials: a clear error naming what to check, the backup listed as failed', () => {
    const bad = stowage(dir, ['backup', '--name', 'second', '--json'], { TEST_S3_KEY: s3.accessKeyId, TEST_S3_SECRET: 'wrong-secret-value' });
    expect(bad.status).toBe(1);
    expect(String(bad.result?.message)).toMatch(/secret|credential|access key/i);
    expect(bad.stdout + bad.stderr).not.toContain('wrong-secret-value');
  });
});
