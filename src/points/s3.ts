import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Transform, pipeline, type TransformCallback } from 'node:stream';
import { DeleteObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client, type HeadObjectCommandOutput } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { ZipWriter, type ArchiveInput } from '../archive/zip-writer.js';
import { StowageError } from '../errors.js';
import { writeFileAtomic } from '../fs/durable.js';
import { closeFd, openForRead } from '../fs/fd.js';
import { insideSymlinkTarget, walkDir, type WalkedEntry } from '../sources/dir.js';
import { ExcludeRules } from '../sources/fnmatch.js';
import { explain, s3Code, s3Status } from '../storage/s3-errors.js';
import { POINT_ERROR_CODE, type Point, type PointDescription, type PointFailureReason, type PointRunContext, type PointRunResult } from './point.js';
import { parseS3Url, redactUrl, type S3Location } from './url.js';

export interface S3PointConfig {
  name: string;
  /** The dir source's folder. */
  source: string;
  /**
   * Mirror: a folder, `https://s3.eu-north-1.amazonaws.com/bucket/folder` (or the bucket's root).
   * Archive: the object to write, `https://s3.eu-north-1.amazonaws.com/bucket/folder/configs.zip`.
   */
  url: string;
  /** fnmatch rules, relative to the source; a folder rule leaves out everything below it. */
  ignore?: string[];
  /** Both or neither; neither: the AWS SDK's default chain (environment, profile, instance role). */
  accessKeyId?: string;
  secretAccessKey?: string;
  /** One ZIP of the source at the URL's key instead of one object per file. Default false. */
  archive?: boolean;
  /** Mirror mode: delete objects under the prefix whose files left the source. Default false. */
  prune?: boolean;
  /** Used when the URL's host does not name one (MinIO and others); default us-east-1. */
  region?: string;
}

export interface S3PointOptions {
  /** Stowage's data folder: the point's state lives under `<dataDir>/cache/points/`. */
  dataDir: string;
  /** More folders never copied (the data folder never is); pass the storage folder here. */
  neverInclude?: string[];
  /** How long a request may sit idle before it fails (default 2 min). */
  timeoutMs?: number;
  /** Mirror mode: files hashed and sent at once (default 8). */
  concurrency?: number;
  /** Multipart part size, at least 5 MiB (default 8 MiB); mirror files this large go multipart. */
  partSize?: number;
  /** Keys per listing request (S3's maximum and default: 1,000). */
  listPageSize?: number;
  /** Sees the name and key (or prefix) of every S3 request sent; never a credential. */
  onCommand?: (command: string, key: string | undefined) => void;
}

const MiB = 1024 * 1024;
/** Never copied, whatever the rules say (the Point contract). */
const ALWAYS_IGNORED = ['.git', '*/.git'];
/** User metadata (x-amz-meta-*): the content's SHA-256 (mirror), the tree digest and backup (archive). */
const META_SHA256 = 'stowage-sha256';
const META_TREE = 'stowage-tree-sha256';
const META_BACKUP = 'stowage-backup';
const STATE_FILE = 's3-state.json';
const STATE_VERSION = 1;
/** S3's limit on a key, in UTF-8 bytes. */
const MAX_KEY_BYTES = 1024;
/** Sends of one file: transient S3 errors, or a file that changed while it was read. */
const SEND_ATTEMPTS = 3;
/** Mirror files sent multipart at once (each buffers up to partSize × 3). */
const LARGE_IN_FLIGHT = 2;
/** Bumped when what the tree digest covers changes, so older digests never match. */
const TREE_DIGEST_VERSION = 'stowage-s3-point-zip-1';

interface StateEntry {
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
  sha256: string;
  /** The ETag S3 gave the object when this point wrote or checked it (no quotes). */
  etag: string;
}

/** What the point knows about the objects it wrote; a hint checked against every listing. */
interface MirrorState {
  version: number;
  /** endpoint, bucket and prefix: a state for another place is ignored. */
  location: string;
  objects: Record<string, StateEntry>;
}

interface LocalFile {
  rel: string;
  key: string;
  abs: string;
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
}

interface Hashed {
  sha256: string;
  /** The ETag of a single-part upload of this content on most servers; undefined where MD5 is unavailable (FIPS). */
  md5: string | undefined;
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
}

interface RemoteObject {
  size: number;
  etag: string;
}

type Warn = (path: string, reason: string) => void;

/** A local file could not be read: a warning about that file, never a failed run. */
class LocalFileError extends Error {
  constructor(readonly errno: NodeJS.ErrnoException) {
    super(errno.message);
  }
}

