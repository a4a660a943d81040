/**
 * The age v1 header (age-encryption.org/v1, C2SP age.md): its text form, its MAC, and the two
 * native recipient types Stowage implements, X25519 and scrypt. All primitives are node:crypto
 * (X25519, HKDF-SHA-256, scrypt, HMAC-SHA-256, ChaCha20-Poly1305).
 *
 * Why not the `age-encryption` npm package: it exports whole-file Encrypter/Decrypter classes
 * over web streams with a pure-JS payload (~55 MB/s measured here), and no header parser or
 * recipient classes to use on their own; the header is small enough to implement to the letter.
 */
import crypto from 'node:crypto';
import { promisify } from 'node:util';
import { StowageError } from '../errors.js';
import { rawPublicKey, x25519, type X25519Identity } from './age-keys.js';

export const AGE_INTRO = 'age-encryption.org/v1\n';
/** Bytes of a file key; of a ChaCha20-Poly1305 tag. */
export const FILE_KEY_BYTES = 16;
export const TAG_BYTES = 16;
const ZERO_NONCE = Buffer.alloc(12);
const COLUMNS = 64;

/** A recipient stanza: `args[0]` is its type (`X25519`, `scrypt`, or one Stowage ignores). */
export interface Stanza {
  args: string[];
  body: Buffer;
}

export function invalid(message: string): StowageError {
  return new StowageError('ARCHIVE_INVALID', message);
}

function malformed(message: string): StowageError {
  return invalid(`the age header is malformed: ${message}; the file is damaged or was not written by age`);
}

// --- primitives --------------------------------------------------------------------------------

/** Standard base64 without padding, as age writes it. */
export function b64encode(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64').replace(/=+$/, '');
}

/** Canonical unpadded base64 or null: age requires rejecting padding and non-zero spare bits. */
export function b64decode(text: string): Buffer | null {
  if (!/^[A-Za-z0-9+/]*$/.test(text) || text.length % 4 === 1) return null;
  const bytes = Buffer.from(text, 'base64');
  return b64encode(bytes) === text ? bytes : null;
}

export function hkdf(ikm: Uint8Array, salt: Uint8Array, info: string): Buffer {
  return Buffer.from(crypto.hkdfSync('sha256', ikm, salt, info, 32));
}

export function chachaSeal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array): Buffer {
  const c = crypto.createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG_BYTES });
  const out = c.update(plaintext);
  c.final();
  return Buffer.concat([out, c.getAuthTag()]);
}

/** The plaintext, or null when the tag does not verify (wrong key, or altered bytes). */
export function chachaOpen(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array): Buffer | null {
  if (sealed.length < TAG_BYTES) return null;
  const d = crypto.createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG_BYTES });
  d.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  const out = d.update(sealed.subarray(0, sealed.length - TAG_BYTES));
  try {
    d.final();
  } catch {
    return null;
  }
  return out;
}

// --- header text -------------------------------------------------------------------------------

function isArgument(s: string): boolean {
  return /^[\x21-\x7e]+$/.test(s);
}

function encodeStanza(stanza: Stanza): string {
  const body = b64encode(stanza.body);
  let out = `-> ${stanza.args.join(' ')}\n`;
  // Lines of 64 columns; the last is shorter (empty when the body fills whole lines).
  for (let i = 0; ; i += COLUMNS) {
    const line = body.slice(i, i + COLUMNS);
    out += `${line}\n`;
    if (line.length < COLUMNS) break;
  }
  return out;
}

/** HMAC-SHA-256 over the header up to and including `---`, keyed from the file key. */
export function headerMac(fileKey: Uint8Array, macInput: Uint8Array): Buffer {
  return crypto.createHmac('sha256', hkdf(fileKey, Buffer.alloc(0), 'header')).update(macInput).digest();
}

/** The whole header, MAC line included, for these stanzas and file key. */
export function encodeHeader(stanzas: Stanza[], fileKey: Uint8Array): Buffer {
  const withoutMac = Buffer.from(AGE_INTRO + stanzas.map(encodeStanza).join('') + '---', 'latin1');
  return Buffer.concat([withoutMac, Buffer.from(` ${b64encode(headerMac(fileKey, withoutMac))}\n`, 'latin1')]);
}

