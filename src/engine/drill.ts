import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { ManifestEntry, ManifestSource } from '../archive/manifest.js';
import { ArchiveReader } from '../archive/zip-reader.js';
import { StowageError, errorMessage, isStowageError, type StowageErrorCode } from '../errors.js';
import { progressThrottle, type Progress } from '../events/events.js';
import type { BackupRecord, CheckRecord } from './catalogue.js';
import type { EngineContext } from './context.js';
import { POSTGRES_DUMP_ENTRY } from '../sources/postgres.js';
import { postgresDumpProblems } from './restore-postgres.js';
import { stageSourceTree } from './restore-stage.js';

/**
 * Restore drills and recorded verification: the "test your restores" every backup guide asks
 * for, done by Stowage and written on the backup (`drilledAt`/`drillStatus`/`drillMessage`,
 * `verifiedAt`/`verifyStatus`/`verifyMessage`) for people and the scheduler to read.
 *
 * A drill extracts every source of a backup into a scratch folder, `<dataDir>/tmp/<process
 * tag>/drill-<id>`, with the restore's own staging code (`stageSourceTree`: the same bytes,
 * modes and SHA-256 checks a restore writes), then checks the result independently of that
 * code: it walks the folder and compares every path with the manifest (type, size, SHA-256 of
 * what is on disk, symlink target, permission bits, nothing extra), and runs SQLite's
 * `integrity_check` on every SQLite source. A PostgreSQL source's dump is extracted and compared
 * like any file, then read with `pg_restore --list` (header, pg_restore new enough, the whole
 * table of contents): a drill never connects to the configured database, and does not restore
 * into a scratch database either, which would need CREATEDB on the production server and run
 * the dump there (restore-postgres.ts, postgresDumpProblems). The scratch folder is removed
 * whatever happens.
 *
 * It deliberately does not go through `runRestore`: a drill must not run the beforeRestore /
 * afterRestore hooks (they stop and start the application), write the restore status users
 * read for real restores, write the restore journal, emit `restore.*` events, or apply the
 * version policy. For the same reason a drill runs when restore is disabled
 * (`restore.enabled: false`, STOWAGE_RESTORE_UNSUPPORTED): it writes only scratch data inside
 * the data folder, never the configured targets, and a system that cannot restore in place is
 * exactly one that should still know whether its backups would restore elsewhere.
 */

export type BackupSample = 'newest' | 'rotate';

export interface DrillOptions {
  /** Who asked: 'manual' (CLI), 'schedule', 'api'. Carried in the events. */
  trigger?: string;
  /** Progress while restoring into scratch space and comparing (phases: restoring, comparing, checking-sqlite). */
  onProgress?: (p: Progress) => void;
}

export interface DrillSourceResult {
  name: string;
  kind: string;
  /** Regular files restored and compared. */
  files: number;
  bytes: number;
  ok: boolean;
  /** What was wrong with this source (empty when ok), at most MAX_PROBLEMS. */
  problems: string[];
}

export interface DrillResult {
  key: string;
  ok: boolean;
  trigger: string;
  /** When the drill finished (what `drilledAt` records), ISO 8601. */
  drilledAt: string;
  durationMs: number;
  files: number;
  bytes: number;
  sources: DrillSourceResult[];
  /** Every problem, prefixed with its source (empty when ok), at most MAX_PROBLEMS. */
  problems: string[];
  /** Not failures: metadata the scratch folder could not take (ownership as non-root, times). */
  warnings: string[];
  /** One line for people, what `drillMessage` records. */
  message: string;
  /** Set when the drill failed: the code of the first failure and the message. */
  error: { code: StowageErrorCode; message: string } | null;
}

/** Listing every mismatch of a badly damaged backup helps nobody; the first ones say enough. */
const MAX_PROBLEMS = 200;
const HASH_WORKERS = 4;

/**
 * Which backup a drill or a recorded verification works on: `key` if given (it must be a
 * completed backup), else the newest completed one, or with 'rotate' the one checked least
 * recently: never-checked first (oldest first, so every backup gets its turn), then by the
 * time of its last check.
 */