/**
 * The S3 backup point.
 *
 * Mirror mode (default): every file of the source is an object `<prefix>/<path>`. A run lists
 * the prefix and sends a file when the listing has no object for it, or one whose size or ETag
 * differs from what the point last wrote or checked (`s3-state.json` in the point's cache
 * folder). A file whose size, mtime, ctime or inode differ from the state is hashed; same
 * content as the object (MD5 = a single-part ETag, the state's SHA-256 for that ETag, or the
 * `stowage-sha256` metadata) means nothing is sent. The state is only ever a hint: objects
 * changed or deleted by someone else no longer match it and are sent again.
 *
 * Prune (`prune: true`) deletes, after every file was sent, the objects under `<prefix>/` that
 * are not files of the source (ignored paths included: the destination is the source minus
 * its ignore rules), except folder markers (keys ending in `/`). With the bucket's root as the
 * destination (no prefix), only objects this point wrote are deleted: keys in its state whose
 * ETag is still the one it recorded; anything else in the bucket is never touched.
 *
 * Archive mode (`archive: true`): one ZIP of the source (folders, files, relative symlinks that
 * stay inside) streamed into a multipart upload straight to the URL's key: S3 makes an object
 * visible only when the upload completes, so readers see the old archive or the new one. The
 * upload is skipped when the tree digest (see `treeDigest`) equals the object's metadata.
 */
export class S3Point implements Point {
  readonly method = 's3' as const;
  readonly name: string;
  readonly source: string;
  private readonly stateDir: string;

  constructor(
    private readonly config: S3PointConfig,
    private readonly options: S3PointOptions,
  ) {
    this.name = config.name;
    this.source = path.resolve(config.source);
    const slug = config.name.toLowerCase().replace(/[^a-z0-9._-]+/g, '_').slice(0, 40);
    const id = crypto.createHash('sha256').update(config.name).digest('hex').slice(0, 8);
    this.stateDir = path.join(path.resolve(options.dataDir), 'cache', 'points', `${slug}-${id}`);
  }

  validate(): void {
    this.location();
  }

  /** The parsed URL, checked against the mode; throws CONFIG_INVALID. */
  private location(): S3Location & { region: string } {
    const { name, url, archive, accessKeyId, secretAccessKey, region } = this.config;
    if (!name.trim()) throw new StowageError('CONFIG_INVALID', 'a backup point needs a name');
    if (!this.config.source.trim()) throw new StowageError('CONFIG_INVALID', `point "${name}": source is empty; name the folder to back up`);
    let loc: S3Location;
    try {
      loc = parseS3Url(url);
    } catch (err) {
      if (err instanceof StowageError) throw new StowageError('CONFIG_INVALID', `point "${name}": ${err.message}`, { details: err.details });
      throw err;
    }
    const shown = redactUrl(url);
    const zip = /\.zip$/i.test(loc.prefix);
    if (archive && !zip) {
      throw new StowageError('CONFIG_INVALID', `point "${name}": with archive: true the URL must name the ZIP to write, ending in .zip (like ${shown.replace(/\/?$/, '/source.zip')}); or set archive: false to copy each file`, { details: { url: shown } });
    }
    if (!archive && zip) {
      throw new StowageError('CONFIG_INVALID', `point "${name}": the URL ends in .zip but archive is false: set archive: true to upload one ZIP there, or point the URL at a folder to copy each file`, { details: { url: shown } });
    }
    if (Boolean(accessKeyId) !== Boolean(secretAccessKey)) {
      throw new StowageError('CONFIG_INVALID', `point "${name}": give both accessKeyId and secretAccessKey, or neither (to use the AWS SDK's default credentials)`);
    }
    if (region !== undefined && region !== '' && !/^[a-z0-9-]+$/.test(region)) {
      throw new StowageError('CONFIG_INVALID', `point "${name}": region "${region}" is not a region name (like eu-west-1)`);
    }
    return { ...loc, region: loc.region ?? (region || 'us-east-1') };
  }

  describe(): PointDescription {
    let where: { bucket?: string; prefix?: string; endpoint?: string; region?: string } = {};
    try {
      const loc = this.location();
      where = { bucket: loc.bucket, prefix: loc.prefix, endpoint: loc.endpoint, region: loc.region };
    } catch {
      // An invalid configuration is still described; validate() says what is wrong.
    }
    return {
      name: this.name,
      method: 's3',
      source: this.source,
      url: redactUrl(this.config.url),
      ...where,
      archive: this.config.archive ?? false,
      prune: this.config.prune ?? false,
      ignore: this.config.ignore ?? [],
      accessKeyId: this.config.accessKeyId ? '***' : '',
      secretAccessKey: this.config.secretAccessKey ? '***' : '',
    };
  }

