/**
 * Streaming age encryption (age-encryption.org/v1): what `age -r` / `age -p` write and `age -d`
 * reads, so the age CLI decrypts Stowage backups and Stowage decrypts age output.
 *
 * The header (age-header.ts) is parsed and the file key unwrapped before a byte of plaintext is
 * emitted, so a wrong key or passphrase fails with nothing written. The payload is 64 KiB chunks
 * of ChaCha20-Poly1305 from node:crypto (OpenSSL: >2 GB/s here, where the pure-JS
 * `age-encryption` package measured ~55 MB/s), each nonce an 11-byte big-endian counter and a
 * last-chunk flag, so truncation at a chunk boundary and appended bytes are detected. Memory is a
 * chunk or two, whatever the size of the stream.
 *
 * Streaming decryption emits each chunk once its tag verifies: bytes emitted before a later
 * chunk fails are authentic but incomplete. A consumer treats its output as unfinished until the
 * stream ends without an error (Stowage writes it to a temporary file either way).
 */
import crypto from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { StowageError } from '../errors.js';
import {
  AGE_INTRO,
  FILE_KEY_BYTES,
  SCRYPT_DEFAULT_MAX_WORK_FACTOR,
  SCRYPT_DEFAULT_WORK_FACTOR,
  SCRYPT_MAX_WORK_FACTOR,
  TAG_BYTES,
  chachaOpen,
  encodeHeader,
  findHeaderEnd,
  headerMac,
  hkdf,
  invalid,
  parseHeader,
  unwrapScrypt,
  unwrapX25519,
  wrapScrypt,
  wrapX25519,
  type Stanza,
} from './age-header.js';
import { parseIdentities, parseRecipient, type X25519Identity } from './age-keys.js';
import { BlockCutter, GrowBuffer, MAX_COUNTER, settle } from './chunks.js';

/**
 * Buffering on each side of the cipher. Node's default (16 KiB) is below one 64 KiB chunk, so
 * nearly every write into the stream waited for 'drain' (docs/PERFORMANCE.md, Encryption).
 * Backups use the threaded writer in age-seal-thread.ts instead; these streams serve
 * decryption, `stowage decrypt` and library users.
 */
const STREAM_BUFFER_BYTES = 1024 * 1024;

export { generateIdentity, parseIdentityFile, recipientOf } from './age-keys.js';

/** The payload's plaintext chunk (age fixes it); each is sealed with a 16-byte tag. */
export const AGE_CHUNK_BYTES = 64 * 1024;
const SEALED_CHUNK = AGE_CHUNK_BYTES + TAG_BYTES;
const NONCE_BYTES = 16;
/** A header larger than this is refused (thousands of recipients would still fit). */
const MAX_HEADER_BYTES = 1024 * 1024;
const ARMOR_BEGIN = '-----BEGIN AGE ENCRYPTED FILE-----';

export interface AgeEncryptOptions {
  /** `age1...` X25519 public keys; any number. */
  recipients?: readonly string[];
  /** A passphrase (scrypt). age allows it only as the file's sole recipient. */
  passphrase?: string;
  /** log2 of scrypt's N for a passphrase: 18 (age's default) unless set, 10 to 22. */
  scryptWorkFactor?: number;
}

export interface AgeDecryptOptions {
  /** Identity file contents or single `AGE-SECRET-KEY-1...` lines; each is tried. */
  identities?: readonly string[];
  passphrase?: string;
  /**
   * The largest scrypt work factor (log2 N) accepted before any work is done: 20 (1 GiB, a few
   * seconds) unless set, at most 22. A guard against hostile files, not a secret.
   */
  maxScryptWorkFactor?: number;
}

function usage(message: string): StowageError {
  return new StowageError('USAGE', message);
}

function decryptFailed(message: string, requires: 'identity' | 'passphrase'): StowageError {
  return new StowageError('DECRYPT_FAILED', message, { details: { requires } });
}

function payloadNonce(counter: number, last: boolean): Buffer {
  if (counter > MAX_COUNTER) throw invalid('the age payload has more chunks than this implementation counts (2^48)');
  const nonce = Buffer.alloc(12);
  nonce.writeUIntBE(counter, 5, 6);
  nonce[11] = last ? 1 : 0;
  return nonce;
}

function checkWorkFactor(value: number, min: number, what: string): number {
  if (!Number.isInteger(value) || value < min || value > SCRYPT_MAX_WORK_FACTOR) {
    throw usage(`${what} must be an integer from ${min} to ${SCRYPT_MAX_WORK_FACTOR} (log2 of scrypt's N; age uses 18), not ${value}`);
  }
  return value;
}