export function chooseBackup(backups: readonly BackupRecord[], key: string | undefined, sample: BackupSample, check: 'drill' | 'verify'): string {
  const verb = check === 'drill' ? 'drill' : 'verify';
  if (key) {
    const found = backups.find((b) => b.key === key);
    if (!found) throw new StowageError('BACKUP_NOT_FOUND', `no backup named ${key}; "stowage list" shows the backups there are`);
    if (found.status !== 'completed') {
      throw new StowageError('BACKUP_NOT_FOUND', `backup ${key} is ${found.status}${found.statusMessage ? ` (${found.statusMessage})` : ''}; only a completed backup can be checked`);
    }
    return key;
  }
  const completed = backups.filter((b) => b.status === 'completed');
  if (!completed.length) throw new StowageError('BACKUP_NOT_FOUND', `there is no completed backup to ${verb}; create one with: stowage backup`);
  const newestFirst = (a: BackupRecord, b: BackupRecord) => b.createdAt.localeCompare(a.createdAt) || b.key.localeCompare(a.key);
  if (sample === 'newest') return [...completed].sort(newestFirst)[0]!.key;
  const lastChecked = (b: BackupRecord) => (check === 'drill' ? b.drilledAt : b.verifiedAt) ?? '';
  return [...completed].sort((a, b) => lastChecked(a).localeCompare(lastChecked(b)) || -newestFirst(a, b))[0]!.key;
}

/**
 * A check that ran and found the backup bad: thrown out of the job so that the job history
 * says `failed`, and turned back into its result by the facade (a bad backup is an answer,
 * not an error of the command).
 */
export class CheckFailed<T> extends StowageError {
  constructor(readonly result: T, code: StowageErrorCode, message: string) {
    super(code, message);
  }
}

/**
 * Runs a drill of `archive` (the caller holds the data-folder lock), records the outcome on
 * the backup and emits `drill.completed` / `drill.failed`. Resolves with ok: false when the
 * backup does not restore correctly; rejects only if recording fails.
 */