  async run(ctx: PointRunContext): Promise<PointRunResult> {
    const loc = this.location();
    this.throwIfAborted(ctx.signal);
    await this.checkSource();
    await fs.promises.mkdir(this.stateDir, { recursive: true, mode: 0o700 });
    const client = this.client(loc);
    try {
      return this.config.archive ? await this.runArchive(client, loc, ctx) : await this.runMirror(client, loc, ctx);
    } finally {
      client.destroy();
    }
  }

  // ---- mirror ----

  private async runMirror(client: S3Client, loc: S3Location, ctx: PointRunContext): Promise<PointRunResult> {
    const log = ctx.log ?? ((): void => {});
    const signal = ctx.signal;
    const url = redactUrl(this.config.url);
    const warnings: Array<{ path: string; reason: string }> = [];
    const warn: Warn = (p, reason) => void warnings.push({ path: p, reason });
    const keyOf = (rel: string): string => (loc.prefix ? `${loc.prefix}/${rel}` : rel);

    const files: LocalFile[] = [];
    for (const e of await this.walk(warn)) {
      if (e.stat.isDirectory()) continue; // S3 has no folders: they exist through the keys below them
      if (e.stat.isSymbolicLink()) {
        warn(e.rel, 'symlink skipped: S3 objects cannot represent links (use archive: true to keep them)');
        continue;
      }
      if (/[\x00-\x1f\x7f]/.test(e.rel)) {
        warn(e.rel, 'skipped: control characters cannot be carried in S3 listings');
        continue;
      }
      const key = keyOf(e.rel);
      if (Buffer.byteLength(key) > MAX_KEY_BYTES) {
        warn(e.rel, `skipped: the key would be longer than S3's ${MAX_KEY_BYTES} bytes`);
        continue;
      }
      files.push({ rel: e.rel, key, abs: e.abs, size: e.stat.size, mtimeMs: e.stat.mtimeMs, ctimeMs: e.stat.ctimeMs, ino: e.stat.ino });
    }

    log(`copying ${files.length} file(s) of ${this.source} to ${url}`);
    const listing = await this.listPrefix(client, loc, signal);
    const stateFile = path.join(this.stateDir, STATE_FILE);
    const locationId = `${loc.endpoint}|${loc.bucket}|${loc.prefix}`;
    const old = await readState(stateFile, locationId);
    // What is still true of the old state: objects whose ETag the listing confirms.
    const next: Record<string, StateEntry> = {};
    for (const [key, entry] of Object.entries(old.objects)) if (listing.get(key)?.etag === entry.etag) next[key] = entry;
    const recorded = JSON.stringify(old.objects);
    const saveState = async (): Promise<void> => {
      if (JSON.stringify(next) === recorded) return; // a run that changed nothing writes nothing
      await writeFileAtomic(stateFile, JSON.stringify({ version: STATE_VERSION, location: locationId, objects: next } satisfies MirrorState));
    };

    let written = 0;
    let deleted = 0;
    let same = 0;
    const gone = new Set<string>();
    const large = new Slots(LARGE_IN_FLIGHT);
    const partSize = this.partSize();
    const sendOne = async (f: LocalFile): Promise<void> => {
      this.throwIfAborted(signal);
      const remote = listing.get(f.key);
      const known = next[f.key];
      if (remote && known && sameStat(known, f) && remote.size === f.size && remote.etag === known.etag) {
        same++;
        return;
      }
      try {
        const hashed = await hashFile(f.abs);
        if (remote && remote.size === hashed.size) {
          const matches =
            (hashed.md5 !== undefined && !remote.etag.includes('-') && remote.etag === hashed.md5) ||
            (known !== undefined && known.etag === remote.etag && known.sha256 === hashed.sha256) ||
            (await this.remoteSha256(client, loc, f.key, signal)) === hashed.sha256;
          if (matches) {
            next[f.key] = stateEntry(hashed, remote.etag);
            same++;
            return;
          }
        }
        const release = hashed.size >= partSize ? await large.take() : null;
        try {
          const sent = await this.sendFile(client, loc, f, hashed, signal);
          if (sent.etag === undefined) {
            warn(f.rel, 'not sent: it kept changing while it was read; sent again on the next run');
            return;
          }
          written++;
          if (sent.steady) next[f.key] = stateEntry(sent.hashed, sent.etag);
          else {
            delete next[f.key];
            warn(f.rel, 'changed while it was sent: the object may hold a mix of versions; checked and sent again on the next run');
          }
        } finally {
          release?.();
        }
      } catch (err) {
        if (!(err instanceof LocalFileError)) throw err;
        const code = err.errno.code;
        if (code === 'ENOENT') gone.add(f.key); // removed since the walk: not in this copy
        else warn(f.rel, code === 'EACCES' || code === 'EPERM' ? `not readable: ${code}` : code === 'ELOOP' ? 'became a symlink while the run read it' : `cannot read: ${code ?? err.message}`);
      }
    };

    try {
      await eachLimit(files, this.options.concurrency ?? 8, sendOne);

      // Objects under the prefix that no file of the source accounts for.
      const inSource = new Set(files.filter((f) => !gone.has(f.key)).map((f) => f.key));
      const stale = [...listing.keys()].filter((key) => !inSource.has(key) && !key.endsWith('/'));
      // At the bucket's root, only what this point wrote is its own.
      const ours = loc.prefix ? stale : stale.filter((key) => next[key] !== undefined);
      if (this.config.prune) {
        await eachLimit(ours, this.options.concurrency ?? 8, async (key) => {
          this.throwIfAborted(signal);
          await this.send(`deleting ${key}`, loc, signal, () => client.send(new DeleteObjectCommand({ Bucket: loc.bucket, Key: key }), abortable(signal)));
          delete next[key];
          deleted++;
        });
      }
      const kept = this.config.prune ? 0 : ours.length;
      const counts = `${written} object(s) written, ${deleted} deleted, ${same} already there${kept ? `; ${kept} object(s) whose files left the source kept (prune is off)` : ''}${warnings.length ? `; ${warnings.length} path(s) skipped` : ''}`;
      log(counts);
      const result: PointRunResult =
        written === 0 && deleted === 0
          ? { status: 'unchanged', message: `${url} already holds the source (${same} object(s)); nothing sent${kept ? `; ${kept} object(s) whose files left the source kept (prune is off)` : ''}`, objectsWritten: 0, objectsDeleted: 0 }
          : { status: 'updated', message: `copied ${this.source} to ${url}: ${counts}`, objectsWritten: written, objectsDeleted: deleted };
      if (warnings.length) result.warnings = warnings;
      return result;
    } finally {
      // What was sent before a failure is not sent again.
      await saveState().catch(() => {});
    }
  }

