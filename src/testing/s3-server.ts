import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import { createRequire } from 'node:module';
import path from 'node:path';
import { makeTempDir, removeDir } from './tmp.js';

/**
 * A real S3-protocol server for tests: @20minutes/s3rver (the maintained fork of s3rver, which
 * verifies AWS signature V4 and decodes aws-chunked bodies) in a child process on an ephemeral
 * loopback port, storing objects under a temporary folder. A child process, so a test can kill it
 * with SIGKILL mid-upload like a real outage, and s3rver's global account registry stays per
 * server.
 *
 * What it does not implement, and S3Storage therefore tolerates: conditional writes
 * (`If-None-Match` is ignored), ListMultipartUploads (501) and AbortMultipartUpload (405).
 */
export interface S3TestServer {
  /** http://127.0.0.1:<port> */
  endpoint: string;
  port: number;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Where the server keeps buckets and objects. */
  directory: string;
  /** SIGKILL: the server dies at once, connections are reset. */
  kill(): Promise<void>;
  /** Stops the server (and removes its folder unless it was given). */
  stop(): Promise<void>;
}

export interface S3TestServerOptions {
  /** Buckets that exist from the start. */
  buckets?: string[];
  /** Reuse a folder (a restart after kill()); it is then not removed by stop(). */
  directory?: string;
  credentials?: { accessKeyId: string; secretAccessKey: string };
}

/**
 * Runs inside the child. Adjustments to s3rver, all about the test server, never the client:
 * - the fixed S3RVER/S3RVER key pair is replaced by the test's own;
 * - a bucket-level request sent path-style as `/<bucket>/` (as the AWS SDK and rclone send
 *   ListObjects) is signed over that exact path, which s3rver canonicalises as `/<bucket>` and
 *   refuses as a signature mismatch; the signature is still checked in full;
 * - `Range: bytes=0-0` is one byte (s3rver takes the end 0 for "no end" and sends everything);
 * - the child runs with --openssl-legacy-provider: s3rver encrypts its ListObjectsV2
 *   continuation tokens with DES, which OpenSSL 3 only has there (without it, every truncated
 *   listing is a 500).
 */
const CHILD_SOURCE = `
const { createRequire } = require('node:module');
const pkg = process.env.S3RVER_PACKAGE;
const req = createRequire(pkg + '/');
const S3rver = req(pkg);
const v4 = req(pkg + '/lib/signature/v4.js');
const Account = req(pkg + '/lib/models/account.js');
const settings = JSON.parse(process.env.S3RVER_SETTINGS);
const rawPaths = new WeakMap();
const getStringToSign = v4.getStringToSign;
v4.getStringToSign = (canonical, request) => {
  const raw = rawPaths.get(canonical.headers);
  if (raw && /^\\/[^/]+\\/$/.test(raw) && canonical.uri + '/' === raw) canonical = { ...canonical, uri: raw };
  return getStringToSign(canonical, request);
};
const Store = req(pkg + '/lib/stores/filesystem.js');
const getObject = Store.prototype.getObject;
Store.prototype.getObject = function (bucket, key, options) {
  // A Number object is truthy where s3rver tests the end, and 0 where it computes with it.
  if (options && options.end === 0) options = { ...options, end: new Number(0) };
  return getObject.call(this, bucket, key, options);
};
Account.DUMMY_ACCOUNT.revokeAccessKey('S3RVER');
Account.DUMMY_ACCOUNT.createKeyPair(settings.accessKeyId, settings.secretAccessKey);
const server = new S3rver({
  address: '127.0.0.1', port: 0, silent: true, vhostBuckets: false,
  directory: settings.directory, configureBuckets: settings.buckets.map((name) => ({ name })),
});
server.middleware.unshift(async (ctx, next) => { rawPaths.set(ctx.req.headers, ctx.path); await next(); });
server.run().then((address) => process.stdout.write(JSON.stringify({ port: address.port }) + '\\n'), (err) => { console.error(err); process.exit(1); });
// The test runner died: do not outlive it.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
`;

function s3rverPackageDir(): string {
  const require = createRequire(import.meta.url);
  return path.dirname(require.resolve('@20minutes/s3rver/package.json'));
}

export async function startS3Server(options: S3TestServerOptions = {}): Promise<S3TestServer> {
  const ownDirectory = options.directory === undefined;
  const directory = options.directory ?? makeTempDir('stowage-s3-');
  const credentials = options.credentials
    ? { accessKeyId: options.credentials.accessKeyId, secretAccessKey: options.credentials.secretAccessKey }
    : { accessKeyId: `TEST${crypto.randomBytes(8).toString('hex').toUpperCase()}`, secretAccessKey: crypto.randomBytes(20).toString('base64url') };
  const child = spawn(process.execPath, ['--openssl-legacy-provider', '-e', CHILD_SOURCE], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: {
      PATH: process.env.PATH ?? '',
      S3RVER_PACKAGE: s3rverPackageDir(),
      S3RVER_SETTINGS: JSON.stringify({ directory, buckets: options.buckets ?? [], ...credentials }),
    },
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const line = out.split('\n')[0];
      if (out.includes('\n') && line) resolve((JSON.parse(line) as { port: number }).port);
    });
    child.once('exit', (code) => reject(new Error(`the S3 test server exited (${code}) before listening: ${stderr}`)));
    child.once('error', reject);
  });
  const exited = new Promise<void>((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', () => resolve())));
  const end = async (signal: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    await exited;
  };
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    region: 'us-east-1',
    ...credentials,
    directory,
    kill: () => end('SIGKILL'),
    stop: async () => {
      await end('SIGTERM');
      if (ownDirectory) removeDir(directory);
    },
  };
}

/**
 * rclone (an independent S3 client) against `server`, as a judge of what Stowage wrote: returns
 * its stdout; the remote is named `t:`. Only what rclone needs is in its environment: CA bundle
 * variables of the machine (AWS_CA_BUNDLE) break its plain-HTTP client.
 */
export function rcloneFor(server: S3TestServer): (args: string[]) => Buffer {
  const env = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    RCLONE_CONFIG: '/dev/null',
    RCLONE_CONFIG_T_TYPE: 's3',
    RCLONE_CONFIG_T_PROVIDER: 'Other',
    RCLONE_CONFIG_T_ENDPOINT: server.endpoint,
    RCLONE_CONFIG_T_REGION: server.region,
    RCLONE_CONFIG_T_ACCESS_KEY_ID: server.accessKeyId,
    RCLONE_CONFIG_T_SECRET_ACCESS_KEY: server.secretAccessKey,
    RCLONE_CONFIG_T_FORCE_PATH_STYLE: 'true',
  };
  return (args) => {
    const r = spawnSync('rclone', args, { env, maxBuffer: 64 * 1024 * 1024 });
    if (r.status !== 0) throw new Error(`rclone ${args.join(' ')} failed: ${r.stderr.toString()}`);
    return r.stdout;
  };
}
