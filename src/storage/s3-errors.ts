/**
 * S3 failures in words: what went wrong and what to check. Messages name the bucket, the
 * endpoint and which setting to look at, never a credential.
 */

export function s3Code(err: unknown): string | undefined {
  const e = err as { name?: string; Code?: string } | null;
  return e?.Code ?? e?.name;
}

export function s3Status(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
}

/** What went wrong and what to check, in words; never a credential. */
export function explain(err: unknown, bucket: string, where: string): string {
  const code = s3Code(err);
  const status = s3Status(err);
  const netCode = (err as { code?: string } | null)?.code;
  switch (code) {
    case 'InvalidAccessKeyId':
      return 'the server does not know this access key id: check accessKeyId';
    case 'SignatureDoesNotMatch':
      return 'the request signature was refused: check secretAccessKey (and that it belongs to accessKeyId) and region';
    case 'AccessDenied':
    case 'Forbidden':
      return `access denied (HTTP 403): check the credentials and that they may list, read, write and delete objects in bucket ${bucket}`;
    case 'NoSuchBucket':
      return `bucket ${bucket} does not exist at ${where}: check the bucket name, region and endpoint, or create the bucket`;
    case 'PermanentRedirect':
    case 'AuthorizationHeaderMalformed':
    case 'IllegalLocationConstraintException':
      return `bucket ${bucket} is in another region: check region`;
    case 'RequestTimeTooSkewed':
      return "the server's and this machine's clocks differ too much: check the system clock";
    case 'TimeoutError':
      return `no answer from ${where} in time: check the endpoint and the network`;
  }
  if (netCode && /^(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|ECONNRESET|EHOSTUNREACH|ENETUNREACH|EPIPE)$/.test(netCode)) {
    return `could not reach ${where} (${netCode}): check the endpoint and that the server is running and reachable`;
  }
  if (status === 403) return `access denied (HTTP 403): check accessKeyId, secretAccessKey, and that they may use bucket ${bucket}`;
  if (status === 404) return `not found (HTTP 404): check the bucket name ${bucket} and the endpoint`;
  if (status === 301) return `bucket ${bucket} is in another region: check region`;
  const message = err instanceof Error ? err.message : String(err);
  return status ? `${code ?? 'error'} (HTTP ${status}): ${message}` : `${code && code !== 'Error' ? `${code}: ` : ''}${message}`;
}

/** An endpoint for messages: never with user:password@ in it. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    return u.toString().replace(/\/$/, '');
  } catch {
    return url.replace(/\/\/[^@/]*@/, '//');
  }
}
