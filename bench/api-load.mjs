#!/usr/bin/env node
// npm run bench:api: latency of GET /api/backups with 1,000 backups in the catalogue, idle and
// while a backup runs in the same server process.
//
//   npm run bench:api -- [--corpus DIR] [--copies N] [--duration S] [--connections N,N] [--backups N] [--json FILE]
//
// Steps: a temporary project (stowage.yaml, one `dir` source: the corpus twice over, as hard
// links, so that a backup outlasts a measurement), one real backup made
// with the CLI, 999 more archives as hard links to it plus their catalogue rows (copies of the
// real row under new keys and ids, so the server has nothing to import), the server started as a
// child process (superuser from STOWAGE_ADMIN_EMAIL / STOWAGE_ADMIN_PASSWORD), a login, a warm-up
// list that must return every backup, then autocannon on GET /api/backups: idle, then while a
// backup started with `Prefer: respond-async` runs. The job history proves the overlap: the
// backup must have started before the first request and finished after the last one.
// The report (Markdown) goes to stdout, progress to stderr.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import Database from 'better-sqlite3';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(repoRoot, 'dist/cli/bin.cjs');
const MAKE_CORPUS = path.resolve(repoRoot, '../shared/bench/make-corpus.mjs');
const TARGET_P99_MS = 50;
const loadBefore = os.loadavg();
const EMAIL = 'bench@example.com';
const PASSWORD = 'bench-password-123';

const usage = 'usage: npm run bench:api -- [--corpus DIR] [--copies N] [--duration S] [--connections N,N] [--backups N] [--json FILE]';
const opts = { corpus: process.env.STOWAGE_BENCH_CORPUS || null, copies: 2, duration: 10, connections: [1, 10], backups: 1000, json: null };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const flag = argv[i];
  const value = () => argv[++i] ?? die(`${flag} needs a value\n${usage}`);
  if (flag === '--corpus') opts.corpus = value();
  else if (flag === '--copies') opts.copies = Number(value());
  else if (flag === '--duration') opts.duration = Number(value());
  else if (flag === '--connections') opts.connections = value().split(',').map(Number);
  else if (flag === '--backups') opts.backups = Number(value());
  else if (flag === '--json') opts.json = value();
  else die(`unknown argument ${flag}\n${usage}`);
}
if (!(opts.duration > 0) || !(opts.copies >= 1) || !(opts.backups >= 1) || !opts.connections.length || opts.connections.some((c) => !(c >= 1))) die(usage);

function die(msg) { console.error(`bench:api: ${msg}`); process.exit(2); }
const log = (msg) => process.stderr.write(`${msg}\n`);
const rm = (p) => fs.rmSync(p, { recursive: true, force: true });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const iso = (ms) => new Date(ms).toISOString();

// ---- corpus: medium-sized, so that one backup lasts longer than a measurement
const WORK = path.join(repoRoot, 'bench/.work');
let corpus = opts.corpus ? path.resolve(opts.corpus) : ['/work/corpus/medium', path.join(WORK, 'corpus-medium')].find((p) => fs.existsSync(p)) ?? path.join(WORK, 'corpus-medium');
if (opts.corpus && !fs.existsSync(corpus)) die(`--corpus ${corpus} does not exist`);
if (!fs.existsSync(corpus) || fs.readdirSync(corpus).length === 0) {
  log(`corpus ${corpus} missing: generating it with ${MAKE_CORPUS} --profile medium`);
  const r = spawnSync(process.execPath, [MAKE_CORPUS, corpus, '--profile', 'medium'], { stdio: 'inherit' });
  if (r.status !== 0) { rm(corpus); die('corpus generation failed'); }
}

const TMP = path.join(WORK, `api-${process.pid}`);
let server = null;
const cleanup = () => {
  if (server && server.exitCode === null) server.kill('SIGKILL');
  rm(TMP);
};
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));
fs.mkdirSync(TMP, { recursive: true });

