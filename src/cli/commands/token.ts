import type { Command } from 'commander';
import { SCOPES, type Scope } from '../../server/scopes.js';
import { authService, collect, engineAction } from '../runtime.js';

/** `stowage token create|list|revoke`: API tokens for scripts, limited by scopes. */
export function registerToken(program: Command): void {
  const cmd = program
    .command('token')
    .description('manage API tokens for scripts (each limited to scopes)')
    .addHelpText(
      'after',
      `
Scopes: ${SCOPES.join(', ')}

Examples:
  $ stowage token create monitoring --scope backups:read
  $ stowage token create nightly-pull --scope backups:read --scope backups:download --expires-days 90
  $ stowage token list
  $ stowage token revoke 3f2a9c0d1b4e

The token is printed once; Stowage keeps only its hash. Send it as "Authorization: <token>".`,
    );

  cmd
    .command('create')
    .argument('<name>', 'what the token is for, e.g. "monitoring"')
    .requiredOption('-s, --scope <scope>', 'a scope to grant (repeat for several)', collect)
    .option('--expires-days <n>', 'expire after N days (default: never)', (v) => Number(v))
    .option('--json', 'print one JSON result line')
    .description('create an API token; it is shown once')
    .action(
      engineAction(async (out, stowage, name: string, opts: { scope: string[]; expiresDays?: number }) => {
        const created = (await authService(stowage)).createApiToken(name, opts.scope as Scope[], opts.expiresDays);
        out.result({ ok: true, ...created });
        out.info(`Created API token "${name}" (${created.record.id}) with ${created.record.scopes.join(', ')}.`);
        out.info('Store it now; it cannot be shown again:');
        out.info(`  ${created.token}`);
      }),
    );

  cmd
    .command('list')
    .option('--json', 'print one JSON result line')
    .description('list API tokens (never their secrets)')
    .action(
      engineAction(async (out, stowage) => {
        const tokens = (await authService(stowage)).listApiTokens();
        out.result({ ok: true, tokens });
        if (!tokens.length) out.info('No API tokens. Create one with: stowage token create NAME --scope backups:read');
        for (const t of tokens) out.info(`${t.id}  ${t.name}  ${t.scopes.join(',')}  last used ${t.lastUsedAt ?? 'never'}${t.expiresAt ? `  expires ${t.expiresAt}` : ''}`);
      }),
    );

  cmd
    .command('revoke')
    .argument('<id>', 'the token id from "stowage token list"')
    .option('--json', 'print one JSON result line')
    .description('revoke an API token at once')
    .action(
      engineAction(async (out, stowage, id: string) => {
        (await authService(stowage)).revokeApiToken(id);
        out.result({ ok: true, revoked: id });
        out.info(`Revoked API token ${id}.`);
      }),
    );
}
