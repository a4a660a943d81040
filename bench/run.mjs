#!/usr/bin/env node
// bench/run.mjs - times `stowage backup` / `stowage restore` against zip, tar|pigz and restic
// on a deterministic corpus (../shared/bench/make-corpus.mjs), several runs each, medians.
//
//   npm run bench -- [--profile small|medium|large] [--runs N] [--corpus DIR]
//                    [--only backup|restore] [--json FILE]
//
// Every timed command runs under `/usr/bin/time -v` (peak RSS); wall time is measured here
// with hrtime around the child. Before each timed command the harness runs `sync` (untimed)
// so no run pays for an earlier run's dirty pages; the `sync` right after it is timed on its
// own ("then sync") because zip, unzip and pigz leave their output in the page cache while
// stowage (and restic) fsync. `stowage (age)` rows run the same backup with
// `encryption.recipients` in stowage.yaml (a key made by `stowage keygen` once per run of the
// harness) and restore that backup with `--identity`. Tools run round-robin (run 1 of every
// tool, then run 2, ...) so slow drift in the machine does not favour one tool. The page cache is warm: one untimed
// read of the corpus comes first. The report (Markdown) goes to stdout, progress to stderr.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BUILT_CLI = path.join(repoRoot, 'dist/cli/bin.cjs');
const MAKE_CORPUS = path.resolve(repoRoot, '../shared/bench/make-corpus.mjs');
const RSS_LIMIT_MB = 150;
const RSS_FLAT = 1.25; // "about the same" across profiles: largest peak <= 1.25 x smallest

// ---------- options ----------
const opts = { profile: 'small', runs: 3, corpus: process.env.STOWAGE_BENCH_CORPUS || null, only: null, json: null };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const [flag, inline] = argv[i].split(/=(.*)/s);
  const value = () => inline ?? argv[++i];
  if (flag === '--profile') opts.profile = value();
  else if (flag === '--runs') opts.runs = Number(value());
  else if (flag === '--corpus') opts.corpus = value();
  else if (flag === '--only') opts.only = value();
  else if (flag === '--json') opts.json = value();
  else die(`unknown argument ${argv[i]}\nusage: npm run bench -- [--profile small|medium|large] [--runs N] [--corpus DIR] [--only backup|restore] [--json FILE]`);
}
if (!['small', 'medium', 'large'].includes(opts.profile)) die('--profile must be small, medium or large');
if (!Number.isInteger(opts.runs) || opts.runs < 1) die('--runs must be a positive integer');
if (opts.only && !['backup', 'restore'].includes(opts.only)) die('--only must be backup or restore');

function die(msg) { console.error(`bench: ${msg}`); process.exit(2); }
const log = (msg) => process.stderr.write(`${msg}\n`);

// ---------- helpers ----------
function walk(root) { // regular files only, like the corpus generator writes
  let files = 0, bytes = 0;
  const stack = [root];
  while (stack.length) {
    const dir = stack.pop();
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) stack.push(p);
      else if (e.isFile()) { files++; bytes += fs.statSync(p).size; }
    }
  }
  return { files, bytes };
}
function run(cmd, args, o = {}) { // untimed
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 256 << 20, ...o });
  if (r.error) return { status: -1, stdout: '', stderr: String(r.error.message) };
  return r;
}
const bash = (script, o = {}) => run('bash', ['-o', 'pipefail', '-c', script], o);
const has = (tool) => run('bash', ['-c', `command -v ${tool}`]).status === 0;
const rm = (p) => fs.rmSync(p, { recursive: true, force: true });
const fresh = (p) => { rm(p); fs.mkdirSync(p, { recursive: true }); return p; };
const median = (xs) => { const s = [...xs].sort((a, b) => a - b), m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const mb = (bytes) => bytes / 1e6;
const firstLine = (s) => (s || '').split('\n').find((l) => l.trim())?.trim() ?? '';
const tail = (s) => (s || '').trim().split('\n').slice(-3).join(' | ');

let maxLoad = 0;
/** One timed command: wall seconds (hrtime), peak RSS in MB (/usr/bin/time -v), then a timed `sync`. */
function timed(argvList, o = {}) {
  const timeFile = path.join(TMP, 'time.txt');
  run('sync', []);
  maxLoad = Math.max(maxLoad, os.loadavg()[0]);
  const t0 = process.hrtime.bigint();
  const r = run('/usr/bin/time', ['-v', '-o', timeFile, ...argvList], o);
  const sec = Number(process.hrtime.bigint() - t0) / 1e9;
  const t1 = process.hrtime.bigint();
  run('sync', []);
  const syncSec = Number(process.hrtime.bigint() - t1) / 1e9;
  const tv = fs.existsSync(timeFile) ? fs.readFileSync(timeFile, 'utf8') : '';
  const num = (re) => Number(re.exec(tv)?.[1] ?? NaN);
  const rssMB = num(/Maximum resident set size \(kbytes\): (\d+)/) / 1024;
  const userSec = num(/User time \(seconds\): ([\d.]+)/), sysSec = num(/System time \(seconds\): ([\d.]+)/);
  return { sec, syncSec, rssMB, userSec, sysSec, status: r.status, stdout: r.stdout, stderr: r.stderr };
}

// ---------- setup ----------
const WORK = path.join(repoRoot, 'bench/.work');
const TMP = path.join(WORK, `tmp-${process.pid}`);
const SHM = `/dev/shm/stowage-bench-${process.pid}`;
const cleanup = () => { rm(TMP); rm(SHM); };
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { cleanup(); process.exit(130); });

