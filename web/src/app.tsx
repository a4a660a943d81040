import { useCallback, useEffect, useState } from 'preact/hooks';
import { clearSession, client, errorText, loadSession, saveSession, type Health, type Superuser } from './api.js';
import { dateTime, fullDateTime, relative } from './format.js';
import { startLive, stopLive, throttle, useEvents, useLiveState } from './live.js';
import { onRestoreEvent, refreshRestoreStatus, useRestoreStatus } from './restore-state.js';
import { linkClick, navigate, useRoute } from './router.js';
import { BackupsScreen } from './screens/backups.js';
import { PointsScreen } from './screens/points.js';
import { SettingsScreen } from './screens/settings.js';
import { TokensScreen } from './screens/tokens.js';
import { WebhooksScreen } from './screens/webhooks.js';
import { ErrorNote, useSubmit } from './ui.js';

const NAV: Array<[string, string]> = [
  ['/', 'Backups'],
  ['/settings', 'Schedule & storage'],
  ['/points', 'Backup points'],
  ['/webhooks', 'Webhooks'],
  ['/tokens', 'API tokens'],
];

export function App() {
  const [session, setSession] = useState(loadSession);
  const { path } = useRoute();

  const logout = useCallback(() => {
    stopLive();
    clearSession();
    setSession(null);
  }, []);

  useEffect(() => {
    if (!session) return;
    // Check the saved session (and extend it); a stale one goes back to the login.
    client.auth.refresh().then(
      (r) => saveSession(r.token, r.record.email),
      (err: { status?: number }) => {
        if (err.status === 401 || err.status === 403) logout();
      },
    );
    startLive(logout);
  }, [session, logout]);

  if (path === '/setup') return <Setup onDone={(email) => navigate(`/login?email=${encodeURIComponent(email)}`, { replace: true })} />;
  if (!session)
    return (
      <Login
        onLogin={(token, email) => {
          saveSession(token, email);
          setSession({ token, email });
          if (path === '/login') navigate('/', { replace: true });
        }}
      />
    );
  return <Shell email={session.email} onLogout={logout} path={path} />;
}

function Brand() {
  return (
    <a href="/" class="brand" onClick={linkClick}>
      <svg viewBox="0 0 32 32" width="22" height="22" aria-hidden="true">
        <rect x="3" y="6" width="26" height="7" rx="2" fill="currentColor" opacity="1" />
        <rect x="3" y="15" width="26" height="7" rx="2" fill="currentColor" opacity=".7" />
        <rect x="3" y="24" width="26" height="5" rx="2" fill="currentColor" opacity=".4" />
      </svg>
      Stowage
    </a>
  );
}

function Login(props: { onLogin: (token: string, email: string) => void }) {
  const { query } = useRoute();
  const [email, setEmail] = useState(query.get('email') ?? '');
  const [password, setPassword] = useState('');
  const { submit, error, busy } = useSubmit(async () => {
    const r = await client.auth.login(email, password);
    props.onLogin(r.token, r.record.email);
  });
  return (
    <div class="auth-page">
      <form class="card auth" onSubmit={submit} aria-labelledby="login-title">
        <Brand />
        <h1 id="login-title">Log in</h1>
        <ErrorNote error={error} />
        <label>
          Email
          <input type="email" name="email" autocomplete="username" required value={email} onInput={(e) => setEmail(e.currentTarget.value)} autoFocus />
        </label>
        <label>
          Password
          <input type="password" name="password" autocomplete="current-password" required value={password} onInput={(e) => setPassword(e.currentTarget.value)} />
        </label>
        <button class="primary" disabled={busy}>
          {busy ? 'Logging in…' : 'Log in'}
        </button>
        <p class="muted small">
          No superuser yet? Use the one-time setup link the server printed at start, or run <code>stowage superuser create EMAIL</code>.
        </p>
      </form>
    </div>
  );
}

