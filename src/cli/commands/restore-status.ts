import type { Command } from 'commander';
import { engineAction } from '../runtime.js';

export function registerRestoreStatus(program: Command): void {
  program
    .command('restore-status')
    .description('show the outcome of the last restore (not_run, started, failed, completed, completed_with_errors)')
    .option('--json', 'print one JSON result line')
    .addHelpText('after', '\nExamples:\n  $ stowage restore-status\n  $ stowage restore-status --json | jq -r .status.status')
    .action(
      engineAction(async (out, stowage) => {
        const s = stowage.restoreStatus();
        out.result({ ok: true, status: s });
        out.info(`status: ${s.status}`);
        if (s.key) out.info(`backup: ${s.key}`);
        if (s.startedAt) out.info(`started: ${s.startedAt}`);
        if (s.lastRestoreTime) out.info(`last completed restore: ${s.lastRestoreTime}`);
        out.info(`message: ${s.message}`);
        if (s.safetyBackupKey) out.info(`safety backup: ${s.safetyBackupKey}`);
        for (const r of s.sources) out.info(`  ${r.name.padEnd(12)} ${r.status.padEnd(11)} ${r.target}${r.errors.length ? `: ${r.errors.join('; ')}` : ''}`);
      }),
    );
}