  /** Sends one file; retries transient S3 errors, and a file that changed while it was read. */
  private async sendFile(client: S3Client, loc: S3Location, f: LocalFile, first: Hashed, signal: AbortSignal | undefined): Promise<{ etag: string | undefined; hashed: Hashed; steady: boolean }> {
    let hashed = first;
    for (let attempt = 1; ; attempt++) {
      let r: { etag: string | undefined; matched: boolean };
      try {
        r = await this.putFile(client, loc, f.key, f.abs, hashed, signal);
      } catch (err) {
        if (attempt < SEND_ATTEMPTS && isTransient(err) && !signal?.aborted) {
          await new Promise((resolve) => setTimeout(resolve, 200 * attempt));
          continue;
        }
        throw err instanceof LocalFileError ? err : this.s3Failed(`sending ${f.rel}`, err, loc, signal);
      }
      if (r.matched || attempt >= SEND_ATTEMPTS) return { etag: r.etag, hashed, steady: r.matched };
      hashed = await hashFile(f.abs);
    }
  }

  /**
   * Streams one file to its key with its SHA-256 in the metadata; `matched` is false when the
   * bytes sent are not the ones hashed (the file changed in between).
   */
  private async putFile(client: S3Client, loc: S3Location, key: string, abs: string, hashed: Hashed, signal: AbortSignal | undefined): Promise<{ etag: string | undefined; matched: boolean }> {
    const fd = await openForRead(abs).catch((err: NodeJS.ErrnoException) => Promise.reject(new LocalFileError(err)));
    // Closed here until a read stream owns it (a stream closes its descriptor once its reads are done).
    let owned = true;
    try {
      const size = (await fstat(fd).catch((err: NodeJS.ErrnoException) => Promise.reject(new LocalFileError(err)))).size;
      if (size !== hashed.size) return { etag: undefined, matched: false };
      const Metadata = { [META_SHA256]: hashed.sha256 };
      if (size === 0) {
        const out = await client.send(new PutObjectCommand({ Bucket: loc.bucket, Key: key, Body: new Uint8Array(0), ContentLength: 0, Metadata }), abortable(signal));
        return { etag: unquote(out.ETag), matched: true };
      }
      const check = new Checked(size);
      const read = fs.createReadStream('', { fd, start: 0, end: size - 1, highWaterMark: 256 * 1024 });
      owned = false;
      // Only the file's own errors are the file's fault; the body torn down by the SDK is not.
      let readError: NodeJS.ErrnoException | undefined;
      read.once('error', (err: NodeJS.ErrnoException) => (readError ??= err));
      const body = pipeline(read, check, () => {});
      let etag: string | undefined;
      try {
        if (size >= this.partSize()) {
          const upload = new Upload({ client, params: { Bucket: loc.bucket, Key: key, Body: body, Metadata }, partSize: this.partSize(), queueSize: 2, leavePartsOnError: false });
          const stop = (): void => void upload.abort().catch(() => {});
          signal?.addEventListener('abort', stop, { once: true });
          try {
            etag = unquote((await upload.done()).ETag);
          } finally {
            signal?.removeEventListener('abort', stop);
          }
        } else {
          etag = unquote((await client.send(new PutObjectCommand({ Bucket: loc.bucket, Key: key, Body: body, ContentLength: size, Metadata }), abortable(signal))).ETag);
        }
      } catch (err) {
        body.destroy();
        if (readError) throw new LocalFileError(readError);
        if (check.short) return { etag: undefined, matched: false }; // shrank while read: nothing was stored
        throw err;
      }
      return { etag, matched: check.bytes === size && check.digest() === hashed.sha256 };
    } finally {
      if (owned) await closeFd(fd).catch(() => {});
    }
  }

