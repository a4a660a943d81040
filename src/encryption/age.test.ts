/**
 * age streams, judged by the real age CLI (age 1.x, `age` and `age-keygen` on PATH): what Stowage
 * encrypts age decrypts, what age encrypts Stowage decrypts, passphrases both ways through a
 * pty (age reads them from the terminal), and every way a file can be wrong.
 */
import crypto from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isStowageError } from '../errors.js';
import { makeTempDir, removeDir } from '../testing/tmp.js';
import { chachaSeal, encodeHeader, hkdf, wrapScrypt, wrapX25519, type Stanza } from './age-header.js';
import { parseRecipient } from './age-keys.js';
import { createAgeDecryptStream, createAgeEncryptStream, generateIdentity, isAgeFile, parseIdentityFile, recipientOf } from './age.js';
import { BOUNDARY_SIZES, expectFailure, flipByte, generated, memoryGrowth, runStream, through } from './test-support.suite.js';

const CHUNK = 65536;
const SEALED = CHUNK + 16;

if (spawnSync('age', ['--version']).status !== 0 || spawnSync('age-keygen', ['--version']).status !== 0) {
  throw new Error('these tests need the age CLI (age and age-keygen on PATH): apt-get install age');
}

let dir: string;
const keys: { file: string; text: string; recipient: string }[] = [];

function file(name: string): string {
  return path.join(dir, name);
}

/** Runs age with arguments; input files are paths. */
function age(args: string[]): { status: number; stderr: string } {
  const r = spawnSync('age', args, { encoding: 'utf8' });
  return { status: r.status ?? -1, stderr: r.stderr };
}

/**
 * Runs age under a pseudo-terminal (util-linux `script`), answering each passphrase prompt as it
 * appears: age reads passphrases from /dev/tty only. Resolves with the exit status and the
 * terminal output.
 */
function agePty(args: string[], passphrase: string): Promise<{ status: number; output: string }> {
  return new Promise((resolve, reject) => {
    const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
    const child = spawn('script', ['-qec', ['age', ...args].map(quote).join(' '), '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    let answered = 0;
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    const onOutput = (d: Buffer): void => {
      output += d.toString('latin1');
      const prompts = (output.match(/passphrase[^:\n]*:/gi) ?? []).length;
      for (; answered < prompts; answered++) child.stdin.write(`${passphrase}\n`);
    };
    child.stdout.on('data', onOutput);
    child.stderr.on('data', onOutput);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ status: code ?? -1, output });
    });
  });
}

async function encryptWithStowage(input: Buffer, options: Parameters<typeof createAgeEncryptStream>[0], piece?: number): Promise<Buffer> {
  return through(createAgeEncryptStream(options), input, piece);
}

/** Encrypts with `age -r` to the given key indexes. */
function encryptWithAge(input: Buffer, name: string, ...keyIndexes: number[]): Buffer {
  fs.writeFileSync(file(`${name}.in`), input);
  const args = keyIndexes.flatMap((k) => ['-r', keys[k]!.recipient]);
  const r = age([...args, '-o', file(`${name}.age`), file(`${name}.in`)]);
  expect(r.status, r.stderr).toBe(0);
  return fs.readFileSync(file(`${name}.age`));
}

/** Decrypts with `age -d -i` and returns the plaintext, or throws with age's message. */
function decryptWithAge(ciphertext: Buffer, name: string, keyIndex: number): Buffer {
  fs.writeFileSync(file(`${name}.age`), ciphertext);
  const r = age(['-d', '-i', keys[keyIndex]!.file, '-o', file(`${name}.out`), file(`${name}.age`)]);
  if (r.status !== 0) throw new Error(`age -d failed: ${r.stderr}`);
  // age creates the output file only once it has something to write.
  return fs.existsSync(file(`${name}.out`)) ? fs.readFileSync(file(`${name}.out`)) : Buffer.alloc(0);
}

function decrypt(ciphertext: Buffer, options: Parameters<typeof createAgeDecryptStream>[0], piece?: number): Promise<Buffer> {
  return through(createAgeDecryptStream(options), ciphertext, piece);
}

/** Where the header ends (after the MAC line). */
function headerLength(ciphertext: Buffer): number {
  const mac = ciphertext.indexOf('\n--- ');
  return ciphertext.indexOf('\n', mac + 1) + 1;
}

