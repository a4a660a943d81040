import type { Command } from 'commander';
import { formatBytes, formatCount, formatDuration } from '../format.js';
import { engineAction, EXIT } from '../runtime.js';

export function registerVerify(program: Command): void {
  program
    .command('verify')
    .argument('<key|file>', 'a backup key, or the path of an archive')
    .description('re-read every entry of a backup and check every SHA-256 against its manifest')
    .option('--json', 'JSON lines: progress, then one result')
    .addHelpText('after', '\nExamples:\n  $ stowage verify app_20250101120000.zip\n  $ stowage verify /mnt/usb/app_20250101120000.zip --json\n\nExit status: 0 intact, 1 damaged or unreadable.')
    .action(
      engineAction(async (out, stowage, target: string) => {
        stowage.on('verify.progress', (p) => out.progress('verify', p));
        const t0 = Date.now();
        const result = await stowage.verify(target);
        out.result({ ...result });
        if (result.ok) {
          out.info(`OK: ${result.key}: ${formatCount(result.entries)} entries, ${formatBytes(result.bytes)} read back, every checksum matches (${formatDuration(Date.now() - t0)}).`);
          return EXIT.OK;
        }
        process.stderr.write(`DAMAGED: ${result.key}: ${result.errors.length} entr${result.errors.length === 1 ? 'y' : 'ies'} failed:\n`);
        for (const e of result.errors.slice(0, 50)) process.stderr.write(`  ${e.path}: ${e.message}\n`);
        return EXIT.ERROR;
      }),
    );
}
