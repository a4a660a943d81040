import { z } from 'zod';
import { hooksSchema } from '../engine/hooks.js';
import { settingsSchema } from './settings.js';
import { parseRecipient } from '../encryption/age-keys.js';
import { validatePointUrl, type PointMethod } from '../points/url.js';
import { redactPostgresUrl } from '../sources/postgres.js';

/**
 * The schema of stowage.yaml. Every field error names the field and what a valid value looks
 * like; defaults live here and nowhere else.
 */

/** Source names become top-level folders in the archive, so they are restricted like keys. */
export const SOURCE_NAME = /^[a-z0-9][a-z0-9_.-]{0,63}$/;

const excludeList = z
  .array(z.string().min(1, 'an exclude rule cannot be empty'), { error: 'must be a list of fnmatch rules, e.g. ["logs", "*.tmp"]' })
  .default([]);

const sourceName = z.string({ error: 'is required: a short name such as "files" or "db"' }).regex(SOURCE_NAME, {
  message: 'must be 1-64 characters of a-z, 0-9, "_", "-" or ".", starting with a letter or digit (it becomes a folder in the archive)',
});

const dirSource = z
  .object({
    name: sourceName,
    kind: z.literal('dir'),
    path: z.string({ error: 'is required: the folder to back up' }).min(1),
    exclude: excludeList,
  })
  .strict();

const sqliteSource = z
  .object({
    name: sourceName,
    kind: z.literal('sqlite'),
    path: z.string({ error: 'is required: the SQLite database file' }).min(1),
  })
  .strict();

/** A pg_dump / pg_restore name pattern (`public`, `app_*`, `public.users`). */
const pgPatterns = (what: string, example: string) =>
  z
    .array(z.string().min(1, `a ${what} pattern cannot be empty`), { error: `must be a list of ${what} patterns, e.g. ${example}` })
    .default([]);