/** A copy with another base64 character at `at` (a flipped bit could give one base64 does not have). */
function otherBase64Char(buf: Buffer, at: number): Buffer {
  const copy = Buffer.from(buf);
  copy[at] = copy[at] === 0x41 ? 0x42 : 0x41;
  return copy;
}

/** A whole age file from hand-made stanzas (to test what the encoder never writes itself). */
function buildAgeFile(stanzas: Stanza[], fileKey: Buffer, plaintext: Buffer): Buffer {
  const nonce = crypto.randomBytes(16);
  const payloadNonce = Buffer.alloc(12);
  payloadNonce[11] = 1;
  return Buffer.concat([encodeHeader(stanzas, fileKey), nonce, chachaSeal(hkdf(fileKey, nonce, 'payload'), payloadNonce, plaintext)]);
}

beforeAll(() => {
  dir = makeTempDir('stowage-age-');
  for (let i = 0; i < 3; i++) {
    const keyFile = file(`key${i}.txt`);
    expect(spawnSync('age-keygen', ['-o', keyFile]).status).toBe(0);
    const recipient = spawnSync('age-keygen', ['-y', keyFile], { encoding: 'utf8' }).stdout.trim();
    keys.push({ file: keyFile, text: fs.readFileSync(keyFile, 'utf8'), recipient });
  }
});

afterAll(() => removeDir(dir));

describe('age interoperability with the age CLI', () => {
  it.each(BOUNDARY_SIZES)('Stowage encrypts %i bytes, age -d decrypts them', async (size) => {
    const input = crypto.randomBytes(size);
    const ciphertext = await encryptWithStowage(input, { recipients: [keys[0]!.recipient] }, 7001);
    const chunks = Math.max(1, Math.ceil(size / CHUNK));
    expect(ciphertext.length).toBe(headerLength(ciphertext) + 16 + chunks * 16 + size);
    expect(decryptWithAge(ciphertext, `s2a-${size}`, 0).equals(input)).toBe(true);
  });

  it.each(BOUNDARY_SIZES)('age -r encrypts %i bytes, Stowage decrypts them', async (size) => {
    const input = crypto.randomBytes(size);
    const ciphertext = encryptWithAge(input, `a2s-${size}`, 0);
    expect((await decrypt(ciphertext, { identities: [keys[0]!.text] })).equals(input)).toBe(true);
    // Written in odd pieces: the header and the chunks split anywhere.
    expect((await decrypt(ciphertext, { identities: [keys[0]!.text] }, 4099)).equals(input)).toBe(true);
  });

  it('parses a header that arrives one byte at a time', async () => {
    const input = crypto.randomBytes(1000);
    const ciphertext = encryptWithAge(input, 'bytewise', 0, 1, 2);
    expect((await decrypt(ciphertext, { identities: [keys[2]!.text] }, 1)).equals(input)).toBe(true);
  });

  it('encrypts to several recipients: each key opens the file, with age and with Stowage', async () => {
    const mine = generateIdentity();
    const input = crypto.randomBytes(150_000);
    const ciphertext = await encryptWithStowage(input, { recipients: [keys[0]!.recipient, keys[1]!.recipient, mine.recipient, keys[2]!.recipient] });
    expect((ciphertext.toString('latin1').match(/^-> X25519 /gm) ?? []).length).toBe(4);
    for (let k = 0; k < 3; k++) {
      expect(decryptWithAge(ciphertext, `multi-${k}`, k).equals(input)).toBe(true);
      expect((await decrypt(ciphertext, { identities: [keys[k]!.text] })).equals(input)).toBe(true);
    }
    expect((await decrypt(ciphertext, { identities: [mine.identity] })).equals(input)).toBe(true);
  });

  it('decrypts age output for several recipients with any one identity, among others that do not match', async () => {
    const input = crypto.randomBytes(70_000);
    const ciphertext = encryptWithAge(input, 'multi-age', 0, 1);
    const stranger = generateIdentity();
    // One identity file holding a non-matching key and then a matching one, as age accepts.
    const identityFile = `# two keys\n${stranger.identity}\n\n${keys[1]!.text}`;
    expect((await decrypt(ciphertext, { identities: [identityFile] })).equals(input)).toBe(true);
    expect((await decrypt(ciphertext, { identities: [stranger.identity, keys[0]!.text] })).equals(input)).toBe(true);
  });

  it('passphrase: Stowage encrypts, age -d decrypts through a terminal', async () => {
    const input = crypto.randomBytes(100_000);
    const ciphertext = await encryptWithStowage(input, { passphrase: 'correct horse battery staple' });
    expect(ciphertext.toString('latin1')).toMatch(/^age-encryption\.org\/v1\n-> scrypt [A-Za-z0-9+/]{22} 18\n/);
    fs.writeFileSync(file('p-s2a.age'), ciphertext);
    const r = await agePty(['-d', '-o', file('p-s2a.out'), file('p-s2a.age')], 'correct horse battery staple');
    expect(r.status, r.output).toBe(0);
    expect(fs.readFileSync(file('p-s2a.out')).equals(input)).toBe(true);
    const wrong = await agePty(['-d', '-o', file('p-s2a.wrong'), file('p-s2a.age')], 'not it');
    expect(wrong.status).not.toBe(0);
    expect(wrong.output).toMatch(/incorrect passphrase/);
  });

  it('passphrase: age -p encrypts through a terminal, Stowage decrypts; a wrong passphrase fails before output', async () => {
    const input = crypto.randomBytes(200_000);
    fs.writeFileSync(file('p-a2s.in'), input);
    const r = await agePty(['-p', '-o', file('p-a2s.age'), file('p-a2s.in')], 'älpha bravo ünicode');
    expect(r.status, r.output).toBe(0);
    const ciphertext = fs.readFileSync(file('p-a2s.age'));
    expect((await decrypt(ciphertext, { passphrase: 'älpha bravo ünicode' })).equals(input)).toBe(true);
    await expectFailure(createAgeDecryptStream({ passphrase: 'alpha bravo unicode' }), ciphertext, 'DECRYPT_FAILED', /wrong passphrase/);
  });
});

