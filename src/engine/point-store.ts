import type Database from 'better-sqlite3';
import { formatIssues } from '../config/load.js';
import { pointSchema, pointSourceProblem, type PointConfig } from '../config/schema.js';
import { SecretBox } from '../config/secret-box.js';
import { StowageError } from '../errors.js';
import type { PointMethod } from '../points/url.js';
import { redactUrl } from '../points/url.js';
import type { PointRunRecord } from './catalogue.js';

/** Stored points (catalogue migration 6); the credentials in `config` are sealed (secret-box.ts). */
export const POINT_TABLES_SQL = `CREATE TABLE points (
   name TEXT PRIMARY KEY,
   method TEXT NOT NULL,
   config TEXT NOT NULL,
   created_at TEXT NOT NULL,
   updated_at TEXT NOT NULL
 );`;

export const MASKED_SECRET = '******';

/** The fields of each method that are credentials: sealed at rest, masked in every view. */
const SECRET_FIELDS: Record<PointMethod, readonly string[]> = { git: ['password'], s3: ['secretAccessKey'] };

export type PointOrigin = 'config' | 'api';

/** A point as the API and `stowage point list` show it: credentials masked, its last run. */
export type PointView = PointConfig & {
  origin: PointOrigin;
  createdAt: string | null;
  updatedAt: string | null;
  lastRun: PointRunRecord | null;
};

export type PointErrorReason = 'invalid' | 'not_found' | 'read_only' | 'exists';

/** A refused change to a point; `details.reason` says which kind (the API maps it to 400/404/409). */
export class PointError extends StowageError {
  readonly reason: PointErrorReason;

  constructor(reason: PointErrorReason, message: string, fields?: Array<{ field: string; message: string }>) {
    super('USAGE', message, { details: fields ? { reason, fields } : { reason } });
    this.name = 'PointError';
    this.reason = reason;
  }
}

interface PointRow {
  name: string;
  method: PointMethod;
  config: string;
  created_at: string;
  updated_at: string;
}

interface PointStoreDeps {
  db: Database.Database;
  /** Points declared in stowage.yaml: listed and run, never changed through the store. */
  configPoints: readonly PointConfig[];
  sources: ReadonlyArray<{ name: string; kind: string }>;
  /** The box that seals stored credentials (opened on first use). */
  secrets(): SecretBox;
  lastRun(name: string): PointRunRecord | null;
}

/**
 * Backup points from both places they come from: stowage.yaml (read-only here, like config
 * webhooks) and the API (stored in the catalogue, credentials sealed). Both go through the same
 * schema (`pointSchema`), so a point the API accepts is one the file would accept.
 */
export class PointStore {
  constructor(private readonly deps: PointStoreDeps) {}

  private secrets(): SecretBox {
    return this.deps.secrets();
  }

  private rows(): PointRow[] {
    return this.deps.db.prepare('SELECT * FROM points ORDER BY name').all() as PointRow[];
  }

  private row(name: string): PointRow | undefined {
    return this.deps.db.prepare('SELECT * FROM points WHERE name = ?').get(name) as PointRow | undefined;
  }

  /** A stored row with its credentials opened, ready to run. */
  private unseal(row: PointRow): PointConfig {
    const stored = JSON.parse(row.config) as Record<string, unknown>;
    for (const field of SECRET_FIELDS[row.method]) {
      const value = stored[field];
      if (typeof value === 'string' && SecretBox.isSealed(value)) stored[field] = this.secrets().open(value, `point:${row.name}:${field}`);
    }
    return pointSchema.parse(stored);
  }

  private seal(point: PointConfig): string {
    const copy: Record<string, unknown> = { ...point };
    for (const field of SECRET_FIELDS[point.method]) {
      const value = copy[field];
      if (typeof value === 'string' && value) copy[field] = this.secrets().seal(value, `point:${point.name}:${field}`);
    }
    return JSON.stringify(copy);
  }

  /** Every point, credentials in clear, for running (config points first). */
  all(): PointConfig[] {
    return [...this.deps.configPoints, ...this.rows().map((r) => this.unseal(r))];
  }

  /** One point with its credentials, or null. */
  get(name: string): PointConfig | null {
    const fromConfig = this.deps.configPoints.find((p) => p.name === name);
    if (fromConfig) return fromConfig;
    const row = this.row(name);
    return row ? this.unseal(row) : null;
  }

