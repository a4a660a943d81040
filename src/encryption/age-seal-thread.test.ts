/**
 * The threaded age writer used for backups, judged like the stream in age.test.ts: the real age
 * CLI decrypts what it writes, at every chunk and batch boundary, whatever the size of the
 * writes; a slow destination is waited for; a failing one stops it with the error.
 */
import crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeDir } from '../testing/tmp.js';
import { createAgeEncryptWriter } from './age-seal-thread.js';
import { createAgeDecryptStream, generateIdentity } from './age.js';
import { BOUNDARY_SIZES, through } from './test-support.suite.js';

const MiB = 1024 * 1024;

if (spawnSync('age', ['--version']).status !== 0) throw new Error('these tests need the age CLI on PATH: apt-get install age');

let dir: string;
let identity: { identity: string; recipient: string };
let identityFile: string;

beforeAll(() => {
  dir = makeTempDir('age-seal-');
  identity = generateIdentity();
  identityFile = path.join(dir, 'key.txt');
  fs.writeFileSync(identityFile, `${identity.identity}\n`, { mode: 0o600 });
});
afterAll(() => removeDir(dir));

/** Collects what reaches it; `delayMs` makes every write slow, `failAfter` fails past that many bytes. */
function sink(options: { delayMs?: number; highWaterMark?: number; failAfter?: number } = {}): Writable & { bytes: () => Buffer } {
  const parts: Buffer[] = [];
  let total = 0;
  const w = new Writable({
    highWaterMark: options.highWaterMark ?? MiB,
    write(chunk: Buffer, _enc, cb) {
      total += chunk.length;
      if (options.failAfter !== undefined && total > options.failAfter) return cb(new Error('disk full (test)'));
      parts.push(Buffer.from(chunk));
      if (options.delayMs) setTimeout(cb, options.delayMs);
      else cb();
    },
  });
  return Object.assign(w, { bytes: () => Buffer.concat(parts) });
}

/** Writes `input` in `piece`-byte writes, honouring backpressure, then ends; resolves on 'finish'. */
async function writeAll(w: Writable, input: Buffer, piece: number): Promise<void> {
  for (let off = 0; off < input.length; off += piece) {
    if (!w.write(input.subarray(off, off + piece))) await new Promise<void>((resolve, reject) => {
      w.once('drain', resolve);
      w.once('error', reject);
    });
  }
  await new Promise<void>((resolve, reject) => {
    w.once('error', reject);
    w.once('finish', resolve);
    w.end();
  });
}

function decryptWithAge(ciphertext: Buffer, name: string): Buffer {
  const enc = path.join(dir, `${name}.age`);
  const out = path.join(dir, `${name}.out`);
  fs.writeFileSync(enc, ciphertext);
  const r = spawnSync('age', ['-d', '-i', identityFile, '-o', out, enc], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`age -d failed: ${r.stderr}`);
  const plain = fs.existsSync(out) ? fs.readFileSync(out) : Buffer.alloc(0);
  fs.rmSync(out, { force: true });
  fs.rmSync(enc, { force: true });
  return plain;
}

describe('age writer on a worker thread', () => {
  const sizes = [...BOUNDARY_SIZES, MiB - 1, MiB, MiB + 1, 2 * MiB, 3 * MiB + 65536, 5 * MiB + 17];
  for (const size of sizes) {
    it(`${size} bytes: age -d gives them back, and so does Stowage`, async () => {
      const input = crypto.randomBytes(size);
      const dest = sink();
      await writeAll(createAgeEncryptWriter(dest, { recipients: [identity.recipient] }), input, size > MiB ? 300_001 : Math.max(1, size));
      const ciphertext = dest.bytes();
      // Every 64 KiB of plaintext gains a 16-byte tag; an empty payload is one empty chunk.
      const chunks = Math.max(1, Math.ceil(size / 65536));
      expect(ciphertext.length - size - chunks * 16).toBeGreaterThan(0); // the header and nonce
      expect(decryptWithAge(ciphertext, `s${size}`).equals(input)).toBe(true);
      expect((await through(createAgeDecryptStream({ identities: [identity.identity] }), ciphertext)).equals(input)).toBe(true);
    });
  }

  it('writes of every size give the same plaintext (one byte, odd sizes, bigger than a batch)', async () => {
    const input = crypto.randomBytes(2 * MiB + 12345);
    for (const piece of [1, 4093, 65536, 3 * MiB]) {
      const dest = sink();
      await writeAll(createAgeEncryptWriter(dest, { recipients: [identity.recipient] }), piece === 1 ? input.subarray(0, 200_000) : input, piece);
      const expected = piece === 1 ? input.subarray(0, 200_000) : input;
      expect(decryptWithAge(dest.bytes(), `p${piece}`).equals(expected)).toBe(true);
    }
  });

  it('a passphrase works too (scrypt before the first byte)', async () => {
    const input = crypto.randomBytes(MiB + 3);
    const dest = sink();
    await writeAll(createAgeEncryptWriter(dest, { passphrase: 'correct horse', scryptWorkFactor: 10 }), input, 65536);
    expect((await through(createAgeDecryptStream({ passphrase: 'correct horse' }), dest.bytes())).equals(input)).toBe(true);
  });

  it('waits for a slow destination and keeps its buffer bounded', async () => {
    const input = crypto.randomBytes(6 * MiB);
    let maxBuffered = 0;
    const dest = sink({ delayMs: 5, highWaterMark: 64 * 1024 });
    const origWrite = dest.write.bind(dest);
    dest.write = ((chunk: Buffer, ...rest: never[]) => {
      const ok = origWrite(chunk, ...rest);
      maxBuffered = Math.max(maxBuffered, dest.writableLength);
      return ok;
    }) as typeof dest.write;
    await writeAll(createAgeEncryptWriter(dest, { recipients: [identity.recipient] }), input, MiB);
    expect(decryptWithAge(dest.bytes(), 'slow').equals(input)).toBe(true);
    // Never more than the batches it owns (3 sealed MiB and the header) waiting in the destination.
    expect(maxBuffered).toBeLessThanOrEqual(3 * (MiB + 256) + 4096);
  });

  it('a destination that fails stops the writer with its error', async () => {
    const dest = sink({ failAfter: 2 * MiB });
    const w = createAgeEncryptWriter(dest, { recipients: [identity.recipient] });
    await expect(writeAll(w, crypto.randomBytes(8 * MiB), MiB)).rejects.toThrow(/disk full/);
    expect(w.destroyed).toBe(true);
  });

  it('refuses bad options before any thread starts', () => {
    expect(() => createAgeEncryptWriter(sink(), {})).toThrow(/nothing to encrypt to/);
    expect(() => createAgeEncryptWriter(sink(), { recipients: ['age1nope'] })).toThrow(/not an age recipient/);
  });
});
