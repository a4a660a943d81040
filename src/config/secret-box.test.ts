import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { makeTempDir, removeDir } from '../testing/tmp.js';
import { SECRET_KEY_FILE, SecretBox } from './secret-box.js';

describe('SecretBox', () => {
  const dirs: string[] = [];
  const dir = () => {
    const d = makeTempDir('stowage-secret-');
    dirs.push(d);
    return d;
  };
  afterEach(() => {
    for (const d of dirs.splice(0)) removeDir(d);
  });

  it('creates a 0600 key file once and opens what it sealed, in another instance too', () => {
    const d = dir();
    const a = SecretBox.forDataDir(d, {});
    const sealed = a.seal('p@ss w0rd', 'point:x:password');
    expect(sealed).toMatch(/^sbx1:[0-9a-f]{8}:[A-Za-z0-9_-]+$/);
    expect(sealed).not.toContain('p@ss');
    const file = path.join(d, SECRET_KEY_FILE);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    const before = fs.readFileSync(file, 'utf8');
    const b = SecretBox.forDataDir(d, {});
    expect(fs.readFileSync(file, 'utf8')).toBe(before);
    expect(b.open(sealed, 'point:x:password')).toBe('p@ss w0rd');
    expect(fs.readdirSync(d)).toEqual([SECRET_KEY_FILE]); // no temporary file left behind
  });

  it('seals differently each time, binds the value to its context, and detects tampering', () => {
    const box = SecretBox.forDataDir(dir(), {});
    const one = box.seal('secret', 'point:a:password');
    expect(box.seal('secret', 'point:a:password')).not.toBe(one);
    expect(() => box.open(one, 'point:b:password')).toThrow(/damaged or was moved from another record/);
    const flipped = one.slice(0, -2) + (one.endsWith('A') ? 'B' : 'A') + one.slice(-1);
    expect(() => box.open(flipped, 'point:a:password')).toThrow(/damaged/);
    expect(() => box.open('plain text', 'point:a:password')).toThrow(/not a sealed value/);
  });

  it('uses STOWAGE_SECRET when set, refuses a short one, and says when the key changed', () => {
    const d = dir();
    const fromEnv = SecretBox.forDataDir(d, { STOWAGE_SECRET: 'a long enough operator secret' });
    expect(fromEnv.origin).toBe('STOWAGE_SECRET');
    expect(fs.existsSync(path.join(d, SECRET_KEY_FILE))).toBe(false);
    const sealed = fromEnv.seal('v', 'c');
    expect(SecretBox.forDataDir(d, { STOWAGE_SECRET: 'a long enough operator secret' }).open(sealed, 'c')).toBe('v');
    expect(() => SecretBox.forDataDir(d, { STOWAGE_SECRET: 'another operator secret!' }).open(sealed, 'c')).toThrow(/encrypted with another key .*STOWAGE_SECRET changed/);
    expect(() => SecretBox.forDataDir(d, { STOWAGE_SECRET: 'short' })).toThrow(/at least 16 characters/);
  });

  it('refuses a key file that is not one, instead of replacing it', () => {
    const d = dir();
    fs.writeFileSync(path.join(d, SECRET_KEY_FILE), 'not a key\n');
    expect(() => SecretBox.forDataDir(d, {})).toThrow(/is not a Stowage key file/);
    expect(fs.readFileSync(path.join(d, SECRET_KEY_FILE), 'utf8')).toBe('not a key\n');
  });
});