if (!fs.existsSync('/usr/bin/time')) die('/usr/bin/time is required for peak RSS (apt-get install time)');
if (!fs.existsSync(BUILT_CLI)) die(`${BUILT_CLI} is missing: run "npm run build" (npm run bench does it for you)`);
fs.mkdirSync(WORK, { recursive: true });
fresh(TMP);
// Run a private copy of dist/: others may rebuild the working tree while the benchmark runs.
// It stays inside the repository, so node_modules and ../package.json resolve as before.
fs.cpSync(path.join(repoRoot, 'dist'), path.join(TMP, 'stowage/dist'), { recursive: true });
fs.copyFileSync(path.join(repoRoot, 'package.json'), path.join(TMP, 'stowage/package.json'));
const CLI = path.join(TMP, 'stowage/dist/cli/bin.cjs');
const build = (() => { // content hash of the copied dist/: RSS is only compared between identical builds
  const h = crypto.createHash('sha256'), root = path.join(TMP, 'stowage/dist');
  for (const f of fs.readdirSync(root, { recursive: true }).map(String).sort()) {
    const p = path.join(root, f);
    if (fs.statSync(p).isFile()) h.update(f).update(fs.readFileSync(p));
  }
  return h.digest('hex').slice(0, 12);
})();
const git = run('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD']).stdout?.trim();
const dirty = run('git', ['-C', repoRoot, 'status', '--porcelain', '--', 'src']).stdout?.trim() ? ' (src had uncommitted changes)' : '';

let corpus = opts.corpus ? path.resolve(opts.corpus) : path.join(WORK, `corpus-${opts.profile}`);
if (opts.corpus && !fs.existsSync(corpus)) die(`--corpus ${corpus} does not exist`);
if (!fs.existsSync(corpus) || fs.readdirSync(corpus).length === 0) {
  log(`corpus ${corpus} missing: generating it with ${MAKE_CORPUS} --profile ${opts.profile}`);
  const r = spawnSync(process.execPath, [MAKE_CORPUS, corpus, '--profile', opts.profile], { stdio: 'inherit' });
  if (r.status !== 0) { rm(corpus); die('corpus generation failed'); }
}
const C = walk(corpus);
const corpusMB = mb(C.bytes);
log(`corpus ${corpus}: ${C.files} files, ${corpusMB.toFixed(1)} MB`);
const shmOk = fs.existsSync('/dev/shm') && fs.statfsSync('/dev/shm').bavail * fs.statfsSync('/dev/shm').bsize > 3 * C.bytes;

const notes = []; // anything skipped or odd; printed with the report, never dropped
const tools = Object.fromEntries(['zip', 'unzip', 'pigz', 'tar', 'restic', 'diff'].map((t) => [t, has(t)]));
const needs = (...ts) => { const miss = ts.filter((t) => !tools[t]); return miss.length ? `${miss.join(', ')} not installed` : null; };
const resticEnv = { ...process.env, RESTIC_PASSWORD: 'bench' };

const yaml = (dataDir, srcPath) =>
  `dataDir: ${JSON.stringify(dataDir)}\napp: {name: bench, version: "1.0.0"}\nsources:\n  - {name: files, kind: dir, path: ${JSON.stringify(srcPath)}}\n`;
