/**
 * Encrypted backups in the panel: who a new backup is encrypted to, the key that opens one (for a
 * restore or a decrypted download), and the download dialog of an encrypted backup.
 *
 * Secrets typed or picked here (passphrases, identity files) live in component state only: they
 * go in request bodies, never in a URL, localStorage or the console, and are gone when the
 * dialog closes.
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import { client, errorText, fieldErrors, type Backup, type DecryptionKeys, type EncryptionRequest } from '../api.js';
import { bytes } from '../format.js';
import { Dialog, ErrorNote, clickDownload } from '../ui.js';

/** The server's minimum passphrase length (CreateBackupBody.encryption.passphrase). */
export const MIN_PASSPHRASE = 12;

export type EncryptionMode = 'configured' | 'none' | 'recipients' | 'passphrase';
export interface EncryptionDraft {
  mode: EncryptionMode;
  recipients: string;
  passphrase: string;
  repeat: string;
}
export const NO_ENCRYPTION_DRAFT: EncryptionDraft = { mode: 'configured', recipients: '', passphrase: '', repeat: '' };

const recipientLines = (text: string) => text.split('\n').map((l) => l.trim()).filter(Boolean);

/** What is wrong with the choice as typed, field by field ({} when it can be sent). */
export function encryptionProblems(d: EncryptionDraft): { recipients?: string; passphrase?: string; repeat?: string } {
  if (d.mode === 'recipients') {
    const lines = recipientLines(d.recipients);
    if (!lines.length) return { recipients: 'give at least one public key' };
    const bad = lines.find((l) => !/^age1[0-9a-z]+$/.test(l));
    if (bad) return { recipients: `${bad.length > 24 ? `${bad.slice(0, 24)}…` : bad} is not an age public key (age1…)` };
  }
  if (d.mode === 'passphrase') {
    if (d.passphrase.length < MIN_PASSPHRASE) return { passphrase: `at least ${MIN_PASSPHRASE} characters` };
    if (d.repeat !== d.passphrase) return { repeat: 'the passphrases differ' };
  }
  return {};
}

/** The `encryption` field of the create body; undefined for "as configured". */
export function encryptionBody(d: EncryptionDraft): EncryptionRequest | undefined {
  switch (d.mode) {
    case 'configured':
      return undefined;
    case 'none':
      return false;
    case 'recipients':
      return { recipients: recipientLines(d.recipients) };
    case 'passphrase':
      return { passphrase: d.passphrase };
  }
}

/** The create dialog's "Encryption" choice. `error` is the server's answer, for its field errors. */
export function EncryptionFields(props: { value: EncryptionDraft; onChange: (d: EncryptionDraft) => void; error: unknown; showProblems: boolean }) {
  const d = props.value;
  const set = (patch: Partial<EncryptionDraft>) => props.onChange({ ...d, ...patch });
  const problems = props.showProblems ? encryptionProblems(d) : {};
  const server = fieldErrors(props.error);
  const recipientsError = problems.recipients ?? Object.entries(server).find(([k]) => k.startsWith('encryption.recipients'))?.[1].message;
  const passphraseError = problems.passphrase ?? server['encryption.passphrase']?.message;
  const mismatch = d.mode === 'passphrase' && d.repeat !== '' && d.repeat !== d.passphrase;
  const choices: Array<[EncryptionMode, string]> = [
    ['configured', 'As configured'],
    ['none', 'Not encrypted'],
    ['recipients', 'To public keys'],
    ['passphrase', 'With a passphrase'],
  ];
  return (
    <fieldset>
      <legend>Encryption</legend>
      <div class="choices" role="radiogroup" aria-label="Encryption">
        {choices.map(([mode, label]) => (
          <label class="check" key={mode}>
            <input type="radio" name="encryption" value={mode} checked={d.mode === mode} onChange={() => set({ mode })} /> {label}
          </label>
        ))}
      </div>
      {d.mode === 'configured' ? <p class="muted small">As <code>encryption:</code> in stowage.yaml says (not encrypted when it is not set).</p> : null}
      {d.mode === 'none' ? <p class="muted small">The archive is stored as a plain ZIP, whatever stowage.yaml says.</p> : null}
      {d.mode === 'recipients' ? (
        <label>
          Public keys <span class="muted">(age1…, one a line; only the matching secret keys can open the backup, the server cannot)</span>
          <textarea rows={3} value={d.recipients} onInput={(e) => set({ recipients: e.currentTarget.value })} placeholder="age1…" spellcheck={false} autoComplete="off" aria-invalid={!!recipientsError} />
          {recipientsError ? (
            <span class="field-error" role="alert">
              {recipientsError}
            </span>
          ) : null}
        </label>
      ) : null}
      {d.mode === 'passphrase' ? (
        <>
          <label>
            Passphrase <span class="muted">(at least {MIN_PASSPHRASE} characters; without it the backup cannot be opened, so store it somewhere safe)</span>
            <input type="password" value={d.passphrase} onInput={(e) => set({ passphrase: e.currentTarget.value })} autoComplete="off" minLength={MIN_PASSPHRASE} aria-invalid={!!passphraseError} />
            {passphraseError ? (
              <span class="field-error" role="alert">
                {passphraseError}
              </span>
            ) : null}
          </label>
          <label>
            Passphrase again
            <input type="password" value={d.repeat} onInput={(e) => set({ repeat: e.currentTarget.value })} autoComplete="off" aria-invalid={mismatch || !!problems.repeat} />
            {mismatch || problems.repeat ? <span class="field-error">the passphrases differ</span> : null}
          </label>
        </>
      ) : null}
    </fieldset>
  );
}

