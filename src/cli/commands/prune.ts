import type { Command } from 'commander';
import { formatRetentionTable } from '../../schedule/retention.js';
import { engineAction } from '../runtime.js';

/** `stowage prune`: retention by hand, with the reason for every backup kept or removed. */
export function registerPrune(program: Command): void {
  program
    .command('prune')
    .description('apply retention to scheduled backups: keep what the rules keep, remove the rest')
    .option('-n, --dry-run', 'only show what would be kept and removed, and why')
    .option('--json', 'print one JSON result line')
    .addHelpText(
      'after',
      `
Only scheduled backups (@auto_...) are ever removed; manual, uploaded and pre-restore backups,
and the last completed backup, are always kept. The rules are the settings backups.cronMaxKeep
and backups.retention (restic's forget semantics: a backup kept by any rule stays).

Examples:
  $ stowage prune --dry-run
  $ stowage settings set backups.retention '{"keepDaily": 7, "keepWeekly": 4}' && stowage prune`,
    )
    .action(
      engineAction(async (out, stowage, opts: { dryRun?: boolean }) => {
        const result = await stowage.prune({ dryRun: opts.dryRun, trigger: 'cli' });
        out.result({ ok: true, ...result });
        out.info(formatRetentionTable(result.decisions, stowage.settings.get().backups.timezone));
        out.info(opts.dryRun ? 'Dry run: nothing was removed.' : result.removed.length ? `Removed ${result.removed.length} backup${result.removed.length === 1 ? '' : 's'}.` : 'Nothing to remove.');
      }),
    );
}
