import fs from 'node:fs';
import path from 'node:path';
import type { ArchiveReader } from '../archive/zip-reader.js';
import { StowageError } from '../errors.js';
import { utimesSeconds } from '../fs/fd.js';
import { walkDir } from '../sources/dir.js';
import type { ExcludeRules } from '../sources/fnmatch.js';
import { parsePgVersion, pgMajorNum } from '../sources/postgres.js';
import type { RenameOp } from './restore-journal.js';

/** Names Stowage itself puts in a target; never part of a restore's plan. */
export function isInternalName(name: string): boolean {
  return name.startsWith('.stowage-restore-') || name.startsWith('.stowage-previous-');
}

function lstatOrNull(p: string): fs.Stats | null {
  try {
    return fs.lstatSync(p);
  } catch {
    return null;
  }
}

/**
 * The renames that swap a staged tree into `target`, entry by entry at the top level (so the
 * target itself may be a mount point or a Docker volume):
 * 1. carry: paths the backup excluded (and Stowage's own folders) that sit inside a top-level
 *    folder about to be replaced are moved into the staged tree first, so they survive;
 * 2. aside: each current top-level entry that is not excluded goes to `old/`;
 * 3. in: each staged top-level entry goes into the target.
 * Top-level entries the backup excluded are not touched at all.
 */
export function planDirSwap(target: string, stagedDir: string, oldDir: string, rules: ExcludeRules, neverInclude: string[]): RenameOp[] {
  const never = new Set(neverInclude.map((p) => path.resolve(p)));
  const isKept = (rel: string, abs: string) => rules.matches(rel) || never.has(abs);
  const ops: RenameOp[] = [];
  const current = fs.existsSync(target) ? fs.readdirSync(target).filter((n) => !isInternalName(n)) : [];
  const staged = new Set(fs.readdirSync(stagedDir));

  const carry = (rel: string) => {
    const abs = path.join(target, rel);
    for (const d of fs.readdirSync(abs, { withFileTypes: true })) {
      const childRel = `${rel}/${d.name}`;
      const childAbs = path.join(abs, d.name);
      if (isKept(childRel, childAbs)) {
        // The backup wins if it does contain something at this path.
        if (!lstatOrNull(path.join(stagedDir, childRel))) ops.push({ from: childAbs, to: path.join(stagedDir, childRel), fromParentMtimeMs: fs.lstatSync(abs).mtimeMs });
      } else if (d.isDirectory()) {
        carry(childRel);
      }
    }
  };
  for (const name of current) {
    const abs = path.join(target, name);
    if (isKept(name, abs) && !staged.has(name)) continue;
    const st = lstatOrNull(abs);
    if (st?.isDirectory() && staged.has(name) && lstatOrNull(path.join(stagedDir, name))?.isDirectory()) carry(name);
  }
  for (const name of current) {
    const abs = path.join(target, name);
    if (isKept(name, abs) && !staged.has(name)) continue;
    ops.push({ from: abs, to: path.join(oldDir, name) });
  }
  for (const name of [...staged].sort()) ops.push({ from: path.join(stagedDir, name), to: path.join(target, name) });
  return ops;
}

export interface SourcePlan {
  name: string;
  kind: string;
  target: string;
  added: string[];
  replaced: string[];
  removed: string[];
  unchanged: number;
  /** What happens besides files (a PostgreSQL source: the database that would be replaced). */
  note?: string;
}

/** What a restore of one dir source would add, replace and remove (for --dry-run). */
export async function diffDirSource(reader: ArchiveReader, sourceName: string, target: string, rules: ExcludeRules, neverInclude: string[]): Promise<SourcePlan> {
  const prefix = `${sourceName}/`;
  const plan: SourcePlan = { name: sourceName, kind: 'dir', target, added: [], replaced: [], removed: [], unchanged: 0 };
  const current = new Map<string, fs.Stats>();
  if (fs.existsSync(target)) {
    for await (const e of walkDir(target, { excludes: rules, neverInclude, tempDir: '', warn: () => {} })) current.set(e.rel, e.stat);
  }
  for (const entry of reader.order) {
    const name = reader.name(entry);
    if (!name.startsWith(prefix)) continue;
    const rel = name.slice(prefix.length);
    const type = reader.type(entry);
    const st = current.get(rel);
    current.delete(rel);
    if (!st) {
      plan.added.push(rel);
      continue;
    }
    const sameType = type === 'dir' ? st.isDirectory() : type === 'symlink' ? st.isSymbolicLink() : st.isFile();
    const same = sameType && (type === 'dir' || (st.size === reader.size(entry) && Math.abs(st.mtimeMs - reader.mtimeMs(entry)) < 1));
    if (same) plan.unchanged++;
    else plan.replaced.push(rel);
  }
  plan.removed = [...current.keys()];
  return plan;
}

