import type { Command } from 'commander';
import { formatBytes, formatCount, formatDuration } from '../format.js';
import { StowageError } from '../../errors.js';
import { collect, commandKeys, engineAction, EXIT } from '../runtime.js';

export function registerBackup(program: Command): void {
  program
    .command('backup')
    .description('create a backup of every configured source')
    .option('-n, --name <name>', 'backup key (".zip" is added); default <app>_<UTC yyyyMMddHHmmss>.zip')
    .option('-d, --description <text>', 'a note stored with the backup')
    .option('-e, --exclude <pattern>', 'extra fnmatch rule for dir sources (repeatable)', collect, [])
    .option('-s, --source <name>', 'back up only this source (repeatable)', collect, [])
    .option('--encrypt-to <recipient>', 'encrypt to this age public key (age1..., repeatable); only its identity can read the backup', collect, [])
    .option('--passphrase', 'encrypt with a passphrase (STOWAGE_PASSPHRASE, or asked for on the terminal)')
    .option('--no-encrypt', 'do not encrypt this backup, whatever stowage.yaml says')
    .option('--json', 'JSON lines on stdout: progress events, then one result')
    .addHelpText(
      'after',
      `
Examples:
  $ stowage backup
  $ stowage backup --name before-upgrade --description "before 2.0 upgrade"
  $ stowage backup --exclude 'uploads/cache' --exclude '*.tmp'
  $ stowage backup --json | tail -n 1 | jq .backup.key
  $ stowage backup --encrypt-to age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
  $ STOWAGE_PASSPHRASE=... stowage backup --passphrase

Encrypted backups are age files (key ending .zip.age) that the age tool decrypts too:
  $ age -d -i key.txt app_20250101120000.zip.age > backup.zip

Rules follow Python's fnmatch against the path relative to the source: "*" also matches "/",
and a rule naming a folder excludes everything below it.
With S3 storage the archive is written locally first, then uploaded; if the upload fails it is
kept (listed as "uploading", restorable) and retried: "stowage retry-uploads".
Exit status: 0 ok, 1 failed, 2 usage error, 3 completed with warnings (files skipped, a point
that could not push, an upload still pending).`,
    )
    .action(
      engineAction(async (out, stowage, opts: { name?: string; description?: string; exclude: string[]; source: string[]; encryptTo: string[]; passphrase?: boolean; encrypt: boolean }, cmd: Command) => {
        stowage.on('backup.progress', (p) => out.progress('backup', p));
        const points: Array<{ point: string; ok: boolean; message: string }> = [];
        stowage.on('point.completed', (e) => points.push({ point: e.point, ok: true, message: e.message }));
        stowage.on('point.failed', (e) => points.push({ point: e.point, ok: false, message: e.error.message }));
        const t0 = Date.now();
        const passphrase = opts.passphrase ? (await commandKeys(cmd))?.passphrase : undefined;
        if (opts.encryptTo.length && passphrase) throw new StowageError('USAGE', 'use either --encrypt-to or --passphrase, not both (an age file holds one passphrase and nothing else)');
        const encryption = opts.encryptTo.length ? { recipients: opts.encryptTo } : passphrase ? { passphrase } : opts.encrypt === false ? null : undefined;
        const backup = await stowage.createBackup({ name: opts.name, description: opts.description, excludes: opts.exclude, sources: opts.source, encryption });
        const files = backup.sources.reduce((a, s) => a + s.files, 0);
        const bytes = backup.sources.reduce((a, s) => a + s.bytes, 0);
        const uploadPending = backup.status === 'uploading';
        out.result({ ok: true, backup, points });
        out.info(`Backup ${backup.key} ${uploadPending ? 'written' : 'completed'} in ${formatDuration(Date.now() - t0)}: ${formatCount(files)} files, ${formatBytes(bytes)} read, archive ${formatBytes(backup.size)}.`);
        if (uploadPending) out.info(`  NOT YET OFF-SITE: ${backup.statusMessage}`);
        else out.info(`  stored in ${stowage.storage.description}`);
        if (backup.warnings.length) {
          out.info(`  ${backup.warnings.length} warning(s):`);
          for (const w of backup.warnings.slice(0, 20)) out.info(`    ${w.path}: ${w.reason}`);
          if (backup.warnings.length > 20) out.info(`    ... "stowage show ${backup.key}" lists them all`);
        }
        for (const p of points) out.info(`  point ${p.point}: ${p.ok ? p.message : `FAILED: ${p.message}`}`);
        out.info(`  restore it with: stowage restore ${backup.key}`);
        // A point that could not push, or an upload still pending, is a warning: the backup itself is whole.
        return backup.warnings.length || uploadPending || points.some((p) => !p.ok) ? EXIT.WARNINGS : EXIT.OK;
      }),
    );
}
