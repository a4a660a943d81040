import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

/** One path of a tree, as a byte-for-byte comparison needs it. */
export interface TreeNode {
  type: 'file' | 'dir' | 'symlink' | 'other';
  mode: number;
  mtimeMs: number;
  sha256?: string;
  target?: string;
}

export type TreeSnapshot = Record<string, TreeNode>;

/**
 * Every path below `root` (not root itself, nothing filtered, so Stowage's own leftovers count
 * as differences): type, permission bits, mtime, content hash, link target. `wholeMs` floors
 * mtimes to the millisecond, the precision the manifest records.
 */
export function snapshotTree(root: string, options: { wholeMs?: boolean } = {}): TreeSnapshot {
  const out: TreeSnapshot = {};
  const walk = (dir: string, rel: string) => {
    for (const name of fs.readdirSync(dir).sort()) {
      const abs = path.join(dir, name);
      const r = rel ? `${rel}/${name}` : name;
      const st = fs.lstatSync(abs);
      const base = { mode: st.mode & 0o7777, mtimeMs: options.wholeMs ? Math.floor(st.mtimeMs) : st.mtimeMs };
      if (st.isSymbolicLink()) out[r] = { type: 'symlink', ...base, target: fs.readlinkSync(abs) };
      else if (st.isDirectory()) {
        out[r] = { type: 'dir', ...base };
        walk(abs, r);
      } else if (st.isFile()) out[r] = { type: 'file', ...base, sha256: crypto.createHash('sha256').update(fs.readFileSync(abs)).digest('hex') };
      else out[r] = { type: 'other', ...base };
    }
  };
  walk(root, '');
  return out;
}
