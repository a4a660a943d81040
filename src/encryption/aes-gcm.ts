/**
 * Stowage's chunked AES-256-GCM format, for exports encrypted with a caller's 256-bit key
 * (`POST /api/backups/export` with `aes_key`, as SysReptor does). docs/FORMAT.md section 7 is
 * the specification; in short:
 *
 *   header (48 bytes): "stowage-aesgcm" | version 1 | log2 chunk size 16 | salt (16 random bytes)
 *                      | check (16 bytes: HMAC-SHA-256 of the first 32 bytes, truncated)
 *   records:           word (u32 BE: bit 31 final flag, bits 0-30 plaintext length) | ciphertext | tag
 *
 * The caller's key is long-lived, so every file gets its own keys from HKDF-SHA-256 over a random
 * salt; chunk nonces are then plain counters and never repeat under a key. The record word is the
 * GCM additional data, so lengths and the final flag are authenticated: truncation at a record
 * boundary, reordering, dropping and appending are all detected. The check value tells a wrong
 * key before any output. AES-256-GCM is node:crypto's (OpenSSL, AES-NI): >3 GB/s here.
 */
import crypto from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { StowageError } from '../errors.js';
import { BlockCutter, settle } from './chunks.js';

/**
 * Buffering on each side of the cipher. Node's default (16 KiB) is below one 64 KiB chunk, so
 * nearly every write of the archive writer waited for 'drain' (docs/PERFORMANCE.md, Encryption).
 */
const STREAM_BUFFER_BYTES = 1024 * 1024;

const MAGIC = Buffer.from('stowage-aesgcm', 'latin1');
const VERSION = 1;
const CHUNK_LOG2 = 16;
const CHUNK = 2 ** CHUNK_LOG2;
const SALT_BYTES = 16;
const CHECK_BYTES = 16;
/** The part of the header the check covers: magic, version, chunk size, salt. */
const CHECKED_BYTES = MAGIC.length + 2 + SALT_BYTES;
export const AES_GCM_HEADER_BYTES = CHECKED_BYTES + CHECK_BYTES;
const WORD_BYTES = 4;
const TAG_BYTES = 16;
const FINAL = 0x80000000;
const HKDF_INFO = 'stowage-aesgcm v1';
/** Records per file at most: 2^32 of 64 KiB (256 TiB), far inside AES-GCM's per-key bounds. */
const MAX_RECORDS = 2 ** 32;

function keyUsage(message: string): StowageError {
  return new StowageError('USAGE', message);
}

function invalid(message: string): StowageError {
  return new StowageError('ARCHIVE_INVALID', message);
}

const KEY_HINT = 'AES-256 needs a 256-bit key: 64 hex digits or 44 base64 characters (make one with: openssl rand -hex 32)';

/**
 * A 256-bit key from text: 64 hex digits, or base64 / base64url (padded or not) of 32 bytes.
 * Surrounding whitespace is ignored. A USAGE error says what is wrong, never quoting the text.
 */
export function parseAesKey(text: string): Buffer {
  const s = text.trim();
  if (/^[0-9a-fA-F]+$/.test(s) && s.length !== 43) {
    if (s.length === 64) return Buffer.from(s, 'hex');
    if (s.length % 2 === 0) throw keyUsage(`the AES key is ${s.length * 4} bits of hex; ${KEY_HINT}`);
  }
  const b64 = /^[A-Za-z0-9+/]+={0,2}$/.test(s) ? 'base64' : /^[A-Za-z0-9_-]+={0,2}$/.test(s) ? 'base64url' : null;
  if (!b64) throw keyUsage(`the AES key is neither hex nor base64; ${KEY_HINT}`);
  const bytes = Buffer.from(s, b64);
  if (bytes.toString(b64).replace(/=+$/, '') !== s.replace(/=+$/, '')) throw keyUsage(`the AES key is not canonical base64; ${KEY_HINT}`);
  if (bytes.length !== 32) throw keyUsage(`the AES key is ${bytes.length * 8} bits of base64; ${KEY_HINT}`);
  return bytes;
}

function toKey(key: Uint8Array | string): Buffer {
  if (typeof key === 'string') return parseAesKey(key);
  if (key.length !== 32) throw keyUsage(`the AES key is ${key.length * 8} bits; ${KEY_HINT}`);
  return Buffer.from(key);
}

