import { useEffect, useState } from 'preact/hooks';
import { SCOPES, type Scope } from '../../../src/server/scopes.js';
import { client, type ApiToken, type CreatedApiToken } from '../api.js';
import { dateTime, relative } from '../format.js';
import { ConfirmDialog, Dialog, Empty, ErrorNote, FieldError, SecretOnce, useSubmit } from '../ui.js';

const SCOPE_HELP: Record<Scope, string> = {
  'backups:read': 'list, info, manifest, restore status, jobs, events',
  'backups:create': 'create a backup, upload an archive, run backup points',
  'backups:download': 'download archives',
  'backups:restore': 'restore, factory reset',
  'backups:delete': 'delete a backup, run retention',
  'backups:export': 'stream a fresh backup (with STOWAGE_BACKUP_KEY)',
  settings: 'settings, webhooks, backup points',
};

export function TokensScreen() {
  const [tokens, setTokens] = useState<ApiToken[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [creating, setCreating] = useState(false);
  const [revoke, setRevoke] = useState<ApiToken | null>(null);
  const load = () => client.tokens.list().then(setTokens, setError);
  useEffect(() => void load(), []);

  return (
    <section aria-labelledby="tokens-title">
      <div class="screen-head">
        <h1 id="tokens-title">API tokens</h1>
        <div class="actions">
          <button type="button" class="primary" onClick={() => setCreating(true)}>
            New token
          </button>
        </div>
      </div>
      <p class="muted">For scripts and monitoring: a token is limited to its scopes, can expire, and is revoked on its own. Stowage keeps only its hash, so it is shown once.</p>
      <ErrorNote error={error} />
      {tokens && !tokens.length ? <Empty>No API tokens.</Empty> : null}
      {tokens && tokens.length ? (
        <div class="table-wrap">
          <table class="responsive">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Scopes</th>
                <th scope="col">Created</th>
                <th scope="col">Last used</th>
                <th scope="col">Expires</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {tokens.map((t) => (
                <tr key={t.id}>
                  <td data-label="Name">
                    {t.name} <span class="muted small">{t.id}</span>
                  </td>
                  <td data-label="Scopes">
                    {t.scopes.map((s) => (
                      <span key={s} class="badge">
                        {s}
                      </span>
                    ))}
                  </td>
                  <td data-label="Created">{dateTime(t.createdAt)}</td>
                  <td data-label="Last used">{t.lastUsedAt ? relative(t.lastUsedAt) : 'never'}</td>
                  <td data-label="Expires">{t.expiresAt ? dateTime(t.expiresAt) : 'never'}</td>
                  <td class="row-actions">
                    <button type="button" class="danger" onClick={() => setRevoke(t)} aria-label={`Revoke ${t.name}`}>
                      Revoke
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
      {creating ? <CreateToken onClose={() => setCreating(false)} onCreated={() => void load()} /> : null}
      {revoke ? (
        <ConfirmDialog
          title="Revoke API token"
          action="Revoke"
          onClose={() => setRevoke(null)}
          onConfirm={async () => {
            await client.tokens.revoke(revoke.id);
            setRevoke(null);
            void load();
          }}
        >
          <p>
            Revoke <strong>{revoke.name}</strong>? Scripts using it are refused from now on.
          </p>
        </ConfirmDialog>
      ) : null}
    </section>
  );
}

function CreateToken(props: { onClose: () => void; onCreated: () => void }) {
  const [name, setName] = useState('');
  const [scopes, setScopes] = useState<Scope[]>(['backups:read']);
  const [days, setDays] = useState('');
  const [made, setMade] = useState<CreatedApiToken | null>(null);
  const { submit, error } = useSubmit(async () => {
    const t = await client.tokens.create({ name, scopes, ...(days ? { expiresInDays: Number(days) } : {}) });
    setMade(t);
    props.onCreated();
  });
  if (made)
    return (
      <SecretOnce title="New API token" warning="Store it now: it cannot be shown again." label="The new token" value={made.token} onClose={props.onClose}>
        <p class="muted small">
          Send it as <code>Authorization: {made.token.slice(0, 16)}…</code>
        </p>
      </SecretOnce>
    );
  return (
    <Dialog title="New API token" onClose={props.onClose}>
      <form onSubmit={submit}>
        <ErrorNote error={error} />
        <label>
          Name
          <input required value={name} onInput={(e) => setName(e.currentTarget.value)} placeholder="e.g. nightly-pull" autoFocus />
          <FieldError error={error} field="name" />
        </label>
        <fieldset>
          <legend>Scopes</legend>
          {SCOPES.map((s) => (
            <label class="check" key={s}>
              <input type="checkbox" checked={scopes.includes(s)} onChange={(e) => setScopes(e.currentTarget.checked ? [...scopes, s] : scopes.filter((x) => x !== s))} />
              <span>
                <code>{s}</code> <span class="muted small">{SCOPE_HELP[s]}</span>
              </span>
            </label>
          ))}
        </fieldset>
        <label class="narrow">
          Expires after (days) <span class="muted">(empty: never)</span>
          <input type="number" min={1} value={days} onInput={(e) => setDays(e.currentTarget.value)} />
        </label>
        <div class="buttons">
          <button type="button" onClick={props.onClose}>
            Cancel
          </button>
          <button class="primary" disabled={!name || !scopes.length}>
            Create token
          </button>
        </div>
      </form>
    </Dialog>
  );
}