/** postgres:// or postgresql://, with a database; a password in it is allowed (use passwordEnv or ${ENV}). */
const postgresUrl = z
  .string({ error: 'is required: the database URL, e.g. postgres://app@db.example:5432/app (password: use passwordEnv)' })
  .superRefine((url, ctx) => {
    const example = 'postgres://user@host:5432/database';
    const redacted = redactPostgresUrl(url);
    if (!/^postgres(ql)?:\/\//i.test(url.trim())) {
      ctx.addIssue({ code: 'custom', message: `must be a PostgreSQL URL starting with postgres:// or postgresql://, like ${example}, not "${redacted}"` });
      return;
    }
    let u: URL;
    try {
      u = new URL(url.trim());
    } catch {
      ctx.addIssue({ code: 'custom', message: `"${redacted}" is not a valid URL; write it like ${example} (percent-encode special characters in the user or password)` });
      return;
    }
    if (!u.hostname) ctx.addIssue({ code: 'custom', message: `names no host; write it like ${example}` });
    if (!u.pathname.replace(/^\//, '') && !u.searchParams.get('dbname')) ctx.addIssue({ code: 'custom', message: `names no database; write it like ${example}` });
    if (u.searchParams.has('sslpassword')) ctx.addIssue({ code: 'custom', message: 'sslpassword is not supported (it would be visible on the command line of pg_dump); use a client key without a passphrase, readable only by Stowage' });
  });

const postgresSource = z
  .object({
    name: sourceName,
    kind: z.literal('postgres'),
    url: postgresUrl,
    passwordEnv: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be the name of an environment variable, e.g. APP_DB_PASSWORD (not the password itself)')
      .optional(),
    schemas: pgPatterns('schema', '["public", "app_*"]'),
    excludeSchemas: pgPatterns('schema', '["audit"]'),
    tables: pgPatterns('table', '["public.users", "app.*"]'),
    excludeTables: pgPatterns('table', '["public.sessions"]'),
    binDir: z.string().min(1, 'must be the folder holding pg_dump, pg_restore and psql, e.g. /usr/lib/postgresql/16/bin').optional(),
  })
  .strict();

const source = z.discriminatedUnion('kind', [dirSource, sqliteSource, postgresSource], {
  error: (issue) => (issue.code === 'invalid_union' ? 'kind must be "dir", "sqlite" or "postgres"' : undefined),
});

/** A point URL, checked by the method's own rules (points/url.ts) so the message says how to write it. */
const pointUrl = (method: PointMethod, example: string) =>
  z.string({ error: `is required: the address, e.g. ${example}` }).superRefine((url, ctx) => {
    try {
      validatePointUrl(method, url);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
    }
  });

const pointCommon = {
  name: sourceName,
  source: z.string({ error: 'is required: the name of a dir source' }).min(1, 'is required: the name of a dir source'),
  ignore: excludeList,
  afterBackup: z.boolean().default(true),
};

const gitPoint = z
  .object({
    ...pointCommon,
    method: z.literal('git'),
    url: pointUrl('git', 'https://git.example.com/me/data.git'),
    username: z.string().optional(),
    password: z.string().optional(),
    branch: z.string().default(''),
  })
  .strict();

const s3Point = z
  .object({
    ...pointCommon,
    method: z.literal('s3'),
    url: pointUrl('s3', 'https://s3.eu-north-1.amazonaws.com/bucket/folder'),
    accessKeyId: z.string().optional(),
    secretAccessKey: z.string().optional(),
    region: z.string().min(1).optional(),
    /** true: one ZIP at the URL (which must end in .zip); false: the files mirrored under the URL's folder. */
    archive: z.boolean().default(false),
    /** Mirror only: delete objects under the folder that are no longer in the source. */
    prune: z.boolean().default(false),
  })
  .strict()
  .superRefine((p, ctx) => {
    let zip = false;
    try {
      zip = /\.zip$/i.test(new URL(p.url).pathname);
    } catch {
      return; // the URL's own check has said what is wrong with it
    }
    if (p.archive && !zip) ctx.addIssue({ code: 'custom', path: ['url'], message: 'with archive: true the URL names the ZIP to write and must end in .zip, e.g. https://s3.eu-north-1.amazonaws.com/bucket/folder/files.zip' });
    if (!p.archive && zip) ctx.addIssue({ code: 'custom', path: ['url'], message: 'this URL names a .zip file: set archive: true to write one ZIP there, or give a folder URL to mirror the files' });
    if (p.archive && p.prune) ctx.addIssue({ code: 'custom', path: ['prune'], message: 'prune applies to mirrored files only; remove it, or set archive: false' });
  });

/** One backup point, in stowage.yaml and in the API (the same rules for both). */
export const pointSchema = z.discriminatedUnion('method', [gitPoint, s3Point], {
  error: (issue) => (issue.code === 'invalid_union' ? 'method must be "git" or "s3"' : undefined),
});
export type PointConfig = z.output<typeof pointSchema>;

/** Why a point cannot copy `source` (no such source, or not a folder), or null. */
export function pointSourceProblem(source: string, sources: ReadonlyArray<{ name: string; kind: string }>): string | null {
  const src = sources.find((s) => s.name === source);
  if (!src) return `no source named "${source}"; sources: ${sources.map((s) => s.name).join(', ')}`;
  if (src.kind !== 'dir') return `"${source}" is a ${src.kind} source; points copy the files of a dir source`;
  return null;
}

/**
 * Encryption of every backup (age format): to public keys (`age1...`, the server can write
 * backups it cannot read) or to a passphrase. Per request it can be overridden.
 */
const encryptionSection = z
  .object({
    recipients: z
      .array(
        z.string().superRefine((r, ctx) => {
          try {
            parseRecipient(r);
          } catch (err) {
            ctx.addIssue({ code: 'custom', message: (err as Error).message });
          }
        }),
        { error: 'must be a list of age public keys (age1..., made with "stowage keygen" or age-keygen)' },
      )
      .default([]),
    passphrase: z.string().min(12, 'must be at least 12 characters (use ${ENV_NAME} to keep it out of the file)').optional(),
  })
  .strict()
  .refine((e) => !(e.passphrase && e.recipients.length), { message: 'use either recipients or a passphrase, not both (age files hold one passphrase and nothing else)' });

/** `host:port` for the server; the port may be 0 (any free port, for tests). */
export const HTTP_ADDRESS = /^(\[[0-9a-fA-F:]+\]|[a-zA-Z0-9.-]+):(\d{1,5})$/;

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4 };

/** A byte size: a number, or a string like "10GB", "512 MiB". */
const byteSize = (example: string) =>
  z.union([z.number().int().positive(), z.string()], { error: `must be a size such as ${example}` }).transform((v, ctx) => {
    if (typeof v === 'number') return v;
    const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(v);
    const unit = SIZE_UNITS[(m?.[2] ?? '').toLowerCase()];
    if (!m || unit === undefined || Number(m[1]) <= 0) {
      ctx.addIssue({ code: 'custom', message: `must be a size such as ${example} (units: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)` });
      return z.NEVER;
    }
    return Math.floor(Number(m[1]) * unit);
  });

export const DEFAULT_HTTP = '127.0.0.1:8090';

const serverSection = z
  .object({
    http: z
      .string()
      .regex(HTTP_ADDRESS, 'must be host:port, e.g. 127.0.0.1:8090 or 0.0.0.0:8090')
      .refine((v) => Number(HTTP_ADDRESS.exec(v)?.[2]) <= 65535, 'the port must be 0-65535')
      .default(DEFAULT_HTTP),
    /** Origins allowed to call the API from a browser; none by default (no CORS headers). */
    corsOrigins: z.array(z.string().url('must be an origin such as https://admin.example.com'), { error: 'must be a list of origins' }).default([]),
    maxUploadSize: byteSize('"10GB"').default(10e9),
    maxJsonSize: byteSize('"1MB"').default(1e6),
    /** Behind a reverse proxy: trust X-Forwarded-For for client addresses (rate limits, logs). */
    trustProxy: z.boolean().default(false),
    /** The address people reach the server at, for links the server prints (setup link). */
    publicUrl: z.string().url('must be a URL such as https://backup.example.com').optional(),
  })
  .strict();

export const configSchema = z
  .object({
    dataDir: z.string({ error: 'must be a folder path, e.g. ./stowage-data' }).min(1, 'must be a folder path, e.g. ./stowage-data').default('./stowage-data'),
    storage: z
      .discriminatedUnion(
        'type',
        [
          z.object({ type: z.literal('local'), path: z.string({ error: 'must be a folder path' }).min(1, 'must be a folder path').optional() }).strict(),
          z
            .object({
              type: z.literal('s3'),
              bucket: z.string({ error: 'is required: the bucket name' }).min(3, 'must be a bucket name (3-63 characters)').max(63),
              prefix: z.string().max(900).default(''),
              region: z.string().min(1).default('us-east-1'),
              endpoint: z.string().url('must be a URL such as https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:9000').optional(),
              accessKeyId: z.string({ error: 'is required (use ${ENV_NAME} to keep it out of the file)' }).min(1),
              secretAccessKey: z.string({ error: 'is required (use ${ENV_NAME} to keep it out of the file)' }).min(1),
              forcePathStyle: z.boolean().default(false),
            })
            .strict(),
        ],
        { error: 'must be "local" (a folder) or "s3" (a bucket)' },
      )
      .default({ type: 'local' }),
    app: z
      .object({
        name: z.string().min(1).max(200).default('app'),
        version: z.string().min(1).optional(),
        versionCommand: z.string().min(1).optional(),
        labels: z.record(z.string(), z.string(), { error: 'must map label names to strings, e.g. { model: "x", serial: "y" }' }).default({}),
      })
      .strict()
      .refine((a) => !(a.version && a.versionCommand), { message: 'set either version or versionCommand, not both' })
      .default({ name: 'app', labels: {} }),
    sources: z
      .array(source, { error: 'must be a list of sources, each with a name and a kind (dir, sqlite or postgres)' })
      .min(1, 'needs at least one source')
      .superRefine((list, ctx) => {
        const seen = new Set<string>();
        list.forEach((s, i) => {
          if (seen.has(s.name)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `"${s.name}" is used by two sources; names must be unique` });
          seen.add(s.name);
        });
      }),
    excludes: excludeList,
    restore: z
      .object({
        enabled: z.boolean().default(true),
        versionPolicy: z.enum(['any', 'same-or-older', 'same'], { error: 'must be one of: any, same-or-older, same' }).default('same-or-older'),
        safetyBackup: z.boolean().default(true),
        keepPrevious: z.boolean().default(false),
      })
      .strict()
      .default({ enabled: true, versionPolicy: 'same-or-older', safetyBackup: true, keepPrevious: false }),
    // Level 1 by default: on the medium corpus it archives ~25% faster than level 6 for an archive
    // 1.7% larger (docs/PERFORMANCE.md); most of a backup's bytes are stored, not deflated.
    compression: z
      .object({ level: z.number().int().min(1, 'must be 1 (fastest) to 9 (smallest)').max(9, 'must be 1 (fastest) to 9 (smallest)').default(1) })
      .strict()
      .default({ level: 1 }),
    hooks: hooksSchema,
    encryption: encryptionSection.optional(),
    // Defaults for the runtime settings (PATCH /api/settings overrides them; see settings.ts).
    backups: settingsSchema.shape.backups,
    verify: settingsSchema.shape.verify,
    drill: settingsSchema.shape.drill,
    // Backup points: after a backup of `source`, push its files elsewhere (issue 5).
    points: z.array(pointSchema, { error: 'must be a list of backup points, each with a name, source, method and url' }).default([]),
    webhooks: z
      .array(
        z
          .object({
            url: z.string({ error: 'is required: the URL to POST events to' }).url('must be an http(s) URL'),
            events: z.array(z.string().min(1), { error: 'must be a list of event names, e.g. ["backup.failed"], or ["*"]' }).min(1, 'list at least one event, or "*"'),
            secret: z.string().min(16, 'must be at least 16 characters (it signs every delivery)').optional(),
            enabled: z.boolean().default(true),
            description: z.string().max(500).default(''),
          })
          .strict(),
        { error: 'must be a list of webhooks, each with a url and events' },
      )
      .default([]),
    server: serverSection.default({ http: DEFAULT_HTTP, corsOrigins: [], maxUploadSize: 10e9, maxJsonSize: 1e6, trustProxy: false }),
  })
  .strict()
  .superRefine((c, ctx) => {
    const seen = new Set<string>();
    c.points.forEach((p, i) => {
      if (seen.has(p.name)) ctx.addIssue({ code: 'custom', path: ['points', i, 'name'], message: `"${p.name}" is used by two points; names must be unique` });
      seen.add(p.name);
      const problem = pointSourceProblem(p.source, c.sources);
      if (problem) ctx.addIssue({ code: 'custom', path: ['points', i, 'source'], message: problem });
    });
  });

export type RawConfig = z.input<typeof configSchema>;
export type ParsedConfig = z.output<typeof configSchema>;
export type SourceConfig = ParsedConfig['sources'][number];
export type RestorePolicy = ParsedConfig['restore'];
export type ServerConfig = ParsedConfig['server'];
