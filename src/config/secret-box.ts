import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { StowageError } from '../errors.js';
import { fsyncDir } from '../fs/durable.js';

/**
 * Credentials kept in the metadata store (backup points' passwords and secret keys) are sealed
 * with AES-256-GCM, so a copy of `stowage.db` (in a backup of the server, say) does not hand out
 * the Git token or the S3 secret. The key comes from `STOWAGE_SECRET` when set (any string of 16
 * characters or more, stretched with HKDF), else from `<dataDir>/secret.key`: 32 random bytes
 * generated on first use, mode 0600. Keep that file (or the variable) with the data folder's
 * backups: without it sealed credentials cannot be read and must be entered again.
 *
 * Sealed text: `sbx1:<key id>:<base64url(iv ‖ ciphertext ‖ tag)>`. The key id (8 hex digits of
 * the key's SHA-256) lets a changed key be reported as such rather than as corruption. The
 * caller's `context` (e.g. `point:config-history:password`) is authenticated as additional data,
 * so a sealed value cannot be moved to another field or record.
 */
const PREFIX = 'sbx1';
export const SECRET_KEY_FILE = 'secret.key';
const MIN_SECRET_LENGTH = 16;

export class SecretBox {
  private constructor(
    private readonly key: Buffer,
    /** Where the key came from, for messages: "STOWAGE_SECRET" or the key file's path. */
    readonly origin: string,
  ) {}

  get keyId(): string {
    return crypto.createHash('sha256').update(this.key).digest('hex').slice(0, 8);
  }

  /** The box for this data folder: STOWAGE_SECRET, else the key file (created when missing). */
  static forDataDir(dataDir: string, env: NodeJS.ProcessEnv = process.env): SecretBox {
    const secret = env.STOWAGE_SECRET;
    if (secret !== undefined && secret !== '') {
      if (secret.length < MIN_SECRET_LENGTH) {
        throw new StowageError('CONFIG_INVALID', `STOWAGE_SECRET must be at least ${MIN_SECRET_LENGTH} characters (it encrypts stored credentials); generate one with: openssl rand -hex 32`);
      }
      const key = Buffer.from(crypto.hkdfSync('sha256', secret, 'stowage', 'secret-box v1', 32));
      return new SecretBox(key, 'STOWAGE_SECRET');
    }
    const file = path.join(dataDir, SECRET_KEY_FILE);
    return new SecretBox(readOrCreateKeyFile(file), file);
  }

  seal(plain: string, context: string): string {
    const iv = crypto.randomBytes(12);
    const cipher = crypto.createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(Buffer.from(context, 'utf8'));
    const body = Buffer.concat([iv, cipher.update(plain, 'utf8'), cipher.final(), cipher.getAuthTag()]);
    return `${PREFIX}:${this.keyId}:${body.toString('base64url')}`;
  }

  static isSealed(value: string): boolean {
    return value.startsWith(`${PREFIX}:`);
  }

  isSealed(value: string): boolean {
    return SecretBox.isSealed(value);
  }

  /** The plain text; a clear error when the key changed or the value was altered. */
  open(sealed: string, context: string): string {
    const [prefix, keyId, data] = sealed.split(':');
    if (prefix !== PREFIX || !keyId || data === undefined) throw new StowageError('CONFIG_INVALID', `stored ${context} is not a sealed value`);
    if (keyId !== this.keyId) {
      throw new StowageError(
        'CONFIG_INVALID',
        `stored ${context} was encrypted with another key than the one in ${this.origin} (STOWAGE_SECRET changed, or ${SECRET_KEY_FILE} was replaced); restore that key, or enter the credential again`,
      );
    }
    const body = Buffer.from(data, 'base64url');
    if (body.length < 28) throw new StowageError('CONFIG_INVALID', `stored ${context} is damaged; enter the credential again`);
    try {
      const decipher = crypto.createDecipheriv('aes-256-gcm', this.key, body.subarray(0, 12));
      decipher.setAAD(Buffer.from(context, 'utf8'));
      decipher.setAuthTag(body.subarray(body.length - 16));
      return Buffer.concat([decipher.update(body.subarray(12, body.length - 16)), decipher.final()]).toString('utf8');
    } catch {
      throw new StowageError('CONFIG_INVALID', `stored ${context} is damaged or was moved from another record; enter the credential again`);
    }
  }
}

/**
 * Reads the key file, or creates it: written under a temporary name and published with link(2),
 * which fails if another process (a CLI next to the server) published one first; then that one
 * is used. The key is never replaced once it exists.
 */
function readOrCreateKeyFile(file: string): Buffer {
  const read = (): Buffer | null => {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8').trim();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    if (!/^[0-9a-f]{64}$/.test(text)) {
      throw new StowageError('CONFIG_INVALID', `${file} is not a Stowage key file (64 hex digits expected); restore it from a backup of the data folder, or set STOWAGE_SECRET`);
    }
    return Buffer.from(text, 'hex');
  };
  const existing = read();
  if (existing) return existing;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const temp = `${file}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`;
  const fd = fs.openSync(temp, 'wx', 0o600);
  try {
    fs.writeSync(fd, `${crypto.randomBytes(32).toString('hex')}\n`);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  try {
    fs.linkSync(temp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    fs.rmSync(temp, { force: true });
  }
  void fsyncDir(path.dirname(file)).catch(() => {});
  return read()!;
}
