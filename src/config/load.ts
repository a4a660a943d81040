import fs from 'node:fs';
import path from 'node:path';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { StowageError } from '../errors.js';
import { redactPostgresUrl } from '../sources/postgres.js';
import { configSchema, type ParsedConfig, type SourceConfig } from './schema.js';

export const CONFIG_FILE_NAME = 'stowage.yaml';

/** A configuration with every path made absolute. */
export interface StowageConfig {
  /** The file it came from; null when the embedded default applies. */
  configPath: string | null;
  dataDir: string;
  /** Local: where archives are. S3: the bucket; `path` is then the local staging folder. */
  storage: { type: 'local'; path: string } | ({ type: 's3'; path: string } & Omit<Extract<ParsedConfig['storage'], { type: 's3' }>, 'type'>);
  app: { name: string; version?: string; versionCommand?: string; labels: Record<string, string> };
  sources: SourceConfig[];
  excludes: string[];
  restore: ParsedConfig['restore'];
  compression: ParsedConfig['compression'];
  server: ParsedConfig['server'];
  hooks: ParsedConfig['hooks'];
  /** Defaults of the runtime settings (see settings.ts). */
  settings: Pick<ParsedConfig, 'backups' | 'verify' | 'drill'>;
  webhooks: ParsedConfig['webhooks'];
  points: ParsedConfig['points'];
  /** Encrypt every backup to these (age); null: backups are not encrypted unless asked. */
  encryption: NonNullable<ParsedConfig['encryption']> | null;
}

export interface LoadOptions {
  /** --config */
  configPath?: string;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

/**
 * Finds and loads the configuration: --config, then STOWAGE_CONFIG, then stowage.yaml in the
 * working directory, else the embedded default (a demo application inside the data folder).
 */
export function loadConfig(options: LoadOptions = {}): StowageConfig {
  const env = options.env ?? process.env;
  const cwd = options.cwd ?? process.cwd();
  const explicit = options.configPath ?? env.STOWAGE_CONFIG;
  if (explicit) {
    const file = path.resolve(cwd, explicit);
    if (!fs.existsSync(file)) {
      throw new StowageError('CONFIG_NOT_FOUND', `configuration file ${file} does not exist; create one with "stowage init"`);
    }
    return loadConfigFile(file, env);
  }
  const found = path.join(cwd, CONFIG_FILE_NAME);
  if (fs.existsSync(found)) return loadConfigFile(found, env);
  return defaultConfig(cwd, env);
}

export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): StowageConfig {
  const text = fs.readFileSync(file, 'utf8');
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) {
    const first = doc.errors[0]!;
    throw new StowageError('CONFIG_INVALID', `${file}: not valid YAML: ${first.message}`);
  }
  const raw = substituteEnv(doc.toJS() ?? {}, env, []);
  return resolveConfig(parseConfig(raw, file), path.dirname(file), file);
}

/** Validates a plain object; field errors are collected into one readable message. */
export function parseConfig(raw: unknown, origin = 'configuration'): ParsedConfig {
  const result = configSchema.safeParse(raw);
  if (result.success) return result.data;
  const fields = formatIssues(result.error.issues);
  const list = fields.map((f) => `  - ${f.field}: ${f.message}`).join('\n');
  throw new StowageError('CONFIG_INVALID', `${origin} is not valid:\n${list}`, { details: { fields } });
}

export function formatIssues(issues: z.core.$ZodIssue[]): Array<{ field: string; message: string }> {
  return issues.map((issue) => {
    const field = issue.path.length ? issue.path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`)).join('') : '(top level)';
    let message = issue.message;
    if (issue.code === 'unrecognized_keys') message = `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')} (check the spelling; see "stowage init" for every field)`;
    return { field, message };
  });
}