function Setup(props: { onDone: (email: string) => void }) {
  // Read the one-time token once, then take it out of the address bar and the history.
  const [token] = useState(() => {
    const t = new URLSearchParams(location.search).get('token') ?? '';
    if (t) history.replaceState(null, '', '/setup');
    return t;
  });
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [repeat, setRepeat] = useState('');
  const [done, setDone] = useState<Superuser | null>(null);
  const mismatch = repeat !== '' && repeat !== password;
  const { submit, error, busy } = useSubmit(async () => {
    const user = await client.auth.completeSetup({ token, email, password });
    setDone(user);
  }, () => !mismatch);
  return (
    <div class="auth-page">
      <form class="card auth" onSubmit={submit} aria-labelledby="setup-title">
        <Brand />
        <h1 id="setup-title">Create the first superuser</h1>
        {done ? (
          <>
            <div class="note ok" role="status">
              {done.email} can now log in.
            </div>
            <button type="button" class="primary" onClick={() => props.onDone(done.email)}>
              Go to the login
            </button>
          </>
        ) : !token ? (
          <div class="note error" role="alert">
            This page needs the one-time link the server printed at its first start (<code>/setup?token=…</code>). Restart the server for a new one, or run <code>stowage superuser create EMAIL</code>.
          </div>
        ) : (
          <>
            <p class="muted">This one-time link works once, for an hour after the server started.</p>
            <ErrorNote error={error} />
            <label>
              Email
              <input type="email" autocomplete="username" required value={email} onInput={(e) => setEmail(e.currentTarget.value)} autoFocus />
            </label>
            <label>
              Password <span class="muted">(at least 10 characters)</span>
              <input type="password" autocomplete="new-password" minLength={10} required value={password} onInput={(e) => setPassword(e.currentTarget.value)} />
            </label>
            <label>
              Password again
              <input type="password" autocomplete="new-password" minLength={10} required value={repeat} aria-invalid={mismatch} onInput={(e) => setRepeat(e.currentTarget.value)} />
              {mismatch ? <span class="field-error">the passwords differ</span> : null}
            </label>
            <button class="primary" disabled={busy || mismatch}>
              {busy ? 'Creating…' : 'Create superuser'}
            </button>
          </>
        )}
      </form>
    </div>
  );
}

function Shell(props: { email: string; onLogout: () => void; path: string }) {
  const [menuOpen, setMenuOpen] = useState(false);
  useEvents(onRestoreEvent);
  useEffect(() => void refreshRestoreStatus(), []);
  const screen =
    props.path === '/settings' ? <SettingsScreen /> : props.path === '/points' ? <PointsScreen /> : props.path === '/webhooks' ? <WebhooksScreen /> : props.path === '/tokens' ? <TokensScreen /> : <BackupsScreen />;
  return (
    <>
      <a class="skip" href="#main">
        Skip to the content
      </a>
      <header class="top">
        <Brand />
        <button type="button" class="menu-toggle" aria-expanded={menuOpen} aria-controls="nav" onClick={() => setMenuOpen(!menuOpen)}>
          Menu
        </button>
        <nav id="nav" class={menuOpen ? 'open' : ''} aria-label="Main">
          {NAV.map(([href, label]) => (
            <a
              key={href}
              href={href}
              aria-current={props.path === href || (href === '/' && !NAV.some(([h]) => h !== '/' && h === props.path)) ? 'page' : undefined}
              onClick={(e) => {
                setMenuOpen(false);
                linkClick(e);
              }}
            >
              {label}
            </a>
          ))}
        </nav>
        <div class="who">
          <LiveDot />
          <span class="muted email" title={props.email}>
            {props.email}
          </span>
          <button type="button" class="link" onClick={props.onLogout}>
            Log out
          </button>
        </div>
      </header>
      <HealthStrip />
      <RestoreBanner />
      <main id="main" tabIndex={-1}>
        {screen}
      </main>
    </>
  );
}

function LiveDot() {
  const s = useLiveState();
  const text = s === 'live' ? 'live updates on' : s === 'reconnecting' ? 'reconnecting to live updates…' : 'connecting…';
  return <span class={`live-dot ${s}`} title={text} aria-label={text} role="img" />;
}

