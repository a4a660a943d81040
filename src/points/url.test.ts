import { describe, expect, it } from 'vitest';
import { StowageError } from '../errors.js';
import { parseGitUrl, parseS3Url, redactUrl, validatePointUrl, type PointMethod } from './url.js';

function refusal(method: PointMethod, url: string): string {
  try {
    validatePointUrl(method, url);
  } catch (err) {
    expect(err).toBeInstanceOf(StowageError);
    expect((err as StowageError).code).toBe('CONFIG_INVALID');
    return (err as Error).message;
  }
  throw new Error(`${url} was accepted for ${method}`);
}

describe('Git point URLs', () => {
  it('accepts http(s) repository addresses', () => {
    expect(parseGitUrl('https://github.com/amyasnikov/my_awesome_repo')).toBe('https://github.com/amyasnikov/my_awesome_repo');
    expect(parseGitUrl('  http://127.0.0.1:8080/team/configs.git ')).toBe('http://127.0.0.1:8080/team/configs.git');
    expect(parseGitUrl('https://gitlab.example.com:8443/group/sub/repo.git')).toBe('https://gitlab.example.com:8443/group/sub/repo.git');
  });

  it('refuses other schemes, credentials in the URL, and addresses without a repository', () => {
    expect(refusal('git', 'ftp://example.com/repo.git')).toMatch(/needs an http:\/\/ or https:\/\/ URL, not ftp:/);
    expect(refusal('git', 'ssh://git@github.com/o/r.git')).toMatch(/not ssh:.*ssh:\/\/ and git@host: addresses are not supported/);
    expect(refusal('git', 'git@github.com:o/r.git')).toMatch(/SSH addresses \(user@host:path\) are not supported/);
    expect(refusal('git', 'file:///srv/git/r.git')).toMatch(/not file:/);
    const withSecret = refusal('git', 'https://bot:hunter2-secret@github.com/o/r.git');
    expect(withSecret).toMatch(/must not contain credentials .*put them in the point's username and password fields/);
    expect(withSecret).not.toContain('hunter2-secret');
    expect(refusal('git', 'https://token@github.com/o/r.git')).toMatch(/must not contain credentials/);
    expect(refusal('git', 'https://github.com/')).toMatch(/names no repository/);
    expect(refusal('git', 'https://github.com/o/r.git?private_token=abc')).toMatch(/must not have a \?query/);
    expect(refusal('git', 'https://github.com/o/r.git#main')).toMatch(/#fragment/);
    expect(refusal('git', 'not a url')).toMatch(/is not a URL; write it like https:\/\/github.com\/owner\/repo/);
    expect(refusal('git', '')).toMatch(/the URL is empty/);
  });
});

describe('S3 point URLs', () => {
  it('reads AWS path-style addresses', () => {
    expect(parseS3Url('https://s3.eu-north-1.amazonaws.com/bucket/folder')).toEqual({ endpoint: 'https://s3.eu-north-1.amazonaws.com', bucket: 'bucket', prefix: 'folder', style: 'path', region: 'eu-north-1' });
    expect(parseS3Url('https://s3.eu-north-1.amazonaws.com/bucket_name/arch.zip')).toEqual({ endpoint: 'https://s3.eu-north-1.amazonaws.com', bucket: 'bucket_name', prefix: 'arch.zip', style: 'path', region: 'eu-north-1' });
    expect(parseS3Url('https://s3.amazonaws.com/my-bucket')).toEqual({ endpoint: 'https://s3.amazonaws.com', bucket: 'my-bucket', prefix: '', style: 'path', region: 'us-east-1' });
    expect(parseS3Url('https://s3-us-west-2.amazonaws.com/my.bucket/a/b/')).toMatchObject({ bucket: 'my.bucket', prefix: 'a/b', region: 'us-west-2' });
  });

  it('reads S3-compatible services as path style', () => {
    expect(parseS3Url('http://127.0.0.1:9000/bucket/folder')).toEqual({ endpoint: 'http://127.0.0.1:9000', bucket: 'bucket', prefix: 'folder', style: 'path' });
    expect(parseS3Url('https://minio.internal/backups//nightly/configs/')).toEqual({ endpoint: 'https://minio.internal', bucket: 'backups', prefix: 'nightly/configs', style: 'path' });
    expect(parseS3Url('http://localhost:9000/bucket/with%20space')).toMatchObject({ prefix: 'with space' });
  });

  it('reads AWS virtual-hosted addresses', () => {
    expect(parseS3Url('https://bucket.s3.eu-north-1.amazonaws.com/folder')).toEqual({ endpoint: 'https://s3.eu-north-1.amazonaws.com', bucket: 'bucket', prefix: 'folder', style: 'virtual', region: 'eu-north-1' });
    expect(parseS3Url('https://my-bucket.s3.amazonaws.com/')).toEqual({ endpoint: 'https://s3.amazonaws.com', bucket: 'my-bucket', prefix: '', style: 'virtual', region: 'us-east-1' });
    expect(parseS3Url('https://logs.example.com.s3.us-west-2.amazonaws.com/a/b')).toMatchObject({ bucket: 'logs.example.com', prefix: 'a/b', style: 'virtual', region: 'us-west-2' });
    expect(parseS3Url('https://bkt.s3.dualstack.eu-west-1.amazonaws.com/x')).toMatchObject({ bucket: 'bkt', endpoint: 'https://s3.dualstack.eu-west-1.amazonaws.com', region: 'eu-west-1' });
  });

  it('refuses bad addresses with a message saying how to write them', () => {
    expect(refusal('s3', 'ftp://s3.amazonaws.com/bucket')).toMatch(/S3 point needs an http:\/\/ or https:\/\/ URL, not ftp:.*https:\/\/s3\.eu-north-1\.amazonaws\.com\/bucket\/folder/);
    expect(refusal('s3', 'https://s3.eu-north-1.amazonaws.com/')).toMatch(/names no bucket/);
    expect(refusal('s3', 'http://127.0.0.1:9000')).toMatch(/names no bucket/);
    const creds = refusal('s3', 'https://AKIAEXAMPLE:wJalrXUtnFEMI@s3.amazonaws.com/bucket');
    expect(creds).toMatch(/must not contain credentials .*access key ID and secret access key fields/);
    expect(creds).not.toContain('wJalrXUtnFEMI');
    expect(refusal('s3', 'https://s3.amazonaws.com/ab/x')).toMatch(/3 to 63 characters/);
    expect(refusal('s3', 'https://s3.amazonaws.com/Upper-Case')).toMatch(/lower-case letters/);
    expect(refusal('s3', 'https://s3.amazonaws.com/-bucket')).toMatch(/start and end with a letter or digit/);
    expect(refusal('s3', 'https://s3.amazonaws.com/bucket/../etc')).toMatch(/"\.\."|\.\. segments/);
    expect(refusal('s3', 'https://s3.amazonaws.com/bucket/a%2Fb')).toMatch(/escaped "\/"/);
    expect(refusal('s3', 'https://s3.amazonaws.com/bucket?versionId=1')).toMatch(/\?query/);
  });
});

describe('redactUrl', () => {
  it('hides userinfo and query values', () => {
    expect(redactUrl('https://bot:secret@git.example.com/o/r.git')).toBe('https://***@git.example.com/o/r.git');
    expect(redactUrl('https://git.example.com/o/r.git?token=abc&x=1')).toBe('https://git.example.com/o/r.git?token=***&x=***');
    expect(redactUrl('user:pw@weird host')).toBe('***@weird host');
  });
});