export async function runDrill(ctx: EngineContext, archive: { file: string; key: string }, options: DrillOptions = {}): Promise<DrillResult> {
  const trigger = options.trigger ?? 'manual';
  const t0 = Date.now();
  const scratch = path.join(ctx.tempDir, `drill-${crypto.randomBytes(6).toString('hex')}`);
  const sources: DrillSourceResult[] = [];
  const warnings: string[] = [];
  let fatal: { code: StowageErrorCode; message: string } | null = null;
  let sqliteChecked = 0;
  let pgChecked = 0;

  try {
    const reader = await ArchiveReader.open(archive.file);
    try {
      // The whole manifest: the comparison walks every entry (a drill is occasional; restore streams it).
      const manifest = await reader.readManifest();
      const progress: Omit<Progress, 'elapsedMs'> = {
        phase: 'restoring',
        files: 0,
        filesTotal: manifest.sources.reduce((a, s) => a + s.files, 0),
        bytes: 0,
        bytesTotal: manifest.sources.reduce((a, s) => a + s.bytes, 0),
      };
      const report = progressThrottle((p) => options.onProgress?.(p));
      const emitProgress = (force = false) => report({ ...progress, elapsedMs: Date.now() - t0 }, force);
      const onBytes = (n: number) => {
        progress.bytes += n;
        emitProgress();
      };
      const onFile = () => progress.files++;

      await checkScratchSpace(ctx.tempDir, progress.bytesTotal);
      await fs.promises.mkdir(scratch, { recursive: true });
      emitProgress(true);

      // 1. Restore every source into the scratch folder (checksums verified as written).
      const restorable: ManifestSource[] = [];
      for (const source of manifest.sources) {
        const result: DrillSourceResult = { name: source.name, kind: source.kind, files: 0, bytes: 0, ok: true, problems: [] };
        sources.push(result);
        if (source.kind !== 'dir' && source.kind !== 'sqlite' && source.kind !== 'postgres') {
          result.problems.push(`source kind "${source.kind}" cannot be restored by this version of Stowage`);
          continue;
        }
        const staged = await stageSourceTree(reader, source.name, path.join(scratch, source.name), onBytes, onFile);
        warnings.push(...staged.warnings.filter((w) => !/: mode not restored/.test(w)));
        restorable.push(source);
      }

      // 2. Compare what is on disk with the manifest, reading every file again.
      progress.phase = 'comparing';
      progress.files = 0;
      progress.bytes = 0;
      emitProgress(true);
      for (const source of restorable) {
        const result = sources.find((s) => s.name === source.name)!;
        const compared = await compareWithManifest(path.join(scratch, source.name), source.name, manifest.entries, onBytes, onFile);
        result.files = compared.files;
        result.bytes = compared.bytes;
        result.problems.push(...compared.problems);
      }

      // 3. Open every SQLite database and let SQLite check it.
      progress.phase = 'checking-sqlite';
      emitProgress(true);
      for (const source of restorable.filter((s) => s.kind === 'sqlite')) {
        const result = sources.find((s) => s.name === source.name)!;
        const dbEntries = manifest.entries.filter((e) => e.type === 'file' && e.path.startsWith(`${source.name}/`));
        if (!dbEntries.length) result.problems.push('the backup has no database file for this source');
        for (const entry of dbEntries) {
          const problems = sqliteIntegrityProblems(path.join(scratch, entry.path));
          sqliteChecked++;
          if (problems.length) result.problems.push(`${entry.path}: the database fails SQLite's integrity check: ${problems.slice(0, 5).join('; ')}${problems.length > 5 ? ` (+${problems.length - 5} more)` : ''}`);
        }
      }

      // 4. Read every PostgreSQL dump with pg_restore --list (no database is touched).
      const pgSources = restorable.filter((s) => s.kind === 'postgres');
      if (pgSources.length) {
        progress.phase = 'checking-postgres';
        emitProgress(true);
      }
      for (const source of pgSources) {
        const result = sources.find((s) => s.name === source.name)!;
        const configured = ctx.config.sources.find((s) => s.name === source.name);
        const dump = path.join(scratch, source.name, POSTGRES_DUMP_ENTRY);
        if (!fs.existsSync(dump)) {
          result.problems.push('the backup has no database dump for this source');
          continue;
        }
        result.problems.push(...(await postgresDumpProblems(dump, configured?.kind === 'postgres' ? configured.binDir : undefined)));
        pgChecked++;
      }
      progress.phase = 'completed';
      emitProgress(true);
    } finally {
      reader.close();
    }
  } catch (err) {
    fatal = { code: isStowageError(err) ? err.code : 'RESTORE_FAILED', message: errorMessage(err) };
  } finally {
    try {
      await removeScratch(scratch);
    } catch (err) {
      warnings.push(`the scratch folder ${scratch} could not be removed (${errorMessage(err)}); remove it by hand`);
    }
  }

  for (const s of sources) {
    s.problems = s.problems.slice(0, MAX_PROBLEMS);
    s.ok = s.problems.length === 0;
  }
  const problems = [...(fatal ? [fatal.message] : []), ...sources.flatMap((s) => s.problems.map((p) => `${s.name}: ${p}`))].slice(0, MAX_PROBLEMS);
  const ok = problems.length === 0;
  const files = sources.reduce((a, s) => a + s.files, 0);
  const bytes = sources.reduce((a, s) => a + s.bytes, 0);
  const drilledAt = new Date().toISOString();
  const message = ok
    ? `restored ${files} file${files === 1 ? '' : 's'} (${bytes} bytes) into a scratch folder: every file matches the manifest${sqliteChecked ? `, every SQLite database passes integrity_check` : ''}${pgChecked ? `, every PostgreSQL dump reads with pg_restore --list` : ''}`
    : `the backup does not restore correctly: ${problems.slice(0, 3).join(' | ')}${problems.length > 3 ? ` (+${problems.length - 3} more)` : ''}`;
  const error = ok ? null : { code: fatal?.code ?? firstProblemCode(sources), message };
  const result: DrillResult = { key: archive.key, ok, trigger, drilledAt, durationMs: Date.now() - t0, files, bytes, sources, problems, warnings, message, error };

  const record: CheckRecord = { at: drilledAt, status: ok ? 'ok' : 'failed', message };
  ctx.catalogue.recordDrill(archive.key, record);
  ctx.jobLog(`drill of ${archive.key}: ${message}`);
  if (ok) ctx.events.emit('drill.completed', { key: archive.key, trigger, files, bytes, durationMs: result.durationMs });
  else ctx.events.emit('drill.failed', { key: archive.key, trigger, error: error! });
  return result;
}

/** A SQLite failure means the data is not usable as is; anything else is a damaged or wrong tree. */
function firstProblemCode(sources: DrillSourceResult[]): StowageErrorCode {
  return sources.some((s) => s.problems.some((p) => p.includes("fails SQLite's integrity check"))) ? 'ARCHIVE_INVALID' : 'RESTORE_FAILED';
}

async function checkScratchSpace(tempDir: string, need: number): Promise<void> {
  let probe = tempDir;
  while (!fs.existsSync(probe)) probe = path.dirname(probe);
  const st = await fs.promises.statfs(probe);
  const free = st.bavail * st.bsize;
  if (need > free) {
    throw new StowageError('RESTORE_FAILED', `not enough free space for the drill: it restores ${need} bytes into ${probe} and only ${free} are free; free some space there and drill again (the backup itself was not checked)`);
  }
}

