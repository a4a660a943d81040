#!/usr/bin/env -S node --max-semi-space-size=4
// The `stowage` command. A CommonJS file so that it runs before libuv's thread pool exists: an
// ES module entry is itself read through that pool, so by the time its code runs the size is
// fixed. The pool does Stowage's file reads and deflates; libuv's default of 4 threads on a
// 2-core machine took CPU from the main thread, which walks the tree and drives every file, and
// the medium-corpus backup ran 5.98 s instead of 5.53 s (docs/PERFORMANCE.md). One thread per
// core (at least 2) unless UV_THREADPOOL_SIZE says otherwise.
//
// The flag: streaming work makes many short-lived buffers, and V8's default young generation
// let them pile up to ~40 MB of extra RSS; 4 MB semi-spaces keep peak RSS flat for a little more
// GC time (also in docs/PERFORMANCE.md). npm scripts pass the same flag.
import os = require('node:os');

process.env.UV_THREADPOOL_SIZE ??= String(Math.min(16, Math.max(2, os.availableParallelism())));
// The AWS SDK warns on every start under Node 20 that its releases after January 2027 will need
// Node 22. package-lock.json pins a release that supports Node 20, so for someone running a
// command the warning is noise on every line of output; the upgrade is ours to plan (README).
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

import('./main.js').catch((err: unknown) => {
  process.stderr.write(`error: could not start stowage: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exitCode = 1;
});
