/**
 * The chunked AES-256-GCM export format: round trips at chunk boundaries, and every way a file
 * can be wrong (docs/FORMAT.md section 7). A hand-written decoder of the spec checks the writer.
 */
import crypto from 'node:crypto';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { isStowageError } from '../errors.js';
import { AES_GCM_HEADER_BYTES, createAesGcmDecryptStream, createAesGcmEncryptStream, isAesGcmFile, parseAesKey } from './aes-gcm.js';
import { BOUNDARY_SIZES, expectFailure, flipByte, generated, memoryGrowth, runStream, through } from './test-support.suite.js';

const CHUNK = 65536;
const RECORD = 4 + CHUNK + 16;
const key = crypto.randomBytes(32);

/** Decodes a file from the words of docs/FORMAT.md section 7 alone (no code shared with the module). */
function decodeBySpec(file: Buffer, k: Buffer): Buffer {
  expect(file.subarray(0, 14).toString('latin1')).toBe('stowage-aesgcm');
  expect([file[14], file[15]]).toEqual([1, 16]);
  const salt = file.subarray(16, 32);
  const okm = Buffer.from(crypto.hkdfSync('sha256', k, salt, 'stowage-aesgcm v1', 64));
  const check = crypto.createHmac('sha256', okm.subarray(32)).update(file.subarray(0, 32)).digest().subarray(0, 16);
  expect(check.equals(file.subarray(32, 48))).toBe(true);
  const out: Buffer[] = [];
  let pos = 48;
  for (let i = 0; ; i++) {
    const word = file.readUInt32BE(pos);
    const final = word >>> 31 === 1;
    const len = word & 0x7fffffff;
    const nonce = Buffer.alloc(12);
    nonce.writeBigUInt64BE(BigInt(i), 4);
    const d = crypto.createDecipheriv('aes-256-gcm', okm.subarray(0, 32), nonce);
    d.setAAD(file.subarray(pos, pos + 4));
    d.setAuthTag(file.subarray(pos + 4 + len, pos + 4 + len + 16));
    out.push(d.update(file.subarray(pos + 4, pos + 4 + len)), d.final());
    pos += 4 + len + 16;
    if (final) break;
    expect(len).toBe(CHUNK);
  }
  expect(pos).toBe(file.length);
  return Buffer.concat(out);
}