describe('age: the wrong key or none', () => {
  let ciphertext: Buffer;
  let scryptFile: Buffer;
  beforeAll(async () => {
    ciphertext = encryptWithAge(crypto.randomBytes(100_000), 'wrong-key', 0);
    scryptFile = await encryptWithStowage(Buffer.from('secret'), { passphrase: 'pw', scryptWorkFactor: 10 });
  });

  it('a key that is not a recipient: DECRYPT_FAILED, nothing emitted', async () => {
    const err = await expectFailure(createAgeDecryptStream({ identities: [keys[1]!.text, keys[2]!.text] }), ciphertext, 'DECRYPT_FAILED', /no identity matches the recipients of this file \(1 X25519 key\)/);
    expect(isStowageError(err) && err.details).toEqual({ requires: 'identity' });
  });

  it('says what to pass when nothing or the other kind was given', async () => {
    await expectFailure(createAgeDecryptStream(), ciphertext, 'DECRYPT_FAILED', /this backup is encrypted: pass --identity FILE/);
    await expectFailure(createAgeDecryptStream({ passphrase: 'x' }), ciphertext, 'DECRYPT_FAILED', /encrypted to age keys, not a passphrase: pass --identity FILE/);
    const err = await expectFailure(createAgeDecryptStream({ identities: [keys[0]!.text] }), scryptFile, 'DECRYPT_FAILED', /encrypted with a passphrase: pass --passphrase/);
    expect(isStowageError(err) && err.details).toEqual({ requires: 'passphrase' });
    expect((await decrypt(scryptFile, { passphrase: 'pw', identities: [keys[0]!.text] })).toString()).toBe('secret');
  });

  it('files only for recipient types Stowage does not read (SSH, plugins) say so; unknown stanzas are ignored beside X25519', async () => {
    const fileKey = crypto.randomBytes(16);
    const grease: Stanza = { args: ['ssh-ed25519', 'Tm9wZQ', 'x'], body: crypto.randomBytes(48) };
    const sshOnly = buildAgeFile([grease], fileKey, Buffer.from('hi'));
    await expectFailure(createAgeDecryptStream({ identities: [keys[0]!.text] }), sshOnly, 'DECRYPT_FAILED', /recipient types Stowage does not read \(ssh-ed25519\)/);
    // A body of exactly 48 bytes ends with an empty line, an empty body is one empty line: age agrees.
    const mixed = buildAgeFile([grease, { args: ['example.com/x'], body: Buffer.alloc(0) }, wrapX25519(fileKey, parseRecipient(keys[0]!.recipient), '')], fileKey, Buffer.from('hello'));
    expect(decryptWithAge(mixed, 'grease', 0).toString()).toBe('hello');
    expect((await decrypt(mixed, { identities: [keys[0]!.text] })).toString()).toBe('hello');
  });
});

