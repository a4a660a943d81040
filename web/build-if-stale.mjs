// Builds the web panel (npm run build:web) unless dist/web is newer than every file it is made
// from: `npm start` stays quick after the first build and still picks up a changed panel or SDK.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const built = path.join(root, 'dist/web/index.html');

function newest(target) {
  const stat = fs.statSync(target, { throwIfNoEntry: false });
  if (!stat) return 0;
  if (!stat.isDirectory()) return stat.mtimeMs;
  let max = stat.mtimeMs;
  for (const entry of fs.readdirSync(target)) max = Math.max(max, newest(path.join(target, entry)));
  return max;
}

const inputs = ['web/src', 'web/public', 'web/index.html', 'web/vite.config.ts', 'web/tsconfig.json', 'src/sdk', 'src/server/schemas.ts', 'src/server/scopes.ts', 'package-lock.json'];
const builtAt = fs.statSync(built, { throwIfNoEntry: false })?.mtimeMs ?? 0;
const sourcesAt = Math.max(...inputs.map((p) => newest(path.join(root, p))));
if (builtAt > sourcesAt) process.exit(0);
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const result = spawnSync(npm, ['run', 'build:web', '--silent'], { cwd: root, stdio: 'inherit' });
process.exit(result.status ?? 1);