describe('AES-256-GCM chunked format', () => {
  it.each(BOUNDARY_SIZES)('round trip of %i bytes; the file is what the spec says', async (size) => {
    const input = crypto.randomBytes(size);
    const file = await through(createAesGcmEncryptStream(key), input, 5003);
    const records = Math.max(1, Math.ceil(size / CHUNK));
    expect(file.length).toBe(AES_GCM_HEADER_BYTES + records * 20 + size);
    expect(decodeBySpec(file, key).equals(input)).toBe(true);
    expect((await through(createAesGcmDecryptStream(key), file)).equals(input)).toBe(true);
    expect((await through(createAesGcmDecryptStream(key), file, 777)).equals(input)).toBe(true);
  });

  it('parses a file that arrives one byte at a time, and takes the key as text', async () => {
    const input = crypto.randomBytes(300);
    const file = await through(createAesGcmEncryptStream(key.toString('hex')), input);
    expect((await through(createAesGcmDecryptStream(key.toString('base64')), file, 1)).equals(input)).toBe(true);
    expect(isAesGcmFile(file)).toBe(true);
    expect(isAesGcmFile(file.subarray(0, 13))).toBe(false);
    expect(isAesGcmFile(Buffer.from('age-encryption.org/v1\n'))).toBe(false);
  });

  it('two encryptions of the same input differ (a fresh salt, so fresh keys, per file)', async () => {
    const input = Buffer.alloc(1000);
    const a = await through(createAesGcmEncryptStream(key), input);
    const b = await through(createAesGcmEncryptStream(key), input);
    expect(a.subarray(16, 32).equals(b.subarray(16, 32))).toBe(false);
    expect(a.subarray(48).equals(b.subarray(48))).toBe(false);
  });

  it('a wrong key fails before any output', async () => {
    const file = await through(createAesGcmEncryptStream(key), crypto.randomBytes(200_000));
    const err = await expectFailure(createAesGcmDecryptStream(crypto.randomBytes(32)), file, 'DECRYPT_FAILED', /the AES key does not match this backup/);
    expect(isStowageError(err) && err.details).toEqual({ requires: 'key' });
  });

  describe('damage', () => {
    const size = 3 * CHUNK + 500; // records 0-2 full, record 3 short and final
    const input = crypto.randomBytes(size);
    const filePromise = through(createAesGcmEncryptStream(key), input);
    const dec = () => createAesGcmDecryptStream(key);

    it('a flipped byte in the header: the check fails (salt) or the header is refused (magic, version)', async () => {
      const file = await filePromise;
      await expectFailure(dec(), flipByte(file, 20), 'DECRYPT_FAILED', /does not match this backup \(or its header was altered\)/);
      await expectFailure(dec(), flipByte(file, 40), 'DECRYPT_FAILED');
      await expectFailure(dec(), flipByte(file, 0), 'ARCHIVE_INVALID', /not a Stowage AES-GCM encrypted file/);
      await expectFailure(dec(), flipByte(file, 14), 'FORMAT_UNSUPPORTED', /version 0/);
      await expectFailure(dec(), flipByte(file, 15), 'FORMAT_UNSUPPORTED', /2\^17-byte chunks/);
    });

    it('a flipped byte in a middle record, its tag or its length word: ARCHIVE_INVALID after the records before it', async () => {
      const file = await filePromise;
      for (const offset of [AES_GCM_HEADER_BYTES + RECORD + 4 + 10, AES_GCM_HEADER_BYTES + 2 * RECORD - 1]) {
        const r = await runStream(dec(), flipByte(file, offset));
        expect(isStowageError(r.error, 'ARCHIVE_INVALID')).toBe(true);
        expect((r.error as Error).message).toMatch(new RegExp(`record 1 \\(bytes ${AES_GCM_HEADER_BYTES + RECORD}-${AES_GCM_HEADER_BYTES + 2 * RECORD}\\) failed authentication`));
        expect(r.output.equals(input.subarray(0, CHUNK))).toBe(true);
      }
      // The final flag set on record 1: the flag is authenticated.
      const flagged = Buffer.from(file);
      flagged[AES_GCM_HEADER_BYTES + RECORD] = (flagged[AES_GCM_HEADER_BYTES + RECORD] as number) | 0x80;
      await expectFailure(dec(), flagged, 'ARCHIVE_INVALID', /record 1 .* failed authentication/, { outputAllowed: true });
      // A length that breaks the framing.
      const long = Buffer.from(file);
      long[AES_GCM_HEADER_BYTES + 1] = 2;
      await expectFailure(dec(), long, 'ARCHIVE_INVALID', /record 0 \(at byte 48\) claims 131072 bytes, more than the 65536/);
      const short = Buffer.from(file);
      short[AES_GCM_HEADER_BYTES + 1] = 0;
      short[AES_GCM_HEADER_BYTES + 2] = 0x10;
      await expectFailure(dec(), short, 'ARCHIVE_INVALID', /is not final but holds 4096 bytes, not 65536/);
    });

    it('a flipped byte in the last record: ARCHIVE_INVALID', async () => {
      const file = await filePromise;
      await expectFailure(dec(), flipByte(file, file.length - 20), 'ARCHIVE_INVALID', /record 3 .* failed authentication/, { outputAllowed: true });
    });

    it('records swapped: each is bound to its position', async () => {
      const file = await filePromise;
      const r0 = file.subarray(AES_GCM_HEADER_BYTES, AES_GCM_HEADER_BYTES + RECORD);
      const r1 = file.subarray(AES_GCM_HEADER_BYTES + RECORD, AES_GCM_HEADER_BYTES + 2 * RECORD);
      const swapped = Buffer.concat([file.subarray(0, AES_GCM_HEADER_BYTES), r1, r0, file.subarray(AES_GCM_HEADER_BYTES + 2 * RECORD)]);
      await expectFailure(dec(), swapped, 'ARCHIVE_INVALID', /record 0 .* failed authentication/);
    });

    it('truncation at a record boundary is detected (no final record)', async () => {
      const file = await filePromise;
      for (const records of [0, 1, 3]) {
        const cut = AES_GCM_HEADER_BYTES + records * RECORD;
        const r = await runStream(dec(), file.subarray(0, cut));
        expect((r.error as Error).message).toBe(`the file was truncated at byte ${cut} (a record boundary): its final record is missing`);
        expect(isStowageError(r.error, 'ARCHIVE_INVALID')).toBe(true);
        expect(r.output.equals(input.subarray(0, records * CHUNK))).toBe(true);
      }
    });

    it('truncation inside a record or the header is detected', async () => {
      const file = await filePromise;
      await expectFailure(dec(), file.subarray(0, file.length - 1), 'ARCHIVE_INVALID', /truncated at byte \d+, inside record 3/, { outputAllowed: true });
      await expectFailure(dec(), file.subarray(0, AES_GCM_HEADER_BYTES + 2), 'ARCHIVE_INVALID', /inside record 0/);
      await expectFailure(dec(), file.subarray(0, 30), 'ARCHIVE_INVALID', /truncated at byte 30, inside its 48-byte header/);
      await expectFailure(dec(), Buffer.alloc(0), 'ARCHIVE_INVALID', /the file is empty/);
    });

    it('appended garbage is detected', async () => {
      const file = await filePromise;
      await expectFailure(dec(), Buffer.concat([file, Buffer.from('x')]), 'ARCHIVE_INVALID', new RegExp(`data appended after its end: its final record ends at byte ${file.length}`), {
        outputAllowed: true,
      });
      // A whole valid record of another file appended: still after the final record.
      const other = await through(createAesGcmEncryptStream(key), Buffer.from('more'));
      await expectFailure(dec(), Buffer.concat([file, other.subarray(AES_GCM_HEADER_BYTES)]), 'ARCHIVE_INVALID', /appended/, { outputAllowed: true });
    });

    it('an empty final record after data is refused', async () => {
      const exact = await through(createAesGcmEncryptStream(key), crypto.randomBytes(CHUNK));
      // Rebuild by spec: record 0 non-final full, record 1 final and empty, properly sealed.
      const salt = exact.subarray(16, 32);
      const okm = Buffer.from(crypto.hkdfSync('sha256', key, salt, 'stowage-aesgcm v1', 64));
      const seal = (i: number, word: number, pt: Buffer): Buffer => {
        const nonce = Buffer.alloc(12);
        nonce.writeUInt32BE(i, 8);
        const w = Buffer.alloc(4);
        w.writeUInt32BE(word);
        const c = crypto.createCipheriv('aes-256-gcm', okm.subarray(0, 32), nonce);
        c.setAAD(w);
        return Buffer.concat([w, c.update(pt), c.final(), c.getAuthTag()]);
      };
      const file = Buffer.concat([exact.subarray(0, 48), seal(0, CHUNK, Buffer.alloc(CHUNK)), seal(1, 0x80000000, Buffer.alloc(0))]);
      await expectFailure(dec(), file, 'ARCHIVE_INVALID', /record 1 \(at byte \d+\) is an empty final record/, { outputAllowed: true });
    });
  });

  it('50 MB through encrypt and decrypt with bounded memory', async () => {
    let bytes = 0;
    let pieces = 0;
    const growth = await memoryGrowth((sample) =>
      pipeline(
        generated(50 * 1024 * 1024, () => ++pieces % 4 === 0 && sample()),
        createAesGcmEncryptStream(key),
        createAesGcmDecryptStream(key),
        new Writable({
          write(chunk: Buffer, _e, cb) {
            bytes += chunk.length;
            cb();
          },
        }),
      ),
    );
    expect(bytes).toBe(50 * 1024 * 1024);
    expect(growth.live).toBeLessThan(8 * 1024 * 1024);
    expect(growth.rss).toBeLessThan(48 * 1024 * 1024);
  });
});