describe('age: damaged, truncated and altered files', () => {
  const size = 3 * CHUNK + 1000; // chunks 0-2 full, chunk 3 short
  let input: Buffer;
  let ciphertext: Buffer;
  let payloadStart: number;
  const ids = (): { identities: string[] } => ({ identities: [keys[0]!.text] });

  beforeAll(() => {
    input = crypto.randomBytes(size);
    ciphertext = encryptWithAge(input, 'damage', 0);
    payloadStart = headerLength(ciphertext) + 16;
  });

  function ageRejects(bytes: Buffer, name: string): void {
    expect(() => decryptWithAge(bytes, name, 0)).toThrow(/age -d failed/);
  }

  it('a flipped byte in the header MAC: ARCHIVE_INVALID, and age refuses it too', async () => {
    const bad = otherBase64Char(ciphertext, headerLength(ciphertext) - 10);
    await expectFailure(createAgeDecryptStream(ids()), bad, 'ARCHIVE_INVALID', /header was altered: its MAC does not match/);
    ageRejects(bad, 'h-mac');
  });

  it('a flipped byte in the stanza: the key no longer opens it (DECRYPT_FAILED), age refuses it too', async () => {
    const bodyLine = ciphertext.indexOf('\n', ciphertext.indexOf('-> X25519')) + 5;
    const bad = otherBase64Char(ciphertext, bodyLine);
    await expectFailure(createAgeDecryptStream(ids()), bad, 'DECRYPT_FAILED', /no identity matches/);
    ageRejects(bad, 'h-body');
  });

  it('a stanza added to the header: the MAC catches it', async () => {
    const other = encryptWithAge(Buffer.from('x'), 'other', 1);
    const stanza = other.subarray(other.indexOf('-> X25519'), other.indexOf('\n---') + 1);
    const at = ciphertext.indexOf('\n---') + 1;
    const bad = Buffer.concat([ciphertext.subarray(0, at), stanza, ciphertext.subarray(at)]);
    await expectFailure(createAgeDecryptStream(ids()), bad, 'ARCHIVE_INVALID', /MAC does not match/);
    ageRejects(bad, 'h-added');
  });

  it('a malformed header (non-canonical base64, bad lines, another version) is ARCHIVE_INVALID or FORMAT_UNSUPPORTED', async () => {
    const text = ciphertext.toString('latin1');
    const header = text.slice(0, headerLength(ciphertext));
    const withHeader = (h: string): Buffer => Buffer.concat([Buffer.from(h, 'latin1'), ciphertext.subarray(header.length)]);
    await expectFailure(createAgeDecryptStream(ids()), withHeader(header.replace('\n---', '\n\n---')), 'ARCHIVE_INVALID', /malformed/);
    await expectFailure(createAgeDecryptStream(ids()), withHeader(header.replace('-> X25519 ', '-> X25519  ')), 'ARCHIVE_INVALID', /empty or non-printable argument/);
    await expectFailure(createAgeDecryptStream(ids()), withHeader(header.replace(/\n--- (\S+)\n/, '\n--- $1=\n')), 'ARCHIVE_INVALID', /MAC line/);
    await expectFailure(createAgeDecryptStream(ids()), withHeader(header.replace('age-encryption.org/v1', 'age-encryption.org/v2')), 'FORMAT_UNSUPPORTED', /format v2/);
    // An X25519 share with a 33rd byte.
    await expectFailure(createAgeDecryptStream(ids()), withHeader(header.replace(/-> X25519 (\S+)/, '-> X25519 $1AA')), 'ARCHIVE_INVALID', /32-byte share/);
  });

  it('a flipped byte in a middle chunk: ARCHIVE_INVALID after the chunks before it', async () => {
    const bad = flipByte(ciphertext, payloadStart + SEALED + 100);
    const r = await runStream(createAgeDecryptStream(ids()), bad);
    expect(isStowageError(r.error, 'ARCHIVE_INVALID')).toBe(true);
    expect((r.error as Error).message).toMatch(new RegExp(`chunk 1 \\(bytes ${payloadStart + SEALED}-${payloadStart + 2 * SEALED}\\) failed authentication`));
    expect(r.output.equals(input.subarray(0, CHUNK))).toBe(true);
    ageRejects(bad, 'mid');
  });

  it('a flipped byte in the last chunk or the payload nonce: ARCHIVE_INVALID', async () => {
    await expectFailure(createAgeDecryptStream(ids()), flipByte(ciphertext, ciphertext.length - 1), 'ARCHIVE_INVALID', /final chunk .* failed authentication/, { outputAllowed: true });
    ageRejects(flipByte(ciphertext, ciphertext.length - 1), 'last');
    await expectFailure(createAgeDecryptStream(ids()), flipByte(ciphertext, payloadStart - 3), 'ARCHIVE_INVALID', /chunk 0 .* failed authentication/);
  });

  it('truncation at a chunk boundary is detected by the last-chunk flag', async () => {
    for (const chunks of [1, 2, 3]) {
      const cut = payloadStart + chunks * SEALED;
      const bad = ciphertext.subarray(0, cut);
      const r = await runStream(createAgeDecryptStream(ids()), bad);
      expect(isStowageError(r.error, 'ARCHIVE_INVALID')).toBe(true);
      expect((r.error as Error).message).toBe(`the file was truncated at byte ${cut} (a chunk boundary): its final chunk is missing`);
      expect(r.output.equals(input.subarray(0, (chunks - 1) * CHUNK))).toBe(true);
      ageRejects(bad, `trunc-${chunks}`);
    }
  });

  it('truncation anywhere else is detected too', async () => {
    await expectFailure(createAgeDecryptStream(ids()), ciphertext.subarray(0, payloadStart + SEALED + 5000), 'ARCHIVE_INVALID', /truncated|failed authentication/, { outputAllowed: true });
    await expectFailure(createAgeDecryptStream(ids()), ciphertext.subarray(0, payloadStart + 8), 'ARCHIVE_INVALID', /truncated at byte \d+, inside chunk 0/);
    await expectFailure(createAgeDecryptStream(ids()), ciphertext.subarray(0, payloadStart), 'ARCHIVE_INVALID', /ends after the header, before the payload/);
    await expectFailure(createAgeDecryptStream(ids()), ciphertext.subarray(0, payloadStart - 4), 'ARCHIVE_INVALID', /inside the payload nonce/);
    await expectFailure(createAgeDecryptStream(ids()), ciphertext.subarray(0, 40), 'ARCHIVE_INVALID', /truncated at byte 40, inside the age header/);
  });

  it('appended garbage is detected', async () => {
    const exact = encryptWithAge(crypto.randomBytes(2 * CHUNK), 'exact', 0);
    await expectFailure(createAgeDecryptStream(ids()), Buffer.concat([exact, Buffer.from('x')]), 'ARCHIVE_INVALID', /data appended after its end: the age payload ends at byte \d+/, { outputAllowed: true });
    ageRejects(Buffer.concat([exact, Buffer.from('x')]), 'append-1');
    await expectFailure(createAgeDecryptStream(ids()), Buffer.concat([ciphertext, crypto.randomBytes(100)]), 'ARCHIVE_INVALID', /final chunk .* failed authentication/, { outputAllowed: true });
    await expectFailure(createAgeDecryptStream(ids()), Buffer.concat([ciphertext, crypto.randomBytes(SEALED * 2)]), 'ARCHIVE_INVALID', /chunk 3 .* failed authentication/, { outputAllowed: true });
  });

  it('what is not binary age says what it is', async () => {
    await expectFailure(createAgeDecryptStream(ids()), Buffer.alloc(0), 'ARCHIVE_INVALID', /the file is empty/);
    await expectFailure(createAgeDecryptStream(ids()), Buffer.from('PK\x03\x04rest of a zip', 'latin1'), 'ARCHIVE_INVALID', /plain ZIP/);
    fs.writeFileSync(file('armor.in'), 'armored');
    expect(age(['-a', '-r', keys[0]!.recipient, '-o', file('armor.age'), file('armor.in')]).status).toBe(0);
    const armored = fs.readFileSync(file('armor.age'));
    await expectFailure(createAgeDecryptStream(ids()), armored, 'FORMAT_UNSUPPORTED', /ASCII-armored/);
    expect(isAgeFile(armored)).toBe(true);
    expect(isAgeFile(ciphertext.subarray(0, 22))).toBe(true);
    expect(isAgeFile(ciphertext.subarray(0, 21))).toBe(false);
    expect(isAgeFile(Buffer.from('PK\x03\x04'))).toBe(false);
  });
});

