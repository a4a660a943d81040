import { Cron } from 'croner';
import { z } from 'zod';

/**
 * Runtime settings: what a superuser may change while Stowage runs (schedules, retention,
 * verification and drills, the S3 target). `stowage.yaml` gives the defaults; changes made
 * through `PATCH /api/settings` or `stowage settings set` are stored in the catalogue and win.
 * The `backups` section is shaped like PocketBase's so its users feel at home.
 *
 * Command hooks and webhooks from the configuration file are deliberately not settings: a
 * command to run is code, and code comes from the file an administrator controls.
 */

/** Cron macros croner understands, and the only non-5-field forms accepted. */
export const CRON_MACROS = ['@hourly', '@daily', '@midnight', '@weekly', '@monthly', '@yearly', '@annually'] as const;

export const CRON_HELP =
  'must be 5 fields "minute hour day-of-month month day-of-week" (e.g. "0 3 * * *" for every day at 03:00, "*/30 * * * *" every 30 minutes) ' +
  `or one of ${CRON_MACROS.join(', ')}; leave it empty for no schedule`;

/** Why `expr` is not an acceptable cron expression, or null if it is. */
export function cronProblem(expr: string, timezone?: string): string | null {
  const trimmed = expr.trim();
  if (!CRON_MACROS.includes(trimmed as (typeof CRON_MACROS)[number]) && trimmed.split(/\s+/).length !== 5) return CRON_HELP;
  try {
    new Cron(trimmed, { paused: true, timezone });
    return null;
  } catch (err) {
    return `${(err as Error).message.replace(/^CronPattern: /, '')}; ${CRON_HELP}`;
  }
}

export function isValidTimezone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

const cronField = z.string({ error: CRON_HELP }).max(200).default('');

/** "30d", "12h", "2w", "1y6m": restic's --keep-within durations. */
export const DURATION = /^(\d+y)?(\d+m)?(\d+w)?(\d+d)?(\d+h)?$/;

const keep = z.number({ error: 'must be a whole number (0 or more)' }).int('must be a whole number').min(0, 'must be 0 or more').optional();

export const retentionSchema = z
  .object({
    keepLast: keep,
    keepHourly: keep,
    keepDaily: keep,
    keepWeekly: keep,
    keepMonthly: keep,
    keepYearly: keep,
    keepWithin: z
      .string()
      .regex(DURATION, 'must be a duration such as "30d", "12h", "2w", "1y6m" (y, m, w, d, h)')
      .refine((v) => v !== '', 'must be a duration such as "30d"')
      .optional(),
  })
  .strict();
export type RetentionPolicy = z.infer<typeof retentionSchema>;

export const s3SettingsSchema = z
  .object({
    enabled: z.boolean().default(false),
    bucket: z.string().max(255).default(''),
    region: z.string().max(100).default(''),
    endpoint: z.string().max(2000).default(''),
    accessKey: z.string().max(1000).default(''),
    secret: z.string().max(1000).default(''),
    forcePathStyle: z.boolean().default(false),
    prefix: z.string().max(1000).default(''),
  })
  .strict()
  .superRefine((s, ctx) => {
    if (!s.enabled) return;
    if (!s.bucket) ctx.addIssue({ code: 'custom', path: ['bucket'], message: 'is required when s3.enabled is true' });
    if (s.endpoint && !/^https?:\/\/[^\s/]+/.test(s.endpoint)) ctx.addIssue({ code: 'custom', path: ['endpoint'], message: 'must be an http(s) URL such as https://s3.eu-west-1.amazonaws.com' });
  });

export const settingsSchema = z
  .object({
    backups: z
      .object({
        cron: cronField,
        cronMaxKeep: z.number({ error: 'must be a whole number, 1 or more' }).int().min(1, 'must be 1 or more (the number of scheduled backups to keep)').default(7),
        timezone: z.string().refine(isValidTimezone, 'must be an IANA time zone such as "UTC" or "Europe/Berlin"').default('UTC'),
        runMissed: z.boolean().default(true),
        retention: retentionSchema.prefault({}),
        s3: s3SettingsSchema.prefault({}),
      })
      .strict()
      .superRefine((b, ctx) => {
        if (b.cron) {
          const problem = cronProblem(b.cron, b.timezone);
          if (problem) ctx.addIssue({ code: 'custom', path: ['cron'], message: problem });
        }
      })
      .prefault({}),
    verify: z
      .object({ cron: cronField, sample: z.enum(['newest', 'rotate'], { error: 'must be "newest" or "rotate"' }).default('newest') })
      .strict()
      .superRefine((v, ctx) => {
        const problem = v.cron ? cronProblem(v.cron) : null;
        if (problem) ctx.addIssue({ code: 'custom', path: ['cron'], message: problem });
      })
      .prefault({}),
    drill: z
      .object({ cron: cronField })
      .strict()
      .superRefine((v, ctx) => {
        const problem = v.cron ? cronProblem(v.cron) : null;
        if (problem) ctx.addIssue({ code: 'custom', path: ['cron'], message: problem });
      })
      .prefault({}),
  })
  .strict();

export type Settings = z.output<typeof settingsSchema>;
export type SettingsInput = z.input<typeof settingsSchema>;

/** Paths of secret settings: masked in every response, kept when a PATCH leaves them out. */
export const SECRET_SETTINGS = [['backups', 's3', 'secret']] as const;
export const MASK = '******';