  /** A point for people: credentials masked (an empty one stays empty, so "not set" shows). */
  private view(point: PointConfig, origin: PointOrigin, row?: PointRow): PointView {
    const shown: Record<string, unknown> = { ...point, url: redactUrl(point.url) };
    for (const field of SECRET_FIELDS[point.method]) if (shown[field]) shown[field] = MASKED_SECRET;
    return { ...(shown as PointConfig), origin, createdAt: row?.created_at ?? null, updatedAt: row?.updated_at ?? null, lastRun: this.deps.lastRun(point.name) };
  }

  /** Every point, masked, with its last run. Stored credentials are not opened to list them. */
  list(): PointView[] {
    const fromApi = this.rows().map((r) => this.view(pointSchema.parse(JSON.parse(r.config)), 'api', r));
    return [...this.deps.configPoints.map((p) => this.view(p, 'config')), ...fromApi];
  }

  describe(name: string): PointView {
    const fromConfig = this.deps.configPoints.find((p) => p.name === name);
    if (fromConfig) return this.view(fromConfig, 'config');
    const row = this.row(name);
    if (!row) throw this.notFound(name);
    return this.view(pointSchema.parse(JSON.parse(row.config)), 'api', row);
  }

  private notFound(name: string): PointError {
    const names = [...this.deps.configPoints.map((p) => p.name), ...this.rows().map((r) => r.name)];
    return new PointError('not_found', `no backup point named "${name}"; points: ${names.join(', ') || 'none (add one under points: in stowage.yaml, or POST /api/points)'}`);
  }

  /** Errors of the whole point, PocketBase-style by field. */
  private validate(input: unknown): PointConfig {
    const result = pointSchema.safeParse(input);
    if (!result.success) {
      const fields = formatIssues(result.error.issues);
      throw new PointError('invalid', `invalid backup point: ${fields.map((f) => `${f.field}: ${f.message}`).join('; ')}`, fields);
    }
    const problem = pointSourceProblem(result.data.source, this.deps.sources);
    if (problem) throw new PointError('invalid', `invalid backup point: source: ${problem}`, [{ field: 'source', message: problem }]);
    return result.data;
  }

  create(input: unknown): PointView {
    const point = this.validate(input);
    if (this.deps.configPoints.some((p) => p.name === point.name) || this.row(point.name)) {
      throw new PointError('exists', `a backup point named "${point.name}" already exists; choose another name`, [{ field: 'name', message: 'is already used by another point' }]);
    }
    const now = new Date().toISOString();
    this.deps.db.prepare('INSERT INTO points (name, method, config, created_at, updated_at) VALUES (?, ?, ?, ?, ?)').run(point.name, point.method, this.seal(point), now, now);
    return this.describe(point.name);
  }

  /**
   * A partial update: fields left out keep their value; a credential left out, or sent back as
   * the mask, keeps the stored one; `null` clears an optional field. The name cannot change
   * (runs are recorded under it). The method can, with the fields of the new method.
   */
  update(name: string, patch: unknown): PointView {
    this.refuseConfigPoint(name, 'changed');
    const row = this.row(name);
    if (!row) throw this.notFound(name);
    if (!patch || typeof patch !== 'object' || Array.isArray(patch)) throw new PointError('invalid', 'a point update must be a JSON object of the fields to change');
    const current = this.unseal(row) as Record<string, unknown>;
    const changes = { ...(patch as Record<string, unknown>) };
    if ('name' in changes && changes.name !== name) throw new PointError('invalid', 'the name of a point cannot change (its runs are kept under it); create a new point instead', [{ field: 'name', message: 'cannot change' }]);
    const method = (changes.method ?? current.method) as PointMethod;
    const merged: Record<string, unknown> = method === current.method ? { ...current } : { name, source: current.source, ignore: current.ignore, afterBackup: current.afterBackup, url: current.url };
    for (const [k, v] of Object.entries(changes)) {
      if (SECRET_FIELDS[method].includes(k) && (v === MASKED_SECRET || v === undefined)) continue;
      if (v === null) delete merged[k];
      else merged[k] = v;
    }
    const point = this.validate(merged);
    this.deps.db.prepare('UPDATE points SET method = ?, config = ?, updated_at = ? WHERE name = ?').run(point.method, this.seal(point), new Date().toISOString(), name);
    return this.describe(name);
  }

  delete(name: string): void {
    this.refuseConfigPoint(name, 'removed');
    if (!this.deps.db.prepare('DELETE FROM points WHERE name = ?').run(name).changes) throw this.notFound(name);
  }

  private refuseConfigPoint(name: string, what: string): void {
    if (this.deps.configPoints.some((p) => p.name === name)) {
      throw new PointError('read_only', `backup point "${name}" is declared in stowage.yaml and can only be ${what} there`);
    }
  }
}
