import type { Command } from 'commander';
import { loadConfig, maskConfig } from '../../config/load.js';
import { action, globalOptions } from '../runtime.js';

export function registerConfig(program: Command): void {
  program
    .command('show-config')
    .description('validate the configuration and print it with every default filled in and every path resolved')
    .option('--json', 'print one JSON result line')
    .addHelpText('after', '\nExamples:\n  $ stowage show-config\n  $ STOWAGE_CONFIG=/etc/stowage.yaml stowage show-config --json')
    .action(
      action(async (out, _opts: unknown, cmd: Command) => {
        const config = maskConfig(loadConfig({ configPath: globalOptions(cmd).config })); // secrets masked
        out.result({ ok: true, config });
        out.info(`# ${config.configPath ?? 'embedded default (no stowage.yaml found)'}: valid`);
        out.info(JSON.stringify(config, null, 2));
      }),
    );
}
