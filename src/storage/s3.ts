import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { PassThrough, Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCopyCommand,
} from '@aws-sdk/client-s3';
import { Upload as MultipartUpload } from '@aws-sdk/lib-storage';
import { StowageError } from '../errors.js';
import { processTag } from '../fs/process.js';
import { assertValidKey, isValidKey } from './keys.js';
import { explain, redactUrl, s3Code, s3Status } from './s3-errors.js';
import { describeS3, normalizeS3Prefix } from './s3-where.js';
import type { LocalCopy, Storage, StoredObject, Upload } from './storage.js';

export interface S3StorageConfig {
  bucket: string;
  /** A folder in the bucket ("backups/"); a missing trailing "/" is added. "" is the bucket root. */
  prefix: string;
  region: string;
  /** For S3-compatible servers (MinIO, R2, B2, Ceph...); AWS S3 when absent. */
  endpoint?: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key` (most self-hosted servers). */
  forcePathStyle: boolean;
}

/** Tuning, mostly for tests. */
export interface S3StorageOptions {
  /** Multipart part size, at least 5 MiB. Memory per upload is about partSize × (queueSize + 1). */
  partSize?: number;
  queueSize?: number;
  /** Objects larger than this are published with UploadPartCopy instead of CopyObject (S3's limit: 5 GiB). */
  copyThreshold?: number;
  /** Smallest part of such a copy (grows so that there are at most 10,000 parts). */
  copyPartSize?: number;
  /** Keys per listing request (S3's maximum and default: 1,000). */
  listPageSize?: number;
}

const TEMP_MARK = '.stowage-upload-';
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const MAX_PARTS = 10_000;

/**
 * Archives as objects in an S3 bucket, under a prefix.
 *
 * Publishing: an upload streams (with backpressure, memory bounded by the part size) into a
 * multipart upload of a temporary object `<prefix>.stowage-upload-<key>.<owner tag>.<random>`;
 * an empty object is put under that name first, so an upload that dies before its first part
 * still leaves something `cleanupIncomplete()` can find. `commit()` checks that the key is free
 * (HeadObject), copies server-side with `If-None-Match: *` and deletes the temporary object.
 * S3 makes a completed copy visible atomically, so a listed key is always a whole archive.
 *
 * Not replacing an existing key is exact where the server honours conditional writes (AWS S3
 * since 2024, recent MinIO); a server that ignores `If-None-Match` leaves a window between the
 * HeadObject check and the copy in which two writers of the same key on different hosts could
 * both succeed, the later replacing the earlier. On one host the engine's lock keeps writers apart.
 */
export class S3Storage implements Storage {
  readonly description: string;
  readonly prefix: string;
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly where: string;
  private readonly partSize: number;
  private readonly queueSize: number;
  private readonly copyThreshold: number;
  private readonly copyPartSize: number;
  private readonly listPageSize: number | undefined;
  private bucketChecked = false;

  constructor(config: S3StorageConfig, options: S3StorageOptions = {}) {
    this.bucket = config.bucket;
    this.prefix = normalizeS3Prefix(config.prefix);
    this.where = config.endpoint ? redactUrl(config.endpoint) : `AWS S3 (${config.region})`;
    this.description = describeS3(config);
    this.partSize = options.partSize ?? 8 * MiB;
    // S3's smallest part; 10,000 parts of this size are the largest archive an upload can take.
    if (this.partSize < 5 * MiB) throw new StowageError('CONFIG_INVALID', `S3 part size must be at least 5 MiB (got ${this.partSize} bytes)`);
    this.queueSize = options.queueSize ?? 2;
    this.copyThreshold = options.copyThreshold ?? 5 * GiB;
    this.copyPartSize = options.copyPartSize ?? 512 * MiB;
    this.listPageSize = options.listPageSize;
    // Flexible checksums (CRC trailers) are the SDK's default for AWS; many S3-compatible servers
    // refuse them, so with a custom endpoint they are sent only where the operation requires them.
    const checksums = config.endpoint ? 'WHEN_REQUIRED' : 'WHEN_SUPPORTED';
    this.client = new S3Client({
      region: config.region,
      endpoint: config.endpoint,
      forcePathStyle: config.forcePathStyle,
      credentials: { accessKeyId: config.accessKeyId, secretAccessKey: config.secretAccessKey },
      requestChecksumCalculation: checksums,
      responseChecksumValidation: checksums,
      maxAttempts: 3,
      requestHandler: { connectionTimeout: 10_000 },
    });
  }

  private objectKey(key: string): string {
    return this.prefix + assertValidKey(key);
  }

  async createUpload(key: string): Promise<Upload> {
    const final = this.objectKey(key);
    const temp = `${this.prefix}${TEMP_MARK}${key}.${processTag()}.${crypto.randomBytes(6).toString('hex')}`;
    await this.send(`starting the upload of ${key}`, () => this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: temp, Body: new Uint8Array(0), ContentLength: 0 })));

    // The writer's stream feeds the multipart upload's body through a pipe: when the upload
    // fails, the body is torn down by the SDK (an AbortError), and the writer hears the reason
    // instead, as a STORAGE_FAILED.
    // Each chunk is copied: the SDK's multipart uploader keeps references to chunks until a part
    // is full, while writers (ZipWriter) reuse their buffers once a write has completed. Without
    // the copy, incompressible entries were uploaded with bytes overwritten (bad CRC). A memcpy
    // per chunk costs far less than the upload.
    const stream = new Transform({ highWaterMark: MiB, transform: (chunk: Buffer, _enc, done) => done(null, Buffer.from(chunk)) });
    const body = new PassThrough({ highWaterMark: MiB });
    stream.pipe(body);
    // Errors reach the writer through write callbacks, pipeline() and commit(); an upload that
    // fails while nobody listens for 'error' must not crash the process.
    stream.on('error', () => {});
    stream.on('close', () => {
      if (!stream.writableFinished) body.destroy();
    });
    const multipart = new MultipartUpload({
      client: this.client,
      params: { Bucket: this.bucket, Key: temp, Body: body },
      partSize: this.partSize,
      queueSize: this.queueSize,
      leavePartsOnError: false,
    });
    let failure: unknown;
    const uploaded = multipart.done().then(
      () => undefined,
      (err: unknown) => {
        failure = err;
        // A writer blocked on backpressure must hear that nobody reads any more.
        stream.destroy(this.failed(`uploading ${key}`, err));
      },
    );
    let finished = false;
    const discard = async () => {
      const aborted = multipart.abort().catch(() => {});
      stream.destroy();
      body.destroy();
      await aborted;
      await uploaded;
      if (multipart.uploadId) {
        const UploadId = multipart.uploadId;
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: temp, UploadId })).catch(() => {});
      }
      await this.send(`removing the temporary upload of ${key}`, () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: temp })));
    };

    return {
      stream,
      commit: async () => {
        if (finished) throw new Error('upload already finished');
        finished = true;
        if (!stream.destroyed) stream.end();
        await uploaded;
        if (failure !== undefined || stream.errored) {
          const reason = stream.errored ?? failure;
          await discard().catch(() => {});
          throw this.failed(`uploading ${key}`, reason);
        }
        try {
          await this.publish(key, temp, final);
        } catch (err) {
          await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: temp })).catch(() => {});
          throw err;
        }
        // The archive is published; a temporary object left by a failed delete is removed by a later clean-up.
        await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: temp })).catch(() => {});
        const stored = await this.stat(key);
        if (!stored) throw new StowageError('STORAGE_FAILED', `${key} was copied into ${this.description} but is not there: check the bucket's lifecycle rules and replication`);
        return stored;
      },
      abort: async () => {
        finished = true;
        await discard();
      },
    };
  }

  /** Copies the temporary object to its key, never over an existing key. */
  private async publish(key: string, temp: string, final: string): Promise<void> {
    if (await this.stat(key)) throw exists(key);
    const head = await this.send(`checking the upload of ${key}`, () => this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: temp })));
    const size = head.ContentLength ?? 0;
    const source = copySource(this.bucket, temp);
    const conditional = async <T>(write: (ifNoneMatch: string | undefined) => Promise<T>): Promise<T> => {
      try {
        return await write('*');
      } catch (err) {
        // A server without conditional writes may refuse the header instead of ignoring it.
        if (s3Code(err) === 'NotImplemented') return write(undefined);
        throw err;
      }
    };
    try {
      if (size <= this.copyThreshold) {
        await conditional((IfNoneMatch) => this.client.send(new CopyObjectCommand({ Bucket: this.bucket, Key: final, CopySource: source, IfNoneMatch })));
      } else {
        await this.copyInParts(source, final, size, conditional);
      }
    } catch (err) {
      if (s3Status(err) === 412 || s3Code(err) === 'PreconditionFailed') throw exists(key);
      throw this.failed(`publishing ${key}`, err);
    }
  }

  /** CopyObject stops at 5 GiB: larger archives are copied as a multipart upload of ranges. */
  private async copyInParts(source: string, final: string, size: number, conditional: <T>(write: (ifNoneMatch: string | undefined) => Promise<T>) => Promise<T>): Promise<void> {
    const partSize = Math.max(this.copyPartSize, Math.ceil(size / MAX_PARTS));
    const { UploadId } = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: final }));
    try {
      const parts: { PartNumber: number; ETag: string | undefined }[] = [];
      const count = Math.ceil(size / partSize);
      let next = 0;
      const worker = async () => {
        while (next < count) {
          const i = next++;
          const start = i * partSize;
          const end = Math.min(size, start + partSize) - 1;
          const r = await this.client.send(
            new UploadPartCopyCommand({ Bucket: this.bucket, Key: final, UploadId, PartNumber: i + 1, CopySource: source, CopySourceRange: `bytes=${start}-${end}` }),
          );
          parts[i] = { PartNumber: i + 1, ETag: r.CopyPartResult?.ETag };
        }
      };
      await Promise.all(Array.from({ length: Math.min(4, count) }, worker));
      await conditional((IfNoneMatch) =>
        this.client.send(new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key: final, UploadId, MultipartUpload: { Parts: parts }, IfNoneMatch })),
      );
    } catch (err) {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: final, UploadId })).catch(() => {});
      throw err;
    }
  }

  async get(key: string, range?: { start: number; end?: number }): Promise<Readable> {
    const objectKey = this.objectKey(key);
    try {
      const r = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: objectKey, Range: range ? `bytes=${range.start}-${range.end ?? ''}` : undefined }),
      );
      return r.Body as Readable;
    } catch (err) {
      if (s3Code(err) === 'NoSuchKey') throw notFound(key, this.description);
      // A range starting past the end reads nothing, as from a file.
      if (s3Status(err) === 416 && (await this.stat(key))) return Readable.from([]);
      throw this.failed(`reading ${key}`, err);
    }
  }

  async stat(key: string): Promise<StoredObject | null> {
    const objectKey = this.objectKey(key);
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: objectKey }));
      return { key, size: head.ContentLength ?? 0, modified: head.LastModified ?? new Date(0) };
    } catch (err) {
      // HEAD answers carry no error body: a 404 is a missing key or a missing bucket, and a 403
      // is bad credentials or missing rights. A listing tells which, with the server's reason.
      const status = s3Status(err);
      if (status === 404 || s3Code(err) === 'NotFound' || s3Code(err) === 'NoSuchKey') {
        await this.checkBucket();
        return null;
      }
      if (status === 403 || status === 400 || status === 301) await this.checkBucket(true);
      throw this.failed(`looking up ${key}`, err);
    }
  }

  /** Newest first; only valid keys directly under the prefix (S3 times have a resolution of one second). */
  async list(): Promise<readonly StoredObject[]> {
    const objects: StoredObject[] = [];
    let ContinuationToken: string | undefined;
    do {
      const page = await this.send(
        'listing backups',
        () => this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix, Delimiter: '/', ContinuationToken, MaxKeys: this.listPageSize })),
      );
      for (const o of page.Contents ?? []) {
        const key = o.Key?.slice(this.prefix.length);
        if (key === undefined || !o.Key?.startsWith(this.prefix) || !isValidKey(key)) continue;
        objects.push({ key, size: o.Size ?? 0, modified: o.LastModified ?? new Date(0) });
      }
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (ContinuationToken);
    this.bucketChecked = true;
    objects.sort((a, b) => b.modified.getTime() - a.modified.getTime() || b.key.localeCompare(a.key));
    return Object.freeze(objects);
  }

  async delete(key: string): Promise<void> {
    await this.send(`deleting ${key}`, () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) })));
  }

  /** Downloads to a temporary file in `tempDir` (streamed, fsynced); `release()` removes it. */
  async localCopy(key: string, tempDir: string): Promise<LocalCopy> {
    assertValidKey(key);
    const expected = await this.stat(key);
    if (!expected) throw notFound(key, this.description);
    await fs.promises.mkdir(tempDir, { recursive: true });
    const file = path.join(tempDir, `.stowage-download-${key}.${crypto.randomBytes(6).toString('hex')}`);
    const release = () => fs.promises.rm(file, { force: true });
    try {
      await pipeline(await this.get(key), fs.createWriteStream(file, { flags: 'wx', highWaterMark: MiB }));
      const handle = await fs.promises.open(file, 'r+');
      try {
        await handle.sync();
        const { size } = await handle.stat();
        if (size !== expected.size) throw new StowageError('STORAGE_FAILED', `downloading ${key} from ${this.description} gave ${size} of ${expected.size} bytes: the object changed or the connection broke; try again`);
      } finally {
        await handle.close();
      }
    } catch (err) {
      await release();
      if (err instanceof StowageError) throw err;
      throw this.failed(`downloading ${key}`, err);
    }
    return { path: file, release };
  }

  /**
   * Removes temporary objects and aborts multipart uploads under the prefix whose owner tag is
   * not alive. Servers that cannot list multipart uploads (501) keep their parts, which are
   * invisible to `list()`; the temporary objects are removed all the same.
   */
  async cleanupIncomplete(isWriterAlive: (owner: string) => boolean): Promise<number> {
    const stale = (name: string) => {
      const owner = /\.(\d+-\d+)\.[0-9a-f]{12}$/.exec(name)?.[1];
      return !(owner && isWriterAlive(owner));
    };
    const tempPrefix = this.prefix + TEMP_MARK;
    const removed = new Set<string>();
    let ContinuationToken: string | undefined;
    do {
      const page = await this.send('looking for unfinished uploads', () => this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: tempPrefix, ContinuationToken, MaxKeys: this.listPageSize })));
      for (const o of page.Contents ?? []) {
        const name = o.Key;
        if (!name || name.slice(this.prefix.length).includes('/') || !stale(name)) continue;
        await this.send('removing an unfinished upload', () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: name })));
        removed.add(name);
      }
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (ContinuationToken);

    let KeyMarker: string | undefined;
    let UploadIdMarker: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: tempPrefix, KeyMarker, UploadIdMarker }));
      } catch (err) {
        if (s3Code(err) === 'NotImplemented' || s3Status(err) === 501) break;
        throw this.failed('listing unfinished multipart uploads', err);
      }
      for (const u of page.Uploads ?? []) {
        const { Key, UploadId } = u;
        if (!Key || !UploadId || !stale(Key)) continue;
        await this.send('aborting an unfinished multipart upload', () => this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId })));
        removed.add(Key);
      }
      KeyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
      UploadIdMarker = page.IsTruncated ? page.NextUploadIdMarker : undefined;
    } while (KeyMarker);
    return removed.size;
  }

  /** Runs one request; any failure becomes a STORAGE_FAILED that says what to check. */
  private async send<T>(what: string, request: () => Promise<T>): Promise<T> {
    try {
      return await request();
    } catch (err) {
      throw this.failed(what, err);
    }
  }

  /** Runs a listing once, so that a bare 404 or 403 from a HEAD gets the server's actual reason. */
  private async checkBucket(force = false): Promise<void> {
    if (this.bucketChecked && !force) return;
    await this.send('opening the bucket', () => this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix, MaxKeys: 1 })));
    this.bucketChecked = true;
  }

  private failed(what: string, err: unknown): StowageError {
    if (err instanceof StowageError) return err;
    // The SDK's error is not kept as the cause: it holds the raw response and the signed
    // request headers. What is useful for a report is copied.
    const details = { s3Code: s3Code(err), httpStatus: s3Status(err), requestId: (err as { $metadata?: { requestId?: string } } | null)?.$metadata?.requestId };
    return new StowageError('STORAGE_FAILED', `${what} in ${this.description} failed: ${explain(err, this.bucket, this.where)}`, { details });
  }

  /**
   * Writes, reads back and deletes a probe object (its name is never a backup key, so no list
   * ever shows it), and says which step failed and why: for checking settings before use.
   */
  async probe(): Promise<Array<{ step: 'list' | 'write' | 'read' | 'delete'; ok: boolean; message: string; ms: number }>> {
    const steps: Array<{ step: 'list' | 'write' | 'read' | 'delete'; ok: boolean; message: string; ms: number }> = [];
    const key = `${this.prefix}.stowage-probe-${crypto.randomBytes(6).toString('hex')}`;
    const body = crypto.randomBytes(64);
    const run = async (step: 'list' | 'write' | 'read' | 'delete', fn: () => Promise<string>): Promise<boolean> => {
      const t0 = Date.now();
      try {
        steps.push({ step, ok: true, message: await fn(), ms: Date.now() - t0 });
        return true;
      } catch (err) {
        steps.push({ step, ok: false, message: err instanceof StowageError ? err.message : explain(err, this.bucket, this.where), ms: Date.now() - t0 });
        return false;
      }
    };
    const ok =
      (await run('list', async () => {
        await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix, MaxKeys: 1 }));
        return `listed ${this.bucket}/${this.prefix}`;
      })) &&
      (await run('write', async () => {
        await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentLength: body.length }));
        return `wrote ${key}`;
      }));
    if (!ok) return steps;
    await run('read', async () => {
      const got = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      const bytes = Buffer.from(await got.Body!.transformToByteArray());
      if (!bytes.equals(body)) throw new Error('the object read back differs from what was written (a proxy or gateway changing data?)');
      return 'read it back intact';
    });
    await run('delete', async () => {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
      return 'deleted it';
    });
    return steps;
  }
}

function exists(key: string): StowageError {
  return new StowageError('BACKUP_EXISTS', `a backup named ${key} already exists`);
}

function notFound(key: string, description: string): StowageError {
  return new StowageError('BACKUP_NOT_FOUND', `no backup named ${key} in ${description}`);
}

/**
 * x-amz-copy-source: URL-encoded per path segment. "@" (allowed in keys) stays as it is, which
 * every server accepts, while some (s3rver) do not decode %40.
 */
function copySource(bucket: string, key: string): string {
  return `${bucket}/${key.split('/').map((segment) => encodeURIComponent(segment).replace(/%40/g, '@')).join('/')}`;
}
