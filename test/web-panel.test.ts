import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateIdentity } from '../src/encryption/index.js';
import { startGitServer, type GitServer } from '../src/testing/git-server.js';
import { ADMIN_EMAIL, startTestServer, type TestServer } from '../src/testing/server.js';
import { makeTempDir, removeDir, run } from '../src/testing/tmp.js';

/**
 * The web panel end to end: a real server (serving the built panel from dist/web) and a real
 * headless Chromium driven by playwright-core, doing what a person does: first-run setup, login,
 * create, download, upload, restore, an encrypted backup, a failed backup, settings, a backup point run, tokens,
 * webhooks, delete. With STOWAGE_SCREENSHOTS=1 it saves the main screens in docs/screenshots.
 */

const CHROMIUM = '/usr/bin/chromium';
const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shots = process.env.STOWAGE_SCREENSHOTS === '1' ? path.join(repo, 'docs/screenshots') : null;
// Page functions run in the browser: they reach its globals through `globalThis as any`, since
// this file is type-checked without the DOM library.
const FIRST_EMAIL = 'first@example.com';
const FIRST_PASSWORD = 'a long first password';

describe('the web panel in a real browser', () => {
  let s: TestServer;
  let git: GitServer;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let scratch: string;
  let flag: string;
  const pageErrors: string[] = [];
  let token: string; // an API token for checks through the API

  const shot = async (name: string, target: Page = page) => {
    if (!shots) return;
    fs.mkdirSync(shots, { recursive: true });
    await target.screenshot({ path: path.join(shots, `${name}.png`), fullPage: false });
  };
  const row = (key: string) => page.locator(`tr[data-key="${key}"]`);
  const api = async <T>(p: string): Promise<T> => (await (await s.request(p, { token })).json()) as T;

  beforeAll(async () => {
    if (!fs.existsSync(CHROMIUM)) {
      throw new Error(`${CHROMIUM} is missing: the web panel tests drive Debian's Chromium. .ci/run must install the "chromium" package (apt-get install -y chromium); locally, run that as root.`);
    }
    if (!fs.existsSync(path.join(repo, 'dist/web/index.html'))) {
      throw new Error('dist/web/index.html is missing: build the panel first (npm run build, which npm test runs as pretest).');
    }
    scratch = makeTempDir('stowage-web-');
    flag = path.join(scratch, 'fail.flag');
    git = await startGitServer({ username: 'pusher', password: 'git-secret-123' });
    s = await startTestServer({
      yaml: `dataDir: ./data
app: { name: testapp, version: "1.0.0", labels: { model: m1, serial: S1 } }
sources:
  - { name: files, kind: dir, path: ./app/files }
  - { name: db, kind: sqlite, path: ./app/app.db }
hooks:
  beforeBackup:
    - command: ["sh", "-c", "if [ -e '${flag}' ]; then echo cannot flush the cache >&2; exit 3; fi; if [ -e '${flag}.slow' ]; then sleep 2; fi"]
server:
  http: 127.0.0.1:0
  maxUploadSize: 5MB
`,
    });
    token = s.tokenWith('backups:read', 'settings');
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      // Playwright starts it headless with a fresh, empty profile (--user-data-dir) of its own.
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true, locale: 'en-GB', timezoneId: 'UTC' });
    page = await context.newPage();
    page.setDefaultTimeout(15_000);
    page.on('pageerror', (err) => pageErrors.push(err.message));
    page.on('console', (msg) => {
      if (msg.type() === 'error' && !/Failed to load resource/.test(msg.text())) pageErrors.push(msg.text());
    });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await s?.close();
    await git?.close();
    if (scratch) removeDir(scratch);
  });

  it('serves the panel at / with a CSP that allows only its own origin, and never shadows /api', async () => {
    const index = await s.request('/', { headers: { accept: 'text/html' } });
    expect(index.status).toBe(200);
    expect(index.headers.get('content-type')).toContain('text/html');
    const csp = index.headers.get('content-security-policy')!;
    expect(csp).toContain("default-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toContain('unsafe-inline');
    const html = await index.text();
    const asset = /src="(\/assets\/[^"]+\.js)"/.exec(html)![1]!;
    const js = await s.request(asset);
    expect(js.status).toBe(200);
    expect(js.headers.get('cache-control')).toContain('immutable');
    // SPA paths get the page; unknown API paths and missing files stay 404s.
    expect((await s.request('/settings', { headers: { accept: 'text/html' } })).status).toBe(200);
    const unknownApi = await s.request('/api/nothing', { headers: { accept: 'text/html' } });
    expect(unknownApi.status).toBe(404);
    expect(await unknownApi.json()).toMatchObject({ status: 404 });
    expect((await s.request('/assets/nope.js')).status).toBe(404);
    expect((await s.request('/api/health')).status).toBe(200);
  });

  it('first-run setup from the one-time link, the token taken out of the address bar', async () => {
    const link = s.notices.find((l) => l.includes('/setup?token='))!.trim();
    s.auth.deleteSuperuser(ADMIN_EMAIL); // startTestServer made one after printing the link
    const setupUrl = `${s.url}${new URL(link).pathname}${new URL(link).search}`;
    await page.goto(setupUrl);
    await page.getByRole('heading', { name: 'Create the first superuser' }).waitFor();
    expect(page.url()).toBe(`${s.url}/setup`);
    await page.getByLabel('Email').fill(FIRST_EMAIL);
    await page.getByLabel('Password (at least 10 characters)').fill(FIRST_PASSWORD);
    await page.getByLabel('Password again').fill(FIRST_PASSWORD);
    await shot('setup');
    await page.getByRole('button', { name: 'Create superuser' }).click();
    await page.getByText(`${FIRST_EMAIL} can now log in.`).waitFor();
    await page.getByRole('button', { name: 'Go to the login' }).click();
    await page.getByRole('heading', { name: 'Log in' }).waitFor();
    expect(await page.getByLabel('Email').inputValue()).toBe(FIRST_EMAIL);
  });

  it('login: a wrong password is explained, the right one opens the backups', async () => {
    await page.getByLabel('Password').fill('not the password');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('alert').filter({ hasText: 'wrong email or password' }).waitFor();
    await shot('login');
    await page.getByLabel('Password').fill(FIRST_PASSWORD);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('heading', { name: 'Backups' }).waitFor();
    await page.getByText('No backups yet').waitFor();
    expect(new URL(page.url()).pathname).toBe('/');
    // the health strip: no backup yet, no schedule
    await expect.poll(() => page.getByTestId('last-success').textContent()).toBe('never');
  });

  it('creates a backup and follows it live to completed', async () => {
    await page.getByRole('button', { name: 'Create backup' }).click();
    const dialog = page.getByRole('dialog', { name: 'Create backup' });
    await dialog.getByLabel(/^Name/).fill('panel-one');
    await dialog.getByLabel(/^Description/).fill('made in the panel');
    await dialog.getByLabel(/^Extra excludes/).fill('*.tmp');
    // A hook holds the backup for 2 s: the dialog and the table follow it live (SSE), no reload.
    fs.writeFileSync(`${flag}.slow`, '');
    try {
      await dialog.getByRole('button', { name: 'Create backup' }).click();
      await dialog.locator('.progress progress').waitFor();
      await row('panel-one.zip').locator('.badge', { hasText: 'started' }).waitFor();
    } finally {
      fs.rmSync(`${flag}.slow`, { force: true });
    }
    await dialog.getByTestId('create-result').filter({ hasText: 'Backup completed: panel-one.zip' }).waitFor();
    await shot('create-backup');
    await dialog.getByRole('button', { name: 'Done' }).click();
    await row('panel-one.zip').getByText('completed').waitFor();
    await expect.poll(() => row('panel-one.zip').textContent()).toContain('made in the panel');
    const text = (await row('panel-one.zip').textContent())!;
    expect(text).toContain('api'); // trigger
    expect(text).toContain('testapp 1.0.0');
    await expect.poll(() => page.getByTestId('last-success').textContent()).toMatch(/now|second/);
    const info = await api<{ status: string; excludes: string[] }>('/api/backups/panel-one.zip/info');
    expect(info).toMatchObject({ status: 'completed', excludes: ['*.tmp'] });
  });

  let downloaded: string;
  it('downloads through a download token that never reaches the address bar or the history', async () => {
    const before = await page.evaluate(() => (globalThis as any).history.length as number);
    const [download] = await Promise.all([page.waitForEvent('download'), row('panel-one.zip').getByRole('button', { name: 'Download panel-one.zip' }).click()]);
    expect(download.suggestedFilename()).toBe('panel-one.zip');
    downloaded = path.join(scratch, 'dl.zip');
    await download.saveAs(downloaded);
    const bytes = fs.readFileSync(downloaded);
    expect(bytes.subarray(0, 2).toString()).toBe('PK');
    const listed = (await api<Array<{ key: string; size: number }>>('/api/backups')).find((b) => b.key === 'panel-one.zip')!;
    expect(bytes.length).toBe(listed.size);
    expect(download.url()).toMatch(/\?token=/);
    expect(page.url()).not.toContain('token');
    expect(await page.evaluate(() => (globalThis as any).history.length as number)).toBe(before);
  });

  it('upload: a wrong file and a damaged archive are refused with the reason, a real archive is listed', async () => {
    await page.getByRole('button', { name: 'Upload' }).click();
    const dialog = page.getByRole('dialog', { name: 'Upload a backup' });
    // Drag and drop, as a person would, of a file that is no archive.
    await dialog.getByTestId('dropzone').evaluate((zone) => {
      const w = globalThis as any;
      const dt = new w.DataTransfer();
      dt.items.add(new File(['hello'], 'notes.txt', { type: 'text/plain' }));
      zone.dispatchEvent(new w.DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
      zone.dispatchEvent(new w.DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    });
    await dialog.getByText('notes.txt is not a Stowage archive').waitFor();
    expect(await dialog.getByRole('button', { name: 'Upload', exact: true }).isDisabled()).toBe(true);
    // A .zip that is not a backup: the server's check is shown.
    await dialog.getByLabel('Archive file').setInputFiles({ name: 'bad.zip', mimeType: 'application/zip', buffer: Buffer.from('PK not really a zip file at all') });
    await dialog.getByRole('button', { name: 'Upload', exact: true }).click();
    await dialog.getByRole('alert').filter({ hasText: 'Not a usable Stowage backup' }).waitFor();
    await shot('upload-refused');
    // The archive downloaded above, under another name, dropped onto the zone.
    const buffer = fs.readFileSync(downloaded);
    await dialog.getByTestId('dropzone').evaluate((zone, b64) => {
      const w = globalThis as any;
      const bin = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const dt = new w.DataTransfer();
      dt.items.add(new File([bin], 'copied.zip', { type: 'application/zip' }));
      zone.dispatchEvent(new w.DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    }, buffer.toString('base64'));
    await dialog.getByText('copied.zip ·').waitFor();
    await dialog.getByRole('button', { name: 'Upload', exact: true }).click();
    await dialog.getByTestId('upload-result').filter({ hasText: 'Uploaded and checked: copied.zip' }).waitFor();
    await dialog.getByRole('button', { name: 'Done' }).click();
    await row('copied.zip').getByText('upload', { exact: true }).waitFor();
  });

  it('restores with a clear warning, the backup name typed to confirm, progress by phase and per-source results', async () => {
    const readme = path.join(s.root, 'app/files/readme.txt');
    fs.writeFileSync(readme, 'changed after the backup\n');
    await row('panel-one.zip').getByRole('button', { name: 'Restore panel-one.zip' }).click();
    const dialog = page.getByRole('dialog', { name: 'Restore panel-one.zip' });
    await dialog.getByText('The current data is replaced.').waitFor();
    expect(await dialog.getByRole('checkbox', { name: /safety backup/ }).isChecked()).toBe(true);
    const go = dialog.getByRole('button', { name: 'Replace the current data' });
    expect(await go.isDisabled()).toBe(true);
    await dialog.getByLabel(/Type panel-one to confirm/).fill('panel-on');
    expect(await go.isDisabled()).toBe(true);
    await dialog.getByLabel(/Type panel-one to confirm/).fill('panel-one');
    await shot('restore-confirm');
    // Record every phase the dialog shows as current while it runs.
    await page.evaluate(() => {
      const w = globalThis as any;
      const seen: string[] = [];
      w.phasesSeen = seen;
      new w.MutationObserver(() => {
        const t = w.document.querySelector('ol.phases li.current')?.textContent as string | undefined;
        if (t && seen[seen.length - 1] !== t) seen.push(t);
      }).observe(w.document.body, { subtree: true, childList: true, attributes: true, characterData: true });
    });
    await go.click();
    const result = dialog.getByTestId('restore-result');
    await result.waitFor({ timeout: 30_000 });
    await result.getByText('completed', { exact: true }).first().waitFor();
    const text = (await result.textContent())!;
    expect(text).toMatch(/Safety backup: @?pre-restore_/);
    expect(await result.locator('tbody tr').count()).toBe(2);
    expect(await result.locator('tbody tr').filter({ hasText: 'restored' }).count()).toBe(2);
    expect(await dialog.locator('ol.phases li.done').count()).toBe(5);
    // The phases the dialog showed as current came in the engine's order (a fast restore may skip some).
    const order = ['Checking the archive', 'Extracting and verifying every file', 'Taking the safety backup', 'Swapping the new data in', 'Restoring databases'];
    const seen = await page.evaluate(() => (globalThis as any).phasesSeen as string[]);
    const at = seen.map((t) => order.indexOf(t));
    expect(at.every((i) => i >= 0)).toBe(true);
    expect(at).toEqual([...at].sort((a, b) => a - b));
    await shot('restore-done');
    expect(fs.readFileSync(readme, 'utf8')).toBe('hello\n');
    await dialog.getByRole('button', { name: 'Done' }).click();
    await page.getByTestId('restore-banner').filter({ hasText: 'Restored panel-one.zip' }).waitFor();
    const status = await api<{ status: string; safetyBackupKey: string }>('/api/restore-status');
    expect(status.status).toBe('completed');
    await expect.poll(async () => (await page.locator('tr[data-key]').allTextContents()).some((t) => t.includes('pre-restore'))).toBe(true);
  });

  it('an encrypted backup: created to a public key, a wrong identity refused with what was typed kept, the right one restores, downloaded both ways', async () => {
    const { identity, recipient } = generateIdentity();
    const other = generateIdentity();
    // Every request URL and console line of this test: no secret may appear in either.
    const seen: string[] = [];
    const onRequest = (r: { url(): string }) => seen.push(r.url());
    const onConsole = (m: { text(): string }) => seen.push(m.text());
    page.on('request', onRequest);
    page.on('console', onConsole);
    try {
      await page.getByRole('button', { name: 'Create backup' }).click();
      const create = page.getByRole('dialog', { name: 'Create backup' });
      await create.getByLabel(/^Name/).fill('locked');
      expect(await create.getByRole('radio', { name: 'As configured' }).isChecked()).toBe(true);
      // A passphrase typed twice must match.
      await create.getByRole('radio', { name: 'With a passphrase' }).check();
      await create.getByLabel(/^Passphrase \(/).fill('a passphrase of some length');
      await create.getByLabel('Passphrase again').fill('a passphrase of some lengt');
      await create.getByText('the passphrases differ').waitFor();
      // To public keys: a line that is no key is named before anything is sent.
      await create.getByRole('radio', { name: 'To public keys' }).check();
      await create.getByLabel(/^Public keys/).fill('ssh-ed25519 AAAAC3Nza');
      await create.getByRole('button', { name: 'Create backup' }).click();
      await create.getByRole('alert').filter({ hasText: 'is not an age public key' }).waitFor();
      await create.getByLabel(/^Public keys/).fill(`${recipient}\n`);
      await shot('create-encrypted');
      await create.getByRole('button', { name: 'Create backup' }).click();
      await create.getByTestId('create-result').filter({ hasText: 'Backup completed: locked.zip.age' }).waitFor();
      await create.getByRole('button', { name: 'Done' }).click();
      await row('locked.zip.age').locator('td[data-label="Encrypted"] .badge', { hasText: 'encrypted' }).waitFor();
      expect(await row('panel-one.zip').locator('td[data-label="Encrypted"]').textContent()).toBe('no');
      expect(await api<{ encrypted: boolean }>('/api/backups/locked.zip.age/info')).toMatchObject({ encrypted: true });
      const stored = fs.readFileSync(path.join(s.root, 'data/backups/locked.zip.age'));
      expect(stored.subarray(0, 21).toString()).toBe('age-encryption.org/v1');

      // Restore: the button waits for the name and a key; a wrong identity is a 400 shown in
      // the dialog, with the name and the identity still there to correct.
      const readme = path.join(s.root, 'app/files/readme.txt');
      fs.writeFileSync(readme, 'changed before the encrypted restore\n');
      await row('locked.zip.age').getByRole('button', { name: 'Restore locked.zip.age' }).click();
      const restore = page.getByRole('dialog', { name: 'Restore locked.zip.age' });
      const go = restore.getByRole('button', { name: 'Replace the current data' });
      await restore.getByLabel(/Type locked to confirm/).fill('locked');
      expect(await go.isDisabled()).toBe(true);
      await restore.getByTestId('restore-identity').fill(other.identity);
      await go.click();
      await restore.getByRole('alert').filter({ hasText: 'This key does not open the backup' }).waitFor();
      expect(await restore.getByTestId('restore-identity').inputValue()).toBe(other.identity);
      expect(await restore.getByLabel(/Type locked to confirm/).inputValue()).toBe('locked');
      expect(fs.readFileSync(readme, 'utf8')).toBe('changed before the encrypted restore\n');
      await shot('restore-encrypted-wrong-key');
      // The right identity, from an identity file picked in the dialog (read in the browser).
      await restore.getByLabel('Identity file', { exact: true }).setInputFiles({ name: 'key.txt', mimeType: 'text/plain', buffer: Buffer.from(`# created: 2026-12-01T00:00:00Z\n# public key: ${recipient}\n${identity}\n`) });
      await restore.getByText('read from key.txt').waitFor();
      expect(await restore.getByTestId('restore-identity').inputValue()).toContain(identity);
      await go.click();
      const result = restore.getByTestId('restore-result');
      await result.waitFor({ timeout: 30_000 });
      await result.locator('.note .badge', { hasText: 'completed' }).waitFor();
      expect(await result.locator('tbody tr').filter({ hasText: 'restored' }).count()).toBe(2);
      expect(fs.readFileSync(readme, 'utf8')).toBe('hello\n');
      await restore.getByRole('button', { name: 'Done' }).click();

      // Download: the encrypted file as stored, or the plain ZIP decrypted with the key.
      await row('locked.zip.age').getByRole('button', { name: 'Download locked.zip.age' }).click();
      let dl = page.getByRole('dialog', { name: 'Download locked.zip.age' });
      const [encrypted] = await Promise.all([page.waitForEvent('download'), dl.getByRole('button', { name: 'Download encrypted file' }).click()]);
      expect(encrypted.suggestedFilename()).toBe('locked.zip.age');
      const encryptedFile = path.join(scratch, 'locked.zip.age');
      await encrypted.saveAs(encryptedFile);
      expect(fs.readFileSync(encryptedFile).equals(stored)).toBe(true);
      await row('locked.zip.age').getByRole('button', { name: 'Download locked.zip.age' }).click();
      dl = page.getByRole('dialog', { name: 'Download locked.zip.age' });
      await dl.getByRole('radio', { name: 'Passphrase' }).check();
      await dl.getByTestId('download-passphrase').fill('not the passphrase');
      await dl.getByRole('button', { name: 'Download decrypted ZIP' }).click();
      await dl.getByRole('alert').filter({ hasText: 'This key does not open the backup' }).waitFor();
      await dl.getByRole('radio', { name: 'Identity (age secret key)' }).check();
      await dl.getByTestId('download-identity').fill(identity);
      await shot('download-encrypted');
      const [plain] = await Promise.all([page.waitForEvent('download'), dl.getByRole('button', { name: 'Download decrypted ZIP' }).click()]);
      expect(plain.suggestedFilename()).toBe('locked.zip');
      const plainFile = path.join(scratch, 'locked.zip');
      await plain.saveAs(plainFile);
      const zip = fs.readFileSync(plainFile);
      expect(zip.subarray(0, 2).toString()).toBe('PK');
      expect(zip.includes(Buffer.from('files/readme.txt'))).toBe(true);
      await page.getByRole('status').filter({ hasText: 'Decrypted and saved locked.zip' }).waitFor();
      expect(run('unzip', ['-tq', plainFile]).status).toBe(0);
    } finally {
      page.off('request', onRequest);
      page.off('console', onConsole);
    }
    const storage = await page.evaluate(() => {
      const ls = (globalThis as any).localStorage;
      return Array.from({ length: ls.length as number }, (_, i) => `${ls.key(i)}=${ls.getItem(ls.key(i))}`).join('\n');
    });
    for (const secret of [identity, other.identity, 'AGE-SECRET-KEY', 'not the passphrase', 'a passphrase of some length']) {
      expect(seen.some((t) => t.includes(secret))).toBe(false);
      expect(storage).not.toContain(secret);
    }
    expect(page.url()).not.toContain('AGE-SECRET-KEY');
  });

  it('a failed backup is shown as failed with its reason, in the dialog and in the table', async () => {
    fs.writeFileSync(flag, '');
    try {
      await page.getByRole('button', { name: 'Create backup' }).click();
      const dialog = page.getByRole('dialog', { name: 'Create backup' });
      await dialog.getByLabel(/^Name/).fill('doomed');
      await dialog.getByRole('button', { name: 'Create backup' }).click();
      await dialog.getByTestId('create-result').filter({ hasText: 'The backup failed' }).filter({ hasText: 'cannot flush the cache' }).waitFor();
      await dialog.getByRole('button', { name: 'Done' }).click();
    } finally {
      fs.rmSync(flag, { force: true });
    }
    await row('doomed.zip').locator('.badge', { hasText: 'failed' }).waitFor();
    await expect.poll(() => row('doomed.zip').locator('.reason').textContent()).toContain('cannot flush the cache');
    // Filter and sort: only the failed one, then every one sorted by name.
    // (the damaged upload above is listed as failed too, with its own reason)
    const failed = (await api<Array<{ key: string; status: string }>>('/api/backups')).filter((b) => b.status === 'failed').map((b) => b.key);
    expect(failed).toContain('doomed.zip');
    await page.getByLabel('Status').selectOption('failed');
    await expect.poll(() => page.locator('tbody tr[data-key]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-key')).sort())).toEqual(failed.sort());
    await shot('backups-failed-filter');
    await page.getByLabel('Status').selectOption('');
    await page.getByPlaceholder(/Filter by name/).fill('flush cache');
    await expect.poll(() => page.locator('tbody tr[data-key]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-key')))).toEqual(['doomed.zip']);
    await page.getByPlaceholder(/Filter by name/).fill('');
    await page.getByRole('button', { name: 'Name' }).click();
    const keys = await page.locator('tbody tr[data-key]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-key')!));
    expect(keys).toEqual([...keys].sort());
    expect(await page.locator('th[aria-sort="ascending"]').textContent()).toContain('Name');
    await page.getByRole('button', { name: 'Created' }).click();
    await shot('backups');
  });

  it('settings round trip: a preset, the next runs, retention, saved and read back; a bad value is named', async () => {
    await page.getByRole('link', { name: 'Schedule & storage' }).click();
    await page.getByRole('heading', { name: 'Schedule & storage' }).waitFor();
    await page.getByRole('button', { name: 'Every day at 03:00' }).click();
    expect(await page.locator('input[name="cron"]').inputValue()).toBe('0 3 * * *');
    await page.getByTestId('cron-preview').getByText('at 03:00, every day').waitFor();
    expect(await page.getByTestId('cron-preview').locator('li').count()).toBe(5);
    await page.locator('input[name="cronMaxKeep"]').fill('5');
    await page.locator('input[name="keepDaily"]').fill('7');
    await page.locator('input[name="keepWithin"]').fill('30d');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('status').filter({ hasText: 'Saved.' }).waitFor();
    await shot('settings');
    const stored = await api<{ backups: { cron: string; cronMaxKeep: number; retention: Record<string, unknown> } }>('/api/settings');
    expect(stored.backups).toMatchObject({ cron: '0 3 * * *', cronMaxKeep: 5, retention: { keepDaily: 7, keepWithin: '30d' } });
    await page.reload();
    await page.getByRole('heading', { name: 'Schedule & storage' }).waitFor();
    await expect.poll(() => page.locator('input[name="cronMaxKeep"]').inputValue()).toBe('5');
    expect(await page.locator('input[name="keepDaily"]').inputValue()).toBe('7');
    expect(await page.getByTestId('health').textContent()).toContain('0 3 * * *');
    // Clearing a retention rule removes it; a bad cron is refused and named, nothing saved.
    await page.locator('input[name="keepWithin"]').fill('');
    await page.locator('input[name="cron"]').fill('every night');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('alert').filter({ hasText: 'Nothing was saved' }).waitFor();
    await page.locator('.field-error').filter({ hasText: 'must be 5 fields' }).waitFor();
    expect((await api<{ backups: { cron: string } }>('/api/settings')).backups.cron).toBe('0 3 * * *');
    await page.locator('input[name="cron"]').fill('0 3 * * *');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('status').filter({ hasText: 'Saved.' }).waitFor();
    expect((await api<{ backups: { retention: Record<string, unknown> } }>('/api/settings')).backups.retention).toEqual({ keepDaily: 7 });
    // The S3 test reports the failed step (nothing listens on port 9).
    await page.getByLabel('Bucket', { exact: true }).fill('offsite');
    await page.getByLabel(/^Endpoint/).fill('http://127.0.0.1:9');
    await page.getByRole('button', { name: 'Test connection' }).click();
    await page.getByTestId('s3-test').filter({ hasText: 'The test failed' }).waitFor({ timeout: 30_000 });
    await page.getByRole('button', { name: 'Discard' }).click();
  });

  it('a Git backup point: URL checked as typed, created with its credentials, run now, pushed', async () => {
    const repoUrl = git.createRepo('panel-history');
    await page.getByRole('link', { name: 'Backup points' }).click();
    await page.getByText('No backup points yet').waitFor();
    await page.getByRole('button', { name: 'New point' }).click();
    const dialog = page.getByRole('dialog', { name: 'New backup point' });
    await dialog.getByLabel('Name', { exact: true }).fill('history');
    await dialog.getByLabel(/^Source/).fill('files');
    await dialog.getByLabel('URL').fill('git@github.com:acme/shop.git');
    await dialog.getByLabel('Username').click();
    await dialog.getByText('SSH addresses (user@host:path) are not supported').waitFor();
    await dialog.getByLabel('URL').fill(repoUrl);
    await dialog.getByLabel('Username').fill('pusher');
    await dialog.getByLabel('Password or access token').fill('git-secret-123');
    await shot('point-edit');
    await dialog.getByRole('button', { name: 'Add point' }).click();
    const pointRow = page.locator('tr[data-point="history"]');
    await pointRow.getByText('never').waitFor();
    await pointRow.getByRole('button', { name: 'Run history now' }).click();
    await pointRow.getByTestId('point-last-run').locator('.badge', { hasText: 'updated' }).waitFor({ timeout: 30_000 });
    await shot('points');
    const log = run('git', ['-C', git.repoPath('panel-history'), 'log', '--oneline']);
    expect(log.status).toBe(0);
    expect(log.stdout.trim().split('\n').length).toBeGreaterThanOrEqual(1);
    const shown = run('git', ['-C', git.repoPath('panel-history'), 'show', 'HEAD:readme.txt']);
    expect(shown.stdout).toBe('hello\n');
    // The password is stored, never shown back.
    const points = await api<Array<{ name: string; password?: string }>>('/api/points');
    expect(points.find((p) => p.name === 'history')?.password).toBe('******');
  });

  it('API tokens: created with scopes and shown once; webhooks: added and tested', async () => {
    await page.getByRole('link', { name: 'API tokens' }).click();
    await page.getByRole('button', { name: 'New token' }).click();
    const dialog = page.getByRole('dialog', { name: 'New API token' });
    await dialog.getByLabel('Name', { exact: true }).fill('monitoring');
    await dialog.getByRole('button', { name: 'Create token' }).click();
    const secret = await dialog.getByTestId('secret-once').inputValue();
    expect(secret).toMatch(/^stw_/);
    await dialog.getByRole('button', { name: 'Done' }).click();
    await page.locator('td[data-label="Name"]', { hasText: 'monitoring' }).waitFor();
    expect((await s.request('/api/backups', { token: secret })).status).toBe(200);
    expect((await s.request('/api/settings', { token: secret })).status).toBe(403);

    await page.getByRole('link', { name: 'Webhooks' }).click();
    await page.getByRole('button', { name: 'New webhook' }).click();
    const wh = page.getByRole('dialog', { name: 'New webhook' });
    await wh.getByLabel('URL').fill('http://127.0.0.1:9/hook');
    await wh.getByRole('button', { name: 'Add webhook' }).click();
    await wh.getByText('Store the signing secret now').waitFor();
    await wh.getByRole('button', { name: 'Done' }).click();
    await page.getByRole('button', { name: 'Test' }).click();
    await page.getByText(/test: failed/).waitFor({ timeout: 20_000 });
  });

  it('deletes a backup after a confirmation', async () => {
    await page.getByRole('link', { name: 'Backups' }).click();
    await row('copied.zip').getByRole('button', { name: 'Delete copied.zip' }).click();
    const dialog = page.getByRole('dialog', { name: 'Delete backup' });
    await dialog.getByText('this cannot be undone').waitFor();
    await dialog.getByRole('button', { name: 'Delete' }).click();
    await page.getByText('Deleted copied.zip.').waitFor();
    expect(await row('copied.zip').count()).toBe(0);
    expect((await api<Array<{ key: string }>>('/api/backups')).some((b) => b.key === 'copied.zip')).toBe(false);
  });

  it('works at phone width and from the keyboard', async () => {
    const phone = await context.newPage();
    await phone.setViewportSize({ width: 390, height: 844 });
    await phone.goto(`${s.url}/`);
    await phone.getByRole('heading', { name: 'Backups' }).waitFor();
    await phone.locator('tr[data-key="panel-one.zip"]').waitFor();
    // No horizontal scrolling: the table folds into cards.
    expect(await phone.evaluate(() => (globalThis as any).document.documentElement.scrollWidth as number)).toBeLessThanOrEqual(390);
    await shot('phone-backups', phone);
    await phone.getByRole('button', { name: 'Menu' }).click();
    await phone.getByRole('link', { name: 'Schedule & storage' }).waitFor();
    await shot('phone-menu', phone);
    // Keyboard: Tab to "Create backup", Enter opens the dialog, Escape closes it.
    await phone.getByRole('button', { name: 'Menu' }).click();
    await phone.getByRole('button', { name: 'Create backup' }).focus();
    await phone.keyboard.press('Enter');
    await phone.getByRole('dialog', { name: 'Create backup' }).waitFor();
    await phone.keyboard.press('Escape');
    await phone.getByRole('dialog', { name: 'Create backup' }).waitFor({ state: 'detached' });
    await phone.close();
    expect(pageErrors).toEqual([]);
  });

  it('a stale session goes back to the login', async () => {
    await page.evaluate(() => (globalThis as any).localStorage.setItem('stowage.session', JSON.stringify({ token: 'not-a-token', email: 'x@example.com' })));
    await page.reload();
    await page.getByRole('heading', { name: 'Log in' }).waitFor();
  });
});
