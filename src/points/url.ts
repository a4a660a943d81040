import { StowageError } from '../errors.js';

/**
 * URLs of backup points, checked per method with messages that say how to write them.
 *
 * Git: `https://host/owner/repo` (or http://), pushed over smart HTTP.
 * S3, path style: `https://s3.eu-north-1.amazonaws.com/bucket/folder`,
 *   `http://127.0.0.1:9000/bucket/folder` (MinIO and other S3-compatible services).
 * S3, virtual-hosted (AWS): `https://bucket.s3.eu-north-1.amazonaws.com/folder`.
 *
 * Credentials never go in a URL: they have their own fields, which are kept secret, while a URL
 * is shown in logs, the API and error messages.
 */
export type PointMethod = 'git' | 's3';

export interface S3Location {
  /** Scheme, host and port of the service, no path: `https://s3.eu-north-1.amazonaws.com`. */
  endpoint: string;
  bucket: string;
  /** Key prefix inside the bucket, no leading or trailing `/`; '' for the bucket's root. */
  prefix: string;
  /** How the bucket is addressed: in the path, or in the host name (virtual-hosted). */
  style: 'path' | 'virtual';
  /** The AWS region when the host name tells it (`us-east-1` for `s3.amazonaws.com`). */
  region?: string;
}

function invalid(message: string, url: string): StowageError {
  return new StowageError('CONFIG_INVALID', message, { details: { url: redactUrl(url) } });
}

/**
 * A URL safe to show: userinfo replaced by `***`, query values masked; anything that does not
 * parse is cut at the first `@`-less shape we can trust, so nothing secret slips through.
 */