/** Numeric dotted versions compare numerically; anything else only by equality. */
export function compareVersions(a: string, b: string): number | null {
  const parse = (v: string) => {
    const m = /^v?(\d+(?:\.\d+)*)/.exec(v.trim());
    return m ? m[1]!.split('.').map(Number) : null;
  };
  const pa = parse(a);
  const pb = parse(b);
  if (!pa || !pb) return a === b ? 0 : null;
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  return 0;
}

export type VersionPolicy = 'any' | 'same-or-older' | 'same';

const POLICY_HINT = 'set restore.versionPolicy in stowage.yaml, or pass --force if you are sure';

export function checkVersionPolicy(policy: VersionPolicy, backupVersion: string, currentVersion: string): void {
  if (policy === 'any') return;
  const cmp = compareVersions(backupVersion, currentVersion);
  const hint = POLICY_HINT;
  if (policy === 'same' && cmp !== 0) {
    throw new StowageError('VERSION_POLICY', `this backup was made by app version ${backupVersion} but ${currentVersion} is running, and the policy is "same"; ${hint}`);
  }
  if (policy === 'same-or-older') {
    if (cmp === null) throw new StowageError('VERSION_POLICY', `cannot compare the backup's app version "${backupVersion}" with the running "${currentVersion}" (policy "same-or-older"); ${hint}`);
    if (cmp > 0) throw new StowageError('VERSION_POLICY', `this backup comes from a newer app version (${backupVersion}) than the one running (${currentVersion}); upgrade the app first, or ${hint}`);
  }
}

/**
 * Carrying excluded paths into staged folders changed those folders' mtimes after staging had
 * set them from the backup; set them again once the swap is done. `ops` are the swap's renames.
 */
export function fixFolderTimes(ops: RenameOp[], stagedDir: string, target: string, mtimeMsOf: (rel: string) => number | undefined): void {
  const done = new Set<string>();
  for (const op of ops) {
    if (op.fromParentMtimeMs === undefined) continue;
    const rel = path.relative(stagedDir, path.dirname(op.to)).split(path.sep).join('/');
    if (done.has(rel)) continue;
    done.add(rel);
    const ms = mtimeMsOf(rel);
    if (ms === undefined) continue;
    const t = utimesSeconds(ms);
    try {
      fs.utimesSync(path.join(target, rel), t, t);
    } catch {
      // best effort: content is in place, only a folder time is off
    }
  }
}

/**
 * restore.versionPolicy for a PostgreSQL source: the server version the backup recorded against
 * the target server's. PostgreSQL versions are compared by major version (15, 16; 9.6 before
 * 10): minor releases of one major version share the catalogue and dump compatibility, so a
 * routine minor update never blocks a restore. "same" wants the same major version;
 * "same-or-older" a backup from the same or an older major version (a dump restores into a
 * newer server, the usual upgrade path; into an older one it may not). Throws VERSION_POLICY
 * saying both versions and where the target is.
 */
export function checkPostgresVersionPolicy(policy: VersionPolicy, source: string, backupVersion: string, targetVersion: string, target: string): void {
  if (policy === 'any') return;
  const b = parsePgVersion(backupVersion);
  const t = parsePgVersion(targetVersion);
  const what = `source "${source}"`;
  if (!b || !t) {
    throw new StowageError('VERSION_POLICY', `${what}: cannot compare the PostgreSQL version of the backup ("${backupVersion}") with the target server's ("${targetVersion}", ${target}) (policy "${policy}"); ${POLICY_HINT}`);
  }
  const bm = pgMajorNum(b);
  const tm = pgMajorNum(t);
  if (policy === 'same' && bm !== tm) {
    throw new StowageError(
      'VERSION_POLICY',
      `${what}: this backup comes from PostgreSQL ${b.text} and the target server (${target}) runs PostgreSQL ${t.text}; the policy "same" wants the same major version (${b.major} in the backup, ${t.major} on the server); ${POLICY_HINT}`,
    );
  }
  if (policy === 'same-or-older' && bm > tm) {
    throw new StowageError(
      'VERSION_POLICY',
      `${what}: this backup comes from a newer PostgreSQL (${b.text}) than the target server (${target}) runs (${t.text}); with the policy "same-or-older" a dump goes into the same or a newer major version (${b.major} or later, the server has ${t.major}); upgrade the server first, or ${POLICY_HINT}`,
    );
  }
}