/** Whether these first bytes (14 are enough) start a Stowage AES-GCM file. */
export function isAesGcmFile(firstBytes: Uint8Array): boolean {
  return firstBytes.length >= MAGIC.length && MAGIC.equals(Buffer.from(firstBytes.buffer, firstBytes.byteOffset, MAGIC.length));
}

/** The file's keys: HKDF-SHA-256(ikm = key, salt, info) → 32 bytes AES key, 32 bytes check key. */
function fileKeys(key: Buffer, salt: Buffer): { aes: Buffer; check: Buffer } {
  const okm = Buffer.from(crypto.hkdfSync('sha256', key, salt, HKDF_INFO, 64));
  return { aes: okm.subarray(0, 32), check: okm.subarray(32) };
}

function checkValue(checkKey: Buffer, checked: Buffer): Buffer {
  return crypto.createHmac('sha256', checkKey).update(checked).digest().subarray(0, CHECK_BYTES);
}

/** Nonce of record i: 4 zero bytes, then i as a big-endian 64-bit integer (i < 2^32). */
function recordNonce(index: number): Buffer {
  const nonce = Buffer.alloc(12);
  nonce.writeUInt32BE(index, 8);
  return nonce;
}

function recordWord(length: number, final: boolean): Buffer {
  const word = Buffer.alloc(WORD_BYTES);
  word.writeUInt32BE((final ? FINAL : 0) + length);
  return word;
}

/** Encrypts into the chunked AES-256-GCM format with `key` (32 bytes, or text for parseAesKey). */
export function createAesGcmEncryptStream(key: Uint8Array | string): Transform {
  return new AesGcmEncryptStream(toKey(key));
}

class AesGcmEncryptStream extends Transform {
  private readonly header: Buffer;
  private readonly aes: Buffer;
  private readonly cutter = new BlockCutter(CHUNK);
  private index = 0;

  constructor(key: Buffer) {
    super({ highWaterMark: STREAM_BUFFER_BYTES });
    const salt = crypto.randomBytes(SALT_BYTES);
    const { aes, check } = fileKeys(key, salt);
    const checked = Buffer.concat([MAGIC, Buffer.from([VERSION, CHUNK_LOG2]), salt]);
    this.header = Buffer.concat([checked, checkValue(check, checked)]);
    this.aes = aes;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, cb: TransformCallback): void {
    settle(cb, () => this.cutter.write(chunk, (block) => this.seal(block, false)));
  }

  override _flush(cb: TransformCallback): void {
    settle(cb, () => this.seal(this.cutter.end(), true));
  }

  private seal(plaintext: Buffer, final: boolean): void {
    if (this.index === 0) this.push(this.header);
    if (this.index >= MAX_RECORDS) throw invalid('the stream is longer than the AES-GCM format allows (256 TiB)');
    const word = recordWord(plaintext.length, final);
    const c = crypto.createCipheriv('aes-256-gcm', this.aes, recordNonce(this.index), { authTagLength: TAG_BYTES });
    c.setAAD(word);
    const body = c.update(plaintext);
    c.final();
    this.push(Buffer.concat([word, body, c.getAuthTag()]));
    this.index++;
  }
}

/**
 * Decrypts the chunked AES-256-GCM format. A wrong key is `DECRYPT_FAILED` before any output; a
 * malformed, truncated or altered file `ARCHIVE_INVALID`; another version or chunk size
 * `FORMAT_UNSUPPORTED`. Each record is emitted once its tag verifies (see age.ts on treating
 * output as unfinished until the stream ends without an error).
 */
export function createAesGcmDecryptStream(key: Uint8Array | string): Transform {
  return new AesGcmDecryptStream(toKey(key));
}

class AesGcmDecryptStream extends Transform {
  private state: 'header' | 'word' | 'record' | 'done' = 'header';
  /** Bytes of the unit being gathered (header, word or record), when it spans writes. */
  private readonly gather = Buffer.allocUnsafe(WORD_BYTES + CHUNK + TAG_BYTES);
  private fill = 0;
  /** Offset in the file of the unit being gathered. */
  private pos = 0;
  private aes: Buffer | null = null;
  private index = 0;
  private word: Buffer = Buffer.alloc(0);
  private length = 0;
  private final = false;

  constructor(private readonly key: Buffer) {
    super({ highWaterMark: STREAM_BUFFER_BYTES });
  }

