import fs from 'node:fs';
import { z } from 'zod';
import { StowageError } from '../errors.js';

/**
 * The manifest (`stowage.json`, the last entry of every archive). docs/FORMAT.md is its
 * specification; this schema is the reader's check of it.
 */
export const MANIFEST_NAME = 'stowage.json';
export const FORMAT_NAME = 'stowage-backup';
export const FORMAT_VERSION = 1;

const entrySchema = z.object({
  path: z.string().min(1),
  type: z.enum(['file', 'dir', 'symlink']),
  size: z.number().int().nonnegative(),
  mode: z.string().regex(/^0[0-7]{3,4}$/),
  mtime: z.string(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/).optional(),
  uid: z.number().int().nonnegative().optional(),
  gid: z.number().int().nonnegative().optional(),
});

const sourceSchema = z.object({
  name: z.string().min(1),
  kind: z.string().min(1),
  path: z.string(),
  files: z.number().int().nonnegative(),
  dirs: z.number().int().nonnegative(),
  symlinks: z.number().int().nonnegative(),
  bytes: z.number().int().nonnegative(),
  excludes: z.array(z.string()),
  /**
   * PostgreSQL sources only (optional; format version 1 readers that do not know it ignore it):
   * the server the dump was taken from, for restore.versionPolicy (docs/FORMAT.md, section 3).
   */
  postgres: z
    .object({
      /** `SHOW server_version` at backup time, e.g. "16.4 (Debian 16.4-1.pgdg120+1)". */
      serverVersion: z.string(),
      /** `server_version_num`, e.g. 160004. */
      serverVersionNum: z.number().int().nonnegative(),
      /** `pg_dump --version` of the client that wrote the dump. */
      pgDumpVersion: z.string(),
      database: z.string(),
    })
    .optional(),
});

export const manifestSchema = z.object({
  format: z.literal(FORMAT_NAME),
  formatVersion: z.number().int().positive(),
  id: z.string().min(1),
  key: z.string().min(1),
  name: z.string(),
  description: z.string(),
  createdAt: z.string(),
  trigger: z.string(),
  hostname: z.string(),
  app: z.object({ name: z.string(), version: z.string(), labels: z.record(z.string(), z.string()) }),
  stowage: z.object({ version: z.string() }),
  sources: z.array(sourceSchema),
  excludes: z.array(z.string()),
  warnings: z.array(z.object({ path: z.string(), reason: z.string() })),
  entries: z.array(entrySchema),
});

export type Manifest = z.infer<typeof manifestSchema>;
export type ManifestEntry = z.infer<typeof entrySchema>;
export type ManifestSource = z.infer<typeof sourceSchema>;
export type ManifestHeader = Omit<Manifest, 'entries'>;

export function formatMode(mode: number): string {
  return `0${(mode & 0o7777).toString(8).padStart(3, '0')}`;
}

/**
 * Entries are spooled to a file while the archive is written (memory stays flat however many
 * files there are) and joined with the header at the end, entries last.
 */
export class ManifestSpool {
  private readonly fd: number;
  private count = 0;
  private pending: string[] = [];
  private pendingBytes = 0;

  constructor(private readonly spoolPath: string) {
    this.fd = fs.openSync(spoolPath, 'wx');
  }

  add(entry: ManifestEntry): void {
    const line = `${this.count === 0 ? '' : ',\n'}${JSON.stringify(entry)}`;
    this.count++;
    this.pending.push(line);
    this.pendingBytes += line.length;
    if (this.pendingBytes > 256 * 1024) this.flush();
  }

  private flush(): void {
    if (!this.pending.length) return;
    fs.writeSync(this.fd, this.pending.join(''));
    this.pending = [];
    this.pendingBytes = 0;
  }

  /** Writes the complete manifest to `outPath` and removes the spool. */
  finish(header: ManifestHeader, outPath: string): void {
    this.flush();
    fs.closeSync(this.fd);
    const head = JSON.stringify(header, null, 2);
    const out = fs.openSync(outPath, 'wx');
    try {
      fs.writeSync(out, `${head.slice(0, -2)},\n  "entries": [\n`);
      const buf = Buffer.allocUnsafe(1024 * 1024);
      const inFd = fs.openSync(this.spoolPath, 'r');
      try {
        for (;;) {
          const n = fs.readSync(inFd, buf, 0, buf.length, null);
          if (n === 0) break;
          fs.writeSync(out, buf, 0, n);
        }
      } finally {
        fs.closeSync(inFd);
      }
      fs.writeSync(out, '\n  ]\n}\n');
    } finally {
      fs.closeSync(out);
    }
    fs.rmSync(this.spoolPath, { force: true });
  }