function checkPassphrase(passphrase: string | undefined): string | undefined {
  if (passphrase !== undefined && passphrase.length === 0) throw usage('the passphrase is empty');
  return passphrase;
}

/** Whether these first bytes (22 are enough) start an age file, binary or ASCII-armored. */
export function isAgeFile(firstBytes: Uint8Array): boolean {
  const head = Buffer.from(firstBytes.buffer, firstBytes.byteOffset, firstBytes.byteLength);
  return head.subarray(0, AGE_INTRO.length).toString('latin1') === AGE_INTRO || head.subarray(0, ARMOR_BEGIN.length).toString('latin1') === ARMOR_BEGIN;
}

/**
 * Encrypts to age: to every recipient given, or to a passphrase. Recipients are checked here
 * (a USAGE error names the bad one); with a passphrase, scrypt starts here on the thread pool
 * and the header goes out with the first bytes once it is done.
 */
export function createAgeEncryptStream(options: AgeEncryptOptions): Transform {
  return new AgeEncryptStream(beginAgeEncryption(options));
}

/** What starts an age file: its header (once scrypt is done, for a passphrase), the payload nonce and key. */
export interface AgeEncryptionStart {
  header: Promise<Buffer>;
  nonce: Buffer;
  payloadKey: Buffer;
}

/** Checks the options and makes a file key, the header that wraps it, and the payload's nonce and key. */
export function beginAgeEncryption(options: AgeEncryptOptions): AgeEncryptionStart {
  const recipients = [...new Set((options.recipients ?? []).map((r) => r.trim()))];
  const passphrase = checkPassphrase(options.passphrase);
  if (passphrase !== undefined && recipients.length > 0) {
    throw usage(
      'age allows a passphrase only as the sole recipient of a file: give recipients (age1...) or a passphrase, not both (to let both open a backup, encrypt to an identity kept with the passphrase)',
    );
  }
  if (passphrase === undefined && recipients.length === 0) throw usage('nothing to encrypt to: give at least one recipient (age1...) or a passphrase');
  const fileKey = crypto.randomBytes(FILE_KEY_BYTES);
  let header: Promise<Buffer>;
  if (passphrase !== undefined) {
    const logN = checkWorkFactor(options.scryptWorkFactor ?? SCRYPT_DEFAULT_WORK_FACTOR, 10, 'scryptWorkFactor');
    header = wrapScrypt(fileKey, passphrase, logN).then((stanza) => encodeHeader([stanza], fileKey));
  } else {
    const stanzas: Stanza[] = recipients.map((r) => wrapX25519(fileKey, parseRecipient(r), r));
    header = Promise.resolve(encodeHeader(stanzas, fileKey));
  }
  header.catch(() => undefined); // reported by the first write; never an unhandled rejection
  const nonce = crypto.randomBytes(NONCE_BYTES);
  return { header, nonce, payloadKey: hkdf(fileKey, nonce, 'payload') };
}

class AgeEncryptStream extends Transform {
  private readonly header: Promise<Buffer>;
  private readonly nonce: Buffer;
  private readonly payloadKey: Buffer;
  private readonly cutter = new BlockCutter(AGE_CHUNK_BYTES);
  private counter = 0;
  private started = false;

  constructor(start: AgeEncryptionStart) {
    super({ highWaterMark: STREAM_BUFFER_BYTES });
    ({ header: this.header, nonce: this.nonce, payloadKey: this.payloadKey } = start);
  }

  /** Writes the header and the payload nonce once, then runs `then`. */
  private whenStarted(cb: TransformCallback, then: () => void): void {
    if (this.started) return settle(cb, then);
    this.header.then((h) => {
      this.started = true;
      this.push(h);
      this.push(this.nonce);
      settle(cb, then);
    }, cb);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, cb: TransformCallback): void {
    this.whenStarted(cb, () => this.cutter.write(chunk, (block) => this.seal(block, false)));
  }

  override _flush(cb: TransformCallback): void {
    this.whenStarted(cb, () => this.seal(this.cutter.end(), true));
  }

  private seal(plaintext: Buffer, last: boolean): void {
    const c = crypto.createCipheriv('chacha20-poly1305', this.payloadKey, payloadNonce(this.counter, last), { authTagLength: TAG_BYTES });
    // Body and tag pushed as they are: joining them would copy every byte of the backup once more.
    this.push(c.update(plaintext));
    c.final();
    this.push(c.getAuthTag());
    this.counter++;
  }
}

