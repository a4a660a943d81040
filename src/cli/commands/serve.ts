import type { Command } from 'commander';
import { action, globalOptions } from '../runtime.js';

/** `stowage serve` (what `npm start` runs): the REST API on the same engine as the CLI. */
export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('run the server: REST API, download tokens, uploads, restore jobs, events (what "npm start" runs)')
    .option('--http <host:port>', 'address to listen on (default: $STOWAGE_HTTP, else server.http, else 127.0.0.1:8090)')
    .addHelpText(
      'after',
      `
Examples:
  $ stowage serve                               127.0.0.1:8090
  $ stowage serve --http 0.0.0.0:8090           every interface (put TLS in front of it)
  $ STOWAGE_ADMIN_EMAIL=me@example.com STOWAGE_ADMIN_PASSWORD=... stowage serve

At first start without a superuser it prints a one-time setup link (valid one hour).
STOWAGE_BACKUP_KEY (20+ characters) turns on POST /api/backups/export.
The CLI keeps working while the server runs; both take the same lock for backups and restores.
The API is described in docs/API.md and served at /api/openapi.json.`,
    )
    .action(
      action(async (_out, opts: { http?: string }, cmd: Command) => {
        // Loaded here, not at the top: Fastify and its plugins would slow every other command's start.
        const { serveForever } = await import('../../server/start.js');
        await serveForever({ http: opts.http, configPath: globalOptions(cmd).config });
        await new Promise(() => {}); // runs until a signal stops it
      }),
    );
}