interface FoundPath {
  stat: fs.Stats;
  abs: string;
}

/** Every path below `root` (not root itself), without following symlinks. */
async function walk(root: string): Promise<Map<string, FoundPath>> {
  const found = new Map<string, FoundPath>();
  const visit = async (dir: string, rel: string) => {
    for (const name of await fs.promises.readdir(dir)) {
      const abs = path.join(dir, name);
      const r = rel ? `${rel}/${name}` : name;
      const stat = await fs.promises.lstat(abs);
      found.set(r, { stat, abs });
      if (stat.isDirectory()) await visit(abs, r);
    }
  };
  await visit(root, '');
  return found;
}

function kindOf(st: fs.Stats): string {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  return 'special file';
}

async function sha256OfFile(file: string, onBytes: (n: number) => void): Promise<{ size: number; digest: string }> {
  const hash = crypto.createHash('sha256');
  let size = 0;
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>) {
    hash.update(chunk);
    size += chunk.length;
    onBytes(chunk.length);
  }
  return { size, digest: hash.digest('hex') };
}

/**
 * Compares the restored tree of one source with the manifest, from the disk alone: every
 * manifest entry present with its type, permission bits, size and SHA-256 (files, read back),
 * or link target (symlinks); nothing on disk the manifest does not list.
 */
export async function compareWithManifest(
  root: string,
  sourceName: string,
  entries: readonly ManifestEntry[],
  onBytes: (n: number) => void = () => {},
  onFile: () => void = () => {},
): Promise<{ files: number; bytes: number; problems: string[] }> {
  const prefix = `${sourceName}/`;
  const expected = new Map<string, ManifestEntry>();
  for (const e of entries) {
    if (!e.path.startsWith(prefix)) continue;
    const rel = e.path.slice(prefix.length).replace(/\/$/, '');
    if (rel) expected.set(rel, e);
  }
  const problems: string[] = [];
  const problem = (rel: string, text: string) => {
    if (problems.length < MAX_PROBLEMS) problems.push(`${rel}: ${text}`);
  };
  let found: Map<string, FoundPath>;
  try {
    found = await walk(root);
  } catch (err) {
    return { files: 0, bytes: 0, problems: [`the restored folder cannot be read (${errorMessage(err)})`] };
  }
  let files = 0;
  let bytes = 0;
  const toHash: Array<{ rel: string; abs: string; entry: ManifestEntry }> = [];

  for (const [rel, entry] of expected) {
    const onDisk = found.get(rel);
    if (!onDisk) {
      problem(rel, `missing after the restore (a ${entry.type} in the manifest)`);
      continue;
    }
    const actual = kindOf(onDisk.stat);
    if (actual !== entry.type) {
      problem(rel, `is a ${actual} after the restore, a ${entry.type} in the manifest`);
      continue;
    }
    const wantMode = parseInt(entry.mode, 8) & 0o777;
    if (entry.type !== 'symlink' && (onDisk.stat.mode & 0o777) !== wantMode) {
      problem(rel, `permissions are ${(onDisk.stat.mode & 0o777).toString(8).padStart(4, '0')} after the restore, ${wantMode.toString(8).padStart(4, '0')} in the manifest`);
    }
    if (entry.type === 'file') {
      if (onDisk.stat.size !== entry.size) problem(rel, `${onDisk.stat.size} bytes after the restore, ${entry.size} in the manifest`);
      else toHash.push({ rel, abs: onDisk.abs, entry });
    } else if (entry.type === 'symlink') {
      const target = await fs.promises.readlink(onDisk.abs, { encoding: 'buffer' });
      const digest = crypto.createHash('sha256').update(target).digest('hex');
      if (target.length !== entry.size || (entry.sha256 && digest !== entry.sha256)) problem(rel, `the link points to "${target.toString('utf8')}", not to the target the manifest records`);
    }
  }
  for (const rel of found.keys()) {
    if (!expected.has(rel)) problem(rel, `present after the restore but not in the manifest`);
  }

  let next = 0;
  const worker = async () => {
    while (next < toHash.length) {
      const { rel, abs, entry } = toHash[next++]!;
      try {
        const { size, digest } = await sha256OfFile(abs, onBytes);
        if (size !== entry.size) problem(rel, `${size} bytes read back, ${entry.size} in the manifest`);
        else if (entry.sha256 && digest !== entry.sha256) problem(rel, 'the restored content does not match the SHA-256 in the manifest');
        else {
          files++;
          bytes += size;
        }
      } catch (err) {
        problem(rel, `cannot be read back (${errorMessage(err)})`);
      }
      onFile();
    }
  };
  await Promise.all(Array.from({ length: HASH_WORKERS }, worker));
  return { files, bytes, problems };
}

