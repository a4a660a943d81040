import { Worker } from 'node:worker_threads';
import { fnmatchToRegExp } from './fnmatch.js';
import { RESTORE_STAGING_PREFIX } from './source.js';

/**
 * Counts the files and bytes below a folder on a worker thread, for the progress bar's totals.
 *
 * Why a thread: the backup's own walk and file reads run on the main thread, which is the
 * bottleneck of a backup of many small files; the count done there (even synchronously, in
 * slices) cost ~0.7 s of it on the medium corpus. On its own thread it costs the backup nothing
 * but a short-lived V8 isolate.
 *
 * The worker is plain JavaScript with node built-ins only (source text), so it runs the same
 * from the TypeScript sources and from the build. Same filtering as walkDir: exclude rules,
 * never-include paths, restore staging folders; symlinks are not followed.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
const path = require('node:path');
const { root, patterns, never, stagingPrefix } = workerData;
const rules = patterns.map((p) => new RegExp(p, 's'));
const neverSet = new Set(never);
let files = 0, bytes = 0;
const stack = [{ abs: root, rel: '' }];
while (stack.length) {
  const { abs: dirAbs, rel: dirRel } = stack.pop();
  let names;
  try { names = fs.readdirSync(dirAbs); } catch { continue; }
  for (const name of names) {
    const rel = dirRel ? dirRel + '/' + name : name;
    const abs = path.join(dirAbs, name);
    if (name.startsWith(stagingPrefix) || neverSet.has(abs) || rules.some((r) => r.test(rel))) continue;
    const st = fs.lstatSync(abs, { throwIfNoEntry: false });
    if (!st) continue;
    if (st.isDirectory()) stack.push({ abs, rel });
    else if (st.isFile()) { files++; bytes += st.size; }
  }
}
parentPort.postMessage({ files, bytes });
`;

export function estimateInWorker(root: string, rules: readonly string[], never: string[]): Promise<{ files: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { root, patterns: rules.map((r) => fnmatchToRegExp(r).source), never, stagingPrefix: RESTORE_STAGING_PREFIX },
      // A counter needs little heap; keep the isolate small.
      resourceLimits: { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 4 },
    });
    worker.unref();
    worker.once('message', (m: { files: number; bytes: number }) => {
      resolve(m);
      void worker.terminate();
    });
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (code !== 0) reject(new Error(`estimate worker exited with ${code}`));
    });
  });
}
