import type { Command } from 'commander';
import { formatAge, formatBytes, table } from '../format.js';
import { EXIT, engineAction } from '../runtime.js';

export function registerList(program: Command): void {
  program
    .command('list')
    .alias('ls')
    .description('list backups, newest first, failed and running ones included (exit 3 when the storage could not be reached: the list is then the catalogue\'s)')
    .option('--json', 'print one JSON result line')
    .addHelpText('after', '\nExamples:\n  $ stowage list\n  $ stowage list --json | jq -r \'.backups[] | select(.status == "completed") | .key\'')
    .action(
      engineAction(async (out, stowage) => {
        const { backups, storageUnreachable } = await stowage.listBackupsReport();
        out.result({ ok: true, backups, ...(storageUnreachable ? { storageUnreachable } : {}) });
        if (storageUnreachable) {
          out.notice(
            `warning: ${storageUnreachable}\n  Listed from the catalogue instead: backups that only the storage knows are missing, and the others were not checked there. Backups waiting in the outbox are local and can be restored now.`,
          );
        }
        if (!backups.length) {
          out.info(`No backups yet in ${stowage.storage.description}. Create one with: stowage backup`);
          return storageUnreachable ? EXIT.WARNINGS : EXIT.OK;
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
        return storageUnreachable ? EXIT.WARNINGS : EXIT.OK;
      }),
    );
}
