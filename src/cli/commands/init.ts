import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { CONFIG_FILE_NAME } from '../../config/load.js';
import { configTemplate } from '../../config/template.js';
import { StowageError } from '../../errors.js';
import { action } from '../runtime.js';

export function registerInit(program: Command): void {
  program
    .command('init')
    .description(`write a commented ${CONFIG_FILE_NAME} in the current folder to edit`)
    .option('--app <name>', 'the application name recorded in backups', path.basename(process.cwd()))
    .option('--force', `overwrite an existing ${CONFIG_FILE_NAME}`)
    .option('--json', 'print one JSON result line')
    .addHelpText('after', `\nExamples:\n  $ cd /srv/myapp && stowage init --app myapp\n  $ $EDITOR ${CONFIG_FILE_NAME} && stowage backup`)
    .action(
      action(async (out, opts: { app: string; force?: boolean }) => {
        const file = path.resolve(CONFIG_FILE_NAME);
        if (fs.existsSync(file) && !opts.force) throw new StowageError('USAGE', `${file} already exists; edit it, or pass --force to overwrite it`);
        fs.writeFileSync(file, configTemplate(opts.app.replace(/[^A-Za-z0-9_.-]/g, '-') || 'app'));
        out.result({ ok: true, path: file });
        out.info(`Wrote ${file}. Edit its sources, then run: stowage backup`);
      }),
    );
}