/**
 * SQLite's own check of a restored database: the problems it reports (empty when "ok").
 * Opened read-write on purpose: this is a scratch copy about to be deleted, and a read-only
 * connection's integrity_check skips CHECK constraints (SQLite 3.53; NOT NULL and the b-tree
 * checks it does in both modes).
 */
export function sqliteIntegrityProblems(file: string): string[] {
  let db: Database.Database | undefined;
  try {
    db = new Database(file, { fileMustExist: true });
    const rows = db.pragma('integrity_check') as Array<{ integrity_check: string }>;
    if (rows.length === 1 && rows[0]!.integrity_check === 'ok') return [];
    return rows.map((r) => r.integrity_check);
  } catch (err) {
    return [`it cannot be opened (${errorMessage(err)})`];
  } finally {
    db?.close();
  }
}

/** Removes a scratch tree, including folders restored without write permission (mode 0555). */
async function removeScratch(dir: string): Promise<void> {
  try {
    await fs.promises.rm(dir, { recursive: true, force: true });
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EACCES' && (err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
  }
  const makeWritable = async (d: string) => {
    await fs.promises.chmod(d, 0o700).catch(() => {});
    for (const e of await fs.promises.readdir(d, { withFileTypes: true }).catch(() => [])) if (e.isDirectory()) await makeWritable(path.join(d, e.name));
  };
  await makeWritable(dir);
  await fs.promises.rm(dir, { recursive: true, force: true });
}

/** What `verifyRecorded` returns: the verification, and what was recorded on the backup. */
export interface RecordedVerifyResult {
  key: string;
  ok: boolean;
  trigger: string;
  entries: number;
  files: number;
  bytes: number;
  errors: Array<{ path: string; message: string }>;
  /** When the verification finished (what `verifiedAt` records). */
  verifiedAt: string;
  /** One line for people, what `verifyMessage` records. */
  message: string;
}

/**
 * Runs `verify` (re-read every entry, check every SHA-256) on `key`, records the outcome on
 * the backup and emits `verify.completed` / `verify.failed`. An archive that cannot be read at
 * all is a failed verification, not an error.
 */
export async function runRecordedVerify(
  ctx: EngineContext,
  key: string,
  trigger: string,
  verify: (key: string) => Promise<{ ok: boolean; entries: number; files: number; bytes: number; errors: Array<{ path: string; message: string }> }>,
): Promise<RecordedVerifyResult> {
  let outcome: Awaited<ReturnType<typeof verify>>;
  let code: StowageErrorCode = 'CHECKSUM_MISMATCH';
  try {
    outcome = await verify(key);
  } catch (err) {
    code = isStowageError(err) ? err.code : 'ARCHIVE_INVALID';
    outcome = { ok: false, entries: 0, files: 0, bytes: 0, errors: [{ path: key, message: errorMessage(err) }] };
  }
  const verifiedAt = new Date().toISOString();
  const message = outcome.ok
    ? `every checksum matches: ${outcome.entries} entries, ${outcome.bytes} bytes read back`
    : `${outcome.errors.length} entr${outcome.errors.length === 1 ? 'y' : 'ies'} failed: ${outcome.errors.slice(0, 3).map((e) => `${e.path}: ${e.message}`).join('; ')}${outcome.errors.length > 3 ? ` (+${outcome.errors.length - 3} more)` : ''}`;
  ctx.catalogue.recordVerify(key, { at: verifiedAt, status: outcome.ok ? 'ok' : 'failed', message });
  ctx.jobLog(`verification of ${key}: ${message}`);
  if (outcome.ok) ctx.events.emit('verify.completed', { key, trigger, files: outcome.files, bytes: outcome.bytes });
  else ctx.events.emit('verify.failed', { key, trigger, error: { code, message }, errors: outcome.errors });
  return { key, trigger, ok: outcome.ok, entries: outcome.entries, files: outcome.files, bytes: outcome.bytes, errors: outcome.errors, verifiedAt, message };
}