const CFG = path.join(TMP, 'stowage.yaml'), CFG_R = path.join(TMP, 'stowage-restore.yaml');
fs.writeFileSync(CFG, yaml(path.join(TMP, 'data'), corpus));
// The restore config's source path is never used (--target wins); it points at nothing real so
// that a --target bug could never overwrite the corpus.
fs.writeFileSync(CFG_R, yaml(path.join(TMP, 'data-restore'), path.join(TMP, 'unused-restore-path')));
// Run the CLI as its bin does: the shebang of dist/cli/bin.cjs passes these node flags.
const CLI_NODE_FLAGS = (fs.readFileSync(BUILT_CLI, 'utf8').split('\n')[0].match(/node\s+(.*)$/)?.[1] ?? '').split(/\s+/).filter(Boolean);
const stowage = (cfg, ...args) => [process.execPath, ...CLI_NODE_FLAGS, CLI, '--config', cfg, ...args];
// Encrypted backups: one age key pair per run of the harness, made by the CLI under test.
const IDENTITY = path.join(TMP, 'age-identity.txt');
const recipient = (() => {
  const r = run(process.execPath, [CLI, 'keygen', '-o', IDENTITY, '--json']);
  const res = r.stdout.trim().split('\n').map((l) => { try { return JSON.parse(l); } catch { return null; } }).find((o) => o?.type === 'result');
  if (r.status !== 0 || !/^age1[0-9a-z]+$/.test(res?.recipient ?? '') || !fs.existsSync(IDENTITY)) die(`stowage keygen -o ${IDENTITY} failed (exit ${r.status}): ${tail(r.stdout + r.stderr)}`);
  return res.recipient;
})();
const CFG_E = path.join(TMP, 'stowage-age.yaml');
fs.writeFileSync(CFG_E, `${yaml(path.join(TMP, 'data-age'), corpus)}encryption:\n  recipients: [${JSON.stringify(recipient)}]\n`);
const ZIP = path.join(TMP, 'zip-r.zip'), ZIP0 = path.join(TMP, 'zip-0.zip'), TGZ = path.join(TMP, 'out.tgz'), REPO = path.join(TMP, 'restic-repo');
// The latest backup of each Stowage variant: what its restore rows read, what its next backup deletes.
const variants = {
  plain: { tool: 'stowage', cfg: CFG, dataDir: path.join(TMP, 'data'), ext: '.zip', encrypted: false, archive: null, key: null },
  age: { tool: 'stowage (age)', cfg: CFG_E, dataDir: path.join(TMP, 'data-age'), ext: '.zip.age', encrypted: true, archive: null, key: null },
};
const AGE_MAGIC = 'age-encryption.org/v1\n';
/** The backup case of one Stowage variant (plain or encrypted): same command, same checks. */
function stowageBackupCase(v) {
  return { tool: v.tool, op: 'backup', skip: null,
    prep: () => { if (v.key) { const r = run(process.execPath, [CLI, '--config', v.cfg, 'delete', v.key, '--json']); if (r.status !== 0) notes.push(`${v.tool} delete ${v.key} failed: ${tail(r.stderr)}`); v.archive = v.key = null; } },
    cmd: (i) => [stowage(v.cfg, 'backup', '--name', `run-${i}`, '--json'), {}],
    after: (i, r) => {
      v.key = `run-${i}${v.ext}`;
      v.archive = path.join(v.dataDir, 'backups', v.key);
      const res = r.stdout.trim().split('\n').map((l) => { try { return JSON.parse(l); } catch { return null; } }).find((o) => o?.type === 'result');
      const src = res?.backup?.sources?.[0];
      let error = !res?.ok ? `no ok result: ${tail(r.stdout + r.stderr)}` : src.files !== C.files || src.bytes !== C.bytes ? `reported ${src.files} files / ${src.bytes} B, corpus has ${C.files} / ${C.bytes} B` : null;
      if (!error && res.backup.key !== v.key) error = `backup key is ${res.backup.key}, expected ${v.key}`;
      if (!error && Boolean(res.backup.encrypted) !== v.encrypted) error = `backup reports encrypted: ${res.backup.encrypted}, expected ${v.encrypted}`;
      if (!fs.existsSync(v.archive)) { const missing = v.archive; v.archive = null; return { error: error ?? `${missing} is missing` }; }
      if (!error) { // the stored file itself: an age file for the encrypted variant, a ZIP otherwise
        const head = Buffer.alloc(AGE_MAGIC.length), fd = fs.openSync(v.archive, 'r');
        try { fs.readSync(fd, head, 0, head.length, 0); } finally { fs.closeSync(fd); }
        const isAge = head.toString('latin1') === AGE_MAGIC;
        if (isAge !== v.encrypted) error = `${v.archive} ${isAge ? 'starts' : 'does not start'} with the age header (${JSON.stringify(head.toString('latin1').slice(0, 8))}...)`;
      }
      return { size: fs.statSync(v.archive).size, error };
    } };
}

