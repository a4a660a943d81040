import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { createAesGcmDecryptStream, createAgeDecryptStream, generateIdentity, isAesGcmFile, isAgeFile, parseAesKey } from '../../encryption/index.js';
import { StowageError } from '../../errors.js';
import { readFullySync } from '../../fs/fd.js';
import { action, addKeyOptions, commandKeys, EXIT } from '../runtime.js';

/** `stowage keygen` and `stowage decrypt`: work with encrypted backups without a configuration. */
export function registerEncryption(program: Command): void {
  program
    .command('keygen')
    .description('make an age key pair: the identity file (keep it away from the server) and its public key for encryption.recipients')
    .requiredOption('-o, --output <file>', 'where to write the identity (created with mode 0600; never overwritten)')
    .option('--json', 'print one JSON result line')
    .addHelpText(
      'after',
      `
The public key (age1...) goes into stowage.yaml; the server can then write backups it cannot
read. Keep the identity file offline or in a password manager: without it, the backups are lost.

Examples:
  $ stowage keygen -o ~/stowage-backups.key
  $ stowage restore app_20250101120000.zip.age --identity ~/stowage-backups.key
  $ age -d -i ~/stowage-backups.key app_20250101120000.zip.age > backup.zip     (the age tool reads it too)`,
    )
    .action(
      action(async (out, opts: { output: string }) => {
        const { identity, recipient } = generateIdentity();
        const file = path.resolve(opts.output);
        let fd: number;
        try {
          fd = fs.openSync(file, 'wx', 0o600);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new StowageError('USAGE', `${file} already exists; keygen never overwrites an identity (backups encrypted to it would be lost): choose another file`);
          throw err;
        }
        try {
          fs.writeSync(fd, `# created: ${new Date().toISOString()}\n# public key: ${recipient}\n${identity}\n`);
          fs.fsyncSync(fd);
        } finally {
          fs.closeSync(fd);
        }
        out.result({ ok: true, identityFile: file, recipient });
        out.info(`Identity written to ${file} (mode 0600). Public key:\n  ${recipient}\nPut it in stowage.yaml:\n  encryption:\n    recipients: ["${recipient}"]`);
      }),
    );

  addKeyOptions(program.command('decrypt'))
    .argument('<file>', 'an encrypted backup: a .zip.age file, or an export encrypted with an AES key')
    .requiredOption('-o, --output <file>', 'where to write the plain ZIP (never overwritten)')
    .option('--aes-key-file <file>', 'for an export encrypted with aes_key: a file holding the key (64 hex digits or base64)')
    .option('--json', 'print one JSON result line')
    .description('decrypt an encrypted backup or export into a plain ZIP, without a configuration or server')
    .addHelpText(
      'after',
      `
Examples:
  $ stowage decrypt app_20250101120000.zip.age -o backup.zip --identity ~/stowage-backups.key
  $ STOWAGE_PASSPHRASE=... stowage decrypt app.zip.age -o backup.zip --passphrase
  $ stowage decrypt export.bin -o backup.zip --aes-key-file key.hex        (POST /api/backups/export with aes_key)`,
    )
    .action(
      action(async (out, file: string, opts: { output: string; aesKeyFile?: string }, cmd: Command) => {
        const input = path.resolve(file);
        const head = readHead(input);
        let decrypt;
        if (isAesGcmFile(head)) {
          if (!opts.aesKeyFile) throw new StowageError('DECRYPT_FAILED', `${file} is an export encrypted with an AES key: give it with --aes-key-file FILE`, { details: { requires: 'key' } });
          decrypt = createAesGcmDecryptStream(parseAesKey(fs.readFileSync(opts.aesKeyFile, 'utf8')));
        } else if (isAgeFile(head)) {
          const keys = await commandKeys(cmd);
          if (!keys) throw new StowageError('DECRYPT_FAILED', `${file} is encrypted: give --identity FILE (or STOWAGE_IDENTITY) or --passphrase`, { details: { requires: 'identity' } });
          decrypt = createAgeDecryptStream({ identities: keys.identities, passphrase: keys.passphrase });
        } else {
          throw new StowageError('ARCHIVE_INVALID', `${file} is neither an age file nor a Stowage AES-GCM export (it may not be encrypted: try "stowage verify ${file}")`);
        }
        const output = path.resolve(opts.output);
        try {
          await pipeline(fs.createReadStream(input), decrypt, fs.createWriteStream(output, { flags: 'wx', mode: 0o600 }));
        } catch (err) {
          // A tampered or truncated file: nothing half-decrypted is left behind.
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') fs.rmSync(output, { force: true });
          else throw new StowageError('USAGE', `${output} already exists; choose another output file`);
          throw err;
        }
        const size = fs.statSync(output).size;
        out.result({ ok: true, output, size });
        out.info(`Decrypted into ${output}. Check it with: stowage verify ${output}`);
        return EXIT.OK;
      }),
    );
}

function readHead(file: string): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    throw new StowageError('USAGE', `${file}: cannot open it (${(err as NodeJS.ErrnoException).code})`);
  }
  try {
    return readFullySync(fd, 64, 0);
  } finally {
    fs.closeSync(fd);
  }
}
