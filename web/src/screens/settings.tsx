import { useEffect, useState } from 'preact/hooks';
import { client, type CronPreview, type S3TestResult, type SettingsBody } from '../api.js';
import { fullDateTime, dateTime, relative } from '../format.js';
import { ErrorNote, FieldError, useSubmit } from '../ui.js';

const PRESETS: Array<[string, string]> = [
  ['', 'No schedule'],
  ['0 * * * *', 'Every hour'],
  ['0 3 * * *', 'Every day at 03:00'],
  ['0 3,15 * * *', 'Twice a day'],
  ['0 3 * * 0', 'Every Sunday at 03:00'],
  ['0 3 1 * *', 'Monthly, on the 1st'],
];

type Retention = SettingsBody['backups']['retention'];
const RETENTION: Array<[keyof Retention, string, string]> = [
  ['keepLast', 'Keep last', 'the newest N scheduled backups'],
  ['keepHourly', 'Hourly', 'one for each of the last N hours'],
  ['keepDaily', 'Daily', 'one for each of the last N days'],
  ['keepWeekly', 'Weekly', 'one for each of the last N weeks'],
  ['keepMonthly', 'Monthly', 'one for each of the last N months'],
  ['keepYearly', 'Yearly', 'one for each of the last N years'],
];

const ZONES: string[] = (() => {
  try {
    return (Intl as unknown as { supportedValuesOf(k: string): string[] }).supportedValuesOf('timeZone');
  } catch {
    return ['UTC'];
  }
})();

