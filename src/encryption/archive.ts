import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { StowageError } from '../errors.js';
import { readFullySync } from '../fs/fd.js';
import type { Upload } from '../storage/storage.js';
import { createAgeEncryptWriter } from './age-seal-thread.js';
import { createAgeDecryptStream, isAgeFile } from './age.js';

/**
 * How backups are encrypted and read back: the archive is the normal ZIP, wrapped in an age
 * file (docs/FORMAT.md, section 6). Encryption sits between the ZipWriter and storage, so
 * nothing in the clear reaches S3 or the storage folder; reading decrypts into a private file
 * in the data folder's scratch space (ZIP readers need random access), removed afterwards.
 */

/** Who can read a backup: X25519 public keys (`age1...`), or one passphrase. */
export interface EncryptionTarget {
  recipients?: readonly string[];
  passphrase?: string;
}

/** What reads an encrypted backup: identity files' contents (`AGE-SECRET-KEY-1...`) or the passphrase. */
export interface DecryptionKeys {
  identities?: readonly string[];
  passphrase?: string;
}

export function wantsEncryption(target: EncryptionTarget | null | undefined): target is EncryptionTarget {
  return Boolean(target && ((target.recipients?.length ?? 0) > 0 || target.passphrase));
}

/**
 * An Upload whose stream encrypts into `inner`: the writer writes plain ZIP bytes, storage
 * receives the age file, sealed on a worker thread (age-seal-thread.ts says why). `commit` ends
 * the encryption (its last chunk) before committing; a storage failure reaches the writer
 * through the stream.
 */
export function encryptingUpload(inner: Upload, target: EncryptionTarget): Upload {
  const encrypt = createAgeEncryptWriter(inner.stream, { recipients: target.recipients ? [...target.recipients] : undefined, passphrase: target.passphrase });
  return {
    stream: encrypt,
    commit: async () => {
      await new Promise<void>((resolve, reject) => {
        encrypt.once('error', reject);
        encrypt.once('finish', resolve);
        encrypt.end();
      });
      return inner.commit();
    },
    abort: async () => {
      encrypt.destroy();
      await inner.abort();
    },
  };
}

/** Whether the file at `file` is an age file (an encrypted backup). */
export function isEncryptedFile(file: string): boolean {
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    return isAgeFile(readFullySync(fd, Math.min(64, size), 0));
  } finally {
    fs.closeSync(fd);
  }
}

/** Keys from the environment: `STOWAGE_IDENTITY` (an identity file's path) and `STOWAGE_PASSPHRASE`. */
export function decryptionKeysFromEnv(env: NodeJS.ProcessEnv = process.env): DecryptionKeys {
  const keys: DecryptionKeys = {};
  if (env.STOWAGE_IDENTITY) {
    try {
      keys.identities = [fs.readFileSync(env.STOWAGE_IDENTITY, 'utf8')];
    } catch (err) {
      throw new StowageError('USAGE', `STOWAGE_IDENTITY names ${env.STOWAGE_IDENTITY}, which cannot be read (${(err as NodeJS.ErrnoException).code}); point it at an age identity file (stowage keygen makes one)`);
    }
  }
  if (env.STOWAGE_PASSPHRASE) keys.passphrase = env.STOWAGE_PASSPHRASE;
  return keys;
}

/**
 * Decrypts the age file `file` into a new private file in `tempDir`; the header is checked and
 * the key found before anything is written, so a wrong key is a DECRYPT_FAILED at once. A file
 * that fails later (tampered, truncated) is removed, never left half-decrypted.
 */
export async function decryptToTempFile(file: string, keys: DecryptionKeys, tempDir: string, label: string): Promise<string> {
  if (!keys.identities?.length && !keys.passphrase) {
    throw new StowageError(
      'DECRYPT_FAILED',
      `${label} is encrypted: give the identity file of one of its recipients or its passphrase (CLI: --identity FILE or --passphrase, or STOWAGE_IDENTITY / STOWAGE_PASSPHRASE; API: "identity" or "passphrase" in the request body)`,
      { details: { requires: 'identity' } },
    );
  }
  await fs.promises.mkdir(tempDir, { recursive: true });
  const out = path.join(tempDir, `decrypted-${crypto.randomBytes(6).toString('hex')}.zip`);
  try {
    await pipeline(fs.createReadStream(file), createAgeDecryptStream({ identities: keys.identities, passphrase: keys.passphrase }), fs.createWriteStream(out, { flags: 'wx', mode: 0o600 }));
  } catch (err) {
    await fs.promises.rm(out, { force: true });
    if (err instanceof StowageError) throw new StowageError(err.code, `${label}: ${err.message}`, { details: err.details, cause: err });
    throw err;
  }
  return out;
}