describe('age: passphrase rules', () => {
  it('refuses recipients and a passphrase together, and neither', () => {
    expect(() => createAgeEncryptStream({ recipients: [keys[0]!.recipient], passphrase: 'pw' })).toThrow(/passphrase only as the sole recipient/);
    expect(() => createAgeEncryptStream({})).toThrow(/nothing to encrypt to/);
    expect(() => createAgeEncryptStream({ passphrase: '' })).toThrow(/empty/);
    expect(() => createAgeEncryptStream({ passphrase: 'pw', scryptWorkFactor: 23 })).toThrow(/from 10 to 22/);
    expect(() => createAgeDecryptStream({ maxScryptWorkFactor: 30 })).toThrow(/from 1 to 22/);
  });

  it('refuses a header that mixes scrypt with another stanza, as age does', async () => {
    const fileKey = crypto.randomBytes(16);
    const bad = buildAgeFile([await wrapScrypt(fileKey, 'pw', 10), wrapX25519(fileKey, parseRecipient(keys[0]!.recipient), '')], fileKey, Buffer.from('x'));
    await expectFailure(createAgeDecryptStream({ passphrase: 'pw' }), bad, 'ARCHIVE_INVALID', /mixes a passphrase \(scrypt\) stanza with other recipients/);
    await expectFailure(createAgeDecryptStream({ identities: [keys[0]!.text] }), bad, 'ARCHIVE_INVALID', /mixes/);
    // age itself refuses it when asked for the passphrase (with an identity it only looks at X25519 stanzas;
    // Stowage refuses the header either way, as the spec says such a header MUST NOT exist).
    fs.writeFileSync(file('mixed.age'), bad);
    const r = await agePty(['-d', '-o', file('mixed.out'), file('mixed.age')], 'pw');
    expect(r.status).not.toBe(0);
    expect(r.output).toMatch(/scrypt/);
  });

  it('refuses work factors above the limit before running scrypt (a DoS guard)', async () => {
    const fileKey = crypto.randomBytes(16);
    const withFactor = async (factor: string): Promise<Buffer> => {
      const stanza = await wrapScrypt(fileKey, 'pw', 10);
      stanza.args[2] = factor;
      return buildAgeFile([stanza], fileKey, Buffer.from('x'));
    };
    const started = Date.now();
    const err = await expectFailure(createAgeDecryptStream({ passphrase: 'pw' }), await withFactor('21'), 'ARCHIVE_UNSAFE', /work factor 2\^21, above the limit of 2\^20/);
    expect(isStowageError(err) && err.details).toEqual({ workFactor: 21, limit: 20 });
    await expectFailure(createAgeDecryptStream({ passphrase: 'pw', maxScryptWorkFactor: 16 }), await withFactor('18'), 'ARCHIVE_UNSAFE', /above the limit of 2\^16/);
    await expectFailure(createAgeDecryptStream({ passphrase: 'pw' }), await withFactor('64'), 'ARCHIVE_UNSAFE');
    expect(Date.now() - started).toBeLessThan(2000);
    await expectFailure(createAgeDecryptStream({ passphrase: 'pw' }), await withFactor('010'), 'ARCHIVE_INVALID', /leading zeros/);
    expect((await decrypt(await withFactor('10'), { passphrase: 'pw' })).toString()).toBe('x');
  });
});