function checkTree(dir, label) { // cheap: file count and total bytes equal the corpus
  if (!fs.existsSync(dir)) return `${label}: restored tree ${dir} is missing`;
  const t = walk(dir);
  return t.files === C.files && t.bytes === C.bytes ? null : `${label}: restored ${t.files} files / ${t.bytes} B, corpus has ${C.files} / ${C.bytes} B`;
}

// ---------- cases ----------
// Each case: tool, op, skip (reason or null), prep(i) untimed, cmd(i) -> [argv, spawn options],
// after(i, result) -> { size?, error? } (untimed: verification and size).
const backupCases = [
  { tool: 'read floor: tar c | cat', op: 'read', floor: true, skip: needs('tar'),
    cmd: () => [['bash', '-o', 'pipefail', '-c', 'tar cf - . | cat > /dev/null'], { cwd: corpus }] },
  stowageBackupCase(variants.plain),
  stowageBackupCase(variants.age),
  { tool: 'zip -r -q', op: 'backup', skip: needs('zip'), prep: () => rm(ZIP), // zip updates an existing archive: always start fresh
    cmd: () => [['zip', '-r', '-q', ZIP, '.'], { cwd: corpus }], after: () => ({ size: fs.statSync(ZIP).size }) },
  { tool: 'zip -r -q -0', op: 'backup', skip: needs('zip'), prep: () => rm(ZIP0),
    cmd: () => [['zip', '-r', '-q', '-0', ZIP0, '.'], { cwd: corpus }], after: () => ({ size: fs.statSync(ZIP0).size }) },
  { tool: 'tar c | pigz -p 2', op: 'backup', skip: needs('tar', 'pigz'), prep: () => rm(TGZ),
    cmd: () => [['bash', '-o', 'pipefail', '-c', 'tar cf - . | pigz -p 2 > "$OUT"'], { cwd: corpus, env: { ...process.env, OUT: TGZ } }],
    after: () => ({ size: fs.statSync(TGZ).size }) },
  { tool: 'restic backup (fresh repo)', op: 'backup', skip: needs('restic'),
    prep: () => { rm(REPO); const r = run('restic', ['-r', REPO, 'init', '-q'], { env: resticEnv }); if (r.status !== 0) throw new Error(`restic init: ${tail(r.stderr)}`); },
    cmd: () => [['restic', '-r', REPO, '--no-cache', 'backup', '-q', corpus], { env: resticEnv }],
    after: () => ({ size: walk(REPO).bytes }) },
];

const restoreCases = [];
const targets = [['disk', path.join(TMP, 'restore')]];
if (shmOk) targets.push(['tmpfs', path.join(SHM, 'restore')]);
else notes.push('tmpfs restores skipped: /dev/shm is missing or has less than 3x the corpus size free');
const diffDone = {}; // tool -> true once its first restore passed `diff -r`
for (const [where, T] of targets) {
  const done = () => rm(T);
  restoreCases.push(
    { tool: 'copy floor: tar c | tar x', op: `restore → ${where}`, floor: true, skip: needs('tar'), prep: () => fresh(T),
      cmd: () => [['bash', '-o', 'pipefail', '-c', 'tar cf - . | tar xf - -C "$T"'], { cwd: corpus, env: { ...process.env, T } }],
      after: () => { const error = checkTree(T, 'tar x'); done(); return { error }; } },
    ...[variants.plain, variants.age].map((v) => ({ tool: v.tool, op: `restore → ${where}`, skip: null, prep: () => fresh(T),
      cmd: () => [stowage(CFG_R, 'restore', v.archive, '--target', T, '--yes', '--no-safety-backup', '--json', ...(v.encrypted ? ['--identity', IDENTITY] : [])), {}],
      after: () => {
        const error = checkTree(path.join(T, 'files'), `${v.tool} restore`);
        if (!diffDone[v.tool] && !error && tools.diff) { // one full content comparison per variant and profile, untimed
          diffDone[v.tool] = true;
          const d = run('diff', ['-r', '-q', corpus, path.join(T, 'files')]);
          notes.push(d.status === 0 ? `full check: \`diff -r\` of the corpus against the ${v.tool} restore (${where}) found no differences` : `full check FAILED: diff -r against the ${v.tool} restore (${where}) reports: ${tail(d.stdout + d.stderr)}`);
        }
        done(); return { error };
      } })),
    { tool: 'unzip -q', op: `restore → ${where}`, skip: needs('zip', 'unzip'), prep: () => fresh(T),
      cmd: () => [['unzip', '-q', ZIP, '-d', T], {}],
      after: () => { const error = checkTree(T, 'unzip'); done(); return { error }; } },
    { tool: 'restic restore', op: `restore → ${where}`, skip: needs('restic'), prep: () => fresh(T),
      cmd: () => [['restic', '-r', REPO, '--no-cache', 'restore', 'latest', '-q', '--target', T], { env: resticEnv }],
      after: () => { const error = checkTree(path.join(T, corpus), 'restic restore'); done(); return { error }; } },
  );
}

