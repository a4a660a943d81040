import type { Command } from 'commander';
import { engineAction } from '../runtime.js';

export function registerDelete(program: Command): void {
  program
    .command('delete')
    .alias('rm')
    .argument('<key>', 'a backup key from "stowage list"')
    .description('delete a backup from storage and the catalogue')
    .option('--json', 'print one JSON result line')
    .addHelpText('after', '\nExamples:\n  $ stowage delete app_20250101120000.zip')
    .action(
      engineAction(async (out, stowage, key: string) => {
        await stowage.deleteBackup(key);
        out.result({ ok: true, deleted: key });
        out.info(`Deleted ${key}.`);
      }),
    );
}