  private async remoteSha256(client: S3Client, loc: S3Location, key: string, signal: AbortSignal | undefined): Promise<string | undefined> {
    return (await this.head(client, loc, key, signal))?.Metadata?.[META_SHA256];
  }

  /** Every object under `<prefix>/` (or the whole bucket for the root): key → size, ETag. */
  private async listPrefix(client: S3Client, loc: S3Location, signal: AbortSignal | undefined): Promise<Map<string, RemoteObject>> {
    const Prefix = loc.prefix ? `${loc.prefix}/` : '';
    const objects = new Map<string, RemoteObject>();
    let ContinuationToken: string | undefined;
    do {
      const page = await this.send('listing', loc, signal, () => client.send(new ListObjectsV2Command({ Bucket: loc.bucket, Prefix, ContinuationToken, MaxKeys: this.options.listPageSize }), abortable(signal)));
      for (const o of page.Contents ?? []) if (o.Key?.startsWith(Prefix)) objects.set(o.Key, { size: o.Size ?? 0, etag: unquote(o.ETag) ?? '' });
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (ContinuationToken);
    return objects;
  }

  // ---- archive ----

  private async runArchive(client: S3Client, loc: S3Location, ctx: PointRunContext): Promise<PointRunResult> {
    const log = ctx.log ?? ((): void => {});
    const signal = ctx.signal;
    const url = redactUrl(this.config.url);
    const key = loc.prefix;
    const warnings: Array<{ path: string; reason: string }> = [];
    const warn: Warn = (p, reason) => void warnings.push({ path: p, reason });
    const entries: Array<{ input: ArchiveInput; stat: fs.Stats }> = [];
    let bytes = 0;
    for (const e of await this.walk(warn)) {
      const { stat } = e;
      const common = { mode: stat.mode, mtimeMs: stat.mtimeMs, uid: stat.uid, gid: stat.gid };
      if (stat.isDirectory()) entries.push({ input: { kind: 'dir', name: `${e.rel}/`, ...common }, stat });
      else if (stat.isSymbolicLink()) {
        const target = await insideSymlinkTarget(e, { warn }, 'stored');
        if (target !== null) entries.push({ input: { kind: 'symlink', name: e.rel, target, ...common }, stat });
      } else {
        entries.push({ input: { kind: 'file', name: e.rel, path: e.abs, size: stat.size, ...common }, stat });
        bytes += stat.size;
      }
    }
    const digest = treeDigest(entries);
    const withWarnings = (r: PointRunResult): PointRunResult => (warnings.length ? { ...r, warnings } : r);

    // A listing first: a missing bucket or refused credentials get the server's own reason,
    // which a HEAD (no body) cannot carry.
    await this.send('opening the bucket', loc, signal, () => client.send(new ListObjectsV2Command({ Bucket: loc.bucket, Prefix: key, MaxKeys: 1 }), abortable(signal)));
    const head = await this.head(client, loc, key, signal);
    if (head?.Metadata?.[META_TREE] === digest) {
      log(`${url} already holds this tree (${entries.length} entries)`);
      return withWarnings({ status: 'unchanged', message: `${url} already holds the source as it is now (${entries.length} entries); nothing sent`, objectsWritten: 0, objectsDeleted: 0 });
    }

    log(`uploading ${entries.length} entries (${bytes} bytes before compression) of ${this.source} as ${url}`);
    // S3 allows 10,000 parts: grow them for very large trees (deflate rarely adds more than 1%).
    const partSize = Math.max(this.partSize(), Math.ceil((bytes * 1.05 + MiB) / 9_000));
    // The writer hands out pooled buffers and reuses them once written; the upload keeps
    // references to what it read until a part is full. A copy in between keeps parts intact.
    const body = new Transform({ highWaterMark: MiB, transform: (chunk: Buffer, _encoding, callback) => callback(null, Buffer.from(chunk)) });
    const upload = new Upload({
      client,
      params: { Bucket: loc.bucket, Key: key, Body: body, ContentType: 'application/zip', Metadata: { [META_TREE]: digest, [META_BACKUP]: encodeURIComponent(ctx.backupKey) } },
      partSize,
      queueSize: 2,
      leavePartsOnError: false,
    });
    let uploadError: unknown;
    const done = upload.done().then(
      (out) => out,
      (err: unknown) => {
        uploadError = err;
        body.destroy(err instanceof Error ? err : new Error(String(err))); // the writer, maybe blocked on backpressure, hears it
        throw err;
      },
    );
    done.catch(() => {});
    const stop = (): void => void upload.abort().catch(() => {});
    signal?.addEventListener('abort', stop, { once: true });
    const writer = new ZipWriter(body, { spoolPath: path.join(this.stateDir, `central-${crypto.randomBytes(6).toString('hex')}.spool`), onSkip: (s) => warn(s.name, s.reason) });
    let size: number;
    let etag: string | undefined;
    try {
      for (const { input } of entries) {
        this.throwIfAborted(signal);
        await writer.add(input);
      }
      size = (await writer.finish()).size;
      body.end();
      etag = unquote((await done).ETag);
    } catch (err) {
      // The upload gave up (it stops reading its body) or the writer did (a local failure).
      const uploadGaveUp = body.destroyed || uploadError !== undefined;
      await writer.abort(err).catch(() => {});
      if (!uploadGaveUp) await upload.abort().catch(() => {});
      body.destroy();
      const failure = await done.then(() => undefined, (e: unknown) => e);
      this.throwIfAborted(signal);
      if (uploadGaveUp && failure !== undefined) throw this.s3Failed(`uploading ${key}`, failure, loc, signal);
      if (err instanceof StowageError) throw err;
      throw this.failure('source', `point "${this.name}": building the archive of ${this.source} failed (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); check the source folder and the free space in ${this.stateDir}`);
    } finally {
      signal?.removeEventListener('abort', stop);
    }
    log(`uploaded ${size} bytes as ${url}${etag ? ` (ETag ${etag})` : ''}`);
    return withWarnings({ status: 'updated', message: `uploaded ${this.source} as one ZIP (${entries.length} entries, ${size} bytes) to ${url}`, objectsWritten: 1, objectsDeleted: 0 });
  }

  // ---- shared ----

  /** The source's entries in walk order, minus ignore rules, `.git` and Stowage's folders. */
  private async walk(warn: Warn): Promise<WalkedEntry[]> {
    const excludes = new ExcludeRules([...ALWAYS_IGNORED, ...(this.config.ignore ?? [])]);
    if (excludes.excludesEverything) return [];
    const ctx = { excludes, neverInclude: [this.options.dataDir, ...(this.options.neverInclude ?? [])], tempDir: this.stateDir, warn };
    const out: WalkedEntry[] = [];
    for await (const e of walkDir(this.source, ctx)) out.push(e);
    return out;
  }

  private async checkSource(): Promise<void> {
    try {
      const st = await fs.promises.stat(this.source);
      if (st.isDirectory()) return;
    } catch (err) {
      throw this.failure('source', `point "${this.name}": source folder ${this.source} cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)}); fix the point's source`);
    }
    throw this.failure('source', `point "${this.name}": source ${this.source} is not a folder; an S3 point copies a dir source`);
  }

  private partSize(): number {
    const size = this.options.partSize ?? 8 * MiB;
    if (size < 5 * MiB) throw new StowageError('CONFIG_INVALID', `S3 part size must be at least 5 MiB (got ${size} bytes)`);
    return size;
  }

  private client(loc: S3Location & { region: string }): S3Client {
    const { accessKeyId, secretAccessKey } = this.config;
    // Flexible checksums (CRC trailers) are the SDK's default for AWS; many S3-compatible
    // servers refuse them, so elsewhere they are sent only where an operation requires them.
    const aws = /(^|\.)amazonaws\.com(\.cn)?$/.test(new URL(loc.endpoint).hostname);
    const checksums = aws ? 'WHEN_SUPPORTED' : 'WHEN_REQUIRED';
    const silent = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };
    const client = new S3Client({
      region: loc.region,
      endpoint: loc.endpoint,
      forcePathStyle: loc.style === 'path',
      ...(accessKeyId && secretAccessKey ? { credentials: { accessKeyId, secretAccessKey } } : {}),
      requestChecksumCalculation: checksums,
      responseChecksumValidation: checksums,
      maxAttempts: 3,
      // The SDK warns on the console when a streamed body cannot be retried; sendFile retries.
      logger: silent,
      requestHandler: { connectionTimeout: 10_000, socketTimeout: this.options.timeoutMs ?? 120_000 },
    });
    const onCommand = this.options.onCommand;
    if (onCommand) {
      client.middlewareStack.add(
        (next, context) => async (args) => {
          const input = args.input as { Key?: string; Prefix?: string };
          onCommand(context.commandName ?? '?', input.Key ?? input.Prefix);
          return next(args);
        },
        { step: 'initialize' },
      );
    }
    return client;
  }