const MAC_MARK = Buffer.from('\n---', 'latin1');

/**
 * Where the header ends in `buf` (the offset just after the MAC line's newline, or -1 when more
 * bytes are needed), and where to search from once more bytes are appended. The first line
 * starting with `---` is the MAC line: no stanza line can start so.
 */
export function findHeaderEnd(buf: Buffer, searchFrom = 0): { end: number; next: number } {
  const mark = buf.indexOf(MAC_MARK, searchFrom);
  if (mark < 0) return { end: -1, next: Math.max(0, buf.length - MAC_MARK.length + 1) };
  const nl = buf.indexOf(0x0a, mark + 1);
  return { end: nl < 0 ? -1 : nl + 1, next: mark };
}

export interface ParsedHeader {
  stanzas: Stanza[];
  /** The bytes the MAC covers: up to and including `---`. */
  macInput: Buffer;
  mac: Buffer;
}

/** Parses a complete header (as delimited by findHeaderEnd) to the letter of the spec's ABNF. */
export function parseHeader(header: Buffer): ParsedHeader {
  for (let i = 0; i < header.length; i++) {
    const b = header[i] as number;
    if (b !== 0x0a && (b < 0x20 || b > 0x7e)) throw malformed(`byte ${i} is not printable ASCII`);
  }
  const text = header.toString('latin1');
  if (!text.startsWith(AGE_INTRO)) throw malformed('it does not start with age-encryption.org/v1');
  const lines = text.slice(0, -1).split('\n');
  const stanzas: Stanza[] = [];
  let i = 1;
  let offset = AGE_INTRO.length;
  const next = (): string | undefined => {
    const line = lines[i++];
    if (line !== undefined) offset += line.length + 1;
    return line;
  };
  for (;;) {
    const lineStart = offset;
    const line = next();
    if (line === undefined) throw malformed('it ends before the MAC line');
    if (line.startsWith('---')) {
      if (i !== lines.length) throw malformed('text follows the MAC line');
      const mac = line.startsWith('--- ') && line.length === 4 + 43 ? b64decode(line.slice(4)) : null;
      if (!mac || mac.length !== 32) throw malformed('the MAC line is not "--- " and 43 base64 characters');
      if (stanzas.length === 0) throw malformed('it has no recipient stanza');
      return { stanzas, macInput: header.subarray(0, lineStart + 3), mac };
    }
    if (!line.startsWith('-> ')) throw malformed(`line ${i} is neither a stanza ("-> ...") nor the MAC line ("--- ...")`);
    const args = line.slice(3).split(' ');
    if (!args.every(isArgument)) throw malformed(`the stanza on line ${i} has an empty or non-printable argument`);
    const parts: Buffer[] = [];
    for (;;) {
      const bodyLine = next();
      if (bodyLine === undefined || bodyLine.startsWith('-')) throw malformed(`a stanza ends without a final body line shorter than 64 columns (at line ${i})`);
      const bytes = bodyLine.length <= COLUMNS ? b64decode(bodyLine) : null;
      if (!bytes) throw malformed(`line ${i} is not a canonical base64 body line of at most 64 columns`);
      parts.push(bytes);
      if (bodyLine.length < COLUMNS) break;
    }
    stanzas.push({ args, body: Buffer.concat(parts) });
  }
}

// --- X25519 recipients -------------------------------------------------------------------------

const X25519_INFO = 'age-encryption.org/v1/X25519';

export function wrapX25519(fileKey: Uint8Array, recipient: Buffer, recipientText: string): Stanza {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('x25519');
  const share = rawPublicKey(publicKey);
  const shared = x25519(privateKey, recipient);
  if (!shared) throw new StowageError('USAGE', `${JSON.stringify(recipientText)} is not a usable X25519 public key (a low-order point)`);
  const wrapKey = hkdf(shared, Buffer.concat([share, recipient]), X25519_INFO);
  return { args: ['X25519', b64encode(share)], body: chachaSeal(wrapKey, ZERO_NONCE, fileKey) };
}

