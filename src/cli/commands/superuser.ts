import type { Command } from 'commander';
import { authService, engineAction } from '../runtime.js';
import { readSecret } from '../secret-prompt.js';

/** `stowage superuser create|update|delete|list`: works with the server stopped. */
export function registerSuperuser(program: Command): void {
  const cmd = program
    .command('superuser')
    .description('manage the superusers who may use the API (works while the server is stopped)')
    .addHelpText(
      'after',
      `
Examples:
  $ stowage superuser create admin@example.com            asks for the password
  $ echo "$PASSWORD" | stowage superuser create admin@example.com
  $ stowage superuser update admin@example.com            new password; ends its sessions
  $ stowage superuser delete admin@example.com
  $ stowage superuser list

Passwords need at least 10 characters. Passing PASSWORD as an argument works but leaves it in
your shell history; prefer the prompt or stdin. STOWAGE_ADMIN_EMAIL and STOWAGE_ADMIN_PASSWORD
create or update a superuser every time the server starts.`,
    );

  const password = async (given: string | undefined) => given ?? (await readSecret('Password (at least 10 characters): '));

  cmd
    .command('create')
    .argument('<email>')
    .argument('[password]', 'default: asked for (or read from stdin)')
    .description('create a superuser')
    .option('--json', 'print one JSON result line')
    .action(
      engineAction(async (out, stowage, email: string, pw: string | undefined) => {
        const user = await (await authService(stowage)).createSuperuser(email, await password(pw));
        out.result({ ok: true, superuser: user });
        out.info(`Created superuser ${user.email}. Log in with POST /api/collections/_superusers/auth-with-password.`);
      }),
    );

  cmd
    .command('update')
    .argument('<email>')
    .argument('[password]', 'default: asked for (or read from stdin)')
    .description("change a superuser's password (their sessions end)")
    .option('--json', 'print one JSON result line')
    .action(
      engineAction(async (out, stowage, email: string, pw: string | undefined) => {
        const user = await (await authService(stowage)).updateSuperuser(email, await password(pw));
        out.result({ ok: true, superuser: user });
        out.info(`Updated superuser ${user.email}; their existing sessions have ended.`);
      }),
    );

  cmd
    .command('delete')
    .argument('<email>')
    .description('delete a superuser (their sessions end)')
    .option('--json', 'print one JSON result line')
    .action(
      engineAction(async (out, stowage, email: string) => {
        (await authService(stowage)).deleteSuperuser(email);
        out.result({ ok: true, deleted: email });
        out.info(`Deleted superuser ${email}.`);
      }),
    );

  cmd
    .command('list')
    .description('list superusers')
    .option('--json', 'print one JSON result line')
    .action(
      engineAction(async (out, stowage) => {
        const users = (await authService(stowage)).listSuperusers();
        out.result({ ok: true, superusers: users });
        if (!users.length) out.info('No superusers. Create one with: stowage superuser create EMAIL');
        for (const u of users) out.info(`${u.email}  (created ${u.created})`);
      }),
    );
}
