import { useEffect, useState } from 'preact/hooks';
import { client, errorText, type Webhook, type WebhookDelivery } from '../api.js';
import { dateTime, relative } from '../format.js';
import { ConfirmDialog, Dialog, Empty, ErrorNote, FieldError, SecretOnce, StatusBadge, useSubmit } from '../ui.js';

const EVENTS = [
  'backup.failed',
  'backup.created',
  'backup.push_failed',
  'restore.completed',
  'restore.failed',
  'verify.failed',
  'drill.failed',
  'point.failed',
  'schedule.missed',
  'prune.completed',
];

export function WebhooksScreen() {
  const [hooks, setHooks] = useState<Webhook[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [creating, setCreating] = useState(false);
  const [log, setLog] = useState<Webhook | null>(null);
  const [remove, setRemove] = useState<Webhook | null>(null);
  const [results, setResults] = useState<Record<string, string>>({});
  const load = () => client.webhooks.list().then(setHooks, setError);
  useEffect(() => void load(), []);

  const test = async (w: Webhook) => {
    setResults((r) => ({ ...r, [w.id]: 'sending…' }));
    try {
      const d = await client.webhooks.test(w.id);
      setResults((r) => ({ ...r, [w.id]: d.status === 'delivered' ? `delivered (HTTP ${d.lastStatus})` : `failed: ${d.lastError}` }));
    } catch (err) {
      setResults((r) => ({ ...r, [w.id]: `failed: ${errorText(err)}` }));
    }
  };
  const toggle = async (w: Webhook) => {
    try {
      await client.webhooks.update(w.id, { enabled: !w.enabled });
      void load();
    } catch (err) {
      setError(err);
    }
  };

  return (
    <section aria-labelledby="webhooks-title">
      <div class="screen-head">
        <h1 id="webhooks-title">Webhooks</h1>
        <div class="actions">
          <button type="button" class="primary" onClick={() => setCreating(true)}>
            New webhook
          </button>
        </div>
      </div>
      <p class="muted">Stowage POSTs events as signed JSON to these URLs (header Stowage-Signature), with retries: a failed nightly backup reaches a chat channel or a pager.</p>
      <ErrorNote error={error} />
      {hooks && !hooks.length ? <Empty>No webhooks.</Empty> : null}
      {hooks && hooks.length ? (
        <div class="table-wrap">
          <table class="responsive">
            <thead>
              <tr>
                <th scope="col">URL</th>
                <th scope="col">Events</th>
                <th scope="col">State</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {hooks.map((w) => (
                <tr key={w.id}>
                  <td data-label="URL">
                    <code class="break">{w.url}</code>
                    {w.description ? <span class="desc">{w.description}</span> : null}
                    {w.origin === 'config' ? <span class="muted small block">from stowage.yaml (read-only here)</span> : null}
                  </td>
                  <td data-label="Events">
                    {w.events.map((e) => (
                      <span key={e} class="badge">
                        {e}
                      </span>
                    ))}
                  </td>
                  <td data-label="State">
                    {w.enabled ? <span class="badge ok">enabled</span> : <span class="badge">disabled</span>}
                    {results[w.id] ? <span class="muted small block">test: {results[w.id]}</span> : null}
                  </td>
                  <td class="row-actions">
                    <button type="button" onClick={() => void test(w)}>
                      Test
                    </button>
                    <button type="button" onClick={() => setLog(w)}>
                      Deliveries
                    </button>
                    {w.origin === 'api' ? (
                      <>
                        <button type="button" onClick={() => void toggle(w)}>
                          {w.enabled ? 'Disable' : 'Enable'}
                        </button>
                        <button type="button" class="danger" onClick={() => setRemove(w)}>
                          Delete
                        </button>
                      </>
                    ) : null}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
      {creating ? <CreateWebhook onClose={() => setCreating(false)} onCreated={() => void load()} /> : null}
      {log ? <Deliveries hook={log} onClose={() => setLog(null)} /> : null}
      {remove ? (
        <ConfirmDialog
          title="Delete webhook"
          action="Delete"
          onClose={() => setRemove(null)}
          onConfirm={async () => {
            await client.webhooks.delete(remove.id);
            setRemove(null);
            void load();
          }}
        >
          <p>
            Delete the webhook to <code class="break">{remove.url}</code> and its delivery log?
          </p>
        </ConfirmDialog>
      ) : null}
    </section>
  );
}

function CreateWebhook(props: { onClose: () => void; onCreated: () => void }) {
  const [url, setUrl] = useState('');
  const [events, setEvents] = useState<string[]>(['backup.failed', 'restore.failed']);
  const [all, setAll] = useState(false);
  const [description, setDescription] = useState('');
  const [made, setMade] = useState<Webhook | null>(null);
  const { submit, error } = useSubmit(async () => {
    setMade(await client.webhooks.create({ url, events: all ? ['*'] : events, ...(description ? { description } : {}) }));
    props.onCreated();
  });
  if (made)
    return (
      <SecretOnce title="New webhook" warning="Store the signing secret now: it is not shown again." label="Signing secret" value={made.secret} onClose={props.onClose}>
        <p class="muted small">Receivers check each delivery's Stowage-Signature header with it (docs/API.md, Webhooks).</p>
      </SecretOnce>
    );
  return (
    <Dialog title="New webhook" onClose={props.onClose}>
      <form onSubmit={submit}>
        <ErrorNote error={error} />
        <label>
          URL
          <input type="url" required value={url} onInput={(e) => setUrl(e.currentTarget.value)} placeholder="https://hooks.example.com/stowage" autoFocus />
          <FieldError error={error} field="url" />
        </label>
        <fieldset>
          <legend>Events</legend>
          <label class="check">
            <input type="checkbox" checked={all} onChange={(e) => setAll(e.currentTarget.checked)} />
            <span>Every event (except progress)</span>
          </label>
          {!all
            ? EVENTS.map((ev) => (
                <label class="check" key={ev}>
                  <input type="checkbox" checked={events.includes(ev)} onChange={(e) => setEvents(e.currentTarget.checked ? [...events, ev] : events.filter((x) => x !== ev))} />
                  <code>{ev}</code>
                </label>
              ))
            : null}
          <FieldError error={error} field="events" />
        </fieldset>
        <label>
          Description <span class="muted">(optional)</span>
          <input value={description} onInput={(e) => setDescription(e.currentTarget.value)} />
        </label>
        <div class="buttons">
          <button type="button" onClick={props.onClose}>
            Cancel
          </button>
          <button class="primary" disabled={!url || (!all && !events.length)}>
            Add webhook
          </button>
        </div>
      </form>
    </Dialog>
  );
}

function Deliveries(props: { hook: Webhook; onClose: () => void }) {
  const [list, setList] = useState<WebhookDelivery[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => void client.webhooks.deliveries(props.hook.id, { limit: 50 }).then(setList, setError), [props.hook.id]);
  return (
    <Dialog title="Deliveries" onClose={props.onClose} wide>
      <p>
        <code class="break">{props.hook.url}</code>
      </p>
      <ErrorNote error={error} />
      {list && !list.length ? <Empty>Nothing delivered yet.</Empty> : null}
      {list && list.length ? (
        <table>
          <thead>
            <tr>
              <th scope="col">Event</th>
              <th scope="col">When</th>
              <th scope="col">Result</th>
            </tr>
          </thead>
          <tbody>
            {list.map((d) => (
              <tr key={d.id}>
                <td>
                  <code>{d.event}</code>
                </td>
                <td title={dateTime(d.createdAt)}>{relative(d.createdAt)}</td>
                <td>
                  <StatusBadge status={d.status} /> <span class="muted small">{d.attempts} attempt{d.attempts === 1 ? '' : 's'}</span>
                  {d.lastError ? <span class="reason bad">{d.lastError}</span> : null}
                  {d.nextAttemptAt ? <span class="muted small block">next try {relative(d.nextAttemptAt)}</span> : null}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </Dialog>
  );
}