  private async head(client: S3Client, loc: S3Location, key: string, signal: AbortSignal | undefined): Promise<HeadObjectCommandOutput | null> {
    try {
      return await client.send(new HeadObjectCommand({ Bucket: loc.bucket, Key: key }), abortable(signal));
    } catch (err) {
      if (s3Status(err) === 404 || s3Code(err) === 'NotFound' || s3Code(err) === 'NoSuchKey') return null;
      throw this.s3Failed(`looking up ${key}`, err, loc, signal);
    }
  }

  /** One request; failures become POINT_FAILED saying what to check. */
  private async send<T>(what: string, loc: S3Location, signal: AbortSignal | undefined, request: () => Promise<T>): Promise<T> {
    try {
      return await request();
    } catch (err) {
      throw this.s3Failed(what, err, loc, signal);
    }
  }

  private s3Failed(what: string, err: unknown, loc: S3Location, signal: AbortSignal | undefined): StowageError {
    if (err instanceof StowageError) return err;
    if (signal?.aborted || s3Code(err) === 'AbortError') return this.failure('aborted', `point "${this.name}": the run was cancelled`);
    const where = loc.endpoint;
    const place = `bucket ${loc.bucket}${loc.prefix ? `/${loc.prefix}` : ''} at ${where}`;
    const message = `point "${this.name}": ${what} in ${place} failed: ${explain(err, loc.bucket, where)}`;
    return this.failure(failureReason(err), message, { s3Code: s3Code(err), httpStatus: s3Status(err) });
  }

