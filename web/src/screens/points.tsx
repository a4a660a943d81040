import { useEffect, useState } from 'preact/hooks';
import { client, errorText, type Backup, type CreatePointBody, type Point, type PointRun, type UpdatePointBody } from '../api.js';
import { dateTime, relative } from '../format.js';
import { throttle, useEvents } from '../live.js';
import { ConfirmDialog, Dialog, Empty, ErrorNote, FieldError, StatusBadge, useSubmit } from '../ui.js';

/** The URL rules of each method, checked as you type (the server checks them again). */
export function pointUrlProblem(method: 'git' | 's3', url: string, archive: boolean): string | null {
  const u = url.trim();
  if (!u) return 'a URL is needed';
  if (/^[\w.-]+@[\w.-]+:/.test(u)) return 'SSH addresses (user@host:path) are not supported: use the repository\'s https:// URL';
  let parsed: URL;
  try {
    parsed = new URL(u);
  } catch {
    return 'not a URL: it starts with http:// or https://';
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return `only http and https URLs, not ${parsed.protocol.replace(':', '')}`;
  if (parsed.username || parsed.password) return 'no user:password@ in the URL: use the credential fields';
  if (method === 's3') {
    const path = parsed.pathname.replace(/^\/+|\/+$/g, '');
    const virtualHosted = /\.s3[.-]/.test(parsed.hostname);
    if (!virtualHosted && !path) return 'name the bucket: https://host/bucket/folder';
    if (archive && !/\.zip$/i.test(path)) return 'with "one ZIP", the URL ends in the file name, e.g. …/bucket/site.zip';
    if (!archive && /\.zip$/i.test(path)) return 'a .zip URL needs "one ZIP" (archive) mode';
  } else if (parsed.pathname.replace(/\/+$/, '') === '') return 'name the repository: https://host/owner/repo';
  return null;
}

export function PointsScreen() {
  const [points, setPoints] = useState<Point[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [editing, setEditing] = useState<Point | 'new' | null>(null);
  const [remove, setRemove] = useState<Point | null>(null);
  const [running, setRunning] = useState<Record<string, boolean>>({});
  const [runResult, setRunResult] = useState<Record<string, PointRun | { error: string }>>({});
  const [sources, setSources] = useState<string[]>([]);
  const load = () => client.points.list().then(setPoints, setError);
  const [reload] = useState(() => throttle(() => void load(), 300));
  useEffect(() => {
    void load();
    // The dir sources backed up so far, to choose from (a point pushes a dir source).
    client.backups.list().then(
      (list: Backup[]) => setSources([...new Set(list.flatMap((b) => b.sources.filter((s) => s.kind === 'dir').map((s) => s.name)))]),
      () => {},
    );
  }, []);
  useEvents((e) => {
    if (e.type.startsWith('point.') || e.type === 'backup.created') reload();
  });

  const run = async (p: Point) => {
    setRunning((r) => ({ ...r, [p.name]: true }));
    try {
      const result = await client.points.run(p.name);
      setRunResult((r) => ({ ...r, [p.name]: result }));
    } catch (err) {
      setRunResult((r) => ({ ...r, [p.name]: { error: errorText(err) } }));
    } finally {
      setRunning((r) => ({ ...r, [p.name]: false }));
      void load();
    }
  };

  return (
    <section aria-labelledby="points-title">
      <div class="screen-head">
        <h1 id="points-title">Backup points</h1>
        <div class="actions">
          <button type="button" class="primary" onClick={() => setEditing('new')}>
            New point
          </button>
        </div>
      </div>
      <p class="muted">A point pushes a folder source's current files to a Git repository or an S3 bucket after every backup of that source (or when you run it).</p>
      <ErrorNote error={error} />
      {points && !points.length ? <Empty>No backup points yet.</Empty> : null}
      {points && points.length ? (
        <div class="table-wrap">
          <table class="responsive">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Source</th>
                <th scope="col">Destination</th>
                <th scope="col">Last run</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {points.map((p) => {
                const last = runResult[p.name] && !('error' in runResult[p.name]!) ? (runResult[p.name] as PointRun) : p.lastRun;
                const runError = runResult[p.name] && 'error' in runResult[p.name]! ? (runResult[p.name] as { error: string }).error : null;
                return (
                  <tr key={p.name} data-point={p.name}>
                    <td data-label="Name">
                      <strong>{p.name}</strong>
                      {p.origin === 'config' ? <span class="muted small block">from stowage.yaml</span> : null}
                    </td>
                    <td data-label="Source">{p.source}</td>
                    <td data-label="Destination">
                      <span class="badge">{p.method}</span> <code class="break">{p.url}</code>
                      <span class="muted small block">
                        {p.afterBackup ? 'after every backup' : 'by hand only'}
                        {p.method === 's3' ? (p.archive ? ' · one ZIP' : ` · mirror${p.prune ? ', prune' : ''}`) : p.branch ? ` · branch ${p.branch}` : ''}
                      </span>
                    </td>
                    <td data-label="Last run" data-testid="point-last-run">
                      {running[p.name] ? (
                        <span class="badge run">running…</span>
                      ) : last ? (
                        <>
                          <StatusBadge status={last.status} /> <span class="muted small" title={dateTime(last.startedAt)}>{relative(last.startedAt)}</span>
                          {last.message ? <span class={`reason ${last.status === 'failed' ? 'bad' : ''}`}>{last.message}</span> : null}
                        </>
                      ) : (
                        <span class="muted">never</span>
                      )}
                      {runError ? <span class="reason bad">{runError}</span> : null}
                    </td>
                    <td class="row-actions">
                      <button type="button" disabled={running[p.name]} onClick={() => void run(p)} aria-label={`Run ${p.name} now`}>
                        Run now
                      </button>
                      {p.origin === 'api' ? (
                        <>
                          <button type="button" onClick={() => setEditing(p)} aria-label={`Edit ${p.name}`}>
                            Edit
                          </button>
                          <button type="button" class="danger" onClick={() => setRemove(p)} aria-label={`Delete ${p.name}`}>
                            Delete
                          </button>
                        </>
                      ) : null}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      ) : null}
      {editing ? <PointDialog point={editing === 'new' ? null : editing} sources={sources} onClose={() => setEditing(null)} onSaved={() => void load()} /> : null}
      {remove ? (
        <ConfirmDialog
          title="Delete backup point"
          action="Delete"
          onClose={() => setRemove(null)}
          onConfirm={async () => {
            await client.points.delete(remove.name);
            setRemove(null);
            void load();
          }}
        >
          <p>
            Delete the point <strong>{remove.name}</strong>? What it pushed stays where it is; its runs stay in the history.
          </p>
        </ConfirmDialog>
      ) : null}
    </section>
  );
}

function PointDialog(props: { point: Point | null; sources: string[]; onClose: () => void; onSaved: () => void }) {
  const p = props.point;
  const [name, setName] = useState(p?.name ?? '');
  const [source, setSource] = useState(p?.source ?? props.sources[0] ?? '');
  const [method, setMethod] = useState<'git' | 's3'>(p?.method ?? 'git');
  const [url, setUrl] = useState(p?.url ?? '');
  const [ignore, setIgnore] = useState((p?.ignore ?? []).join('\n'));
  const [afterBackup, setAfterBackup] = useState(p?.afterBackup ?? true);
  const [username, setUsername] = useState(p?.username ?? '');
  const [password, setPassword] = useState(p?.password ?? '');
  const [branch, setBranch] = useState(p?.branch ?? '');
  const [accessKeyId, setAccessKeyId] = useState(p?.accessKeyId ?? '');
  const [secretAccessKey, setSecretAccessKey] = useState(p?.secretAccessKey ?? '');
  const [region, setRegion] = useState(p?.region ?? '');
  const [archive, setArchive] = useState(p?.archive ?? false);
  const [prune, setPrune] = useState(p?.prune ?? false);
  const [touched, setTouched] = useState(false);
  const urlProblem = pointUrlProblem(method, url, archive);

  const { submit, error, busy } = useSubmit(
    async () => {
      const common = { source, method, url: url.trim(), ignore: ignore.split('\n').map((l) => l.trim()).filter(Boolean), afterBackup };
      const fields = method === 'git' ? { username, password, branch } : { accessKeyId, secretAccessKey, region, archive, prune };
      if (p) await client.points.update(p.name, { ...common, ...fields } as UpdatePointBody);
      else await client.points.create({ name, ...common, ...Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== '')) } as CreatePointBody);
      props.onSaved();
      props.onClose();
    },
    () => {
      setTouched(true);
      return !urlProblem;
    },
  );

  return (
    <Dialog title={p ? `Edit ${p.name}` : 'New backup point'} onClose={props.onClose} wide>
      <form onSubmit={submit}>
        <ErrorNote error={error} />
        <div class="grid two">
          <label>
            Name
            <input required disabled={!!p} value={name} onInput={(e) => setName(e.currentTarget.value)} placeholder="e.g. config-history" autoFocus={!p} />
            <FieldError error={error} field="name" />
          </label>
          <label>
            Source <span class="muted">(a folder source)</span>
            <input required list="point-sources" value={source} onInput={(e) => setSource(e.currentTarget.value)} />
            <datalist id="point-sources">
              {props.sources.map((s) => (
                <option key={s} value={s} />
              ))}
            </datalist>
            <FieldError error={error} field="source" />
          </label>
        </div>
        <fieldset class="inline">
          <legend>Method</legend>
          <label class="check">
            <input type="radio" name="method" value="git" checked={method === 'git'} onChange={() => setMethod('git')} /> Git repository
          </label>
          <label class="check">
            <input type="radio" name="method" value="s3" checked={method === 's3'} onChange={() => setMethod('s3')} /> S3 bucket
          </label>
        </fieldset>
        <label>
          URL
          <input
            required
            value={url}
            onInput={(e) => setUrl(e.currentTarget.value)}
            onBlur={() => setTouched(true)}
            aria-invalid={touched && !!urlProblem}
            placeholder={method === 'git' ? 'https://github.com/owner/repo' : archive ? 'https://s3.eu-central-1.amazonaws.com/bucket/site.zip' : 'https://s3.eu-central-1.amazonaws.com/bucket/folder'}
            spellcheck={false}
          />
          {touched && urlProblem ? <span class="field-error">{urlProblem}</span> : <FieldError error={error} field="url" />}
        </label>
        {method === 'git' ? (
          <div class="grid three">
            <label>
              Username
              <input value={username} onInput={(e) => setUsername(e.currentTarget.value)} autoComplete="off" />
            </label>
            <label>
              Password or access token
              <input type="password" value={password} onInput={(e) => setPassword(e.currentTarget.value)} autoComplete="new-password" />
            </label>
            <label>
              Branch <span class="muted">(empty: default)</span>
              <input value={branch} onInput={(e) => setBranch(e.currentTarget.value)} />
            </label>
          </div>
        ) : (
          <>
            <div class="grid three">
              <label>
                Access key ID
                <input value={accessKeyId} onInput={(e) => setAccessKeyId(e.currentTarget.value)} autoComplete="off" />
              </label>
              <label>
                Secret access key
                <input type="password" value={secretAccessKey} onInput={(e) => setSecretAccessKey(e.currentTarget.value)} autoComplete="new-password" />
              </label>
              <label>
                Region <span class="muted">(from the URL when it names one)</span>
                <input value={region} onInput={(e) => setRegion(e.currentTarget.value)} />
              </label>
            </div>
            <label class="check">
              <input type="checkbox" checked={archive} onChange={(e) => setArchive(e.currentTarget.checked)} />
              <span>One ZIP at the URL (instead of one object per file)</span>
            </label>
            {!archive ? (
              <label class="check">
                <input type="checkbox" checked={prune} onChange={(e) => setPrune(e.currentTarget.checked)} />
                <span>Delete objects no longer in the source (prune)</span>
              </label>
            ) : null}
          </>
        )}
        <label>
          Ignore <span class="muted">(fnmatch rules, one a line)</span>
          <textarea rows={2} value={ignore} onInput={(e) => setIgnore(e.currentTarget.value)} />
        </label>
        <label class="check">
          <input type="checkbox" checked={afterBackup} onChange={(e) => setAfterBackup(e.currentTarget.checked)} />
          <span>Run after every backup of the source</span>
        </label>
        {p ? <p class="muted small">Credentials shown as ****** are kept unless you type new ones.</p> : null}
        <div class="buttons">
          <button type="button" onClick={props.onClose}>
            Cancel
          </button>
          <button class="primary" disabled={busy}>
            {busy ? 'Saving…' : p ? 'Save' : 'Add point'}
          </button>
        </div>
      </form>
    </Dialog>
  );
}
