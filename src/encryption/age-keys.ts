/**
 * age X25519 keys: the Bech32 text forms (`age1...` recipients, `AGE-SECRET-KEY-1...`
 * identities; Bech32 from @scure/base) and X25519 on node:crypto key objects.
 *
 * Key texts are public (recipients) or secret (identities); error messages quote recipients but
 * never any part of an identity line.
 */
import crypto from 'node:crypto';
import { bech32 } from '@scure/base';
import { StowageError } from '../errors.js';

const RECIPIENT_HRP = 'age';
const IDENTITY_HRP = 'age-secret-key-';

// X25519 raw keys wrapped in their fixed DER prefixes (RFC 8410), so node:crypto takes them as
// key objects: PKCS#8 for a 32-byte secret, SPKI for a 32-byte public key.
const PKCS8_X25519 = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_X25519 = Buffer.from('302a300506032b656e032100', 'hex');

export function x25519PrivateKey(secret: Uint8Array): crypto.KeyObject {
  return crypto.createPrivateKey({ key: Buffer.concat([PKCS8_X25519, secret]), format: 'der', type: 'pkcs8' });
}

export function x25519PublicKey(raw: Uint8Array): crypto.KeyObject {
  return crypto.createPublicKey({ key: Buffer.concat([SPKI_X25519, raw]), format: 'der', type: 'spki' });
}

/** The 32 raw bytes of an X25519 public key object (or the public half of a private one). */
export function rawPublicKey(key: crypto.KeyObject): Buffer {
  const pub = key.type === 'private' ? crypto.createPublicKey(key) : key;
  return pub.export({ format: 'der', type: 'spki' }).subarray(SPKI_X25519.length);
}

/**
 * X25519(secret, their public key). Returns null when the result is all zero (their key is a
 * low-order point): age requires aborting then. OpenSSL refuses that case itself; either way
 * the caller sees null.
 */
export function x25519(privateKey: crypto.KeyObject, theirPublic: Uint8Array): Buffer | null {
  let shared: Buffer;
  try {
    shared = crypto.diffieHellman({ privateKey, publicKey: x25519PublicKey(theirPublic) });
  } catch {
    return null;
  }
  return shared.every((b) => b === 0) ? null : shared;
}

/** A parsed X25519 identity: its key object and its recipient's raw public key. */
export interface X25519Identity {
  privateKey: crypto.KeyObject;
  publicKey: Buffer;
}

function keyUsage(message: string): StowageError {
  return new StowageError('USAGE', message);
}

function decodeBech32(text: string): { prefix: string; bytes: Uint8Array } | null {
  try {
    // age's Bech32 has no length limit (BIP 173's is 90); X25519 keys are well under it anyway.
    const { prefix, words } = bech32.decode(text, false);
    const bytes = bech32.fromWordsUnsafe(words);
    return bytes ? { prefix, bytes } : null;
  } catch {
    return null;
  }
}

/** The raw 32-byte public key of an `age1...` recipient; a USAGE error saying what is wrong. */
export function parseRecipient(text: string): Buffer {
  const s = text.trim();
  const quoted = JSON.stringify(s.length > 80 ? `${s.slice(0, 77)}...` : s);
  if (/^ssh-(ed25519|rsa) /.test(s)) {
    throw keyUsage(`SSH recipients are not supported (${quoted}): use an age X25519 key (age1..., made with age-keygen)`);
  }
  if (/^age1pq1/i.test(s)) {
    throw keyUsage(`post-quantum age recipients (age1pq1...) are not supported yet: use an X25519 key (age1..., made with age-keygen)`);
  }
  const decoded = decodeBech32(s);
  if (decoded && decoded.prefix !== RECIPIENT_HRP && decoded.prefix.startsWith('age1')) {
    throw keyUsage(`${quoted} is an age plugin recipient (${decoded.prefix}), which Stowage does not support: use an X25519 key (age1..., made with age-keygen)`);
  }
  if (!decoded || decoded.prefix !== RECIPIENT_HRP) {
    throw keyUsage(`${quoted} is not an age recipient: expected a public key like age1... (62 characters; age-keygen prints it)`);
  }
  if (decoded.bytes.length !== 32) {
    throw keyUsage(`${quoted} is not an X25519 age recipient: its key is ${decoded.bytes.length} bytes, not 32`);
  }
  return Buffer.from(decoded.bytes);
}

