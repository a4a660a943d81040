import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stowage } from '../src/testing/cli.js';
import { makeTempDir, removeDir, run } from '../src/testing/tmp.js';
import { snapshotTree } from '../src/testing/tree-snapshot.js';

/**
 * Encrypted backups through the CLI, with the real `age` tool as the independent judge: it
 * decrypts what Stowage wrote (and unzip accepts the result), and Stowage reads what age wrote.
 */
describe('encrypted backups (age)', () => {
  let dir: string;
  const SECRET_TEXT = 'the customer list: alice, bob, carol';
  beforeAll(() => {
    dir = makeTempDir('stowage-enc-');
    fs.mkdirSync(path.join(dir, 'app/docs'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'app/docs/customers.txt'), `${SECRET_TEXT}\n`.repeat(50));
    fs.writeFileSync(path.join(dir, 'app/blob.bin'), Buffer.alloc(200_000, 3));
  });
  afterAll(() => {
    if (dir) removeDir(dir);
  });
  const writeConfig = (encryption: string) =>
    fs.writeFileSync(path.join(dir, 'stowage.yaml'), `dataDir: ./data\napp: { name: encapp, version: "1.0.0" }\nsources: [{ name: files, kind: dir, path: ./app }]\n${encryption}`);
  const archive = (key: string) => path.join(dir, 'data/backups', key);

  it('backs up to a public key: the server cannot read it, age can, and so can restore with the identity', () => {
    const keygen = stowage(dir, ['keygen', '-o', 'key.txt', '--json']);
    expect(keygen.status, keygen.stderr).toBe(0);
    const recipient = String(keygen.result?.recipient);
    expect(recipient).toMatch(/^age1[0-9a-z]{58}$/);
    expect(fs.statSync(path.join(dir, 'key.txt')).mode & 0o777).toBe(0o600);
    expect(stowage(dir, ['keygen', '-o', 'key.txt']).status).toBe(2); // never overwritten
    // The age tool derives the same public key from the identity file.
    expect(execFileSync('age-keygen', ['-y', path.join(dir, 'key.txt')], { encoding: 'utf8' }).trim()).toBe(recipient);

    writeConfig(`encryption:\n  recipients: ["${recipient}"]\n`);
    const b = stowage(dir, ['backup', '--name', 'secret', '--json']);
    expect(b.status, b.stderr).toBe(0);
    expect(b.result?.backup).toMatchObject({ key: 'secret.zip.age', encrypted: true });
    const bytes = fs.readFileSync(archive('secret.zip.age'));
    expect(bytes.subarray(0, 21).toString()).toBe('age-encryption.org/v1');
    expect(bytes.includes(Buffer.from('customer list'))).toBe(false);
    expect(bytes.includes(Buffer.from('customers.txt'))).toBe(false); // not even the names

    // The independent judge: age decrypts it, unzip accepts the ZIP inside.
    const plain = path.join(dir, 'plain.zip');
    execFileSync('age', ['-d', '-i', path.join(dir, 'key.txt'), '-o', plain, archive('secret.zip.age')]);
    expect(run('unzip', ['-tq', plain]).status).toBe(0);
    expect(run('unzip', ['-p', plain, 'files/docs/customers.txt']).stdout).toContain(SECRET_TEXT);

    const list = stowage(dir, ['list', '--json']);
    expect((list.result?.backups as Array<{ key: string; encrypted: boolean }>)[0]).toMatchObject({ key: 'secret.zip.age', encrypted: true });

    // Without the identity: a clear error saying what to give, nothing touched.
    const before = snapshotTree(path.join(dir, 'app'), { wholeMs: true });
    const noKey = stowage(dir, ['restore', 'secret.zip.age', '--yes', '--json']);
    expect(noKey.status).toBe(1);
    expect(noKey.result).toMatchObject({ code: 'DECRYPT_FAILED' });
    expect(String(noKey.result?.message)).toMatch(/encrypted: give the identity file .*--identity FILE/);
    expect(stowage(dir, ['verify', 'secret.zip.age', '--json']).status).toBe(1);
    // A different identity is refused as such.
    expect(stowage(dir, ['keygen', '-o', 'other.txt']).status).toBe(0);
    const wrong = stowage(dir, ['verify', 'secret.zip.age', '--identity', 'other.txt', '--json']);
    expect(wrong.status).toBe(1);
    expect(wrong.result).toMatchObject({ code: 'DECRYPT_FAILED' });
    expect(snapshotTree(path.join(dir, 'app'), { wholeMs: true })).toEqual(before);

    expect(stowage(dir, ['verify', 'secret.zip.age', '--identity', 'key.txt', '--json']).status).toBe(0);
    const show = stowage(dir, ['show', 'secret.zip.age', '--json'], { STOWAGE_IDENTITY: path.join(dir, 'key.txt') });
    expect(show.status, show.stderr).toBe(0);
    fs.writeFileSync(path.join(dir, 'app/docs/customers.txt'), 'overwritten\n');
    const r = stowage(dir, ['restore', 'secret.zip.age', '--identity', 'key.txt', '--yes', '--no-safety-backup', '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect(snapshotTree(path.join(dir, 'app'), { wholeMs: true })).toEqual(before);
    // No decrypted copy is left in the data folder.
    expect(fs.readdirSync(path.join(dir, 'data/tmp')).flatMap((d) => fs.readdirSync(path.join(dir, 'data/tmp', d)))).toEqual([]);

    // --no-encrypt writes a plain one despite the configuration; stowage decrypt gives the plain ZIP.
    const plainBackup = stowage(dir, ['backup', '--name', 'open', '--no-encrypt', '--json']);
    expect(plainBackup.result?.backup).toMatchObject({ key: 'open.zip', encrypted: false });
    const dec = stowage(dir, ['decrypt', archive('secret.zip.age'), '-o', 'dec.zip', '--identity', 'key.txt']);
    expect(dec.status, dec.stderr).toBe(0);
    expect(run('unzip', ['-tq', path.join(dir, 'dec.zip')]).status).toBe(0);
  });

  it('reads a backup that the age tool encrypted, to a key or to a passphrase typed at a terminal', () => {
    writeConfig('');
    const b = stowage(dir, ['backup', '--name', 'forage', '--json']);
    expect(b.status, b.stderr).toBe(0);
    const recipient = execFileSync('age-keygen', ['-y', path.join(dir, 'key.txt')], { encoding: 'utf8' }).trim();
    const byAge = path.join(dir, 'by-age.zip.age');
    execFileSync('age', ['-r', recipient, '-o', byAge, archive('forage.zip')]);
    const v = stowage(dir, ['verify', byAge, '--identity', 'key.txt', '--json']);
    expect(v.status, v.stderr).toBe(0);
    expect(v.result?.ok).toBe(true);

    // age asks for a passphrase on the terminal only: answer it through a pty (script).
    const byPass = path.join(dir, 'by-pass.zip.age');
    const pty = spawnSync('script', ['-qec', `age -p -o ${byPass} ${archive('forage.zip')}`, '/dev/null'], { input: 'a long test passphrase\na long test passphrase\n', encoding: 'utf8', timeout: 60_000 });
    expect(pty.status, pty.stderr).toBe(0);
    expect(fs.readFileSync(byPass).subarray(0, 21).toString()).toBe('age-encryption.org/v1');
    const ok = stowage(dir, ['verify', byPass, '--passphrase', '--json'], { STOWAGE_PASSPHRASE: 'a long test passphrase' });
    expect(ok.status, ok.stderr).toBe(0);
    const bad = stowage(dir, ['verify', byPass, '--passphrase', '--json'], { STOWAGE_PASSPHRASE: 'not the passphrase' });
    expect(bad.status).toBe(1);
    expect(bad.result).toMatchObject({ code: 'DECRYPT_FAILED' });
  });

  it('encrypts with a passphrase; a wrong one changes nothing; a tampered archive is refused', () => {
    writeConfig('');
    const env = { STOWAGE_PASSPHRASE: 'correct horse battery staple' };
    const b = stowage(dir, ['backup', '--name', 'withpass', '--passphrase', '--json'], env);
    expect(b.status, b.stderr).toBe(0);
    expect(b.result?.backup).toMatchObject({ key: 'withpass.zip.age', encrypted: true });
    const before = snapshotTree(path.join(dir, 'app'), { wholeMs: true });
    fs.writeFileSync(path.join(dir, 'app/new-file.txt'), 'added after the backup\n');
    const changed = snapshotTree(path.join(dir, 'app'), { wholeMs: true });
    const wrong = stowage(dir, ['restore', 'withpass.zip.age', '--passphrase', '--yes', '--no-safety-backup', '--json'], { STOWAGE_PASSPHRASE: 'wrong passphrase here' });
    expect(wrong.status).toBe(1);
    expect(wrong.result).toMatchObject({ code: 'DECRYPT_FAILED' });
    expect(snapshotTree(path.join(dir, 'app'), { wholeMs: true })).toEqual(changed);

    // One byte flipped in the middle of the payload: refused before anything is touched.
    const copy = path.join(dir, 'tampered.zip.age');
    const bytes = fs.readFileSync(archive('withpass.zip.age'));
    bytes[Math.floor(bytes.length / 2)]! ^= 0x40;
    fs.writeFileSync(copy, bytes);
    const tampered = stowage(dir, ['restore', copy, '--passphrase', '--yes', '--no-safety-backup', '--json'], env);
    expect(tampered.status).toBe(1);
    expect(tampered.result).toMatchObject({ code: 'ARCHIVE_INVALID' });
    expect(snapshotTree(path.join(dir, 'app'), { wholeMs: true })).toEqual(changed);

    const r = stowage(dir, ['restore', 'withpass.zip.age', '--passphrase', '--yes', '--no-safety-backup', '--json'], env);
    expect(r.status, r.stderr).toBe(0);
    expect(snapshotTree(path.join(dir, 'app'), { wholeMs: true })).toEqual(before);
  });

  it('refuses a bad recipient in stowage.yaml, naming the field', () => {
    writeConfig('encryption:\n  recipients: ["age1notakey"]\n');
    const r = stowage(dir, ['list', '--json']);
    expect(r.status).toBe(1);
    expect(String(r.result?.message)).toMatch(/encryption\.recipients\[0\]/);
    writeConfig('');
  });
});