/**
 * Decrypts age. Identities and the passphrase are checked here; which of them the file needs is
 * decided by its header, with an error saying what to pass (`DECRYPT_FAILED`, `details.requires`
 * `identity` or `passphrase`) before any output. A malformed, truncated or altered file is
 * `ARCHIVE_INVALID`, a passphrase work factor above the limit `ARCHIVE_UNSAFE`, an armored file
 * `FORMAT_UNSUPPORTED`.
 */
export function createAgeDecryptStream(options: AgeDecryptOptions = {}): Transform {
  const texts = options.identities ?? [];
  const identities = texts.flatMap((t, i) => parseIdentities(t, texts.length > 1 ? `identity file ${i + 1}` : 'the identity file'));
  const passphrase = checkPassphrase(options.passphrase);
  const maxLogN = checkWorkFactor(options.maxScryptWorkFactor ?? SCRYPT_DEFAULT_MAX_WORK_FACTOR, 1, 'maxScryptWorkFactor');
  return new AgeDecryptStream(identities, passphrase, maxLogN);
}

function notAge(head: Buffer): StowageError {
  const text = head.toString('latin1');
  if (ARMOR_BEGIN.startsWith(text.slice(0, ARMOR_BEGIN.length)) && text.startsWith('-----')) {
    return new StowageError('FORMAT_UNSUPPORTED', 'this is an ASCII-armored age file (age -a), which Stowage does not read: decrypt it with age -d, or encrypt without -a');
  }
  const version = /^age-encryption\.org\/([\x21-\x7e]*)\n/.exec(text);
  if (version) return new StowageError('FORMAT_UNSUPPORTED', `this age file is format ${version[1]}; Stowage reads age-encryption.org/v1`);
  if (text.startsWith('PK')) return invalid('this is not an age-encrypted file (it starts like a plain ZIP, an unencrypted backup)');
  return invalid('this is not an age-encrypted file: it does not start with age-encryption.org/v1');
}

const INTRO_BYTES = Buffer.from(AGE_INTRO, 'latin1');

class AgeDecryptStream extends Transform {
  private state: 'header' | 'nonce' | 'payload' = 'header';
  private readonly header = new GrowBuffer();
  private headerLength = 0;
  /** Where findHeaderEnd resumes, so a header arriving in small pieces is scanned once. */
  private searchFrom = 0;
  private fileKey: Buffer | null = null;
  private readonly nonce = Buffer.alloc(NONCE_BYTES);
  private nonceFill = 0;
  private payloadKey: Buffer | null = null;
  private readonly cutter = new BlockCutter(SEALED_CHUNK);
  private counter = 0;

  constructor(
    private readonly identities: readonly X25519Identity[],
    private readonly passphrase: string | undefined,
    private readonly maxLogN: number,
  ) {
    super({ highWaterMark: STREAM_BUFFER_BYTES });
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, cb: TransformCallback): void {
    if (this.state !== 'header') return settle(cb, () => this.feed(chunk));
    this.header.append(chunk);
    const buf = this.header.view();
    const n = Math.min(buf.length, INTRO_BYTES.length);
    if (!buf.subarray(0, n).equals(INTRO_BYTES.subarray(0, n))) return cb(notAge(buf));
    const { end, next } = findHeaderEnd(buf, this.searchFrom);
    this.searchFrom = next;
    if (end < 0) {
      if (buf.length > MAX_HEADER_BYTES) return cb(invalid(`the age header is over ${MAX_HEADER_BYTES} bytes without its MAC line: the file is damaged or not age`));
      return cb();
    }
    this.headerLength = end;
    const rest = Buffer.from(buf.subarray(end));
    this.openHeader(Buffer.from(buf.subarray(0, end))).then(
      (fileKey) => {
        this.fileKey = fileKey;
        this.state = 'nonce';
        settle(cb, () => this.feed(rest));
      },
      (err: Error) => cb(err),
    );
  }

  override _flush(cb: TransformCallback): void {
    settle(cb, () => {
      if (this.state === 'header') {
        const got = this.header.length;
        throw invalid(got === 0 ? 'the file is empty: it is not an age-encrypted backup' : `the file was truncated at byte ${got}, inside the age header`);
      }
      if (this.state === 'nonce') throw invalid(`the file was truncated at byte ${this.headerLength + this.nonceFill}, inside the payload nonce`);
      this.finish();
    });
  }

