import cronstrue from 'cronstrue';
import { Cron } from 'croner';
import { StowageError } from '../errors.js';
import { formatIssues } from './load.js';
import { CRON_MACROS, MASK, SECRET_SETTINGS, cronProblem, settingsSchema, type Settings } from './settings.js';

/**
 * The settings in force: stowage.yaml's values (the defaults) with the changes made through
 * the API or `stowage settings set` on top, stored as one JSON document in the catalogue's
 * `settings` table. Every process (CLI, server, job thread) reads the same document.
 */
const OVERRIDES = 'settings.overrides';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonObject = { [k: string]: Json };

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Shared between callers, so it must not change under them. */
function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/** `patch` onto `base`: objects merge key by key, anything else replaces; null removes. */
export function mergePatch(base: JsonObject, patch: JsonObject): JsonObject {
  const out: JsonObject = { ...base };
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else if (isObject(v) && isObject(out[k])) out[k] = mergePatch(out[k] as JsonObject, v);
    else out[k] = v;
  }
  return out;
}

function getPath(obj: unknown, path: readonly string[]): unknown {
  return path.reduce<unknown>((o, k) => (isObject(o) ? o[k] : undefined), obj);
}

function setPath(obj: JsonObject, path: readonly string[], value: Json): void {
  let o = obj;
  for (const k of path.slice(0, -1)) {
    if (!isObject(o[k])) o[k] = {};
    o = o[k] as JsonObject;
  }
  o[path[path.length - 1]!] = value;
}

/** Where the document is kept: the catalogue's settings table. */
export interface SettingsTable {
  getSetting(name: string): string | null;
  setSetting(name: string, value: string | null): void;
}

/** Seals secrets before they are stored, and opens them when read (config/secret-box.ts). */
export interface SecretSealer {
  seal(plain: string, context: string): string;
  open(sealed: string, context: string): string;
  isSealed(value: string): boolean;
}

export class SettingsStore {
  private readonly listeners = new Set<(s: Settings) => void>();
  /** The last document read and what it parsed to (callers must not modify the result). */
  private parsed: { row: string | null; settings: Settings } | null = null;

  constructor(
    private readonly table: SettingsTable,
    private readonly defaults: Pick<Settings, 'backups' | 'verify' | 'drill'>,
    /** When given, secrets (the S3 secret) are stored sealed; a plain stored value still reads. */
    private readonly sealer?: () => SecretSealer,
  ) {}

  private overrides(row = this.table.getSetting(OVERRIDES)): JsonObject {
    if (!row) return {};
    let parsed: unknown;
    try {
      parsed = JSON.parse(row);
    } catch {
      return {};
    }
    if (!isObject(parsed)) return {};
    for (const path of SECRET_SETTINGS) {
      const value = getPath(parsed, path);
      if (typeof value === 'string' && this.sealer?.().isSealed(value)) setPath(parsed, path, this.sealer().open(value, `settings:${path.join('.')}`));
    }
    return parsed;
  }

  private store(overrides: JsonObject): void {
    const copy = structuredClone(overrides);
    for (const path of SECRET_SETTINGS) {
      const value = getPath(copy, path);
      if (this.sealer && typeof value === 'string' && value) setPath(copy, path, this.sealer().seal(value, `settings:${path.join('.')}`));
    }
    this.table.setSetting(OVERRIDES, JSON.stringify(copy));
  }

  /**
   * The settings in force. Stored changes that no longer validate (an old version's) fall back to
   * the defaults. Parsed again only when the stored document changed: every request and every
   * storage call asks (validation builds a Cron for each schedule; ~130 µs a call otherwise).
   */
  get(): Settings {
    const row = this.table.getSetting(OVERRIDES);
    if (this.parsed && this.parsed.row === row) return this.parsed.settings;
    const merged = mergePatch(this.defaults as unknown as JsonObject, this.overrides(row));
    const result = settingsSchema.safeParse(merged);
    const settings = deepFreeze(result.success ? result.data : settingsSchema.parse(this.defaults));
    this.parsed = { row, settings };
    return settings;
  }

  /** For responses and logs: secrets replaced by a mask (empty ones stay empty, so "not set" shows). */
  masked(settings: Settings = this.get()): Settings {
    const copy = structuredClone(settings) as unknown as JsonObject;
    for (const path of SECRET_SETTINGS) if (getPath(copy, path)) setPath(copy, path, MASK);
    return copy as unknown as Settings;
  }

  /**
   * Applies a partial update (JSON merge patch). A secret that is left out, or sent back as the
   * mask, keeps its stored value. Invalid input changes nothing and names every bad field.
   */
  patch(patch: unknown): Settings {
    if (!isObject(patch)) throw new StowageError('USAGE', 'settings must be a JSON object, e.g. {"backups": {"cron": "0 3 * * *"}}');
    const incoming = structuredClone(patch);
    for (const path of SECRET_SETTINGS) if (getPath(incoming, path) === MASK) setPath(incoming, path, getPath(this.get(), path) as Json);
    const overrides = mergePatch(this.overrides(), incoming);
    const merged = mergePatch(this.defaults as unknown as JsonObject, overrides);
    const result = settingsSchema.safeParse(merged);
    if (!result.success) {
      const fields = formatIssues(result.error.issues);
      throw new StowageError('USAGE', `invalid settings: ${fields.map((f) => `${f.field}: ${f.message}`).join('; ')}`, { details: { fields } });
    }
    this.store(overrides);
    for (const l of this.listeners) l(result.data);
    return result.data;
  }

  /** Called after a change made through this store (other processes: compare `get()` now and then). */
  onChange(listener: (s: Settings) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

/** Cron → the next runs and a sentence, for GET /api/settings/cron-preview and `settings get`. */
export function previewCron(expr: string, timezone = 'UTC', count = 5, from = new Date()): { cron: string; timezone: string; description: string; next: string[] } {
  const problem = cronProblem(expr, timezone);
  if (problem) throw new StowageError('USAGE', `cron "${expr}": ${problem}`, { details: { fields: [{ field: 'cron', message: problem }] } });
  const cron = new Cron(expr.trim(), { paused: true, timezone });
  const next = cron.nextRuns(count, from).map((d) => d.toISOString());
  return { cron: expr.trim(), timezone, description: describeCron(expr.trim()), next };
}

const MACRO_PATTERN: Record<(typeof CRON_MACROS)[number], string> = {
  '@hourly': '0 * * * *',
  '@daily': '0 0 * * *',
  '@midnight': '0 0 * * *',
  '@weekly': '0 0 * * 0',
  '@monthly': '0 0 1 * *',
  '@yearly': '0 0 1 1 *',
  '@annually': '0 0 1 1 *',
};

/** "every day at 00:00" for "0 0 * * *". */
export function describeCron(expr: string): string {
  const pattern = MACRO_PATTERN[expr as (typeof CRON_MACROS)[number]] ?? expr;
  const text = cronstrue.toString(pattern, { use24HourTimeFormat: true, verbose: true });
  return text.charAt(0).toLowerCase() + text.slice(1);
}