export interface KeyDraft {
  mode: 'identity' | 'passphrase';
  identity: string;
  /** The identity file picked, if the identity came from one. */
  fileName: string;
  passphrase: string;
}
export const EMPTY_KEY: KeyDraft = { mode: 'identity', identity: '', fileName: '', passphrase: '' };

/** The body fields that open the backup, or null while none is given. */
export function keyBody(k: KeyDraft): DecryptionKeys | null {
  if (k.mode === 'identity') return k.identity.trim() ? { identity: k.identity } : null;
  return k.passphrase ? { passphrase: k.passphrase } : null;
}

/** A 400 about the key (a wrong identity or passphrase), rather than about the request. */
export function isKeyError(err: unknown): boolean {
  const fields = Object.keys(fieldErrors(err));
  return fields.includes('identity') || fields.includes('passphrase') || (fields.length === 0 && /identit|passphrase|decrypt/i.test(errorText(err)));
}

/**
 * The key that opens an encrypted backup: an age identity (pasted or read from a file) or the
 * passphrase. A failed call refused for its key (`error`, see isKeyError) is shown here, by the
 * fields to correct, with what was typed left in place.
 */
export function DecryptionFields(props: { value: KeyDraft; onChange: (k: KeyDraft) => void; id: string; error: unknown; errorTitle: string }) {
  const k = props.value;
  const set = (patch: Partial<KeyDraft>) => props.onChange({ ...k, ...patch });
  const file = useRef<HTMLInputElement>(null);
  const note = useRef<HTMLDivElement>(null);
  const keyError = props.error && isKeyError(props.error) ? props.error : null;
  useEffect(() => {
    if (keyError) note.current?.scrollIntoView({ block: 'nearest' });
  }, [keyError]);
  const [readError, setReadError] = useState<string | null>(null);
  const pick = async (f: File | undefined) => {
    setReadError(null);
    if (!f) return;
    if (f.size > 100_000) {
      setReadError(`${f.name} is ${bytes(f.size)}: an identity file is a few hundred bytes.`);
      return;
    }
    try {
      // Read here, in the browser: only its text goes in the request body.
      set({ identity: await f.text(), fileName: f.name });
    } catch {
      setReadError(`Could not read ${f.name}.`);
    } finally {
      if (file.current) file.current.value = '';
    }
  };
  return (
    <fieldset class="key-fields">
      <legend>The key that opens it</legend>
      <div class="choices" role="radiogroup" aria-label="Key">
        <label class="check">
          <input type="radio" name={`${props.id}-mode`} checked={k.mode === 'identity'} onChange={() => set({ mode: 'identity' })} /> Identity (age secret key)
        </label>
        <label class="check">
          <input type="radio" name={`${props.id}-mode`} checked={k.mode === 'passphrase'} onChange={() => set({ mode: 'passphrase' })} /> Passphrase
        </label>
      </div>
      {k.mode === 'identity' ? (
        <>
          <label>
            Identity <span class="muted">(paste AGE-SECRET-KEY-1…, or the whole identity file)</span>
            <textarea
              class="secret"
              rows={3}
              value={k.identity}
              onInput={(e) => set({ identity: e.currentTarget.value, fileName: '' })}
              placeholder="AGE-SECRET-KEY-1…"
              spellcheck={false}
              autoComplete="off"
              autoCapitalize="off"
              data-testid={`${props.id}-identity`}
            />
          </label>
          <div class="file-pick">
            <button type="button" onClick={() => file.current?.click()}>
              Choose an identity file…
            </button>
            {k.fileName ? <span class="muted small">read from {k.fileName}</span> : <span class="muted small">it is read here, in the browser, and sent for this request only</span>}
            <input ref={file} type="file" class="sr-only" tabIndex={-1} aria-label="Identity file" onChange={(e) => void pick(e.currentTarget.files?.[0])} />
          </div>
          {readError ? (
            <p class="field-error" role="alert">
              {readError}
            </p>
          ) : null}
        </>
      ) : (
        <label>
          Passphrase
          <input type="password" value={k.passphrase} onInput={(e) => set({ passphrase: e.currentTarget.value })} autoComplete="off" data-testid={`${props.id}-passphrase`} />
        </label>
      )}
      {keyError ? (
        <div ref={note}>
          <ErrorNote error={keyError} title={props.errorTitle} />
          <p class="muted small key-hint">Give the secret key of one of the public keys the backup was made for, or the passphrase it was made with.</p>
        </div>
      ) : null}
    </fieldset>
  );
}

