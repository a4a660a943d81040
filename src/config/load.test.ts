import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isStowageError } from '../errors.js';
import { makeTempDir, removeDir } from '../testing/tmp.js';
import { loadConfig, maskConfig } from './load.js';
import { configTemplate } from './template.js';

let dir: string;
beforeEach(() => {
  dir = makeTempDir();
});
afterEach(() => removeDir(dir));

function write(text: string, name = 'stowage.yaml') {
  fs.writeFileSync(path.join(dir, name), text);
}

function errorOf(fn: () => unknown): { code: string; message: string } {
  try {
    fn();
  } catch (err) {
    if (isStowageError(err)) return { code: err.code, message: err.message };
    throw err;
  }
  throw new Error('expected an error');
}

describe('loadConfig', () => {
  it('finds stowage.yaml in the working directory and resolves paths against it', () => {
    write('sources:\n  - { name: files, kind: dir, path: ./data }\n');
    const c = loadConfig({ cwd: dir, env: {} });
    expect(c.configPath).toBe(path.join(dir, 'stowage.yaml'));
    expect(c.dataDir).toBe(path.join(dir, 'stowage-data'));
    expect(c.storage.path).toBe(path.join(dir, 'stowage-data/backups'));
    expect(c.sources[0]).toEqual({ name: 'files', kind: 'dir', path: path.join(dir, 'data'), exclude: [] });
    expect(c.restore).toEqual({ enabled: true, versionPolicy: 'same-or-older', safetyBackup: true, keepPrevious: false });
  });

  it('prefers --config over STOWAGE_CONFIG over the working directory', () => {
    write('sources:\n  - { name: a, kind: dir, path: . }\n', 'a.yaml');
    write('sources:\n  - { name: b, kind: dir, path: . }\n', 'b.yaml');
    write('sources:\n  - { name: c, kind: dir, path: . }\n');
    expect(loadConfig({ cwd: dir, configPath: 'a.yaml', env: { STOWAGE_CONFIG: 'b.yaml' } }).sources[0]!.name).toBe('a');
    expect(loadConfig({ cwd: dir, env: { STOWAGE_CONFIG: 'b.yaml' } }).sources[0]!.name).toBe('b');
    expect(loadConfig({ cwd: dir, env: {} }).sources[0]!.name).toBe('c');
    expect(errorOf(() => loadConfig({ cwd: dir, configPath: 'missing.yaml', env: {} }))).toMatchObject({ code: 'CONFIG_NOT_FOUND', message: expect.stringMatching(/stowage init/) });
  });

  it('falls back to the embedded demo default', () => {
    const c = loadConfig({ cwd: dir, env: {} });
    expect(c.configPath).toBeNull();
    expect(c.sources.map((s) => `${s.name}:${s.kind}`)).toEqual(['files:dir', 'db:sqlite']);
    expect(c.sources[0]).toMatchObject({ path: path.join(dir, 'stowage-data/demo-app') });
  });

  it('names every invalid field and says what is valid', () => {
    write('dataDir: 5\nstorage: { type: ftp }\napp: { name: x, version: "1", versionCommand: "x" }\nsources: []\ncompression: { level: 11 }\ntypo: 1\n');
    const e = errorOf(() => loadConfig({ cwd: dir, env: {} }));
    expect(e.code).toBe('CONFIG_INVALID');
    expect(e.message).toMatch(/dataDir: must be a folder path/);
    expect(e.message).toMatch(/storage\.type: must be "local" \(a folder\) or "s3"/);
    expect(e.message).toMatch(/app: set either version or versionCommand, not both/);
    expect(e.message).toMatch(/sources: needs at least one source/);
    expect(e.message).toMatch(/compression\.level: must be 1 \(fastest\) to 9 \(smallest\)/);
    expect(e.message).toMatch(/unknown field "typo"/);
  });

  it('refuses duplicate source names and bad YAML', () => {
    write('sources:\n  - { name: a, kind: dir, path: . }\n  - { name: a, kind: sqlite, path: x.db }\n');
    expect(errorOf(() => loadConfig({ cwd: dir, env: {} })).message).toMatch(/sources\[1\]\.name: "a" is used by two sources/);
    write('sources: [ { name: a\n');
    expect(errorOf(() => loadConfig({ cwd: dir, env: {} }))).toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringMatching(/not valid YAML/) });
  });

  it('substitutes ${ENV} and reports a missing variable by field', () => {
    write('app: { name: "${APP}", version: "v${VER}" }\nsources:\n  - { name: a, kind: dir, path: "${ROOT}" }\n');
    const c = loadConfig({ cwd: dir, env: { APP: 'svc', VER: '2', ROOT: '/srv/x' } });
    expect(c.app).toMatchObject({ name: 'svc', version: 'v2' });
    expect(c.sources[0]).toMatchObject({ path: '/srv/x' });
    expect(errorOf(() => loadConfig({ cwd: dir, env: { APP: 'svc', VER: '2' } })).message).toBe('sources[0].path: environment variable ROOT is not set (the value refers to ${ROOT})');
  });

  it('accepts the template that stowage init writes', () => {
    write(configTemplate('myapp'));
    const c = loadConfig({ cwd: dir, env: {} });
    expect(c.app.name).toBe('myapp');
    expect(c.sources[0]).toMatchObject({ kind: 'dir', exclude: ['logs', '*.tmp'] });
  });

  it("the template's commented postgres example is valid once uncommented", () => {
    const text = configTemplate('myapp');
    const lines = text.split('\n');
    const start = lines.findIndex((l) => l.includes('- name: pg'));
    expect(start).toBeGreaterThan(0);
    const block: string[] = [];
    for (const l of lines.slice(start)) {
      if (!/^  # /.test(l) || (block.length && /^  # - name:/.test(l))) break;
      if (/^  #   # /.test(l)) continue; // binDir: itself an example
      block.push(l.replace(/^  # /, '  '));
    }
    write(`sources:\n${block.join('\n')}\n`);
    const c = loadConfig({ cwd: dir, env: {} });
    expect(c.sources[0]).toEqual({
      name: 'pg',
      kind: 'postgres',
      url: 'postgres://app@db.example:5432/app?sslmode=require',
      passwordEnv: 'APP_DB_PASSWORD',
      schemas: [],
      excludeSchemas: [],
      tables: [],
      excludeTables: [],
    });
  });
});

describe('postgres sources in stowage.yaml', () => {
  it('takes a url, passwordEnv, include/exclude lists and binDir (relative to the file)', () => {
    write(
      `sources:
  - name: db
    kind: postgres
    url: postgresql://app@127.0.0.1:5433/shop
    passwordEnv: SHOP_DB_PASSWORD
    schemas: [public, "app_*"]
    excludeTables: [public.sessions]
    binDir: ./pg/bin
`,
    );
    const c = loadConfig({ cwd: dir, env: {} });
    expect(c.sources[0]).toEqual({
      name: 'db',
      kind: 'postgres',
      url: 'postgresql://app@127.0.0.1:5433/shop',
      passwordEnv: 'SHOP_DB_PASSWORD',
      schemas: ['public', 'app_*'],
      excludeSchemas: [],
      tables: [],
      excludeTables: ['public.sessions'],
      binDir: path.join(dir, 'pg/bin'),
    });
  });

  it('says what is wrong with a url, passwordEnv or pattern, field by field, without showing a password', () => {
    const bad = (source: string) => errorOf(() => (write(`sources:\n  - ${source}\n`), loadConfig({ cwd: dir, env: {} })));
    expect(bad('{ name: db, kind: postgres }')).toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringContaining('sources[0].url: is required: the database URL') });
    const mysql = bad('{ name: db, kind: postgres, url: "mysql://app:hunter22@h/app" }');
    expect(mysql.message).toContain('sources[0].url: must be a PostgreSQL URL starting with postgres:// or postgresql://');
    expect(mysql.message).toContain('mysql://app:***@h/app');
    expect(mysql.message).not.toContain('hunter22');
    expect(bad('{ name: db, kind: postgres, url: "postgres://app@h:5432/" }').message).toContain('sources[0].url: names no database');
    expect(bad('{ name: db, kind: postgres, url: "postgres://app@h/app?sslpassword=x" }').message).toContain('sslpassword is not supported');
    expect(bad('{ name: db, kind: postgres, url: "postgres://app@h/app", passwordEnv: "s3cret pw" }').message).toContain('sources[0].passwordEnv: must be the name of an environment variable');
    expect(bad('{ name: db, kind: postgres, url: "postgres://app@h/app", schemas: public }').message).toContain('sources[0].schemas: must be a list of schema patterns');
    expect(bad('{ name: db, kind: postgres, url: "postgres://app@h/app", path: /x }').message).toContain('unknown field "path"');
    expect(bad('{ name: db, kind: mysql, url: "postgres://app@h/app" }').message).toContain('kind must be "dir", "sqlite" or "postgres"');
  });

  it('a password in the url (also through ${ENV}) is accepted, and show-config masks it', () => {
    write('sources:\n  - { name: db, kind: postgres, url: "postgres://app:${PW}@h/app?sslmode=require&password=${PW}" }\n');
    const c = loadConfig({ cwd: dir, env: { PW: 'hunter22' } });
    expect(c.sources[0]).toMatchObject({ url: 'postgres://app:hunter22@h/app?sslmode=require&password=hunter22' });
    const masked = JSON.stringify(maskConfig(c));
    expect(masked).not.toContain('hunter22');
    expect(masked).toContain('postgres://app:***@h/app?sslmode=require&password=***');
    // The original is untouched.
    expect(c.sources[0]).toMatchObject({ url: 'postgres://app:hunter22@h/app?sslmode=require&password=hunter22' });
  });
});
