import type { Command } from 'commander';
import { formatBytes, formatCount, formatDuration } from '../format.js';
import { engineAction } from '../runtime.js';

/**
 * What `npm start` runs until the server exists: one backup of the configuration in force (the
 * demo application by default), then where it is and how to restore it.
 */
export function registerStart(program: Command): void {
  program
    .command('start')
    .description('back up the configured sources once and explain where the backup is and how to restore it (what "npm start" runs)')
    .option('--json', 'JSON lines: progress, then one result')
    .action(
      engineAction(async (out, stowage) => {
        stowage.on('backup.progress', (p) => out.progress('backup', p));
        const t0 = Date.now();
        const backup = await stowage.createBackup({ description: 'made by stowage start' });
        const files = backup.sources.reduce((a, s) => a + s.files, 0);
        out.result({ ok: true, backup });
        out.info(`Backed up ${backup.sources.map((s) => s.name).join(', ')}: ${formatCount(files)} files in ${formatDuration(Date.now() - t0)}.`);
        out.info(`  archive: ${stowage.config.storage.path}/${backup.key} (${formatBytes(backup.size)})`);
        // From `npm start` in a checkout, the CLI is reached through npm; installed, it is on PATH.
        const cli = process.env.npm_lifecycle_event === 'start' ? 'npm run stowage --' : 'stowage';
        out.info('Next:');
        out.info(`  ${cli} list                 every backup, with its status`);
        out.info(`  ${cli} verify ${backup.key}`);
        out.info(`  ${cli} restore ${backup.key} --dry-run   what a restore would change`);
        out.info(`  ${cli} restore ${backup.key}             restore it (verified, atomic, safety backup first)`);
      }),
    );
}