/** The file name of a download: the one the server gives (Content-Disposition), else `fallback`. */
function fileNameOf(response: Response, fallback: string): string {
  const m = /filename="([^"]+)"/.exec(response.headers.get('content-disposition') ?? '');
  return m?.[1] ?? fallback;
}

/** Saves a Blob under `name` through a link clicked once, then lets the memory go. */
function saveBlob(blob: Blob, name: string): void {
  const url = URL.createObjectURL(blob);
  clickDownload(url, name);
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/**
 * Downloading an encrypted backup: the file as stored (.zip.age, through a download token), or
 * the plain ZIP, decrypted by the server with the key given here.
 */
export function DownloadDialog(props: { backup: Backup; onClose: () => void; onEncrypted: () => Promise<void>; onDecrypted: (name: string, size: number) => void }) {
  const b = props.backup;
  const plainName = b.key.replace(/\.age$/, '');
  const [key, setKey] = useState<KeyDraft>(EMPTY_KEY);
  const [error, setError] = useState<unknown>(null);
  const [received, setReceived] = useState<number | null>(null);
  const abort = useRef<AbortController | null>(null);
  const body = keyBody(key);

  const decrypted = async (e: Event) => {
    e.preventDefault();
    if (!body) return;
    setError(null);
    setReceived(0);
    abort.current = new AbortController();
    try {
      const response = await client.backups.downloadDecrypted(b.key, body, { signal: abort.current.signal });
      // Read chunk by chunk to show how far it got (a decrypted download has no known length).
      const chunks: Uint8Array[] = [];
      let size = 0;
      if (response.body) {
        const reader = response.body.getReader();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          chunks.push(value);
          size += value.length;
          setReceived(size);
        }
      }
      const name = fileNameOf(response, plainName);
      saveBlob(new Blob(chunks as BlobPart[], { type: 'application/zip' }), name);
      props.onDecrypted(name, size);
    } catch (err) {
      setError(err);
    } finally {
      setReceived(null);
      abort.current = null;
    }
  };

  return (
    <Dialog
      title={`Download ${b.key}`}
      onClose={() => {
        abort.current?.abort();
        props.onClose();
      }}
    >
      <p>
        <span class="badge enc">encrypted</span> This backup is stored encrypted ({bytes(b.size)}).
      </p>
      <section class="download-choice" aria-labelledby="dl-encrypted">
        <h3 id="dl-encrypted">Encrypted file (.zip.age)</h3>
        <p class="muted small">The archive as stored. Open it later with its key: <code>age -d -i key.txt</code>, or a restore here.</p>
        <button type="button" onClick={() => void props.onEncrypted()}>
          Download encrypted file
        </button>
      </section>
      <form class="download-choice" onSubmit={decrypted} aria-labelledby="dl-decrypted">
        <h3 id="dl-decrypted">Decrypted ZIP</h3>
        <p class="muted small">
          The server decrypts it with the key below (used for this download only) and sends <span class="key">{plainName}</span>; the browser holds it in memory until it is saved.
        </p>
        <DecryptionFields id="download" value={key} onChange={setKey} error={error} errorTitle="This key does not open the backup" />
        {isKeyError(error) ? null : <ErrorNote error={error} title="The download failed" />}
        {received !== null ? (
          <p class="muted" aria-live="polite">
            Decrypting… {bytes(received)} received
          </p>
        ) : null}
        <div class="buttons">
          <button type="button" onClick={props.onClose}>
            Cancel
          </button>
          <button class="primary" disabled={!body || received !== null}>
            {received !== null ? 'Downloading…' : 'Download decrypted ZIP'}
          </button>
        </div>
      </form>
    </Dialog>
  );
}