function HealthStrip() {
  const [health, setHealth] = useState<Health | null>(null);
  const [error, setError] = useState<unknown>(null);
  const load = useCallback(() => {
    client.health().then(
      (h) => {
        setHealth(h);
        setError(null);
      },
      setError,
    );
  }, []);
  // Once at once, and once when the job has let go of the lock (canBackup), which is a moment after its event.
  const [reload] = useState(() => {
    const soon = throttle(load, 300);
    const later = throttle(load, 2000);
    return () => {
      soon();
      later();
    };
  });
  useEffect(() => {
    load();
    const t = setInterval(load, 30_000);
    return () => clearInterval(t);
  }, [load]);
  useEvents((e) => {
    if (/^(backup|restore|prune)\.(created|failed|deleted|uploaded|pushed|push_failed|started|completed)$/.test(e.type) || e.type === 'hello') reload();
  });
  if (error) return <div class="health bad" role="status">Cannot read the server's health: {errorText(error)}</div>;
  if (!health) return <div class="health" aria-busy="true" />;
  const b = health.backups;
  return (
    <section class={`health ${b.overdue ? 'bad' : ''}`} aria-label="Health" data-testid="health">
      <div class="metric">
        <span class="label">Last successful backup</span>
        <span class="value" title={fullDateTime(b.lastSuccessAt)} data-testid="last-success">
          {b.lastSuccessAt ? relative(b.lastSuccessAt) : 'never'}
        </span>
      </div>
      <div class="metric">
        <span class="label">Schedule</span>
        <span class="value">
          {b.schedule ? (
            <>
              <code>{b.schedule}</code>
              {b.nextRunAt ? <span class="muted" title={fullDateTime(b.nextRunAt)}> next {relative(b.nextRunAt)}</span> : null}
            </>
          ) : (
            <a href="/settings" onClick={linkClick}>
              none set
            </a>
          )}
        </span>
      </div>
      {b.overdue ? (
        <div class="metric alert" role="alert">
          <span class="label">Overdue</span>
          <span class="value">No scheduled backup completed since {b.lastScheduledAt ? dateTime(b.lastScheduledAt) : 'the schedule was set'}</span>
        </div>
      ) : null}
      {b.lastFailureAt ? (
        <div class="metric">
          <span class="label">Last failure</span>
          <span class="value" title={fullDateTime(b.lastFailureAt)}>
            {relative(b.lastFailureAt)}
          </span>
        </div>
      ) : null}
      {b.uploadsPending.length ? (
        <div class="metric alert" title={b.uploadsPending.map((u) => `${u.key}: ${u.message}`).join('\n')}>
          <span class="label">Waiting for remote storage</span>
          <span class="value">
            {b.uploadsPending.length} backup{b.uploadsPending.length > 1 ? 's' : ''} not off-site yet
          </span>
        </div>
      ) : null}
      <div class="metric optional">
        <span class="label">Storage</span>
        <span class="value small" title={health.storage}>
          {health.storage}
        </span>
      </div>
      <div class="metric optional">
        <span class="label">Server</span>
        <span class="value">
          v{health.version} · {health.canBackup ? 'idle' : <strong>a job is running</strong>}
        </span>
      </div>
      {health.demo.enabled ? <p class="demo small">{health.demo.message}</p> : null}
    </section>
  );
}

function RestoreBanner() {
  const { status, progress } = useRestoreStatus();
  const [dismissed, setDismissed] = useState<string | null>(null);
  if (!status || status.status === 'not_run') return null;
  const id = `${status.key}-${status.startedAt}-${status.status}`;
  if (dismissed === id) return null;
  if (status.status === 'completed' && (!status.lastRestoreTime || Date.now() - new Date(status.lastRestoreTime).getTime() > 24 * 3_600_000)) return null;
  const cls = status.status === 'started' ? 'run' : status.status === 'completed' ? 'ok' : 'bad';
  return (
    <div class={`banner ${cls}`} role="status" data-testid="restore-banner">
      {status.status === 'started' ? (
        <span>
          <strong>Restoring {status.key}</strong> — {progress ? progress.phase : 'starting'}… Other backups and restores wait until it is done.
        </span>
      ) : status.status === 'completed' ? (
        <span>
          <strong>Restored {status.key}</strong> {relative(status.lastRestoreTime)}.{status.safetyBackupKey ? <> To undo it, restore the safety backup <code>{status.safetyBackupKey}</code>.</> : null}
        </span>
      ) : (
        <span>
          <strong>The restore of {status.key} {status.status === 'failed' ? 'failed' : 'completed with errors'}:</strong> {status.statusMessage}
          {status.safetyBackupKey ? <> The safety backup is <code>{status.safetyBackupKey}</code>.</> : null}
        </span>
      )}
      {status.status !== 'started' ? (
        <button type="button" class="icon" aria-label="Dismiss" onClick={() => setDismissed(id)}>
          ×
        </button>
      ) : null}
    </div>
  );
}