  discard(): void {
    try {
      fs.closeSync(this.fd);
    } catch {
      // already closed
    }
    fs.rmSync(this.spoolPath, { force: true });
  }
}

/** Parses and checks a whole manifest (for `show`; a restore reads it streamed, see zip-reader.ts). */
export function parseManifest(text: string): Manifest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw notJson(err as Error);
  }
  const header = checkManifestHeader(raw);
  const { entries } = raw as { entries?: unknown };
  if (!Array.isArray(entries)) throw entriesNotArray();
  entries.forEach((e, i) => {
    const problem = manifestEntryProblem(e, i);
    if (problem) throw problem;
  });
  return { ...header, entries: entries as ManifestEntry[] };
}

export function notJson(err: Error): StowageError {
  return new StowageError('ARCHIVE_INVALID', `the manifest ${MANIFEST_NAME} is not valid JSON (${err.message}); the archive is damaged or was not made by Stowage`);
}

export function entriesNotArray(): StowageError {
  return new StowageError('ARCHIVE_INVALID', `the manifest ${MANIFEST_NAME} is malformed at entries: expected an array`);
}

/**
 * Checks everything but the entries (which `raw` may or may not hold): that it is a Stowage
 * manifest, of a version this reader knows, with a well-formed header. Newer versions are
 * refused with a clear message.
 */
export function checkManifestHeader(raw: unknown): ManifestHeader {
  const obj = raw as { format?: unknown; formatVersion?: unknown };
  if (!obj || typeof obj !== 'object' || obj.format !== FORMAT_NAME) {
    throw new StowageError('ARCHIVE_INVALID', `${MANIFEST_NAME} does not describe a Stowage backup (format is not "${FORMAT_NAME}")`);
  }
  if (typeof obj.formatVersion === 'number' && obj.formatVersion > FORMAT_VERSION) {
    throw new StowageError(
      'FORMAT_UNSUPPORTED',
      `this backup uses archive format version ${obj.formatVersion}, made by a newer Stowage; this Stowage reads up to version ${FORMAT_VERSION}. Upgrade Stowage to restore it`,
    );
  }
  // The header goes through the schema; the entries (tens of thousands) are checked in place by
  // the same schema's rules (manifestEntryProblem) without zod building a copy of each.
  const { entries: _entries, ...header } = raw as Record<string, unknown>;
  const parsed = manifestSchema.omit({ entries: true }).safeParse(header);
  if (!parsed.success) {
    const first = parsed.error.issues[0]!;
    throw new StowageError('ARCHIVE_INVALID', `the manifest ${MANIFEST_NAME} is malformed at ${first.path.join('.') || '(top)'}: ${first.message}`);
  }
  return parsed.data;
}

/** The error for entries[i] if it does not have the shape entrySchema describes, else null. */
export function manifestEntryProblem(e: unknown, i: number): StowageError | null {
  const problem = checkEntryShape(e);
  return problem ? new StowageError('ARCHIVE_INVALID', `the manifest ${MANIFEST_NAME} is malformed at entries.${i}${problem}`) : null;
}

const ENTRY_TYPES = new Set(['file', 'dir', 'symlink']);
const ENTRY_KEYS = new Set(['path', 'type', 'size', 'mode', 'mtime', 'sha256', 'uid', 'gid']);
const isCount = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** What entrySchema checks, without copying; returns the first problem (".field: why") or null. */
function checkEntryShape(e: unknown): string | null {
  if (!e || typeof e !== 'object' || Array.isArray(e)) return ': expected an object';
  const o = e as Record<string, unknown>;
  if (typeof o.path !== 'string' || o.path.length === 0) return '.path: must be a non-empty string';
  if (typeof o.type !== 'string' || !ENTRY_TYPES.has(o.type)) return '.type: must be file, dir or symlink';
  if (!isCount(o.size)) return '.size: must be a non-negative integer';
  if (typeof o.mode !== 'string' || !/^0[0-7]{3,4}$/.test(o.mode)) return '.mode: must be an octal string like "0644"';
  if (typeof o.mtime !== 'string' || Number.isNaN(Date.parse(o.mtime))) return '.mtime: must be an ISO 8601 time';
  if (o.sha256 !== undefined && (typeof o.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(o.sha256))) return '.sha256: must be 64 lowercase hex digits';
  if (o.uid !== undefined && !isCount(o.uid)) return '.uid: must be a non-negative integer';
  if (o.gid !== undefined && !isCount(o.gid)) return '.gid: must be a non-negative integer';
  for (const k of Object.keys(o)) if (!ENTRY_KEYS.has(k)) delete o[k]; // unknown keys are ignored, as the schema would
  return null;
}
