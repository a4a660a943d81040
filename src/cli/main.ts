// The CLI's commands. It is started by bin.cts (the `stowage` command), which sets the thread
// pool size and V8 flags first; running this module directly works, without those.
import { Command, CommanderError } from 'commander';
import { STOWAGE_VERSION } from '../version.js';
import { registerBackup } from './commands/backup.js';
import { registerConfig } from './commands/config.js';
import { registerDelete } from './commands/delete.js';
import { registerDrill } from './commands/drill.js';
import { registerEncryption } from './commands/encryption.js';
import { registerInit } from './commands/init.js';
import { registerList } from './commands/list.js';
import { registerRestore } from './commands/restore.js';
import { registerRestoreStatus } from './commands/restore-status.js';
import { registerRetryUploads } from './commands/retry-uploads.js';
import { registerShow } from './commands/show.js';
import { registerSuperuser } from './commands/superuser.js';
import { registerToken } from './commands/token.js';
import { registerPoint } from './commands/point.js';
import { registerPrune } from './commands/prune.js';
import { registerServe } from './commands/serve.js';
import { registerSettings } from './commands/settings.js';
import { registerVerify } from './commands/verify.js';
import { EXIT } from './runtime.js';

// `stowage list | head` closes stdout early: that is not an error worth a stack trace.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});

const program = new Command();
program
  .name('stowage')
  .version(STOWAGE_VERSION)
  .description('Backups for self-hosted applications: ZIP archives with a manifest and checksums, verified atomic restores.')
  .option('-c, --config <file>', 'configuration file (default: $STOWAGE_CONFIG, else ./stowage.yaml, else the embedded demo default)')
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride()
  .addHelpText(
    'after',
    `
Getting started:
  $ stowage init                 write a commented stowage.yaml here
  $ stowage backup               back up every source
  $ stowage list                 see the backups
  $ stowage restore KEY --dry-run

  $ stowage serve                run the REST API (what "npm start" runs)

Every command works while the application and any Stowage server are stopped.
Exit status: 0 ok, 1 error, 2 usage error, 3 completed with warnings.
"stowage <command> --help" explains each command, with examples.`,
  );

registerInit(program);
registerBackup(program);
registerList(program);
registerShow(program);
registerVerify(program);
registerDrill(program);
registerRestore(program);
registerRestoreStatus(program);
registerDelete(program);
registerRetryUploads(program);
registerEncryption(program);
registerConfig(program);
registerServe(program);
registerSettings(program);
registerPrune(program);
registerPoint(program);
registerSuperuser(program);
registerToken(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
  } else {
    process.stderr.write(`error: ${(err as Error).message}\n`);
    process.exitCode = EXIT.ERROR;
  }
}