// ---------- measure ----------
function measure(cases, phase) {
  for (const c of cases) {
    c.runs = [];
    if (c.skip) notes.push(`${c.tool} (${c.op}) skipped: ${c.skip}`);
  }
  for (let i = 1; i <= opts.runs; i++) {
    for (const c of cases.filter((x) => !x.skip)) {
      let res;
      try {
        c.prep?.(i);
        const [argvList, o] = c.cmd(i);
        const r = timed(argvList, o);
        res = { sec: r.sec, syncSec: r.syncSec, rssMB: r.rssMB, userSec: r.userSec, sysSec: r.sysSec };
        if (r.status !== 0) res.error = `exit ${r.status}: ${tail(r.stderr || r.stdout)}`;
        else Object.assign(res, c.after?.(i, r));
      } catch (err) {
        res = { error: `harness: ${err.message}` };
      }
      c.runs.push(res);
      if (res.error) notes.push(`${c.tool} (${c.op}) run ${i}: ${res.error}`);
      log(`[${phase} ${i}/${opts.runs}] ${c.tool.padEnd(28)} ${c.op.padEnd(16)} ${res.sec?.toFixed(2) ?? '-'} s  then sync ${res.syncSec?.toFixed(2) ?? '-'} s  RSS ${res.rssMB?.toFixed(0) ?? '-'} MB${res.error ? `  ERROR ${res.error}` : ''}`);
    }
  }
}

const loadBefore = os.loadavg().map((x) => x.toFixed(2)).join(' ');
log('warming the page cache (one untimed read of the corpus)');
bash('tar cf - . | cat > /dev/null', { cwd: corpus });
let cases = [];
if (opts.only !== 'restore') { measure(backupCases, 'backup'); cases.push(...backupCases); }
if (opts.only !== 'backup') {
  if (opts.only === 'restore') { // restore inputs, made once and untimed
    log('--only restore: making the archives to restore from (untimed)');
    for (const c of backupCases.filter((x) => !x.floor && !x.skip && ['stowage', 'stowage (age)', 'zip -r -q', 'restic backup (fresh repo)'].includes(x.tool))) {
      c.prep?.(0);
      const [argvList, o] = c.cmd(0);
      const r = run(argvList[0], argvList.slice(1), o);
      if (r.status !== 0) die(`${c.tool} failed while preparing restore inputs: ${tail(r.stderr)}`);
      c.after?.(0, r);
    }
  }
  for (const v of Object.values(variants)) if (!v.archive) for (const c of restoreCases.filter((x) => x.tool === v.tool)) c.skip = `no ${v.tool} archive to restore from (the last ${v.tool} backup failed)`;
  measure(restoreCases, 'restore');
  for (const v of Object.values(variants)) if (!diffDone[v.tool]) notes.push(`full \`diff -r\` check of ${v.tool} not done: ${tools.diff ? `no ${v.tool} restore passed the cheap check` : 'diff is not installed'}`);
  cases.push(...restoreCases);
} else notes.push('full `diff -r` check skipped: --only backup restores nothing');

