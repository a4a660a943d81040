import readline from 'node:readline/promises';
import type { Command } from 'commander';
import { StowageError } from '../../errors.js';
import type { SourcePlan } from '../../engine/restore-plan.js';
import { formatBytes, formatCount, formatDuration } from '../format.js';
import { collect, engineAction, EXIT, type Output, addKeyOptions } from '../runtime.js';

function printPlan(out: Output, plan: SourcePlan[]): void {
  for (const p of plan) {
    out.info(`${p.name} (${p.kind}) -> ${p.target}`);
    if (p.note) out.info(`  ${p.note}`);
    else out.info(`  ${p.added.length} to add, ${p.replaced.length} to replace, ${p.removed.length} to remove, ${p.unchanged} unchanged`);
    const show = (label: string, items: string[]) => {
      for (const item of items.slice(0, 25)) out.info(`  ${label} ${item}`);
      if (items.length > 25) out.info(`  ${label} ... and ${items.length - 25} more (--json lists all)`);
    };
    show('+', p.added);
    show('~', p.replaced);
    show('-', p.removed);
  }
  out.info('Dry run: nothing was changed.');
}

export function registerRestore(program: Command): void {
  addKeyOptions(program.command('restore'))
    .argument('<key|file>', 'a backup key from "stowage list", or the path of an archive')
    .description('restore a backup over the configured sources: verified first, swapped in atomically, rolled back on failure')
    .option('--dry-run', 'list what would be added, replaced and removed; change nothing')
    .option('-s, --source <name>', 'restore only this source (repeatable)', collect, [])
    .option('-t, --target <dir>', 'restore into <dir>/<source> instead of the configured paths')
    .option('--no-safety-backup', 'skip the backup of the current data taken before restoring')
    .option('-f, --force', 'restore even if the version policy refuses it; do not ask for confirmation')
    .option('-y, --yes', 'do not ask for confirmation')
    .option('--json', 'JSON lines: progress, then one result')
    .addHelpText(
      'after',
      `
What happens:
  1. the archive is checked (every checksum) while it is extracted to a staging folder
     inside each target; a bad archive stops here and nothing is changed;
  2. a safety backup of the current data is taken (trigger "pre-restore");
  3. the staged data is swapped in entry by entry, then PostgreSQL databases are
     replaced (pg_restore, one transaction); any failure rolls everything back.
  Paths the backup excluded (e.g. logs) are left as they are. A crash at any point is
  finished or rolled back by the next stowage command. The server need not be running.

Examples:
  $ stowage restore app_20250101120000.zip --dry-run
  $ stowage restore app_20250101120000.zip --source db --yes
  $ stowage restore ./copied-from-elsewhere.zip --target /tmp/inspect

Exit status: 0 restored, 1 failed (data unchanged), 2 usage error, 3 restored with errors.`,
    )
    .action(
      engineAction(async (out, stowage, target: string, opts: { dryRun?: boolean; source: string[]; target?: string; safetyBackup: boolean; force?: boolean; yes?: boolean }) => {
        if (!opts.dryRun && !opts.yes && !opts.force && process.stdin.isTTY && !out.json) {
          const manifest = await stowage.readManifest(target);
          const rl = readline.createInterface({ input: process.stdin, output: process.stderr });
          const answer = await rl.question(
            `This replaces the current data of ${manifest.sources.filter((s) => !opts.source.length || opts.source.includes(s.name)).map((s) => s.name).join(', ')} with backup ${manifest.key} (created ${manifest.createdAt}).\n` +
              `${opts.safetyBackup ? 'A safety backup of the current data is taken first.' : 'NO safety backup will be taken.'} Type "yes" to continue: `,
          );
          rl.close();
          if (answer.trim().toLowerCase() !== 'yes') throw new StowageError('USAGE', 'restore cancelled; nothing was changed');
        }
        stowage.on('restore.progress', (p) => out.progress('restore', p));
        const t0 = Date.now();
        const outcome = await stowage.restore(target, { dryRun: opts.dryRun, sources: opts.source, force: opts.force, targetDir: opts.target, safetyBackup: opts.safetyBackup ? undefined : false });
        if (opts.dryRun) {
          out.result({ ok: true, dryRun: true, plan: outcome.plan });
          printPlan(out, outcome.plan ?? []);
          return EXIT.OK;
        }
        const s = outcome.status;
        out.result({ ok: true, status: s });
        out.info(`${s.status === 'completed' ? 'Restored' : 'Restored with errors'}: ${s.key} in ${formatDuration(Date.now() - t0)}.`);
        for (const r of s.sources) out.info(`  ${r.name.padEnd(12)} ${r.status.padEnd(9)} ${formatCount(r.files)} files, ${formatBytes(r.bytes)} -> ${r.target}${r.errors.length ? `\n    ${r.errors.slice(0, 10).join('\n    ')}` : ''}`);
        if (s.safetyBackupKey) out.info(`  the data as it was before is in backup ${s.safetyBackupKey} (undo with: stowage restore ${s.safetyBackupKey})`);
        return s.status === 'completed' ? EXIT.OK : EXIT.WARNINGS;
      }),
    );
}