export function SettingsScreen() {
  const [saved, setSaved] = useState<SettingsBody | null>(null);
  const [draft, setDraft] = useState<SettingsBody | null>(null);
  const [loadError, setLoadError] = useState<unknown>(null);
  const [savedAt, setSavedAt] = useState<number | null>(null);
  const [preview, setPreview] = useState<{ result?: CronPreview; error?: unknown } | null>(null);
  const [s3Test, setS3Test] = useState<{ result?: S3TestResult; error?: unknown; busy?: boolean } | null>(null);

  useEffect(() => {
    client.settings.get().then(
      (s) => {
        setSaved(s);
        setDraft(structuredClone(s));
      },
      setLoadError,
    );
  }, []);

  const cron = draft?.backups.cron ?? '';
  const timezone = draft?.backups.timezone ?? 'UTC';
  useEffect(() => {
    if (!draft) return;
    if (!cron.trim()) {
      setPreview(null);
      return;
    }
    const t = setTimeout(() => {
      client.settings.cronPreview(cron, timezone).then(
        (result) => setPreview({ result }),
        (error: unknown) => setPreview({ error }),
      );
    }, 250);
    return () => clearTimeout(t);
  }, [cron, timezone, !draft]);

  // Before the early returns below: hooks run on every render, in the same order.
  const { submit: save, error: saveError, busy } = useSubmit(async () => {
    if (!draft) return; // the form exists only once the settings are loaded
    const retention = Object.fromEntries(
      [...RETENTION.map(([k]) => k), 'keepWithin' as const].map((k) => {
        const v = draft.backups.retention[k];
        return [k, v === undefined || v === '' ? null : v];
      }),
    );
    const next = await client.settings.update({
      backups: { ...draft.backups, retention },
      verify: draft.verify,
      drill: draft.drill,
    });
    setSaved(next);
    setDraft(structuredClone(next));
    setSavedAt(Date.now());
  });

  if (loadError) return <ErrorNote error={loadError} title="Cannot read the settings" />;
  if (!draft || !saved) return <p class="muted" aria-busy="true">Loading…</p>;

  const set = (fn: (d: SettingsBody) => void) => {
    const next = structuredClone(draft);
    fn(next);
    setDraft(next);
    setSavedAt(null);
  };
  const dirty = JSON.stringify(draft) !== JSON.stringify(saved);

  const testS3 = async () => {
    setS3Test({ busy: true });
    try {
      setS3Test({ result: await client.settings.testS3(draft.backups.s3) });
    } catch (error) {
      setS3Test({ error });
    }
  };

  const b = draft.backups;
  const s3 = b.s3;
  return (
    <form onSubmit={save} aria-labelledby="settings-title" class="settings">
      <div class="screen-head">
        <h1 id="settings-title">Schedule &amp; storage</h1>
        <div class="actions">
          {savedAt ? (
            <span class="saved" role="status">
              Saved.
            </span>
          ) : dirty ? (
            <span class="muted">Unsaved changes</span>
          ) : null}
          <button type="button" disabled={!dirty || busy} onClick={() => setDraft(structuredClone(saved))}>
            Discard
          </button>
          <button class="primary" disabled={!dirty || busy}>
            {busy ? 'Saving…' : 'Save'}
          </button>
        </div>
      </div>
      <ErrorNote error={saveError} title="Nothing was saved" />

      <fieldset class="card">
        <legend>Backup schedule</legend>
        <div class="presets" role="group" aria-label="Schedule presets">
          {PRESETS.map(([value, label]) => (
            <button type="button" key={label} class={b.cron === value ? 'chip on' : 'chip'} aria-pressed={b.cron === value} onClick={() => set((d) => (d.backups.cron = value))}>
              {label}
            </button>
          ))}
        </div>
        <div class="row">
          <label class="grow">
            Cron expression <span class="muted">(minute hour day month weekday, or @daily…; empty for none)</span>
            <input name="cron" value={b.cron} onInput={(e) => set((d) => (d.backups.cron = e.currentTarget.value))} placeholder="0 3 * * *" spellcheck={false} />
            <FieldError error={saveError} field="backups.cron" />
          </label>
          <label>
            Time zone
            <input name="timezone" list="zones" value={b.timezone} onInput={(e) => set((d) => (d.backups.timezone = e.currentTarget.value))} />
            <datalist id="zones">
              {ZONES.map((z) => (
                <option key={z} value={z} />
              ))}
            </datalist>
            <FieldError error={saveError} field="backups.timezone" />
          </label>
        </div>
        <div class="cron-preview" aria-live="polite" data-testid="cron-preview">
          {!b.cron.trim() ? (
            <span class="muted">No scheduled backups: only manual ones.</span>
          ) : preview?.error ? (
            <ErrorNote error={preview.error} />
          ) : preview?.result ? (
            <>
              <strong>{preview.result.description}</strong>
              <span class="muted"> ({preview.result.timezone}). Next runs:</span>
              <ul>
                {preview.result.next.map((n) => (
                  <li key={n} title={fullDateTime(n)}>
                    {dateTime(n)} <span class="muted">({relative(n)})</span>
                  </li>
                ))}
              </ul>
            </>
          ) : (
            <span class="muted">…</span>
          )}
        </div>
        <label class="check">
          <input type="checkbox" checked={b.runMissed} onChange={(e) => set((d) => (d.backups.runMissed = e.currentTarget.checked))} />
          <span>Run a backup missed while Stowage was down, once, when it starts</span>
        </label>
      </fieldset>

      <fieldset class="card">
        <legend>Keeping backups</legend>
        <p class="muted small">Only scheduled backups are removed. With no retention rule set, the newest scheduled backups are kept up to the number below; with rules, a backup is kept when any rule keeps it.</p>
        <label class="narrow">
          Scheduled backups to keep (cronMaxKeep)
          <input name="cronMaxKeep" type="number" min={1} value={b.cronMaxKeep} onInput={(e) => set((d) => (d.backups.cronMaxKeep = e.currentTarget.valueAsNumber))} />
          <FieldError error={saveError} field="backups.cronMaxKeep" />
        </label>
        <div class="grid">
          {RETENTION.map(([k, label, help]) => (
            <label key={k}>
              {label}
              <input
                name={k}
                type="number"
                min={0}
                value={b.retention[k] ?? ''}
                placeholder="—"
                title={help}
                onInput={(e) =>
                  set((d) => {
                    const v = e.currentTarget.value;
                    if (v === '') delete d.backups.retention[k];
                    else (d.backups.retention as Record<string, number | string>)[k] = Number(v);
                  })
                }
              />
              <FieldError error={saveError} field={`backups.retention.${k}`} />
            </label>
          ))}
          <label>
            Within
            <input
              name="keepWithin"
              value={b.retention.keepWithin ?? ''}
              placeholder="e.g. 30d"
              onInput={(e) =>
                set((d) => {
                  const v = e.currentTarget.value;
                  if (v === '') delete d.backups.retention.keepWithin;
                  else d.backups.retention.keepWithin = v;
                })
              }
            />
            <FieldError error={saveError} field="backups.retention.keepWithin" />
          </label>
        </div>
      </fieldset>

      <fieldset class="card">
        <legend>Checks</legend>
        <div class="row">
          <label class="grow">
            Verify a backup (cron) <span class="muted">re-read every checksum</span>
            <input value={draft.verify.cron} onInput={(e) => set((d) => (d.verify.cron = e.currentTarget.value))} placeholder="empty: never" spellcheck={false} />
            <FieldError error={saveError} field="verify.cron" />
          </label>
          <label>
            Which backup
            <select value={draft.verify.sample} onChange={(e) => set((d) => (d.verify.sample = e.currentTarget.value))}>
              <option value="newest">the newest</option>
              <option value="rotate">each in turn</option>
            </select>
          </label>
        </div>
        <label>
          Restore drill (cron) <span class="muted">restore the newest backup into scratch space and compare</span>
          <input value={draft.drill.cron} onInput={(e) => set((d) => (d.drill.cron = e.currentTarget.value))} placeholder="empty: never" spellcheck={false} />
          <FieldError error={saveError} field="drill.cron" />
        </label>
      </fieldset>

      <fieldset class="card">
        <legend>S3 storage</legend>
        <label class="check">
          <input type="checkbox" checked={s3.enabled} onChange={(e) => set((d) => (d.backups.s3.enabled = e.currentTarget.checked))} />
          <span>Keep backups in an S3 bucket (each is written locally first, then uploaded)</span>
        </label>
        <div class="grid two">
          <label>
            Bucket
            <input value={s3.bucket} onInput={(e) => set((d) => (d.backups.s3.bucket = e.currentTarget.value))} spellcheck={false} />
            <FieldError error={saveError} field="backups.s3.bucket" />
          </label>
          <label>
            Folder in the bucket (prefix)
            <input value={s3.prefix} onInput={(e) => set((d) => (d.backups.s3.prefix = e.currentTarget.value))} placeholder="e.g. shop/" spellcheck={false} />
          </label>
          <label>
            Region
            <input value={s3.region} onInput={(e) => set((d) => (d.backups.s3.region = e.currentTarget.value))} placeholder="us-east-1" spellcheck={false} />
          </label>
          <label>
            Endpoint <span class="muted">(MinIO and other S3 services; empty for AWS)</span>
            <input type="url" value={s3.endpoint} onInput={(e) => set((d) => (d.backups.s3.endpoint = e.currentTarget.value))} placeholder="https://minio.example.com" spellcheck={false} />
            <FieldError error={saveError} field="backups.s3.endpoint" />
          </label>
          <label>
            Access key
            <input value={s3.accessKey} onInput={(e) => set((d) => (d.backups.s3.accessKey = e.currentTarget.value))} autoComplete="off" spellcheck={false} />
          </label>
          <label>
            Secret <span class="muted">{saved.backups.s3.secret ? '(stored; type to replace)' : ''}</span>
            <input type="password" value={s3.secret} onFocus={(e) => s3.secret === '******' && e.currentTarget.select()} onInput={(e) => set((d) => (d.backups.s3.secret = e.currentTarget.value))} autoComplete="new-password" />
          </label>
        </div>
        <label class="check">
          <input type="checkbox" checked={s3.forcePathStyle} onChange={(e) => set((d) => (d.backups.s3.forcePathStyle = e.currentTarget.checked))} />
          <span>Bucket in the path (MinIO), not in the host name</span>
        </label>
        <div class="buttons left">
          <button type="button" disabled={s3Test?.busy || !s3.bucket} onClick={() => void testS3()}>
            {s3Test?.busy ? 'Testing…' : 'Test connection'}
          </button>
          <span class="muted small">Lists the folder, writes, reads back and deletes a probe object with the values above (saved or not).</span>
        </div>
        {s3Test?.error ? <ErrorNote error={s3Test.error} /> : null}
        {s3Test?.result ? (
          <div class={`note ${s3Test.result.ok ? 'ok' : 'error'}`} role="status" data-testid="s3-test">
            <strong>{s3Test.result.ok ? 'The bucket works' : 'The test failed'}</strong>: {s3Test.result.target}
            <ul class="steps">
              {s3Test.result.steps.map((st) => (
                <li key={st.step} class={st.ok ? 'ok' : 'bad'}>
                  {st.ok ? '✓' : '✗'} {st.step}: {st.message} <span class="muted">({st.ms} ms)</span>
                </li>
              ))}
            </ul>
          </div>
        ) : null}
      </fieldset>
    </form>
  );
}