/** `${NAME}` in any string value reads the environment, so secrets stay out of the file. */
function substituteEnv(value: unknown, env: NodeJS.ProcessEnv, at: Array<string | number>): unknown {
  if (typeof value === 'string') {
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => {
      const v = env[name];
      if (v === undefined) {
        const field = at.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');
        throw new StowageError('CONFIG_INVALID', `${field}: environment variable ${name} is not set (the value refers to \${${name}})`, {
          details: { fields: [{ field, message: `environment variable ${name} is not set` }] },
        });
      }
      return v;
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => substituteEnv(v, env, [...at, i]));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substituteEnv(v, env, [...at, k])]));
  }
  return value;
}

export function resolveConfig(parsed: ParsedConfig, baseDir: string, configPath: string | null): StowageConfig {
  const dataDir = path.resolve(baseDir, parsed.dataDir);
  return {
    configPath,
    dataDir,
    storage:
      parsed.storage.type === 's3'
        ? { ...parsed.storage, path: path.join(dataDir, 'backups') }
        : { type: 'local', path: parsed.storage.path ? path.resolve(baseDir, parsed.storage.path) : path.join(dataDir, 'backups') },
    app: parsed.app,
    sources: parsed.sources.map((s) =>
      s.kind === 'postgres' ? (s.binDir ? { ...s, binDir: path.resolve(baseDir, s.binDir) } : s) : { ...s, path: path.resolve(baseDir, s.path) },
    ),
    excludes: parsed.excludes,
    restore: parsed.restore,
    compression: parsed.compression,
    server: parsed.server,
    settings: { backups: parsed.backups, verify: parsed.verify, drill: parsed.drill },
    webhooks: parsed.webhooks,
    points: parsed.points,
    encryption: parsed.encryption ?? null,
    // A hook's relative cwd is relative to the configuration file, like every other path.
    hooks: Object.fromEntries(
      Object.entries(parsed.hooks).map(([phase, list]) => [phase, list.map((h) => (h.cwd ? { ...h, cwd: path.resolve(baseDir, h.cwd) } : h))]),
    ) as ParsedConfig['hooks'],
  };
}

/** The embedded default: protects a demo application that Stowage creates in the data folder. */
export function defaultConfig(cwd: string, env: NodeJS.ProcessEnv = process.env): StowageConfig {
  const dataDir = env.STOWAGE_DATA_DIR ? path.resolve(cwd, env.STOWAGE_DATA_DIR) : path.join(cwd, 'stowage-data');
  const demo = path.join(dataDir, 'demo-app');
  const parsed = parseConfig({
    dataDir,
    app: { name: 'demo-app', version: '1.0.0', labels: { model: 'demo', serial: 'DEMO-0001' } },
    sources: [
      // The database is its own source (a consistent snapshot), so the folder source skips its files.
      { name: 'files', kind: 'dir', path: demo, exclude: ['data.db', 'data.db-wal', 'data.db-shm', 'data.db-journal', 'logs'] },
      { name: 'db', kind: 'sqlite', path: path.join(demo, 'data.db') },
    ],
  });
  return { ...resolveConfig(parsed, cwd, null) };
}

export function isDefaultConfig(config: StowageConfig): boolean {
  return config.configPath === null;
}

/** The configuration with every secret replaced by a mask, for `show-config` and logs. */
export function maskConfig(config: StowageConfig): StowageConfig {
  const copy = structuredClone(config);
  const mask = (v: string | undefined) => (v ? '******' : v);
  if (copy.storage.type === 's3') copy.storage.secretAccessKey = mask(copy.storage.secretAccessKey)!;
  if (copy.settings.backups?.s3) copy.settings.backups.s3.secret = mask(copy.settings.backups.s3.secret)!;
  for (const w of copy.webhooks) if (w.secret) w.secret = mask(w.secret);
  // A password written into a PostgreSQL URL (userinfo or ?password=); passwordEnv names a variable, not a secret.
  for (const s of copy.sources) if (s.kind === 'postgres') s.url = redactPostgresUrl(s.url);
  if (copy.encryption?.passphrase) copy.encryption.passphrase = mask(copy.encryption.passphrase)!;
  for (const p of copy.points) {
    if (p.method === 'git' && p.password) p.password = mask(p.password);
    if (p.method === 's3' && p.secretAccessKey) p.secretAccessKey = mask(p.secretAccessKey);
  }
  return copy;
}

