import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { errorText, fieldErrors } from './api.js';
import { bytes, percent } from './format.js';

/**
 * Starts a download through a link clicked once and removed: it leaves no history entry, so what
 * the URL holds (a download token) never lands in the address bar or the history.
 */
export function clickDownload(href: string, fileName: string): void {
  const a = document.createElement('a');
  a.href = href;
  a.download = fileName;
  a.rel = 'noreferrer';
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
}

/** A modal dialog (the native <dialog>: focus stays inside, Esc closes it). */
export function Dialog(props: { title: string; onClose: () => void; children: ComponentChildren; wide?: boolean; labelledBy?: string }) {
  const ref = useRef<HTMLDialogElement>(null);
  const onClose = useRef(props.onClose);
  onClose.current = props.onClose;
  useEffect(() => {
    const d = ref.current!;
    if (!d.open) d.showModal();
    const close = () => onClose.current();
    d.addEventListener('close', close);
    return () => {
      d.removeEventListener('close', close);
      if (d.open) d.close();
    };
  }, []);
  const id = `dlg-${props.title.replace(/\W+/g, '-').toLowerCase()}`;
  return (
    <dialog ref={ref} class={props.wide ? 'wide' : ''} aria-labelledby={id}>
      <header class="dialog-head">
        <h2 id={id}>{props.title}</h2>
        <button type="button" class="icon" aria-label="Close" onClick={() => ref.current?.close()}>
          ×
        </button>
      </header>
      <div class="dialog-body">{props.children}</div>
    </dialog>
  );
}

/** A failed call: the server's message, and its field errors. */
export function ErrorNote(props: { error: unknown; title?: string }) {
  if (!props.error) return null;
  const fields = Object.entries(fieldErrors(props.error));
  const message = errorText(props.error);
  return (
    <div class="note error" role="alert">
      {props.title ? <strong>{props.title}: </strong> : null}
      {message}
      {fields.length > 1 || (fields.length === 1 && !message.includes(fields[0]![1].message)) ? (
        <ul>
          {fields.map(([k, v]) => (
            <li key={k}>
              <code>{k}</code>: {v.message}
            </li>
          ))}
        </ul>
      ) : null}
    </div>
  );
}

export function FieldError(props: { error: unknown; field: string }) {
  const e = fieldErrors(props.error)[props.field];
  return e ? (
    <span class="field-error" role="alert">
      {e.message}
    </span>
  ) : null;
}

/** Progress of a job: a bar (indeterminate until totals are known) and what it is doing. */
export function JobProgress(props: { phase: string; files: number; filesTotal: number; bytes: number; bytesTotal: number; label?: string }) {
  const pct = percent(props.bytes, props.bytesTotal) ?? percent(props.files, props.filesTotal);
  return (
    <div class="progress" aria-live="polite">
      <div class="progress-line">
        <span class="phase">{props.label ?? props.phase}</span>
        <span class="muted">
          {props.filesTotal ? `${props.files} / ${props.filesTotal} files` : `${props.files} files`} · {props.bytesTotal ? `${bytes(props.bytes)} of ${bytes(props.bytesTotal)}` : bytes(props.bytes)}
          {pct !== null ? ` · ${pct}%` : ''}
        </span>
      </div>
      {pct !== null ? <progress max={100} value={pct} aria-label={`${props.phase} ${pct}%`} /> : <progress aria-label={props.phase} />}
    </div>
  );
}

export function StatusBadge(props: { status: string }) {
  const cls = { completed: 'ok', restored: 'ok', updated: 'ok', unchanged: 'ok', delivered: 'ok', failed: 'bad', rolled_back: 'bad', completed_with_errors: 'warn', uploading: 'warn', started: 'run', pending: 'run' }[props.status] ?? '';
  return <span class={`badge ${cls}`}>{props.status.replace(/_/g, ' ')}</span>;
}

export function Empty(props: { children: ComponentChildren }) {
  return <p class="empty">{props.children}</p>;
}

/** "Are you sure?": Cancel (focused) or the destructive action, with the failure shown in place. */
export function ConfirmDialog(props: { title: string; action: string; busyAction?: string; onConfirm: () => Promise<unknown>; onClose: () => void; children: ComponentChildren }) {
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const confirm = async () => {
    setBusy(true);
    setError(null);
    try {
      await props.onConfirm();
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  return (
    <Dialog title={props.title} onClose={props.onClose}>
      {props.children}
      <ErrorNote error={error} />
      <div class="buttons">
        <button type="button" onClick={props.onClose} autoFocus>
          Cancel
        </button>
        <button type="button" class="danger solid" disabled={busy} onClick={() => void confirm()}>
          {busy ? (props.busyAction ?? `${props.action}…`) : props.action}
        </button>
      </div>
    </Dialog>
  );
}

/** A secret the server shows once (a new API token, a webhook's signing secret), with a copy button. */
export function SecretOnce(props: { title: string; warning: string; label: string; value: string; onClose: () => void; children?: ComponentChildren }) {
  const [copied, setCopied] = useState(false);
  return (
    <Dialog title={props.title} onClose={props.onClose}>
      <div class="note warn">{props.warning}</div>
      <div class="secret-row">
        <input readOnly value={props.value} aria-label={props.label} onFocus={(e) => e.currentTarget.select()} data-testid="secret-once" />
        <button type="button" onClick={() => void navigator.clipboard?.writeText(props.value).then(() => setCopied(true))}>
          {copied ? 'Copied' : 'Copy'}
        </button>
      </div>
      {props.children}
      <div class="buttons">
        <button type="button" class="primary" onClick={props.onClose}>
          Done
        </button>
      </div>
    </Dialog>
  );
}

/**
 * A form's submit handler with its error and busy state: stops the page reload, runs `before`
 * (checks that may refuse, e.g. to show field problems), then `action` with the last error
 * cleared and `busy` set; what it throws is kept for ErrorNote and FieldError.
 */
export function useSubmit(action: () => Promise<void>, before?: () => boolean) {
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    if (before && !before()) return;
    setBusy(true);
    setError(null);
    try {
      await action();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return { submit, error, busy };
}
