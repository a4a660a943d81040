import type { Command } from 'commander';
import { describeCron, mergePatch, previewCron } from '../../config/settings-store.js';
import { StowageError } from '../../errors.js';
import { engineAction } from '../runtime.js';

/** "true" → true, "7" → 7, '{"keepDaily":7}' → object; anything else stays a string. */
function parseValue(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

/** `backups.retention.keepDaily` + 7 → { backups: { retention: { keepDaily: 7 } } } */
function nest(path: string, value: unknown): Record<string, unknown> {
  const parts = path.split('.');
  if (parts.some((p) => !/^[A-Za-z][A-Za-z0-9]*$/.test(p))) throw new StowageError('USAGE', `"${path}" is not a setting name; names look like backups.cron or backups.retention.keepDaily`);
  return parts.reduceRight<Record<string, unknown>>((inner, key, i) => ({ [key]: i === parts.length - 1 ? value : inner }), {});
}

/** `stowage settings get|set`: the same settings as GET/PATCH /api/settings. */
export function registerSettings(program: Command): void {
  const cmd = program
    .command('settings')
    .description('show or change the runtime settings: schedule, retention, verification, drills, S3 (works while the server is stopped)')
    .addHelpText(
      'after',
      `
Examples:
  $ stowage settings get
  $ stowage settings set backups.cron "0 3 * * *" backups.cronMaxKeep 14
  $ stowage settings set backups.timezone Europe/Berlin
  $ stowage settings set backups.retention '{"keepDaily": 7, "keepWeekly": 4, "keepMonthly": 12}'
  $ stowage settings set backups.cron ""                     no schedule
  $ stowage settings set verify.cron @weekly drill.cron "0 4 1 * *"

stowage.yaml gives the defaults; what you set here is stored in the data folder and wins.
A running server picks changes up within a minute. docs/SCHEDULING.md explains cron and retention.`,
    );

  cmd
    .command('get')
    .description('print the settings in force (secrets masked)')
    .option('--json', 'print one JSON result line')
    .action(
      engineAction(async (out, stowage) => {
        const settings = stowage.settings.masked();
        out.result({ ok: true, settings });
        const b = settings.backups;
        out.info(`backups.cron        ${b.cron ? `${b.cron}  (${describeCron(b.cron)}, ${b.timezone})` : '(none: no scheduled backups)'}`);
        if (b.cron) out.info(`  next runs         ${previewCron(b.cron, b.timezone, 3).next.join(', ')}`);
        out.info(`backups.cronMaxKeep ${b.cronMaxKeep}`);
        out.info(`backups.runMissed   ${b.runMissed}`);
        out.info(`backups.retention   ${JSON.stringify(b.retention)}`);
        out.info(`backups.s3          ${b.s3.enabled ? `enabled: ${b.s3.bucket} at ${b.s3.endpoint || 'AWS'}` : 'disabled'}`);
        out.info(`verify.cron         ${settings.verify.cron || '(none)'}${settings.verify.cron ? ` (${settings.verify.sample})` : ''}`);
        out.info(`drill.cron          ${settings.drill.cron || '(none)'}`);
      }),
    );

  cmd
    .command('set')
    .argument('<name value...>', 'pairs: NAME VALUE [NAME VALUE ...]; values are JSON when they parse as JSON')
    .description('change settings (checked before anything is saved)')
    .option('--json', 'print one JSON result line')
    .action(
      engineAction(async (out, stowage, pairs: string[]) => {
        if (pairs.length % 2 !== 0) throw new StowageError('USAGE', 'give NAME VALUE pairs, e.g. stowage settings set backups.cron "0 3 * * *"');
        let patch: Parameters<typeof mergePatch>[0] = {};
        for (let i = 0; i < pairs.length; i += 2) patch = mergePatch(patch, nest(pairs[i]!, parseValue(pairs[i + 1]!)) as typeof patch);
        const updated = stowage.settings.masked(stowage.settings.patch(patch));
        out.result({ ok: true, settings: updated });
        out.info('Saved. A running server applies it within a minute.');
      }),
    );
}