  private failure(reason: PointFailureReason, message: string, extra: Record<string, unknown> = {}): StowageError {
    return new StowageError(POINT_ERROR_CODE, this.scrub(message), { details: { point: this.name, reason, ...extra } });
  }

  /** Credentials never reach a message, even if a server echoed one. */
  private scrub(text: string): string {
    let out = text;
    for (const secret of [this.config.secretAccessKey, this.config.accessKeyId]) if (secret && secret.length >= 4) out = out.split(secret).join('***');
    return out;
  }

  private throwIfAborted(signal: AbortSignal | undefined): void {
    if (signal?.aborted) throw this.failure('aborted', `point "${this.name}": the run was cancelled`);
  }
}

/** Request options: the run's signal cancels requests in flight. */
function abortable(signal: AbortSignal | undefined): { abortSignal?: AbortSignal } {
  return signal ? { abortSignal: signal } : {};
}

/**
 * The archive's digest: every entry's kind, name, size, mtime, ctime, mode and link target,
 * in walk order. Metadata, not content: hashing content would read the whole source on every
 * run, which costs about as much as building the archive. mtime and mode are in the ZIP
 * itself (a changed one must re-upload anyway); ctime catches a content change that kept the
 * size and mtime (`touch -r`, restored timestamps), since no program can set it back.
 */
export function treeDigest(entries: ReadonlyArray<{ input: ArchiveInput; stat: fs.Stats }>): string {
  const hash = crypto.createHash('sha256').update(`${TREE_DIGEST_VERSION}\n`);
  for (const { input, stat } of entries) {
    const size = input.kind === 'file' ? input.size : 0;
    const target = input.kind === 'symlink' ? input.target : '';
    hash.update(`${input.kind}\0${input.name}\0${size}\0${stat.mtimeMs}\0${stat.ctimeMs}\0${stat.mode}\0${target}\n`);
  }
  return hash.digest('hex');
}

async function readState(file: string, location: string): Promise<MirrorState> {
  const empty: MirrorState = { version: STATE_VERSION, location, objects: {} };
  try {
    const parsed = JSON.parse(await fs.promises.readFile(file, 'utf8')) as Partial<MirrorState>;
    if (parsed.version !== STATE_VERSION || parsed.location !== location || typeof parsed.objects !== 'object' || parsed.objects === null) return empty;
    return { version: STATE_VERSION, location, objects: parsed.objects };
  } catch {
    return empty; // missing or damaged: every file is checked against the listing by content
  }
}

