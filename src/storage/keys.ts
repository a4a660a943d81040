import { StowageError } from '../errors.js';

/** Lowercase letters, digits, `_ - . @`, ending in `.zip` (`.zip.age` when encrypted); never a path. */
const KEY_PATTERN = /^[a-z0-9_\-@][a-z0-9_\-.@]*\.zip(\.age)?$/;

/** What an encrypted backup's key ends with: the age file around the ZIP. */
export const ENCRYPTED_SUFFIX = '.zip.age';

export function isEncryptedKey(key: string): boolean {
  return key.endsWith(ENCRYPTED_SUFFIX);
}

/** The key without `.zip` / `.zip.age`: the backup's name. */
export function nameOfKey(key: string): string {
  return key.replace(/\.zip(\.age)?$/, '');
}
export const MAX_KEY_LENGTH = 150;

export function isValidKey(key: string): boolean {
  return key.length <= MAX_KEY_LENGTH && KEY_PATTERN.test(key) && !key.includes('..');
}

export function assertValidKey(key: string): string {
  if (!isValidKey(key)) {
    throw new StowageError(
      'INVALID_KEY',
      `"${key}" is not a valid backup key: use at most ${MAX_KEY_LENGTH} characters of lowercase letters, digits, "_", "-", ".", "@", ` +
        'not starting with "." and ending in ".zip" (".zip.age" when encrypted; e.g. "before_upgrade.zip"); folders and path separators are not allowed',
    );
  }
  return key;
}

/** `--name before upgrade` -> `before_upgrade.zip`? No: names are checked, not silently rewritten. */
export function keyFromName(name: string, encrypted = false): string {
  if (name.endsWith(ENCRYPTED_SUFFIX)) return assertValidKey(name);
  const zip = name.endsWith('.zip') ? name : `${name}.zip`;
  return assertValidKey(encrypted ? `${zip}.age` : zip);
}

export function snakeCase(text: string, max = 50): string {
  const s = text
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '_')
    .replace(/^_+|_+$/g, '')
    .slice(0, max)
    .replace(/_+$/, '');
  return s || 'app';
}

/** yyyyMMddHHmmss in UTC. */
export function utcStamp(date: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${p(date.getUTCFullYear(), 4)}${p(date.getUTCMonth() + 1)}${p(date.getUTCDate())}${p(date.getUTCHours())}${p(date.getUTCMinutes())}${p(date.getUTCSeconds())}`;
}

/** `<app as snake case, max 50>_<UTC yyyyMMddHHmmss>.zip`, with an optional prefix like `@pre-restore_`. */
export function defaultKey(appName: string, date: Date, prefix = ''): string {
  return `${prefix}${snakeCase(appName)}_${utcStamp(date)}.zip`;
}
