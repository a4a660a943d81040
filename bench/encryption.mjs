#!/usr/bin/env node
// bench/encryption.mjs - throughput of Stowage's encryption streams (src/encryption) against the
// age CLI on the same data in the same run. Not part of the tests.
//
//   npm run build && node bench/encryption.mjs [--mb 500] [--runs 3]
//
// Data: --mb megabytes (10^6 bytes) of zeros, generated in memory in 1 MiB pieces ("/dev/zero").
// Encryption: the generator feeds Stowage's Transform in-process, and age's stdin through a pipe
// (age -r, output to /dev/null). Decryption: a ciphertext file in /dev/shm (the page cache), read
// by Stowage with a 1 MiB read stream and by age -d -i with -o /dev/null. Every row is timed
// around the whole operation with hrtime; runs go round-robin and the median is reported. The
// report (Markdown) goes to stdout, progress to stderr.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const built = path.join(repoRoot, 'dist/encryption/index.js');

const opts = { mb: 500, runs: 3 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const [flag, inline] = argv[i].split(/=(.*)/s);
  const value = () => Number(inline ?? argv[++i]);
  if (flag === '--mb') opts.mb = value();
  else if (flag === '--runs') opts.runs = value();
  else die(`unknown argument ${argv[i]}\nusage: node bench/encryption.mjs [--mb 500] [--runs 3]`);
}
if (!(opts.mb > 0)) die('--mb must be a positive number');
if (!Number.isInteger(opts.runs) || opts.runs < 1) die('--runs must be a positive integer');
if (!fs.existsSync(built)) die(`${path.relative(process.cwd(), built)} is missing: run npm run build first`);
const hasAge = spawnSync('age', ['--version']).status === 0 && spawnSync('age-keygen', ['--version']).status === 0;

function die(msg) {
  console.error(`bench: ${msg}`);
  process.exit(2);
}
const log = (msg) => process.stderr.write(`${msg}\n`);

const enc = await import(built);
const TOTAL = Math.round(opts.mb * 1e6);
const PIECE = Buffer.alloc(1024 * 1024);

/** TOTAL bytes of zeros in 1 MiB pieces (the same buffer, never copied). */
function zeros() {
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= TOTAL) return void this.push(null);
      const n = Math.min(PIECE.length, TOTAL - sent);
      sent += n;
      this.push(n === PIECE.length ? PIECE : PIECE.subarray(0, n));
    },
  });
}

/** A sink that counts bytes. */
function sink(counter) {
  return new Writable({
    highWaterMark: 1024 * 1024,
    write(chunk, _e, cb) {
      counter.bytes += chunk.length;
      cb();
    },
  });
}

async function timed(fn) {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

function runChild(cmd, args, input) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: [input ? 'pipe' : 'ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    const exited = new Promise((res) => child.on('close', res));
    const fed = input ? pipeline(input, child.stdin) : Promise.resolve();
    Promise.all([fed, exited]).then(([, code]) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${stderr}`))), reject);
  });
}

// ---------- set-up ----------
const scratchRoot = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
const scratch = fs.mkdtempSync(path.join(scratchRoot, `stowage-bench-enc-${process.pid}-`));
process.on('exit', () => fs.rmSync(scratch, { recursive: true, force: true }));
process.on('SIGINT', () => process.exit(130));

const { identity, recipient } = enc.generateIdentity();
const keyFile = path.join(scratch, 'key.txt');
fs.writeFileSync(keyFile, `${identity}\n`, { mode: 0o600 });
const aesKey = '9f'.repeat(32);
const ageFile = path.join(scratch, 'data.zip.age');
const gcmFile = path.join(scratch, 'data.zip.gcm');

log(`bench: ${opts.mb} MB, ${opts.runs} run(s) each, scratch ${scratch}`);
await pipeline(zeros(), enc.createAgeEncryptStream({ recipients: [recipient] }), fs.createWriteStream(ageFile));
await pipeline(zeros(), enc.createAesGcmEncryptStream(aesKey), fs.createWriteStream(gcmFile));
if (hasAge) {
  // The age CLI must read what Stowage wrote; a failure here is a bug, not a slow run.
  await runChild('age', ['-d', '-i', keyFile, '-o', '/dev/null', ageFile]);
}

const read = (file) => fs.createReadStream(file, { highWaterMark: 1024 * 1024 });
async function through(source, transform) {
  const c = { bytes: 0 };
  await (transform ? pipeline(source, transform, sink(c)) : pipeline(source, sink(c)));
  return c.bytes;
}

/** name → { stowage?: fn, age?: fn }, each fn runs one operation over the data. */
const rows = [
  ['generate only (baseline)', { stowage: () => through(zeros()) }],
  ['read ciphertext file only (baseline)', { stowage: () => through(read(ageFile)) }],
  [
    'age encrypt (X25519)',
    {
      stowage: () => through(zeros(), enc.createAgeEncryptStream({ recipients: [recipient] })),
      age: () => runChild('age', ['-r', recipient, '-o', '/dev/null'], zeros()),
    },
  ],
  [
    'age decrypt (X25519)',
    {
      stowage: () => through(read(ageFile), enc.createAgeDecryptStream({ identities: [identity] })),
      age: () => runChild('age', ['-d', '-i', keyFile, '-o', '/dev/null', ageFile]),
    },
  ],
  ['AES-256-GCM encrypt', { stowage: () => through(zeros(), enc.createAesGcmEncryptStream(aesKey)) }],
  ['AES-256-GCM decrypt', { stowage: () => through(read(gcmFile), enc.createAesGcmDecryptStream(aesKey)) }],
];

const times = new Map();
for (let run = 1; run <= opts.runs; run++) {
  for (const [name, impls] of rows) {
    for (const [who, fn] of Object.entries(impls)) {
      if (who === 'age' && !hasAge) continue;
      const key = `${name}|${who}`;
      const s = await timed(fn);
      times.set(key, [...(times.get(key) ?? []), s]);
      log(`  run ${run}: ${name}, ${who}: ${(TOTAL / 1e6 / s).toFixed(0)} MB/s`);
    }
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const cell = (key) => (times.has(key) ? `${(TOTAL / 1e6 / median(times.get(key))).toFixed(0)}` : '-');

const ageVersion = hasAge ? spawnSync('age', ['--version'], { encoding: 'utf8' }).stdout.trim() : 'not installed';
console.log(`## Encryption throughput (${opts.mb} MB of zeros, median of ${opts.runs})\n`);
console.log('| operation | Stowage MB/s | age CLI MB/s |');
console.log('|---|---:|---:|');
for (const [name] of rows) console.log(`| ${name} | ${cell(`${name}|stowage`)} | ${cell(`${name}|age`)} |`);
console.log(
  `\nMB = 10^6 bytes. Peak RSS of this process: ${Math.round(process.resourceUsage().maxRSS / 1024)} MB. ` +
    `${os.cpus()[0]?.model ?? 'cpu'} x ${os.cpus().length}, Node ${process.version}, age ${ageVersion}.`,
);
