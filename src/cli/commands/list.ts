import type { Command } from 'commander';
import { formatAge, formatBytes, table } from '../format.js';
import { engineAction } from '../runtime.js';

export function registerList(program: Command): void {
  program
    .command('list')
    .alias('ls')
    .description('list backups, newest first, failed and running ones included')
    .option('--json', 'print one JSON result line')
    .addHelpText('after', '\nExamples:\n  $ stowage list\n  $ stowage list --json | jq -r \'.backups[] | select(.status == "completed") | .key\'')
    .action(
      engineAction(async (out, stowage) => {
        const backups = await stowage.listBackups();
        out.result({ ok: true, backups });
        if (!backups.length) {
          out.info(`No backups yet in ${stowage.storage.description}. Create one with: stowage backup`);
          return;
        }
        out.info(
          table(
            ['KEY', 'CREATED (UTC)', 'SIZE', 'STATUS', 'TRIGGER', 'APP VERSION'],
            backups.map((b) => [
              b.key,
              `${b.createdAt.slice(0, 19).replace('T', ' ')} (${formatAge(b.createdAt)})`,
              b.status === 'completed' ? formatBytes(b.size) : '-',
              b.status === 'failed' ? `failed: ${b.statusMessage}` : b.status,
              b.trigger,
              b.appVersion,
            ]),
          ),
        );
      }),
    );
}