// ---------- summarise ----------
for (const c of cases) {
  const ok = (c.runs ?? []).filter((r) => !r.error);
  c.okRuns = ok.length;
  if (!ok.length) continue;
  c.median = median(ok.map((r) => r.sec));
  c.min = Math.min(...ok.map((r) => r.sec)); c.max = Math.max(...ok.map((r) => r.sec));
  c.syncMedian = median(ok.map((r) => r.syncSec));
  c.userMedian = median(ok.map((r) => r.userSec)); c.sysMedian = median(ok.map((r) => r.sysSec));
  c.peakMB = Math.max(...ok.map((r) => r.rssMB));
  const sizes = ok.map((r) => r.size).filter((s) => s != null);
  c.size = sizes.length ? sizes[sizes.length - 1] : null;
}
const find = (tool, op) => cases.find((c) => c.tool === tool && c.op === op && c.median != null);
const zipR = find('zip -r -q', 'backup');
const cell = (s) => s.replace(/\|/g, '\\|'); // tool names like "tar c | cat" inside a Markdown table
const fmt = (x, d = 2) => (x == null || Number.isNaN(x) ? '-' : x.toFixed(d));

const out = [];
out.push(`### Stowage benchmark: profile ${opts.profile}, ${opts.runs} run(s) each, medians`, '');
out.push(`Corpus: \`${corpus}\`, ${C.files.toLocaleString('en-US')} files, ${corpusMB.toFixed(1)} MB (MB = 10^6 bytes; MB/s = corpus bytes / median seconds).`, '');
out.push('| tool | operation | median s | min–max s | CPU s user+sys | then sync s | MB/s | time vs stowage | archive MB | size vs zip -r | peak RSS MB |');
out.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const c of cases.filter((x) => !x.skip)) {
  if (c.median == null) { out.push(`| ${cell(c.tool)} | ${c.op} | failed (${c.runs.length} runs) | | | | | | | | |`); continue; }
  const ref = find('stowage', c.op);
  const ratio = ref && c.tool !== 'stowage' ? `${fmt(c.median / ref.median)}x` : c.tool === 'stowage' ? '1.00x' : '-'; // for stowage (age): encrypted / plain
  const vsZip = c.size != null && zipR?.size ? `${fmt((c.size / zipR.size) * 100, 1)}%` : '-';
  const partial = c.okRuns < c.runs.length ? ` (${c.okRuns}/${c.runs.length} ok)` : '';
  out.push(`| ${cell(c.tool)} | ${c.op} | ${fmt(c.median)}${partial} | ${fmt(c.min)}–${fmt(c.max)} | ${fmt(c.userMedian, 1)}+${fmt(c.sysMedian, 1)} | ${fmt(c.syncMedian)} | ${fmt(corpusMB / c.median, 1)} | ${ratio} | ${c.size != null ? fmt(mb(c.size), 1) : '-'} | ${vsZip} | ${fmt(c.peakMB, 0)} |`);
}
out.push('', '"time vs stowage" = tool median / stowage median for the same operation (above 1.00x: stowage is faster; for `stowage (age)` it is encrypted / plain). "archive MB" of `stowage (age)` is the age file. "then sync s" = a `sync` timed right after the command (not included in its time). "CPU s" = median user + system CPU seconds of the command and its children (from `/usr/bin/time -v`). Peak RSS is the largest of the runs; for pipelines it is the largest single process.', '');