describe('age keys', () => {
  it('generateIdentity and recipientOf agree with age-keygen -y', () => {
    const { identity, recipient } = generateIdentity();
    expect(identity).toMatch(/^AGE-SECRET-KEY-1[0-9A-Z]{58}$/);
    expect(recipient).toMatch(/^age1[0-9a-z]{58}$/);
    fs.writeFileSync(file('gen.txt'), `${identity}\n`);
    expect(spawnSync('age-keygen', ['-y', file('gen.txt')], { encoding: 'utf8' }).stdout.trim()).toBe(recipient);
    expect(recipientOf(identity)).toBe(recipient);
    expect(recipientOf(keys[1]!.text)).toBe(keys[1]!.recipient);
    expect(recipientOf(identity.toLowerCase())).toBe(recipient);
  });

  it('parseIdentityFile reads age-keygen files and names the bad line without quoting it', () => {
    expect(parseIdentityFile(keys[0]!.text)).toHaveLength(1);
    expect(parseIdentityFile(`${keys[0]!.text}\r\n${keys[1]!.text}`)).toHaveLength(2);
    const secret = keys[2]!.text.trim().split('\n').pop() as string;
    const broken = `# comment\n${secret.slice(0, -1)}${secret.endsWith('Q') ? 'P' : 'Q'}\n`;
    let message = '';
    try {
      parseIdentityFile(broken);
    } catch (err) {
      expect(isStowageError(err, 'USAGE')).toBe(true);
      message = (err as Error).message;
    }
    expect(message).toMatch(/^line 2 of the identity file is not an age identity/);
    expect(message).not.toContain(secret.slice(16, 30));
    expect(() => parseIdentityFile('# nothing here\n')).toThrow(/holds no identity/);
    expect(() => parseIdentityFile('AGE-PLUGIN-YUBIKEY-1QQQQ')).toThrow(/plugin identity/);
    expect(() => createAgeDecryptStream({ identities: ['nope'] })).toThrow(/the identity file is not an age identity/);
  });

  it('refuses bad recipients, naming them', () => {
    const r = keys[0]!.recipient;
    expect(() => createAgeEncryptStream({ recipients: [`${r.slice(0, -1)}${r.endsWith('q') ? 'p' : 'q'}`] })).toThrow(/is not an age recipient/);
    expect(() => createAgeEncryptStream({ recipients: ['ssh-ed25519 AAAAC3Nza'] })).toThrow(/SSH recipients are not supported/);
    expect(() => createAgeEncryptStream({ recipients: ['age1pq1abc'] })).toThrow(/post-quantum/);
    expect(() => createAgeEncryptStream({ recipients: [r, 'hello'] })).toThrow(/"hello" is not an age recipient/);
  });
});

