import { redactUrl } from './s3-errors.js';

/**
 * How an S3 storage names itself in messages and in the catalogue's `location` column. One
 * function for the storage and for the engine's choice of storage (storage-choice.ts, which
 * must not load the AWS SDK to say where backups go): the two used to differ (a slash, the
 * endpoint's credentials), so a backup's recorded location never matched the storage in force.
 */
export function normalizeS3Prefix(prefix: string): string {
  const trimmed = prefix.replace(/^\/+/, '');
  return trimmed === '' || trimmed.endsWith('/') ? trimmed : `${trimmed}/`;
}

export function describeS3(config: { bucket: string; prefix: string; region: string; endpoint?: string }): string {
  const where = config.endpoint ? redactUrl(config.endpoint) : `AWS S3 (${config.region})`;
  return `S3 bucket ${config.bucket}/${normalizeS3Prefix(config.prefix)} at ${where}`;
}