// ---------- targets ----------
const checks = [];
const check = (label, pass, detail) => checks.push(`${pass == null ? 'SKIP' : pass ? 'PASS' : 'FAIL'}  ${label}: ${detail}`);
const sb = find('stowage', 'backup'), rb = find('restic backup (fresh repo)', 'backup');
const srT = find('stowage', 'restore → tmpfs'), uzT = find('unzip -q', 'restore → tmpfs');
if (opts.only !== 'restore') {
  if (sb && zipR) check('backup at least 5x faster than zip -r', zipR.median / sb.median >= 5, `zip -r ${fmt(zipR.median)} s / stowage ${fmt(sb.median)} s = ${fmt(zipR.median / sb.median)}x (need >= 5.00x)`);
  else check('backup at least 5x faster than zip -r', null, 'zip -r or stowage has no result');
  if (sb && rb) check("backup faster than restic's first backup", sb.median < rb.median, `stowage ${fmt(sb.median)} s vs restic ${fmt(rb.median)} s`);
  else check("backup faster than restic's first backup", null, 'restic or stowage has no result');
  if (sb && zipR) check("archive no more than 5% larger than zip -r's", sb.size <= zipR.size * 1.05, `stowage ${fmt(mb(sb.size), 1)} MB vs zip -r ${fmt(mb(zipR.size), 1)} MB (${(sb.size / zipR.size - 1) * 100 >= 0 ? '+' : ''}${fmt((sb.size / zipR.size - 1) * 100, 1)}%)`);
  else check("archive no more than 5% larger than zip -r's", null, 'zip -r or stowage has no result');
}
if (opts.only !== 'backup') {
  if (srT && uzT) check('restore with full verification faster than unzip -q (tmpfs)', srT.median < uzT.median, `stowage ${fmt(srT.median)} s vs unzip ${fmt(uzT.median)} s`);
  else check('restore with full verification faster than unzip -q (tmpfs)', null, 'tmpfs, unzip or stowage has no result');
  const srD = find('stowage', 'restore → disk'), uzD = find('unzip -q', 'restore → disk');
  if (srD && uzD) checks.push(`info  restore on disk (not a target): stowage ${fmt(srD.median)} s vs unzip ${fmt(uzD.median)} s`);
}
// Encryption (issue 6): an encrypted backup may take at most 15% longer than the same backup
// unencrypted. Verdict on the ratio of the medians; the per-run ratios (each encrypted run
// follows its plain run directly) and the CPU ratio are shown because the machine is shared.
const ENC_LIMIT = 1.15;
const pairs = (op) => {
  const a = cases.find((c) => c.tool === 'stowage' && c.op === op), b = cases.find((c) => c.tool === 'stowage (age)' && c.op === op);
  return (a?.runs ?? []).map((r, i) => [r, b?.runs?.[i]]).filter(([x, y]) => x && y && !x.error && !y.error).map(([x, y]) => y.sec / x.sec);
};
const encDetail = (plain, age, op) => {
  const cpu = (c) => c.userMedian + c.sysMedian, pr = pairs(op);
  return `stowage (age) ${fmt(age.median)} s / stowage ${fmt(plain.median)} s = ${fmt(age.median / plain.median, 3)}x (${age.median >= plain.median ? '+' : ''}${fmt((age.median / plain.median - 1) * 100, 1)}%); per run ${pr.map((x) => `${fmt(x, 2)}x`).join(', ') || '-'}; CPU ${fmt(cpu(age), 1)} / ${fmt(cpu(plain), 1)} s = ${fmt(cpu(age) / cpu(plain), 2)}x; peak RSS ${fmt(age.peakMB, 0)} / ${fmt(plain.peakMB, 0)} MB`;
};
if (opts.only !== 'restore') {
  const eb = find('stowage (age)', 'backup');
  if (sb && eb) check(`encryption adds no more than ${Math.round((ENC_LIMIT - 1) * 100)}% to backup time`, eb.median <= ENC_LIMIT * sb.median, encDetail(sb, eb, 'backup'));
  else check(`encryption adds no more than ${Math.round((ENC_LIMIT - 1) * 100)}% to backup time`, null, 'stowage or stowage (age) has no backup result');
}
if (opts.only !== 'backup') {
  for (const where of ['tmpfs', 'disk']) {
    const op = `restore → ${where}`, p = find('stowage', op), e = find('stowage (age)', op);
    if (p && e) checks.push(`info  encrypted restore → ${where} (not a target; decrypts to a temp file in the data folder first): ${encDetail(p, e, op)}`);
  }
}
const rss = {};
for (const c of cases.filter((x) => x.tool === 'stowage' && x.peakMB != null)) { const op = c.op.split(' ')[0]; rss[op] = Math.max(rss[op] ?? 0, c.peakMB); }
for (const [op, v] of Object.entries(rss)) check(`peak RSS under ${RSS_LIMIT_MB} MB (${op})`, v < RSS_LIMIT_MB, `${fmt(v, 0)} MB`);
// The same limit for encrypted backups and restores; not stored in summary-*.json, whose
// cross-profile comparison stays on the plain rows it always had.
const rssAge = {};
for (const c of cases.filter((x) => x.tool === 'stowage (age)' && x.peakMB != null)) { const op = c.op.split(' ')[0]; rssAge[op] = Math.max(rssAge[op] ?? 0, c.peakMB); }
for (const [op, v] of Object.entries(rssAge)) check(`peak RSS under ${RSS_LIMIT_MB} MB (${op}, encrypted)`, v < RSS_LIMIT_MB, `${fmt(v, 0)} MB`);
// "about the same for small, medium and large": compare with the other profiles' last results.
const summaryFile = (p) => path.join(WORK, `summary-${p}.json`);
const readSummary = (p) => { try { return JSON.parse(fs.readFileSync(summaryFile(p), 'utf8')); } catch { return null; } };
const prev = readSummary(opts.profile);
fs.writeFileSync(summaryFile(opts.profile), JSON.stringify({ date: new Date().toISOString(), build, corpus, rss: { ...(prev?.build === build ? prev.rss : {}), ...rss } }, null, 2));
for (const op of Object.keys(rss)) {
  const all = ['small', 'medium', 'large'].map((p) => [p, readSummary(p)]).filter(([, s]) => s?.rss?.[op] != null);
  const seen = all.filter(([, s]) => s.build === build).map(([p, s]) => [p, s.rss[op]]);
  const other = all.filter(([, s]) => s.build !== build).map(([p]) => p);
  const detail = seen.map(([p, v]) => `${p} ${fmt(v, 0)} MB`).join(', '), ignored = other.length ? `; ignored ${other.join(', ')}: another build` : '';
  if (seen.length < 2) check(`peak RSS about the same across profiles (${op})`, null, `only ${detail} measured with build ${build} so far${ignored} (bench/.work/summary-*.json)`);
  else { const vs = seen.map(([, v]) => v); check(`peak RSS about the same across profiles (${op}, max <= ${RSS_FLAT}x min)`, Math.max(...vs) <= RSS_FLAT * Math.min(...vs), `${detail} (build ${build}${ignored}; bench/.work/summary-*.json)`); }
}
out.push('```', ...checks, '```', '');
if (maxLoad > os.availableParallelism() / 2) notes.push(`the machine was busy with other work (1-min load up to ${maxLoad.toFixed(2)} on ${os.availableParallelism()} cores): wall times are noisy, CPU seconds less so`);
if (notes.length) out.push('Notes:', ...notes.map((n) => `- ${n}`), '');

