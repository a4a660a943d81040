import type { Command } from 'commander';
import { engineAction, EXIT } from '../runtime.js';

/** `stowage retry-uploads`: push backups that wait in the local outbox to S3 now. */
export function registerRetryUploads(program: Command): void {
  program
    .command('retry-uploads')
    .description('upload backups that are waiting locally because S3 could not take them (status "uploading")')
    .option('--json', 'print one JSON result line')
    .addHelpText(
      'after',
      `
With S3 storage every archive is written to <dataDir>/outbox first, then uploaded. When the
upload fails (S3 down, wrong credentials, a full bucket) the archive stays there: it is listed
with status "uploading", can be restored and downloaded, and is uploaded again after the next
backup, every 5 minutes while the server runs, or by this command.

Examples:
  $ stowage retry-uploads
  $ stowage retry-uploads --json | jq .failed

Exit status: 0 all uploaded (or nothing waiting), 1 some could not be uploaded.`,
    )
    .action(
      engineAction(async (out, stowage) => {
        const waiting = await stowage.pendingUploads();
        if (!waiting.length) {
          out.result({ ok: true, pushed: [], failed: [] });
          out.info('Nothing is waiting to be uploaded.');
          return EXIT.OK;
        }
        out.info(`Uploading ${waiting.length} backup${waiting.length === 1 ? '' : 's'} to ${stowage.storage.description} ...`);
        const result = await stowage.retryUploads();
        out.result({ ok: result.failed.length === 0, ...result });
        for (const key of result.pushed) out.info(`  uploaded ${key}`);
        for (const f of result.failed) out.info(`  FAILED ${f.key}: ${f.message}`);
        return result.failed.length ? EXIT.ERROR : EXIT.OK;
      }),
    );
}
