import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeTempDir, removeDir } from '../testing/tmp.js';
import { LocalStorage } from './local.js';
import { describeStorage } from './storage.suite.js';
import { assertValidKey, defaultKey, snakeCase } from './keys.js';

describeStorage('local folder', async () => {
  const dir = makeTempDir();
  const root = path.join(dir, 'backups');
  return {
    storage: new LocalStorage(root),
    tempDir: dir,
    cleanup: async () => removeDir(dir),
    putForeign: async (name, body) => {
      fs.mkdirSync(path.dirname(path.join(root, name)), { recursive: true });
      fs.writeFileSync(path.join(root, name), body);
    },
  };
});

describe('LocalStorage specifics', () => {
  it('hides foreign files and temporary uploads from list', async () => {
    const dir = makeTempDir();
    try {
      const s = new LocalStorage(dir);
      fs.writeFileSync(path.join(dir, 'notes.txt'), 'x');
      fs.writeFileSync(path.join(dir, 'UPPER.ZIP'), 'x');
      fs.mkdirSync(path.join(dir, 'folder.zip'));
      await s.createUpload('in-progress.zip');
      expect(await s.list()).toEqual([]);
    } finally {
      removeDir(dir);
    }
  });
});

describe('backup keys', () => {
  it('accepts the documented alphabet and refuses the rest with an explanation', () => {
    expect(assertValidKey('@auto_my-app.v2_20250101000000.zip')).toBeTruthy();
    expect(() => assertValidKey('a'.repeat(147) + '.zip')).toThrow(/at most 150/);
    expect(() => assertValidKey('back\\slash.zip')).toThrow(/not a valid backup key/);
  });
  it('derives default names from the app name', () => {
    expect(snakeCase('My Fancy-App 2000')).toBe('my_fancy_app_2000');
    expect(snakeCase('ÜberApp')).toBe('uber_app');
    expect(snakeCase('x'.repeat(80)).length).toBe(50);
    expect(defaultKey('PocketBase', new Date(Date.UTC(2025, 0, 2, 3, 4, 5)))).toBe('pocket_base_20250102030405.zip');
    expect(defaultKey('app', new Date(Date.UTC(2025, 0, 2, 3, 4, 5)), '@auto_')).toBe('@auto_app_20250102030405.zip');
  });
});