describe('age: streaming', () => {
  it('Stowage round trip at chunk boundaries, in odd-sized writes', async () => {
    const { identity, recipient } = generateIdentity();
    for (const size of BOUNDARY_SIZES) {
      const input = crypto.randomBytes(size);
      const ciphertext = await encryptWithStowage(input, { recipients: [recipient] }, 333);
      expect((await decrypt(ciphertext, { identities: [identity] }, 65553)).equals(input)).toBe(true);
    }
  });

  it('50 MB through encrypt and decrypt with bounded memory', async () => {
    const { identity, recipient } = generateIdentity();
    const total = 50 * 1024 * 1024;
    const expected = crypto.createHash('sha256');
    await pipeline(
      generated(total),
      new Writable({
        write(chunk: Buffer, _e, cb) {
          expected.update(chunk);
          cb();
        },
      }),
    );
    const actual = crypto.createHash('sha256');
    let bytes = 0;
    let pieces = 0;
    const growth = await memoryGrowth((sample) =>
      pipeline(
        generated(total, () => ++pieces % 4 === 0 && sample()),
        createAgeEncryptStream({ recipients: [recipient] }),
        createAgeDecryptStream({ identities: [identity] }),
        new Writable({
          write(chunk: Buffer, _e, cb) {
            actual.update(chunk);
            bytes += chunk.length;
            cb();
          },
        }),
      ),
    );
    expect(bytes).toBe(total);
    expect(actual.digest('hex')).toBe(expected.digest('hex'));
    // Buffering the stream would hold 50 MB or more (ciphertext, plaintext, or both) alive.
    expect(growth.live).toBeLessThan(8 * 1024 * 1024);
    expect(growth.rss).toBeLessThan(48 * 1024 * 1024);
  });
});
