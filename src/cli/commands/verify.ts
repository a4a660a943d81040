import type { Command } from 'commander';
import { StowageError } from '../../errors.js';
import { formatBytes, formatCount, formatDuration } from '../format.js';
import { engineAction, EXIT, addKeyOptions } from '../runtime.js';

export function registerVerify(program: Command): void {
  addKeyOptions(program.command('verify'))
    .argument('[key|file]', 'a backup key, or the path of an archive (with --record: default the newest completed backup)')
    .description('re-read every entry of a backup and check every SHA-256 against its manifest')
    .option('--record', 'record the result on the backup (verifiedAt, shown in GET /api/health), as scheduled verification does')
    .option('--rotate', 'with --record and no key: the backup verified least recently (never-verified first)')
    .option('--json', 'JSON lines: progress, then one result')
    .addHelpText(
      'after',
      `
Examples:
  $ stowage verify app_20250101120000.zip
  $ stowage verify /mnt/usb/app_20250101120000.zip --json
  $ stowage verify --record                 the newest backup, result kept on it
  $ stowage verify --record --rotate        a different backup each time, oldest check first

Exit status: 0 intact, 1 damaged or unreadable.`,
    )
    .action(
      engineAction(async (out, stowage, target: string | undefined, opts: { record?: boolean; rotate?: boolean }) => {
        stowage.on('verify.progress', (p) => out.progress('verify', p));
        const t0 = Date.now();
        if (!target && !opts.record) throw new StowageError('USAGE', 'give a backup key or file to verify, or --record to verify the newest backup ("stowage list" shows the keys)');
        const result = opts.record ? await stowage.verifyRecorded(target, { trigger: 'manual', sample: opts.rotate ? 'rotate' : 'newest' }) : await stowage.verify(target!);
        out.result({ ...result });
        if (result.ok) {
          out.info(`OK: ${result.key}: ${formatCount(result.entries)} entries, ${formatBytes(result.bytes)} read back, every checksum matches (${formatDuration(Date.now() - t0)}).${opts.record ? ' Recorded.' : ''}`);
          return EXIT.OK;
        }
        process.stderr.write(`DAMAGED: ${result.key}: ${result.errors.length} entr${result.errors.length === 1 ? 'y' : 'ies'} failed:\n`);
        for (const e of result.errors.slice(0, 50)) process.stderr.write(`  ${e.path}: ${e.message}\n`);
        return EXIT.ERROR;
      }),
    );
}