// The backed-up folder: the corpus `--copies` times, as hard links (copies if linking fails),
// so that one backup outlasts a measurement even on a fast machine.
const source = path.join(TMP, 'source');
let linked = 0, copied = 0;
function mirror(from, to) {
  fs.mkdirSync(to, { recursive: true });
  for (const e of fs.readdirSync(from, { withFileTypes: true })) {
    const a = path.join(from, e.name), b = path.join(to, e.name);
    if (e.isDirectory()) mirror(a, b);
    else if (e.isFile()) {
      try { fs.linkSync(a, b); linked++; } catch { fs.copyFileSync(a, b); copied++; }
    }
  }
}
for (let i = 1; i <= opts.copies; i++) mirror(corpus, path.join(source, `copy-${i}`));
log(`source: ${opts.copies} x ${corpus} (${linked} hard links, ${copied} copies)`);

const dataDir = path.join(TMP, 'data');
const CFG = path.join(TMP, 'stowage.yaml');
fs.writeFileSync(
  CFG,
  `dataDir: ${JSON.stringify(dataDir)}
app:
  name: bench
  version: "1.0.0"
sources:
  - name: corpus
    kind: dir
    path: ${JSON.stringify(source)}
server:
  http: 127.0.0.1:0
`,
);

// ---- 1 real backup + (N-1) hard links and catalogue rows
log(`seed: one real backup of ${source} with the CLI`);
let t = performance.now();
const seed = spawnSync(process.execPath, [CLI, '--config', CFG, 'backup', '--name', 'seed', '--json'], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
const seedResult = seed.stdout.trim().split('\n').map((l) => { try { return JSON.parse(l); } catch { return null; } }).find((l) => l?.type === 'result');
if (seed.status !== 0 || !seedResult?.ok) die(`seed backup failed: ${seed.stderr.trim().split('\n').slice(-3).join(' | ')}`);
const seedSeconds = (performance.now() - t) / 1000;
const backupsDir = path.join(dataDir, 'backups');
const seedFile = path.join(backupsDir, 'seed.zip');
const seedSize = fs.statSync(seedFile).size;
log(`seed: ${(seedSize / 1e6).toFixed(0)} MB in ${seedSeconds.toFixed(1)} s; adding ${opts.backups - 1} more (hard links + catalogue rows)`);

{
  const db = new Database(path.join(dataDir, 'stowage.db'));
  const row = db.prepare('SELECT * FROM backups WHERE key = ?').get('seed.zip');
  if (!row) die('the seed backup is not in the catalogue');
  const insert = db.prepare(`INSERT INTO backups (${Object.keys(row).join(', ')}) VALUES (${Object.keys(row).map((k) => `@${k}`).join(', ')})`);
  const created = Date.parse(row.created_at);
  db.transaction(() => {
    for (let i = 1; i < opts.backups; i++) {
      const key = `bench_${String(i).padStart(5, '0')}.zip`;
      fs.linkSync(seedFile, path.join(backupsDir, key));
      const at = created - i * 3600_000; // one an hour, going back
      insert.run({ ...row, key, id: `bench-${i}-${row.id}`, name: key.slice(0, -4), created_at: iso(at), completed_at: iso(at + 15_000), updated_at: iso(at + 15_000) });
    }
  })();
  db.close();
}

// ---- server
const port = await new Promise((resolve, reject) => {
  const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); }).on('error', reject);
});
const base = `http://127.0.0.1:${port}`;
log(`server: ${base}`);
let serverErr = '';
server = spawn(process.execPath, [CLI, '--config', CFG, 'serve', '--http', `127.0.0.1:${port}`], {
  cwd: TMP,
  env: { ...process.env, STOWAGE_ADMIN_EMAIL: EMAIL, STOWAGE_ADMIN_PASSWORD: PASSWORD },
  stdio: ['ignore', 'ignore', 'pipe'], // stdout: the request log (kept on, as in production; discarded here)
});
server.stderr.on('data', (d) => (serverErr += d));
server.on('exit', (code) => { if (code !== null && code !== 0) log(`server exited with ${code}: ${serverErr.trim()}`); });
for (let i = 0; ; i++) {
  if (server.exitCode !== null) die(`the server did not start: ${serverErr.trim()}`);
  if (await fetch(`${base}/api/health`).then((r) => r.ok, () => false)) break;
  if (i > 300) die('the server did not answer /api/health within 30 s');
  await sleep(100);
}

