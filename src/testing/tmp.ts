import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';

/** A fresh temporary folder for one test, removed by the returned cleanup. */
export function makeTempDir(prefix = 'stowage-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function removeDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}

/** Runs an external judge (unzip, 7z, sqlite3, ...) and returns its output. */
export function run(cmd: string, args: string[], options: { cwd?: string; input?: string } = {}): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { cwd: options.cwd, input: options.input, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (r.error) throw r.error;
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

export function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

/** Writes a tree described as { 'a/b.txt': 'content', 'empty/': null }. */
export function writeTree(root: string, tree: Record<string, string | Buffer | null>): void {
  for (const [rel, content] of Object.entries(tree)) {
    const p = path.join(root, rel);
    if (content === null) {
      fs.mkdirSync(p, { recursive: true });
    } else {
      fs.mkdirSync(path.dirname(p), { recursive: true });
      fs.writeFileSync(p, content);
    }
  }
}