/**
 * The file key if one of `identities` opens this X25519 stanza, else null. A malformed stanza
 * is an error whoever it is for, as the spec requires; the body length is checked before any
 * decryption (the spec's guard against partitioning oracles).
 */
export function unwrapX25519(stanza: Stanza, identities: readonly X25519Identity[]): Buffer | null {
  const share = stanza.args.length === 2 ? b64decode(stanza.args[1] as string) : null;
  if (!share || share.length !== 32) throw malformed('an X25519 stanza does not carry exactly one 32-byte share');
  if (stanza.body.length !== FILE_KEY_BYTES + TAG_BYTES) throw malformed('an X25519 stanza body is not 32 bytes');
  for (const id of identities) {
    const shared = x25519(id.privateKey, share);
    if (!shared) throw malformed('an X25519 share is a low-order point');
    const fileKey = chachaOpen(hkdf(shared, Buffer.concat([share, id.publicKey]), X25519_INFO), ZERO_NONCE, stanza.body);
    if (fileKey) return fileKey;
  }
  return null;
}

// --- scrypt (passphrase) recipient -------------------------------------------------------------

const SCRYPT_LABEL = Buffer.from('age-encryption.org/v1/scrypt', 'latin1');
/** age's own default work factor (log2 N). */
export const SCRYPT_DEFAULT_WORK_FACTOR = 18;
/** What a decryptor accepts unless told otherwise: 2^20 takes 1 GiB and a few seconds. */
export const SCRYPT_DEFAULT_MAX_WORK_FACTOR = 20;
/** The most either direction ever accepts: 2^22 (4 GiB), age's own decryption default. */
export const SCRYPT_MAX_WORK_FACTOR = 22;

const scryptAsync = promisify(crypto.scrypt) as (password: Buffer, salt: Buffer, keylen: number, options: crypto.ScryptOptions) => Promise<Buffer>;

/** scrypt(N = 2^logN, r = 8, p = 1) on the thread pool; memory is 128·N·r = 2^(logN+10) bytes. */
function scryptKey(passphrase: string, salt: Buffer, logN: number): Promise<Buffer> {
  return scryptAsync(Buffer.from(passphrase, 'utf8'), Buffer.concat([SCRYPT_LABEL, salt]), 32, {
    N: 2 ** logN,
    r: 8,
    p: 1,
    maxmem: 2 ** (logN + 10) + 2 ** 24,
  });
}

export async function wrapScrypt(fileKey: Uint8Array, passphrase: string, logN: number): Promise<Stanza> {
  const salt = crypto.randomBytes(16);
  const wrapKey = await scryptKey(passphrase, salt, logN);
  return { args: ['scrypt', b64encode(salt), String(logN)], body: chachaSeal(wrapKey, ZERO_NONCE, fileKey) };
}

/** The file key, or null for a wrong passphrase. Work factors above `maxLogN` are refused unrun. */
export async function unwrapScrypt(stanza: Stanza, passphrase: string, maxLogN: number): Promise<Buffer | null> {
  const [, saltText, logText] = stanza.args;
  const salt = stanza.args.length === 3 && saltText !== undefined ? b64decode(saltText) : null;
  if (!salt || salt.length !== 16) throw malformed('the scrypt stanza does not carry a 16-byte salt and a work factor');
  if (logText === undefined || !/^[1-9][0-9]*$/.test(logText)) throw malformed('the scrypt work factor is not a decimal number without leading zeros');
  const logN = Number(logText);
  if (logN > maxLogN) {
    throw new StowageError(
      'ARCHIVE_UNSAFE',
      `the passphrase of this file uses scrypt work factor 2^${logN}, above the limit of 2^${maxLogN} (${2 ** (maxLogN - 10)} MiB of memory and seconds of CPU): refused so that a hostile file cannot exhaust memory and time; raise maxScryptWorkFactor (at most ${SCRYPT_MAX_WORK_FACTOR}) if you made it yourself`,
      { details: { workFactor: logN, limit: maxLogN } },
    );
  }
  if (stanza.body.length !== FILE_KEY_BYTES + TAG_BYTES) throw malformed('the scrypt stanza body is not 32 bytes');
  return chachaOpen(await scryptKey(passphrase, salt, logN), ZERO_NONCE, stanza.body);
}