  /** The file key from the first stanza an identity or the passphrase opens; the MAC checked. */
  private async openHeader(header: Buffer): Promise<Buffer> {
    const { stanzas, macInput, mac } = parseHeader(header);
    let fileKey: Buffer | null = null;
    if (stanzas.some((s) => s.args[0] === 'scrypt')) {
      if (stanzas.length !== 1) {
        throw invalid(
          'this age file mixes a passphrase (scrypt) stanza with other recipients, which age forbids (a passphrase must be the only way in): the file was altered or made by a faulty tool',
        );
      }
      if (this.passphrase === undefined) {
        throw decryptFailed(`this backup is encrypted with a passphrase: pass --passphrase${this.identities.length ? ' (an identity cannot open it)' : ''}`, 'passphrase');
      }
      fileKey = await unwrapScrypt(stanzas[0] as Stanza, this.passphrase, this.maxLogN);
      if (!fileKey) throw decryptFailed('wrong passphrase: it does not open this backup', 'passphrase');
    } else {
      const x25519 = stanzas.filter((s) => s.args[0] === 'X25519');
      const others = [...new Set(stanzas.filter((s) => s.args[0] !== 'X25519').map((s) => s.args[0]))];
      if (x25519.length === 0) {
        throw decryptFailed(`this file is encrypted only to recipient types Stowage does not read (${others.join(', ')}): decrypt it with age`, 'identity');
      }
      if (this.identities.length === 0) {
        throw decryptFailed(
          this.passphrase === undefined
            ? 'this backup is encrypted: pass --identity FILE (an age identity file) to decrypt it'
            : 'this backup is encrypted to age keys, not a passphrase: pass --identity FILE',
          'identity',
        );
      }
      for (const stanza of x25519) {
        fileKey = unwrapX25519(stanza, this.identities);
        if (fileKey) break;
      }
      if (!fileKey) {
        const also = others.length ? ` and ${others.join(', ')}` : '';
        throw decryptFailed(
          `no identity matches the recipients of this file (${x25519.length} X25519 key${x25519.length === 1 ? '' : 's'}${also}): pass the identity file of one of them with --identity`,
          'identity',
        );
      }
    }
    if (!crypto.timingSafeEqual(headerMac(fileKey, macInput), mac)) {
      throw invalid('the age header was altered: its MAC does not match (a recipient or another header line changed)');
    }
    return fileKey;
  }

  private feed(data: Buffer): void {
    if (this.state === 'nonce') {
      const take = Math.min(NONCE_BYTES - this.nonceFill, data.length);
      data.copy(this.nonce, this.nonceFill, 0, take);
      this.nonceFill += take;
      data = data.subarray(take);
      if (this.nonceFill < NONCE_BYTES) return;
      this.payloadKey = hkdf(this.fileKey as Buffer, this.nonce, 'payload');
      this.state = 'payload';
    }
    if (data.length) this.cutter.write(data, (sealed) => this.openChunk(sealed));
  }

  /** Byte offset of the current chunk in the file. */
  private chunkStart(): number {
    return this.headerLength + NONCE_BYTES + this.counter * SEALED_CHUNK;
  }

  private open(sealed: Buffer, last: boolean): Buffer | null {
    return chachaOpen(this.payloadKey as Buffer, payloadNonce(this.counter, last), sealed);
  }

  /** A full chunk that more bytes follow: it must open as a non-final chunk. */
  private openChunk(sealed: Buffer): void {
    const plaintext = this.open(sealed, false);
    if (!plaintext) {
      const at = this.chunkStart();
      if (this.open(sealed, true)) {
        throw invalid(`the file has data appended after its end: the age payload ends at byte ${at + sealed.length}, and more follows`);
      }
      throw invalid(`chunk ${this.counter} (bytes ${at}-${at + sealed.length}) failed authentication: the file is damaged or was altered`);
    }
    this.push(plaintext);
    this.counter++;
  }

  private finish(): void {
    const sealed = this.cutter.end();
    const at = this.chunkStart();
    if (sealed.length === 0) {
      throw invalid(
        this.counter === 0
          ? `the file was truncated at byte ${at}: it ends after the header, before the payload`
          : `the file was truncated at byte ${at} (a chunk boundary): its final chunk is missing`,
      );
    }
    if (sealed.length < TAG_BYTES) throw invalid(`the file was truncated at byte ${at + sealed.length}, inside chunk ${this.counter}`);
    const plaintext = this.open(sealed, true);
    if (!plaintext) {
      if (sealed.length === SEALED_CHUNK && this.open(sealed, false)) {
        throw invalid(`the file was truncated at byte ${at + sealed.length} (a chunk boundary): its final chunk is missing`);
      }
      throw invalid(`the final chunk (bytes ${at}-${at + sealed.length}) failed authentication: the file was truncated inside it, or altered`);
    }
    if (plaintext.length === 0 && this.counter > 0) throw invalid('the final chunk is empty, which age never writes: the file was altered');
    this.push(plaintext);
  }
}