/** One `AGE-SECRET-KEY-1...` line (either case); `where` names it in errors, which never quote it. */
function parseIdentityLine(line: string, where: string): X25519Identity {
  if (/^AGE-PLUGIN-/i.test(line)) throw keyUsage(`${where} is an age plugin identity, which Stowage does not support: use an X25519 identity (AGE-SECRET-KEY-1..., made with age-keygen)`);
  if (/^AGE-SECRET-KEY-PQ-1/i.test(line)) throw keyUsage(`${where} is a post-quantum age identity (AGE-SECRET-KEY-PQ-1...), which Stowage does not support yet`);
  if (/^-----BEGIN /.test(line)) throw keyUsage(`${where} looks like an SSH or PEM key: Stowage takes age X25519 identities (AGE-SECRET-KEY-1..., made with age-keygen)`);
  const decoded = decodeBech32(line);
  if (!decoded || decoded.prefix !== IDENTITY_HRP) {
    throw keyUsage(`${where} is not an age identity: expected AGE-SECRET-KEY-1... (the secret line age-keygen writes); comments start with #`);
  }
  if (decoded.bytes.length !== 32) throw keyUsage(`${where} is not an X25519 age identity: its key is ${decoded.bytes.length} bytes, not 32`);
  const privateKey = x25519PrivateKey(decoded.bytes);
  return { privateKey, publicKey: rawPublicKey(privateKey) };
}

/** Parses identity file text (age-keygen's output: `#` comments, blank lines, one key a line). */
export function parseIdentities(text: string, name = 'the identity file'): X25519Identity[] {
  const out: X25519Identity[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] ?? '').trim();
    if (line === '' || line.startsWith('#')) continue;
    out.push(parseIdentityLine(line, lines.length > 1 ? `line ${i + 1} of ${name}` : name));
  }
  if (out.length === 0) throw keyUsage(`${name} holds no identity: expected an AGE-SECRET-KEY-1... line (age-keygen -o key.txt makes one)`);
  return out;
}

function encodeRecipient(publicKey: Uint8Array): string {
  return bech32.encode(RECIPIENT_HRP, bech32.toWords(publicKey), false);
}

function encodeIdentity(secret: Uint8Array): string {
  return bech32.encode(IDENTITY_HRP, bech32.toWords(secret), false).toUpperCase();
}

/**
 * The identities in identity file text, each as an `AGE-SECRET-KEY-1...` line (normalised to
 * upper case). Blank lines and `#` comments are skipped, as age does. A USAGE error names the
 * line that is not an X25519 identity (plugin, post-quantum and SSH identities are not supported).
 */
export function parseIdentityFile(text: string): string[] {
  return parseIdentities(text).map((id) => {
    const der = id.privateKey.export({ format: 'der', type: 'pkcs8' });
    return encodeIdentity(der.subarray(PKCS8_X25519.length));
  });
}

/** A new X25519 key pair as age-keygen makes it: the secret identity and its `age1...` recipient. */
export function generateIdentity(): { identity: string; recipient: string } {
  const secret = crypto.randomBytes(32);
  const recipient = encodeRecipient(rawPublicKey(x25519PrivateKey(secret)));
  return { identity: encodeIdentity(secret), recipient };
}

/** The `age1...` recipient of an identity (what `age-keygen -y` prints). */
export function recipientOf(identity: string): string {
  const ids = parseIdentities(identity, 'the identity');
  if (ids.length !== 1 || !ids[0]) throw keyUsage(`recipientOf takes one identity, not ${ids.length}`);
  return encodeRecipient(ids[0].publicKey);
}
