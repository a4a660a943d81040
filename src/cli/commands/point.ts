import type { Command } from 'commander';
import { formatAge } from '../format.js';
import { engineAction, EXIT } from '../runtime.js';

/** `stowage point run|list`: backup points, copies of a source pushed elsewhere. */
export function registerPoint(program: Command): void {
  const cmd = program
    .command('point')
    .description('backup points: push a source\'s current files to a Git repository or an S3 bucket (after every backup, or now)')
    .addHelpText(
      'after',
      `
Points are declared in stowage.yaml:

  points:
    - name: config-history
      source: files                  # a dir source
      method: git
      url: https://git.example.com/ops/app-config.git
      username: stowage
      password: \${GIT_TOKEN}         # from the environment; never written to disk
      branch: ""                     # "" = the repository's default branch
      ignore: ["*.log", "cache"]     # fnmatch rules, like excludes
      afterBackup: true              # push after every backup of that source (default)
    - name: files-offsite
      source: files
      method: s3
      url: https://s3.eu-north-1.amazonaws.com/acme-mirror/files   # or http://127.0.0.1:9000/bucket/folder
      accessKeyId: \${S3_KEY}
      secretAccessKey: \${S3_SECRET}
      archive: false                 # false: mirror the files; true: one ZIP (the URL ends in .zip)
      prune: true                    # mirror: delete objects no longer in the source

Points can also be managed through the API (/api/points) while the server runs; their
credentials are stored encrypted (key: STOWAGE_SECRET, else <dataDir>/secret.key).

Examples:
  $ stowage point list
  $ stowage point run config-history`,
    );

  cmd
    .command('run')
    .argument('<name>', 'a point from "stowage point list"')
    .description('push the source now; commits only when something changed')
    .option('--json', 'print one JSON result line')
    .action(
      engineAction(async (out, stowage, name: string) => {
        const run = await stowage.runPoint(name);
        out.result({ ok: run.status !== 'failed', run });
        if (run.status === 'failed') {
          process.stderr.write(`FAILED: point ${name}: ${run.message}\n`);
          return EXIT.ERROR;
        }
        out.info(`${run.status === 'updated' ? 'Pushed' : 'Unchanged'}: ${run.message}`);
      }),
    );

  cmd
    .command('list')
    .description('the configured points and how their last run went')
    .option('--json', 'print one JSON result line')
    .action(
      engineAction(async (out, stowage) => {
        const points = stowage.listPoints();
        out.result({ ok: true, points });
        if (!points.length) out.info('No backup points. Declare them under points: in stowage.yaml ("stowage point --help" shows how), or add them with POST /api/points.');
        for (const p of points) {
          const last = p.lastRun ? `${p.lastRun.status} ${formatAge(p.lastRun.startedAt)}: ${p.lastRun.message}` : 'never run';
          const mode = p.method === 'git' ? (p.branch ? ` (${p.branch})` : '') : p.archive ? ' (one ZIP)' : ` (mirror${p.prune ? ', prune' : ''})`;
          out.info(`${p.name}  ${p.method} ${p.url}${mode}  source ${p.source}  from ${p.origin === 'config' ? 'stowage.yaml' : 'the API'}  last: ${last}`);
        }
      }),
    );
}