function stateEntry(h: Hashed, etag: string): StateEntry {
  return { size: h.size, mtimeMs: h.mtimeMs, ctimeMs: h.ctimeMs, ino: h.ino, sha256: h.sha256, etag };
}

function sameStat(a: StateEntry, f: LocalFile): boolean {
  return a.size === f.size && a.mtimeMs === f.mtimeMs && a.ctimeMs === f.ctimeMs && a.ino === f.ino;
}

function fstat(fd: number): Promise<fs.Stats> {
  return new Promise((resolve, reject) => fs.fstat(fd, (err, st) => (err ? reject(err) : resolve(st))));
}

/** SHA-256 (and MD5) of a file, streamed; the stat is the one taken before reading. */
async function hashFile(abs: string): Promise<Hashed> {
  let fd: number;
  try {
    fd = await openForRead(abs);
  } catch (err) {
    throw new LocalFileError(err as NodeJS.ErrnoException);
  }
  let owned = true;
  try {
    const st = await fstat(fd);
    const sha = crypto.createHash('sha256');
    let md5: crypto.Hash | undefined;
    try {
      md5 = crypto.createHash('md5');
    } catch {
      md5 = undefined;
    }
    if (st.size > 0) {
      const read = fs.createReadStream('', { fd, start: 0, end: st.size - 1, highWaterMark: 256 * 1024 });
      owned = false; // the stream closes it, also when the loop stops early
      for await (const chunk of read) {
        sha.update(chunk as Buffer);
        md5?.update(chunk as Buffer);
      }
    }
    return { sha256: sha.digest('hex'), md5: md5?.digest('hex'), size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, ino: st.ino };
  } catch (err) {
    if (err instanceof LocalFileError) throw err;
    throw new LocalFileError(err as NodeJS.ErrnoException);
  } finally {
    if (owned) await closeFd(fd).catch(() => {});
  }
}

/** Passes bytes through, hashing them; fails at the end when fewer than `size` came (the file shrank). */
class Checked extends Transform {
  bytes = 0;
  short = false;
  readonly shortError = new Error('the file shrank while it was sent');
  private readonly hash = crypto.createHash('sha256');
  constructor(private readonly size: number) {
    super({ highWaterMark: 256 * 1024 });
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    this.hash.update(chunk);
    callback(null, chunk);
  }
  override _flush(callback: TransformCallback): void {
    if (this.bytes < this.size) {
      this.short = true;
      callback(this.shortError);
    } else callback();
  }
  digest(): string {
    return this.hash.digest('hex');
  }
}

/** At most `n` holders at once. */
class Slots {
  private readonly waiting: Array<() => void> = [];
  constructor(private free: number) {}
  async take(): Promise<() => void> {
    if (this.free > 0) this.free--;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next();
      else this.free++;
    };
  }
}

/** Runs `fn` over the items, `limit` at a time; the first failure stops new work and is thrown once the rest settled. */
async function eachLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  let failure: unknown;
  const worker = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (err) {
        if (!failed) {
          failed = true;
          failure = err;
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failed) throw failure;
}

function unquote(etag: string | undefined): string | undefined {
  return etag?.replace(/^"|"$/g, '');
}

const AUTH_CODES = new Set(['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied', 'Forbidden', 'InvalidToken', 'ExpiredToken', 'CredentialsProviderError']);
const NET_CODES = /^(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|ECONNRESET|EHOSTUNREACH|ENETUNREACH|EPIPE)$/;

function failureReason(err: unknown): PointFailureReason {
  const code = s3Code(err);
  const status = s3Status(err);
  const netCode = (err as { code?: string } | null)?.code ?? '';
  if (code && AUTH_CODES.has(code)) return 'auth';
  if (code === 'NoSuchBucket' || status === 404) return 'not-found';
  if (code === 'TimeoutError') return 'timeout';
  if (/CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_VERIFY/.test(netCode)) return 'tls';
  if (NET_CODES.test(netCode)) return 'unreachable';
  if (status === 403) return 'auth';
  return 'rejected';
}

/** Worth another try: the connection broke, the server was busy or failed. */
function isTransient(err: unknown): boolean {
  if (err instanceof LocalFileError) return false;
  const status = s3Status(err) ?? 0;
  const netCode = (err as { code?: string } | null)?.code ?? '';
  return status >= 500 || status === 429 || s3Code(err) === 'TimeoutError' || /^(ECONNRESET|EPIPE|ETIMEDOUT|ECONNREFUSED|EAI_AGAIN)$/.test(netCode);
}
