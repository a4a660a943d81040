import { z } from 'zod';

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

const source = z.discriminatedUnion('kind', [dirSource, sqliteSource], {
  error: (issue) => (issue.code === 'invalid_union' ? 'kind must be "dir" or "sqlite"' : undefined),
});

export const configSchema = z
  .object({
    dataDir: z.string({ error: 'must be a folder path, e.g. ./stowage-data' }).min(1, 'must be a folder path, e.g. ./stowage-data').default('./stowage-data'),
    storage: z
      .discriminatedUnion('type', [
        z.object({ type: z.literal('local'), path: z.string({ error: 'must be a folder path' }).min(1, 'must be a folder path').optional() }).strict(),
      ], { error: 'must be "local" (S3 arrives with the off-site storage work)' })
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
      .array(source, { error: 'must be a list of sources, each with a name and a kind (dir or sqlite)' })
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
  })
  .strict();

export type RawConfig = z.input<typeof configSchema>;
export type ParsedConfig = z.output<typeof configSchema>;
export type SourceConfig = ParsedConfig['sources'][number];
export type RestorePolicy = ParsedConfig['restore'];