describe('parseAesKey', () => {
  const k = crypto.randomBytes(32);

  it('takes 64 hex digits, base64 and base64url, padded or not, with whitespace around', () => {
    expect(parseAesKey(k.toString('hex')).equals(k)).toBe(true);
    expect(parseAesKey(` ${k.toString('hex').toUpperCase()}\n`).equals(k)).toBe(true);
    expect(parseAesKey(k.toString('base64')).equals(k)).toBe(true);
    expect(parseAesKey(k.toString('base64').replace(/=$/, '')).equals(k)).toBe(true);
    expect(parseAesKey(k.toString('base64url')).equals(k)).toBe(true);
  });

  it('refuses other lengths and text, saying what a key is and never quoting it', () => {
    const secret = crypto.randomBytes(16).toString('hex');
    const cases: [string, RegExp][] = [
      [secret, /128 bits of hex/],
      [crypto.randomBytes(24).toString('base64'), /192 bits of base64/],
      [`${k.toString('hex')}00`, /264 bits of hex/],
      ['not a key!', /neither hex nor base64/],
      ['', /neither hex nor base64/],
      [`${k.toString('base64').slice(0, 42)}B=`, /not canonical base64/],
    ];
    for (const [text, pattern] of cases) {
      let caught: unknown;
      try {
        parseAesKey(text);
      } catch (err) {
        caught = err;
      }
      expect(isStowageError(caught, 'USAGE'), text).toBe(true);
      expect((caught as Error).message).toMatch(pattern);
      expect((caught as Error).message).toMatch(/openssl rand -hex 32/);
      if (text.length > 8) expect((caught as Error).message).not.toContain(text.slice(0, 8));
    }
    expect(() => createAesGcmEncryptStream(crypto.randomBytes(16))).toThrow(/128 bits/);
  });
});