  private need(): number {
    if (this.state === 'header') return AES_GCM_HEADER_BYTES;
    if (this.state === 'word') return WORD_BYTES;
    return this.length + TAG_BYTES;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, cb: TransformCallback): void {
    settle(cb, () => {
      let off = 0;
      while (off < chunk.length) {
        if (this.state === 'done') throw invalid(`the file has data appended after its end: its final record ends at byte ${this.pos}, and more follows`);
        const need = this.need();
        let unit: Buffer;
        if (this.fill === 0 && chunk.length - off >= need) {
          unit = chunk.subarray(off, off + need);
          off += need;
        } else {
          const take = Math.min(need - this.fill, chunk.length - off);
          chunk.copy(this.gather, this.fill, off, off + take);
          this.fill += take;
          off += take;
          if (this.fill < need) break;
          unit = this.gather.subarray(0, need);
          this.fill = 0;
        }
        if (this.state === 'header') this.onHeader(unit);
        else if (this.state === 'word') this.onWord(unit);
        else this.onRecord(unit);
        this.pos += need;
      }
    });
  }

  override _flush(cb: TransformCallback): void {
    settle(cb, () => {
      if (this.state === 'done') return;
      const at = this.pos + this.fill;
      if (this.state === 'header') {
        throw invalid(at === 0 ? 'the file is empty: it is not an encrypted backup' : `the file was truncated at byte ${at}, inside its ${AES_GCM_HEADER_BYTES}-byte header`);
      }
      if (this.state === 'word' && this.fill === 0) {
        throw invalid(`the file was truncated at byte ${at} (a record boundary): its final record is missing`);
      }
      throw invalid(`the file was truncated at byte ${at}, inside record ${this.index}`);
    });
  }

  private onHeader(header: Buffer): void {
    if (!MAGIC.equals(header.subarray(0, MAGIC.length))) {
      throw invalid('this is not a Stowage AES-GCM encrypted file: it does not start with "stowage-aesgcm"');
    }
    const version = header[MAGIC.length] as number;
    const chunkLog2 = header[MAGIC.length + 1] as number;
    if (version !== VERSION) throw new StowageError('FORMAT_UNSUPPORTED', `this encrypted file is AES-GCM format version ${version}; this Stowage reads version ${VERSION}: upgrade Stowage`);
    if (chunkLog2 !== CHUNK_LOG2) throw new StowageError('FORMAT_UNSUPPORTED', `this encrypted file uses 2^${chunkLog2}-byte chunks; version 1 allows only 2^${CHUNK_LOG2}`);
    const { aes, check } = fileKeys(this.key, header.subarray(MAGIC.length + 2, CHECKED_BYTES));
    if (!crypto.timingSafeEqual(checkValue(check, header.subarray(0, CHECKED_BYTES)), header.subarray(CHECKED_BYTES, AES_GCM_HEADER_BYTES))) {
      throw new StowageError('DECRYPT_FAILED', 'the AES key does not match this backup (or its header was altered): pass the aes_key it was exported with', {
        details: { requires: 'key' },
      });
    }
    this.aes = aes;
    this.state = 'word';
  }

  private onWord(word: Buffer): void {
    const value = word.readUInt32BE(0);
    this.final = (value & FINAL) !== 0;
    this.length = value & ~FINAL;
    const where = `record ${this.index} (at byte ${this.pos})`;
    if (this.length > CHUNK) throw invalid(`${where} claims ${this.length} bytes, more than the ${CHUNK} a record holds: the file is damaged or was altered`);
    if (!this.final && this.length !== CHUNK) throw invalid(`${where} is not final but holds ${this.length} bytes, not ${CHUNK}: the file is damaged or was altered`);
    if (this.final && this.length === 0 && this.index > 0) throw invalid(`${where} is an empty final record, which Stowage never writes: the file was altered`);
    if (this.index >= MAX_RECORDS) throw invalid(`the file has more than ${MAX_RECORDS} records, more than the format allows`);
    this.word = Buffer.from(word);
    this.state = 'record';
  }

  private onRecord(sealed: Buffer): void {
    const d = crypto.createDecipheriv('aes-256-gcm', this.aes as Buffer, recordNonce(this.index), { authTagLength: TAG_BYTES });
    d.setAAD(this.word);
    d.setAuthTag(sealed.subarray(this.length));
    const plaintext = d.update(sealed.subarray(0, this.length));
    try {
      d.final();
    } catch {
      const start = this.pos - WORD_BYTES;
      throw invalid(`record ${this.index} (bytes ${start}-${this.pos + sealed.length}) failed authentication: the file is damaged, truncated or was altered`);
    }
    this.push(plaintext);
    this.index++;
    this.state = this.final ? 'done' : 'word';
  }
}