// ---------- machine ----------
const version = (cmd, args, pick = firstLine) => { const r = run(cmd, args); return r.status === 0 ? pick(r.stdout || r.stderr) : 'not installed'; };
const cpu = /model name\s*:\s*(.*)/.exec(fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '')?.[1] ?? os.cpus()[0]?.model;
const machine = {
  date: new Date().toISOString(), nproc: os.availableParallelism(), cpu, memGB: +(os.totalmem() / 2 ** 30).toFixed(1), kernel: `${os.type()} ${os.release()}`,
  loadavg: `${loadBefore} at start, ${os.loadavg().map((x) => x.toFixed(2)).join(' ')} at end (1/5/15 min); highest 1-min load seen before a timed run: ${maxLoad.toFixed(2)}`,
  workFs: firstLine(run('stat', ['-f', '-c', '%T', WORK]).stdout), node: process.version,
  stowage: `${JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')).version}, git HEAD ${git || '?'}${dirty} when dist/ was copied; dist/ content hash ${build}`,
  zip: version('zip', ['-v'], (s) => s.split('\n')[1]?.trim()), unzip: version('unzip', ['-v']), pigz: version('pigz', ['--version']),
  tar: version('tar', ['--version']), restic: version('restic', ['version']),
};
out.push('Machine:', ...Object.entries(machine).map(([k, v]) => `- ${k}: ${v}`), '');
out.push('Flags: `zip -r -q` (default level 6) and `-0` from inside the corpus; `tar cf - . | pigz -p 2` under `bash -o pipefail`; `restic init` (untimed) then `restic --no-cache backup -q <corpus>` into a fresh repository each run, `RESTIC_PASSWORD=bench`; `unzip -q`; `restic --no-cache restore latest -q --target`; `stowage backup --json` / `stowage restore <archive> --target <dir> --yes --no-safety-backup --json`; `stowage (age)`: the same with `encryption: {recipients: [<key from stowage keygen>]}` in stowage.yaml, and `--identity <file>` on restore.');
process.stdout.write(`${out.join('\n')}\n`);

if (opts.json) {
  const strip = ({ prep, cmd, after, ...rest }) => rest;
  fs.writeFileSync(path.resolve(opts.json), JSON.stringify({ options: opts, corpus: { path: corpus, ...C }, machine, cases: cases.map(strip), checks, notes }, null, 2));
  log(`raw results written to ${path.resolve(opts.json)}`);
}
