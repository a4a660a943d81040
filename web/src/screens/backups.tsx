import { useCallback, useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { client, errorText, uploadClient, type Backup, type BackupDetail, type Progress } from '../api.js';
import { bytes, dateTime, fullDateTime, relative } from '../format.js';
import { throttle, useEvents } from '../live.js';
import { RESTORE_PHASES, refreshRestoreStatus, setRestoreStatus, useRestoreStatus } from '../restore-state.js';
import { ConfirmDialog, Dialog, Empty, ErrorNote, JobProgress, StatusBadge, clickDownload, useSubmit } from '../ui.js';
import { DecryptionFields, DownloadDialog, EMPTY_KEY, EncryptionFields, NO_ENCRYPTION_DRAFT, encryptionBody, encryptionProblems, isKeyError, keyBody, type EncryptionDraft, type KeyDraft } from './encryption.js';

type SortKey = 'name' | 'createdAt' | 'size' | 'status' | 'trigger' | 'encrypted' | 'host';
type Outcome = { status: 'completed' | 'failed'; message: string; size?: number };

const COLUMNS: Array<[SortKey, string]> = [
  ['name', 'Name'],
  ['createdAt', 'Created'],
  ['size', 'Size'],
  ['status', 'Status'],
  ['trigger', 'Trigger'],
  ['encrypted', 'Encrypted'],
  ['host', 'Host / app'],
];

function sortValue(b: Backup, key: SortKey): string | number {
  switch (key) {
    case 'name':
      return b.key;
    case 'createdAt':
      return b.createdAt;
    case 'size':
      return b.size;
    case 'status':
      return b.status;
    case 'trigger':
      return b.trigger;
    case 'encrypted':
      return b.encrypted ? 1 : 0;
    case 'host':
      return `${b.hostname} ${b.appName} ${b.appVersion}`;
  }
}

export function BackupsScreen() {
  const [backups, setBackups] = useState<Backup[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [filter, setFilter] = useState('');
  const [statusFilter, setStatusFilter] = useState('');
  const [triggerFilter, setTriggerFilter] = useState('');
  const [sort, setSort] = useState<{ key: SortKey; desc: boolean }>({ key: 'createdAt', desc: true });
  const [progress, setProgress] = useState<Record<string, Progress>>({});
  const [outcomes, setOutcomes] = useState<Record<string, Outcome>>({});
  const [dialog, setDialog] = useState<null | { kind: 'create' } | { kind: 'upload' } | { kind: 'restore'; backup: Backup } | { kind: 'delete'; backup: Backup } | { kind: 'download'; backup: Backup }>(null);
  const [notice, setNotice] = useState<{ text: string; error?: boolean } | null>(null);

  const load = useCallback(async () => {
    try {
      setBackups(await client.backups.list());
      setError(null);
    } catch (err) {
      setError(err);
    }
  }, []);
  const [reload] = useState(() => throttle(() => void load(), 300));
  useEffect(() => void load(), [load]);

  useEvents((e) => {
    const d = e.data as Record<string, unknown>;
    const key = typeof d.key === 'string' ? d.key : '';
    if (e.type === 'backup.progress') {
      const { key: _k, ...p } = d as Progress & { key: string };
      setProgress((all) => ({ ...all, [key]: p }));
    } else if (e.type === 'backup.created') {
      setOutcomes((all) => ({ ...all, [key]: { status: 'completed', message: '', size: Number(d.size) } }));
      reload();
    } else if (e.type === 'backup.failed') {
      const err = d.error as { message?: string } | undefined;
      setOutcomes((all) => ({ ...all, [key]: { status: 'failed', message: err?.message ?? 'the backup failed' } }));
      reload();
    } else if (e.type === 'hello' || e.type.startsWith('backup.') || e.type === 'prune.completed' || e.type === 'restore.completed') {
      reload();
    }
  });

  const triggers = useMemo(() => [...new Set((backups ?? []).map((b) => b.trigger))].sort(), [backups]);
  const shown = useMemo(() => {
    const words = filter.toLowerCase().split(/\s+/).filter(Boolean);
    const list = (backups ?? []).filter((b) => {
      if (statusFilter && b.status !== statusFilter) return false;
      if (triggerFilter && b.trigger !== triggerFilter) return false;
      const hay = `${b.key} ${b.name} ${b.description} ${b.statusMessage} ${b.hostname} ${b.appName} ${b.appVersion} ${Object.values(b.labels).join(' ')}`.toLowerCase();
      return words.every((w) => hay.includes(w));
    });
    const dir = sort.desc ? -1 : 1;
    return list.sort((a, b) => {
      const x = sortValue(a, sort.key);
      const y = sortValue(b, sort.key);
      return (x < y ? -1 : x > y ? 1 : a.createdAt < b.createdAt ? -1 : 1) * dir;
    });
  }, [backups, filter, statusFilter, triggerFilter, sort]);

  const download = async (b: Backup) => {
    try {
      // A 3-minute token for this backup only, in a link clicked once and removed.
      clickDownload(await client.backups.getDownloadURL(b.key), b.key);
      setNotice({ text: `Downloading ${b.key} (${bytes(b.size)})…` });
    } catch (err) {
      setNotice({ text: `Could not download ${b.key}: ${errorText(err)}`, error: true });
    }
  };

  const sortBy = (key: SortKey) => setSort((s) => ({ key, desc: s.key === key ? !s.desc : key === 'createdAt' || key === 'size' }));

  return (
    <section aria-labelledby="backups-title">
      <div class="screen-head">
        <h1 id="backups-title">Backups</h1>
        <div class="actions">
          <button type="button" class="primary" onClick={() => setDialog({ kind: 'create' })}>
            Create backup
          </button>
          <button type="button" onClick={() => setDialog({ kind: 'upload' })}>
            Upload
          </button>
        </div>
      </div>
      {notice ? (
        <div class={`note ${notice.error ? 'error' : 'ok'}`} role="status">
          {notice.text}
          <button type="button" class="icon" aria-label="Dismiss" onClick={() => setNotice(null)}>
            ×
          </button>
        </div>
      ) : null}
      <div class="filters" role="search">
        <label class="grow">
          <span class="sr-only">Filter backups</span>
          <input type="search" placeholder="Filter by name, description, reason, host…" value={filter} onInput={(e) => setFilter(e.currentTarget.value)} />
        </label>
        <label>
          <span class="sr-only">Status</span>
          <select value={statusFilter} onChange={(e) => setStatusFilter(e.currentTarget.value)} aria-label="Status">
            <option value="">Every status</option>
            <option value="completed">completed</option>
            <option value="failed">failed</option>
            <option value="started">started</option>
            <option value="uploading">uploading</option>
          </select>
        </label>
        <label>
          <span class="sr-only">Trigger</span>
          <select value={triggerFilter} onChange={(e) => setTriggerFilter(e.currentTarget.value)} aria-label="Trigger">
            <option value="">Every trigger</option>
            {triggers.map((t) => (
              <option key={t} value={t}>
                {t}
              </option>
            ))}
          </select>
        </label>
      </div>
      <ErrorNote error={error} title="Cannot list the backups" />
      {backups === null && !error ? <p class="muted" aria-busy="true">Loading…</p> : null}
      {backups && !backups.length ? <Empty>No backups yet. Create the first one, or upload an archive made elsewhere.</Empty> : null}
      {backups && backups.length > 0 ? (
        <div class="table-wrap">
          <table class="backups responsive">
            <caption class="sr-only">
              {shown.length} of {backups.length} backups, sorted by {sort.key} {sort.desc ? 'descending' : 'ascending'}
            </caption>
            <thead>
              <tr>
                {COLUMNS.map(([key, label]) => (
                  <th key={key} scope="col" aria-sort={sort.key === key ? (sort.desc ? 'descending' : 'ascending') : undefined}>
                    <button type="button" class="sort" onClick={() => sortBy(key)}>
                      {label}
                      <span aria-hidden="true" class="arrow">
                        {sort.key === key ? (sort.desc ? '▼' : '▲') : ''}
                      </span>
                    </button>
                  </th>
                ))}
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {shown.map((b) => {
                const p = progress[b.key];
                const usable = b.status === 'completed' || b.status === 'uploading';
                return (
                  <tr key={b.key} data-key={b.key} class={b.status}>
                    <td data-label="Name">
                      <span class="key">{b.key}</span>
                      {b.description ? <span class="desc">{b.description}</span> : null}
                    </td>
                    <td data-label="Created" title={fullDateTime(b.createdAt)}>
                      {dateTime(b.createdAt)}
                      <span class="muted small block">{relative(b.createdAt)}</span>
                    </td>
                    <td data-label="Size" class="num">
                      {b.status === 'started' ? (p ? bytes(p.bytes) : '…') : b.status === 'failed' && !b.size ? <span class="muted">—</span> : bytes(b.size)}
                    </td>
                    <td data-label="Status" class="status-cell">
                      <StatusBadge status={b.status} />
                      {b.status === 'started' && p ? <span class="muted small block">{p.phase}</span> : null}
                      {b.statusMessage && b.status !== 'completed' ? <span class={`reason ${b.status === 'failed' ? 'bad' : ''}`}>{b.statusMessage}</span> : null}
                      {b.statusMessage && b.status === 'completed' ? <span class="muted small block">{b.statusMessage}</span> : null}
                    </td>
                    <td data-label="Trigger">{b.trigger}</td>
                    <td data-label="Encrypted">{b.encrypted ? <span class="badge enc">encrypted</span> : <span class="muted">no</span>}</td>
                    <td data-label="Host / app">
                      {b.hostname || '—'}
                      <span class="muted small block">
                        {b.appName} {b.appVersion}
                      </span>
                    </td>
                    <td class="row-actions">
                      <button type="button" disabled={!usable} onClick={() => (b.encrypted ? setDialog({ kind: 'download', backup: b }) : void download(b))} aria-label={`Download ${b.key}`}>
                        Download
                      </button>
                      <button type="button" disabled={!usable} onClick={() => setDialog({ kind: 'restore', backup: b })} aria-label={`Restore ${b.key}`}>
                        Restore
                      </button>
                      <button type="button" class="danger" disabled={b.status === 'started'} onClick={() => setDialog({ kind: 'delete', backup: b })} aria-label={`Delete ${b.key}`}>
                        Delete
                      </button>
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
          {!shown.length ? <Empty>No backup matches the filter.</Empty> : null}
        </div>
      ) : null}

      {dialog?.kind === 'create' ? <CreateDialog progress={progress} outcomes={outcomes} backups={backups ?? []} onClose={() => setDialog(null)} onStarted={reload} /> : null}
      {dialog?.kind === 'upload' ? <UploadDialog onClose={() => setDialog(null)} onUploaded={reload} /> : null}
      {dialog?.kind === 'delete' ? (
        <DeleteDialog
          backup={dialog.backup}
          onClose={() => setDialog(null)}
          onDeleted={(key) => {
            setDialog(null);
            setNotice({ text: `Deleted ${key}.` });
            setBackups((list) => (list ?? []).filter((x) => x.key !== key));
            reload();
          }}
        />
      ) : null}
      {dialog?.kind === 'restore' ? <RestoreDialog backup={dialog.backup} onClose={() => setDialog(null)} /> : null}
      {dialog?.kind === 'download' ? (
        <DownloadDialog
          backup={dialog.backup}
          onClose={() => setDialog(null)}
          onEncrypted={async () => {
            const b = dialog.backup;
            setDialog(null);
            await download(b);
          }}
          onDecrypted={(name, size) => {
            setDialog(null);
            setNotice({ text: `Decrypted and saved ${name} (${bytes(size)}).` });
          }}
        />
      ) : null}
    </section>
  );
}

function CreateDialog(props: { progress: Record<string, Progress>; outcomes: Record<string, Outcome>; backups: Backup[]; onClose: () => void; onStarted: () => void }) {
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [excludes, setExcludes] = useState('');
  const [encryption, setEncryption] = useState<EncryptionDraft>(NO_ENCRYPTION_DRAFT);
  const [tried, setTried] = useState(false);
  const [started, setStarted] = useState<BackupDetail | null>(null);

  const { submit, error, busy } = useSubmit(
    async () => {
      const rules = excludes.split('\n').map((l) => l.trim()).filter(Boolean);
      const enc = encryptionBody(encryption);
      const b = await client.backups.create(
        { ...(name.trim() ? { name: name.trim() } : {}), ...(description.trim() ? { description: description.trim() } : {}), ...(rules.length ? { excludes: rules } : {}), ...(enc !== undefined ? { encryption: enc } : {}) },
        { async: true },
      );
      setEncryption(NO_ENCRYPTION_DRAFT); // the passphrase is not kept once sent
      setStarted(b);
      props.onStarted();
    },
    () => {
      setTried(true);
      return Object.keys(encryptionProblems(encryption)).length === 0;
    },
  );

  if (started) {
    const key = started.key;
    const listed = props.backups.find((b) => b.key === key);
    const outcome: Outcome | null = props.outcomes[key] ?? (listed && (listed.status === 'completed' || listed.status === 'failed') ? { status: listed.status, message: listed.statusMessage, size: listed.size } : null);
    const p = props.progress[key];
    return (
      <Dialog title="Create backup" onClose={props.onClose}>
        <p>
          <span class="key">{key}</span>
        </p>
        {outcome?.status === 'completed' ? (
          <div class="note ok" role="status" data-testid="create-result">
            Backup completed: {key}
            {outcome.size ? `, ${bytes(outcome.size)}` : ''}.
          </div>
        ) : outcome?.status === 'failed' ? (
          <div class="note error" role="alert" data-testid="create-result">
            The backup failed: {outcome.message}
          </div>
        ) : p ? (
          <JobProgress {...p} />
        ) : (
          <JobProgress phase="starting" files={0} filesTotal={0} bytes={0} bytesTotal={0} />
        )}
        <p class="muted small">{outcome ? '' : 'You can close this window: the backup goes on, and the table shows its progress.'}</p>
        <div class="buttons">
          <button type="button" class={outcome ? 'primary' : ''} onClick={props.onClose} autoFocus>
            {outcome ? 'Done' : 'Close'}
          </button>
        </div>
      </Dialog>
    );
  }

  return (
    <Dialog title="Create backup" onClose={props.onClose}>
      <form onSubmit={submit}>
        <ErrorNote error={error} />
        <label>
          Name <span class="muted">(optional: lowercase letters, digits, _ - . @)</span>
          <input value={name} onInput={(e) => setName(e.currentTarget.value)} placeholder="e.g. before-upgrade" pattern="[a-z0-9_.@\-]*" autoFocus />
        </label>
        <label>
          Description <span class="muted">(optional)</span>
          <input value={description} onInput={(e) => setDescription(e.currentTarget.value)} placeholder="why this backup was made" />
        </label>
        <label>
          Extra excludes <span class="muted">(optional, one fnmatch rule a line, for this backup only)</span>
          <textarea rows={3} value={excludes} onInput={(e) => setExcludes(e.currentTarget.value)} placeholder={'*.tmp\ncache/'} />
        </label>
        <EncryptionFields value={encryption} onChange={setEncryption} error={error} showProblems={tried} />
        <div class="buttons">
          <button type="button" onClick={props.onClose}>
            Cancel
          </button>
          <button class="primary" disabled={busy}>
            {busy ? 'Starting…' : 'Create backup'}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

function UploadDialog(props: { onClose: () => void; onUploaded: () => void }) {
  const [file, setFile] = useState<File | null>(null);
  const [problem, setProblem] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [sent, setSent] = useState<{ sent: number; total: number } | null>(null);
  const [done, setDone] = useState<BackupDetail | null>(null);
  const [over, setOver] = useState(false);
  const input = useRef<HTMLInputElement>(null);
  const abort = useRef<AbortController | null>(null);

  const choose = (f: File | undefined) => {
    setError(null);
    setDone(null);
    if (!f) return;
    if (!/\.zip(\.age)?$/i.test(f.name)) {
      setFile(null);
      setProblem(`${f.name} is not a Stowage archive: choose a .zip file made by Stowage (a download, or a backup from another machine).`);
      return;
    }
    setProblem(f.size === 0 ? `${f.name} is empty.` : null);
    setFile(f.size === 0 ? null : f);
  };

  const upload = async () => {
    if (!file) return;
    setError(null);
    setSent({ sent: 0, total: file.size });
    abort.current = new AbortController();
    try {
      const b = await uploadClient((s, t) => setSent({ sent: s, total: t || file.size })).backups.upload(file, { signal: abort.current.signal });
      setDone(b);
      props.onUploaded();
    } catch (err) {
      setError(err);
    } finally {
      setSent(null);
      abort.current = null;
    }
  };

  return (
    <Dialog
      title="Upload a backup"
      onClose={() => {
        abort.current?.abort();
        props.onClose();
      }}
    >
      <div
        class={`dropzone ${over ? 'over' : ''}`}
        role="button"
        tabIndex={0}
        aria-label="Choose an archive, or drop it here"
        onClick={() => input.current?.click()}
        onKeyDown={(e) => {
          if (e.key === 'Enter' || e.key === ' ') {
            e.preventDefault();
            input.current?.click();
          }
        }}
        onDragOver={(e) => {
          e.preventDefault();
          setOver(true);
        }}
        onDragLeave={() => setOver(false)}
        onDrop={(e) => {
          e.preventDefault();
          setOver(false);
          choose(e.dataTransfer?.files[0]);
        }}
        data-testid="dropzone"
      >
        <strong>Drop a backup archive here</strong>
        <span class="muted">or press to choose a .zip file</span>
        {file ? (
          <span class="chosen">
            {file.name} · {bytes(file.size)}
          </span>
        ) : null}
      </div>
      <input ref={input} type="file" accept=".zip,.age,application/zip" class="sr-only" aria-label="Archive file" tabIndex={-1} onChange={(e) => choose(e.currentTarget.files?.[0])} />
      <p class="muted small">The server checks the archive (its manifest and every checksum) before it is listed; the file name becomes the backup's key.</p>
      {problem ? (
        <div class="note error" role="alert">
          {problem}
        </div>
      ) : null}
      <ErrorNote error={error} title="The upload was refused" />
      {sent ? <JobProgress phase="uploading" files={0} filesTotal={0} bytes={sent.sent} bytesTotal={sent.total} label={sent.sent >= sent.total ? 'checking the archive…' : 'uploading'} /> : null}
      {done ? (
        <div class="note ok" role="status" data-testid="upload-result">
          Uploaded and checked: {done.key} ({bytes(done.size)}, {done.sources.reduce((n, s) => n + s.files, 0)} files).
        </div>
      ) : null}
      <div class="buttons">
        <button type="button" onClick={props.onClose}>
          {done ? 'Done' : 'Cancel'}
        </button>
        <button type="button" class="primary" disabled={!file || !!sent} onClick={() => void upload()}>
          {sent ? 'Uploading…' : 'Upload'}
        </button>
      </div>
    </Dialog>
  );
}

function DeleteDialog(props: { backup: Backup; onClose: () => void; onDeleted: (key: string) => void }) {
  const { key } = props.backup;
  return (
    <ConfirmDialog
      title="Delete backup"
      action="Delete"
      busyAction="Deleting…"
      onClose={props.onClose}
      onConfirm={async () => {
        await client.backups.delete(key);
        props.onDeleted(key);
      }}
    >
      <p>
        Delete <span class="key">{key}</span> ({bytes(props.backup.size)}, {dateTime(props.backup.createdAt)})? The archive is removed from storage; this cannot be undone.
      </p>
    </ConfirmDialog>
  );
}

function RestoreDialog(props: { backup: Backup; onClose: () => void }) {
  const b = props.backup;
  const [typed, setTyped] = useState('');
  const [safety, setSafety] = useState(true);
  const [force, setForce] = useState(false);
  const [key, setKey] = useState<KeyDraft>(EMPTY_KEY);
  const [started, setStarted] = useState(false);
  const { status, progress } = useRestoreStatus();
  const confirmed = typed.trim() === b.name || typed.trim() === b.key;
  const keys = b.encrypted ? keyBody(key) : null;
  const ready = confirmed && (!b.encrypted || keys !== null);

  const { submit, error, busy } = useSubmit(async () => {
    const s = await client.backups.restore(b.key, { safetyBackup: safety, ...(force ? { force: true } : {}), ...(keys ?? {}) });
    setKey(EMPTY_KEY); // the key is not kept once the restore has it
    setRestoreStatus(s);
    setStarted(true);
    void refreshRestoreStatus();
  }, () => ready);

  if (started && status) {
    const running = status.status === 'started';
    const phase = progress?.phase ?? (running ? 'verifying' : 'completed');
    const at = RESTORE_PHASES.findIndex(([p]) => p === phase);
    return (
      <Dialog title={`Restore ${b.key}`} onClose={props.onClose} wide>
        <ol class="phases" aria-label="Restore phases">
          {RESTORE_PHASES.filter(([p]) => p !== 'completed').map(([p, label], i) => {
            const state = !running ? (status.status === 'completed' || i < at ? 'done' : i === at ? 'failed' : 'todo') : i < at ? 'done' : i === at ? 'current' : 'todo';
            return (
              <li key={p} class={state} aria-current={state === 'current' ? 'step' : undefined}>
                {label}
              </li>
            );
          })}
        </ol>
        {running ? (
          progress ? <JobProgress {...progress} label={RESTORE_PHASES.find(([p]) => p === progress.phase)?.[1] ?? progress.phase} /> : <JobProgress phase="starting" files={0} filesTotal={0} bytes={0} bytesTotal={0} />
        ) : (
          <RestoreResult />
        )}
        <div class="buttons">
          <button type="button" class={running ? '' : 'primary'} onClick={props.onClose}>
            {running ? 'Close (the restore goes on)' : 'Done'}
          </button>
        </div>
      </Dialog>
    );
  }

  return (
    <Dialog title={`Restore ${b.key}`} onClose={props.onClose} wide>
      <form onSubmit={submit}>
        <div class="note warn" role="alert">
          <strong>The current data is replaced.</strong> Restoring puts the data of {dateTime(b.createdAt)} back in place of what is there now: anything written since then is lost, unless the safety backup below is taken.
        </div>
        <p>What this restore replaces:</p>
        <ul class="sources">
          {b.sources.map((s) => (
            <li key={s.name}>
              <strong>{s.name}</strong> <span class="muted">({s.kind})</span> → <code>{s.path}</code> <span class="muted">· {s.files} files, {bytes(s.bytes)}</span>
            </li>
          ))}
        </ul>
        <label class="check">
          <input type="checkbox" checked={safety} onChange={(e) => setSafety(e.currentTarget.checked)} />
          <span>
            First take a <strong>safety backup</strong> of the current data (a <code>pre-restore_…</code> backup in the list; restoring it undoes this restore).
          </span>
        </label>
        {!safety ? <p class="field-error">Without a safety backup there is no way back to the current data.</p> : null}
        <p class="muted small">Every file is extracted and checked before anything is replaced; if anything fails, the current data is left as it was.</p>
        <details>
          <summary>Options</summary>
          <label class="check">
            <input type="checkbox" checked={force} onChange={(e) => setForce(e.currentTarget.checked)} />
            <span>Restore even if the backup's app version is refused by the version policy</span>
          </label>
        </details>
        {b.encrypted ? (
          <>
            <p>
              <span class="badge enc">encrypted</span> The archive is encrypted: give the key that opens it. It is sent with this restore only and never stored.
            </p>
            <DecryptionFields id="restore" value={key} onChange={setKey} error={error} errorTitle="This key does not open the backup; nothing was changed" />
          </>
        ) : null}
        <label>
          Type <strong class="key">{b.name}</strong> to confirm
          <input value={typed} onInput={(e) => setTyped(e.currentTarget.value)} autoComplete="off" spellcheck={false} aria-describedby="restore-confirm-help" autoFocus />
        </label>
        <span id="restore-confirm-help" class="sr-only">
          The restore button works once the backup's name is typed{b.encrypted ? ' and its key given' : ''}.
        </span>
        {b.encrypted && isKeyError(error) ? null : <ErrorNote error={error} title="The restore did not start" />}
        <div class="buttons">
          <button type="button" onClick={props.onClose}>
            Cancel
          </button>
          <button class="danger solid" disabled={!ready || busy}>
            {busy ? 'Starting…' : 'Replace the current data'}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

/** The final restore status: the outcome, the safety backup, each source's result. */
export function RestoreResult() {
  const { status } = useRestoreStatus();
  if (!status) return null;
  const ok = status.status === 'completed';
  return (
    <div data-testid="restore-result">
      <div class={`note ${ok ? 'ok' : status.status === 'failed' ? 'error' : 'warn'}`} role="status">
        <StatusBadge status={status.status} /> {status.statusMessage}
        {status.lastRestoreTime ? <span class="muted"> · {dateTime(status.lastRestoreTime)}</span> : null}
      </div>
      {status.safetyBackupKey ? (
        <p>
          Safety backup: <span class="key">{status.safetyBackupKey}</span> (restore it to undo this restore).
        </p>
      ) : null}
      {status.sources.length ? (
        <table class="results">
          <thead>
            <tr>
              <th scope="col">Source</th>
              <th scope="col">Target</th>
              <th scope="col">Result</th>
              <th scope="col" class="num">
                Files
              </th>
              <th scope="col" class="num">
                Size
              </th>
            </tr>
          </thead>
          <tbody>
            {status.sources.map((s) => (
              <tr key={s.name}>
                <td>
                  {s.name} <span class="muted">({s.kind})</span>
                </td>
                <td>
                  <code>{s.target}</code>
                </td>
                <td>
                  <StatusBadge status={s.status} />
                  {s.errors.map((e) => (
                    <span key={e} class="reason bad">
                      {e}
                    </span>
                  ))}
                </td>
                <td class="num">{s.files}</td>
                <td class="num">{bytes(s.bytes)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </div>
  );
}