async function api(method, url, { token, body, headers = {} } = {}) {
  const res = await fetch(`${base}${url}`, {
    method,
    headers: { ...(token ? { Authorization: token } : {}), ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}), ...headers },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${text.slice(0, 300)}`);
  return { res, json, bytes: Buffer.byteLength(text) };
}

const { json: login } = await api('POST', '/api/collections/_superusers/auth-with-password', { body: { identity: EMAIL, password: PASSWORD } });
const token = login.token;

// Warm-up: must list every backup without importing anything (the rows are all known).
t = performance.now();
const first = await api('GET', '/api/backups', { token });
const firstMs = performance.now() - t;
const completed = first.json.filter((b) => b.status === 'completed').length;
if (first.json.length !== opts.backups || completed !== opts.backups) die(`the first list returned ${first.json.length} backups, ${completed} completed; expected ${opts.backups}`);
const responseBytes = first.bytes;
log(`first list: ${first.json.length} backups, ${(responseBytes / 1024).toFixed(0)} KiB of JSON, ${firstMs.toFixed(0)} ms`);
for (let i = 0; i < 20; i++) await api('GET', '/api/backups', { token });

function measure(connections, title) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    autocannon(
      { url: `${base}/api/backups`, headers: { authorization: token }, connections, duration: opts.duration, title },
      (err, result) => (err ? reject(err) : resolve({ ...result, wallStart: started, wallEnd: Date.now() })),
    );
  });
}

const summarize = (r, scenario, backup) => ({
  scenario,
  connections: r.connections,
  durationS: r.duration,
  requests: r.requests.total,
  requestsPerSec: r.requests.average,
  p50: r.latency.p50,
  p90: r.latency.p90,
  p99: r.latency.p99,
  max: r.latency.max,
  errors: r.errors + r.timeouts,
  non2xx: r.non2xx,
  ...(backup ? { backup } : {}),
});

const rows = [];
const raw = [];
for (const c of opts.connections) {
  log(`idle: ${opts.duration} s, ${c} connection(s)`);
  const r = await measure(c, `idle c=${c}`);
  raw.push(r);
  rows.push(summarize(r, 'idle', null));
}

// A backup per concurrency level, each checked to cover the whole measurement.
let backupN = 0;
for (const c of opts.connections) {
  const name = `concurrent-${++backupN}`;
  const { res, json: started } = await api('POST', '/api/backups', { token, body: { name }, headers: { Prefer: 'respond-async' } });
  if (res.status !== 202) die(`POST /api/backups answered ${res.status}, expected 202`);
  // Let it get past the start (lock, recovery, estimate) into archiving before measuring.
  await sleep(1000);
  log(`while backup ${started.key} runs: ${opts.duration} s, ${c} connection(s)`);
  const r = await measure(c, `backup c=${c}`);
  raw.push(r);
  let job;
  for (let i = 0; ; i++) {
    job = (await api('GET', '/api/jobs?limit=20', { token })).json.find((j) => j.kind === 'backup' && j.key === started.key);
    if (job && job.status !== 'running') break;
    if (i > 1200) die(`backup ${started.key} did not finish within 10 minutes`);
    await sleep(250);
  }
  const startedAt = Date.parse(job.startedAt);
  const finishedAt = Date.parse(job.finishedAt);
  const backup = {
    key: started.key,
    status: job.status,
    startedAt: job.startedAt,
    finishedAt: job.finishedAt,
    seconds: (finishedAt - startedAt) / 1000,
    coveredMeasurement: job.status === 'completed' && startedAt <= r.wallStart && finishedAt >= r.wallEnd,
    runningAfterMeasurementS: (finishedAt - r.wallEnd) / 1000,
  };
  log(`  backup ${backup.status} in ${backup.seconds.toFixed(1)} s; ${backup.coveredMeasurement ? `ran through the whole measurement (finished ${backup.runningAfterMeasurementS.toFixed(1)} s after it)` : 'did NOT cover the whole measurement'}`);
  rows.push(summarize(r, 'backup running', backup));
  // Keep the catalogue at N + this run's backups: delete it (the next list must not grow).
  await api('DELETE', `/api/backups/${started.key}`, { token });
}

server.kill('SIGTERM');
await new Promise((r) => server.once('exit', r));

// ---- report
const fmt = (n, d = 0) => (typeof n === 'number' ? n.toFixed(d) : String(n));
const cpus = os.cpus();
const lines = [];
lines.push(`## API load: GET /api/backups with ${opts.backups} backups`);
lines.push('');
lines.push(`Response: ${opts.backups} items, ${(responseBytes / 1024).toFixed(0)} KiB of JSON (first list ${firstMs.toFixed(0)} ms, no import). ${opts.duration} s per row, autocannon, keep-alive; server request log on (stdout discarded).`);
lines.push(`Concurrent backup: ${opts.copies} x ${corpus} (seed backup took ${seedSeconds.toFixed(1)} s, ${(seedSize / 1e6).toFixed(0)} MB archive), started with Prefer: respond-async 1 s before the measurement.`);
lines.push('');
lines.push('| scenario | connections | req/s | p50 ms | p90 ms | p99 ms | max ms | errors | non-2xx | backup covered the run |');
lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---|');
for (const r of rows) {
  const cover = r.backup ? (r.backup.coveredMeasurement ? `yes (${r.backup.seconds.toFixed(1)} s backup)` : `NO (${r.backup.status}, ${r.backup.seconds.toFixed(1)} s)`) : '-';
  lines.push(`| ${r.scenario} | ${r.connections} | ${fmt(r.requestsPerSec, 1)} | ${fmt(r.p50)} | ${fmt(r.p90)} | ${fmt(r.p99)} | ${fmt(r.max)} | ${r.errors} | ${r.non2xx} | ${cover} |`);
}
lines.push('');
let failed = false;
for (const r of rows.filter((x) => x.backup)) {
  const ok = r.p99 < TARGET_P99_MS && r.backup.coveredMeasurement && r.errors === 0 && r.non2xx === 0;
  if (!ok) failed = true;
  const why = !r.backup.coveredMeasurement ? ' (the backup did not run through the whole measurement: no verdict)' : r.errors || r.non2xx ? ` (${r.errors} errors, ${r.non2xx} non-2xx)` : '';
  lines.push(`${ok ? 'PASS' : 'FAIL'}  p99 < ${TARGET_P99_MS} ms while a backup runs, ${r.connections} connection(s): p99 ${fmt(r.p99)} ms${why}`);
}
lines.push('');
lines.push(`Machine: ${cpus.length} x ${cpus[0]?.model ?? 'unknown CPU'}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, ${os.type()} ${os.release()}, Node ${process.version}; load average before the run ${loadBefore.map((l) => l.toFixed(1)).join(' ')}.`);
console.log(lines.join('\n'));

if (opts.json) {
  fs.writeFileSync(opts.json, JSON.stringify({ backups: opts.backups, corpus, seedSeconds, seedSize, responseBytes, firstListMs: firstMs, rows, autocannon: raw }, null, 2));
  log(`raw results: ${opts.json}`);
}
process.exitCode = failed ? 1 : 0;