export function redactUrl(raw: string): string {
  // Not an http(s) URL (or not a URL at all): keep only what follows the last '@', no query.
  const opaque = (): string => {
    const at = raw.lastIndexOf('@');
    return (at >= 0 ? `***@${raw.slice(at + 1)}` : raw).replace(/[?#].*$/s, '');
  };
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return opaque();
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return opaque();
  if (u.username || u.password) {
    u.username = '***';
    u.password = '';
  }
  if (u.search) {
    const masked = new URLSearchParams();
    for (const key of u.searchParams.keys()) masked.append(key, '***');
    u.search = masked.toString();
  }
  u.hash = '';
  return u.toString();
}

/** Parses and checks what every method shares: http(s), a host, no credentials, no fragment. */
function parseHttpUrl(raw: string, method: PointMethod, example: string): URL {
  const text = raw.trim();
  if (!text) throw invalid(`the URL is empty; write it like ${example}`, raw);
  if (method === 'git' && /^[\w.-]+@[\w.-]+:(?!\/\/)/.test(text)) {
    throw invalid(`SSH addresses (user@host:path) are not supported: a Git point needs the repository's http:// or https:// URL, like ${example}`, raw);
  }
  // The URL parser silently resolves "." and ".." segments (bucket/../x names bucket "x").
  const rawPath = text.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i, '').replace(/[?#].*$/s, '');
  if (/(^|\/)(\.|%2e){1,2}(\/|$)/i.test(rawPath)) throw invalid('the path of the URL must not contain "." or ".." segments', raw);
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw invalid(`"${redactUrl(text)}" is not a URL; write it like ${example}`, raw);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    const hint = method === 'git' ? ' (ssh:// and git@host: addresses are not supported: use the HTTPS address of the repository)' : '';
    throw invalid(`a ${method === 'git' ? 'Git' : 'S3'} point needs an http:// or https:// URL, not ${u.protocol}${hint}; write it like ${example}`, raw);
  }
  if (!u.hostname) throw invalid(`the URL names no host; write it like ${example}`, raw);
  if (u.username || u.password) {
    const fields = method === 'git' ? 'username and password' : 'access key ID and secret access key';
    throw invalid(`the URL must not contain credentials (${redactUrl(text)}): put them in the point's ${fields} fields, which are kept secret`, raw);
  }
  if (u.hash) throw invalid(`the URL must not have a #fragment; write it like ${example}`, raw);
  return u;
}

const GIT_EXAMPLE = 'https://github.com/owner/repo';

/** A Git remote over smart HTTP; returns the normalised URL (no userinfo, no fragment). */
export function parseGitUrl(raw: string): string {
  const u = parseHttpUrl(raw, 'git', GIT_EXAMPLE);
  if (u.search) throw invalid(`a Git URL must not have a ?query (Git appends its own paths to it); write it like ${GIT_EXAMPLE}`, raw);
  if (u.pathname === '/' || u.pathname === '') throw invalid(`the URL names no repository, only a host; write it like ${GIT_EXAMPLE}`, raw);
  return u.toString();
}

const S3_EXAMPLES = 'https://s3.eu-north-1.amazonaws.com/bucket/folder, https://bucket.s3.eu-north-1.amazonaws.com/folder or http://127.0.0.1:9000/bucket/folder';

// <bucket>.s3.amazonaws.com, <bucket>.s3.<region>.amazonaws.com, <bucket>.s3-<region>.amazonaws.com (legacy),
// also under amazonaws.com.cn. The region group may include "dualstack.".
const AWS_VIRTUAL_HOST = /^(.+)\.s3(?:[.-]((?:dualstack\.)?[a-z0-9-]+))?\.(amazonaws\.com(?:\.cn)?)$/;
const AWS_PATH_HOST = /^s3(?:[.-]((?:dualstack\.)?[a-z0-9-]+))?\.(amazonaws\.com(?:\.cn)?)$/;

/**
 * Bucket names: 3 to 63 characters, letters (lower case), digits, `.`, `-`, starting and ending
 * with a letter or digit. Underscores are accepted for buckets created under AWS's legacy rules
 * (and the NetBox document's own example, `bucket_name`).
 */
function checkBucket(bucket: string, raw: string): void {
  if (bucket.length < 3 || bucket.length > 63) throw invalid(`bucket name "${bucket}" must be 3 to 63 characters long`, raw);
  if (!/^[a-z0-9][a-z0-9._-]*[a-z0-9]$/.test(bucket)) {
    throw invalid(`bucket name "${bucket}" may hold only lower-case letters, digits, '.', '-' and '_', and must start and end with a letter or digit`, raw);
  }
  if (bucket.includes('..')) throw invalid(`bucket name "${bucket}" must not contain ".."`, raw);
}

function parsePrefix(segments: string[], raw: string): string {
  const parts: string[] = [];
  for (const seg of segments) {
    if (seg === '') continue; // "folder//x" and a trailing "/" mean nothing more
    let decoded: string;
    try {
      decoded = decodeURIComponent(seg);
    } catch {
      throw invalid(`the folder part of the URL has a broken %-escape ("${seg}")`, raw);
    }
    if (decoded === '.' || decoded === '..') throw invalid('the folder part of the URL must not contain "." or ".." segments', raw);
    if (decoded.includes('/')) throw invalid(`the folder part of the URL has an escaped "/" ("${seg}"); write folders with plain "/"`, raw);
    parts.push(decoded);
  }
  return parts.join('/');
}

/**
 * An S3 bucket location, path style or virtual-hosted (AWS host names). Anything that is not an
 * AWS virtual-hosted name is read as path style, which is what S3-compatible services (MinIO,
 * Ceph, Garage, ...) serve.
 */
export function parseS3Url(raw: string): S3Location {
  const u = parseHttpUrl(raw, 's3', S3_EXAMPLES);
  if (u.search) throw invalid(`an S3 URL must not have a ?query; write it like ${S3_EXAMPLES}`, raw);
  const host = u.hostname.toLowerCase();
  const segments = u.pathname.split('/').slice(1);
  const regionOf = (group: string | undefined, domain: string): string | undefined => {
    if (!group) return domain.endsWith('.cn') ? undefined : 'us-east-1';
    const r = group.replace(/^dualstack\./, '');
    return r === 'external-1' ? 'us-east-1' : r;
  };

  const virtual = AWS_PATH_HOST.test(host) ? null : AWS_VIRTUAL_HOST.exec(host);
  if (virtual) {
    const bucket = virtual[1]!;
    checkBucket(bucket, raw);
    const region = regionOf(virtual[2], virtual[3]!);
    const serviceHost = host.slice(bucket.length + 1);
    const loc: S3Location = { endpoint: `${u.protocol}//${serviceHost}${u.port ? `:${u.port}` : ''}`, bucket, prefix: parsePrefix(segments, raw), style: 'virtual' };
    if (region) loc.region = region;
    return loc;
  }

  const first = segments[0] ?? '';
  if (!first) throw invalid(`the URL names no bucket; write it like ${S3_EXAMPLES}`, raw);
  let bucket: string;
  try {
    bucket = decodeURIComponent(first);
  } catch {
    throw invalid(`the bucket part of the URL has a broken %-escape ("${first}")`, raw);
  }
  checkBucket(bucket, raw);
  const loc: S3Location = { endpoint: u.origin, bucket, prefix: parsePrefix(segments.slice(1), raw), style: 'path' };
  const aws = AWS_PATH_HOST.exec(host);
  if (aws) {
    const region = regionOf(aws[1], aws[2]!);
    if (region) loc.region = region;
  }
  return loc;
}

/** Checks a point's URL for its method; throws CONFIG_INVALID with a message saying how to fix it. */
export function validatePointUrl(method: PointMethod, raw: string): void {
  if (method === 'git') parseGitUrl(raw);
  else parseS3Url(raw);
}
