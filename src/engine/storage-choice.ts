import crypto from 'node:crypto';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { StowageConfig } from '../config/load.js';
import type { Settings } from '../config/settings.js';
import { LocalStorage } from '../storage/local.js';
import { OutboxStorage } from '../storage/outbox.js';
import type { S3StorageConfig } from '../storage/s3.js';
import { describeS3 } from '../storage/s3-where.js';
import type { LocalCopy, Storage, StoredObject, Upload } from '../storage/storage.js';

/**
 * Which storage holds the backups: `backups.s3` in the runtime settings when enabled (the
 * PocketBase way: switched through PATCH /api/settings, no restart), else `storage:` in
 * stowage.yaml. S3 always sits behind a local outbox (storage/outbox.ts).
 */
interface Choice {
  /** Changes when anything that selects or configures the storage changes. */
  id: string;
  description: string;
  build(): Promise<Storage>;
}

function s3Choice(dataDir: string, s3: S3StorageConfig, origin: string): Choice {
  return {
    // The secret is part of the identity (a new secret needs a new client) only as a hash.
    id: `s3:${origin}:${crypto.createHash('sha256').update(JSON.stringify(s3)).digest('hex')}`,
    description: describeS3(s3),
    build: async () => {
      // Loaded only when used: the AWS SDK adds ~0.2 s to every CLI start otherwise.
      const { S3Storage } = await import('../storage/s3.js');
      return new OutboxStorage(new S3Storage(s3), path.join(dataDir, 'outbox'));
    },
  };
}

function chooseStorage(config: StowageConfig, settings: Settings): Choice {
  const s = settings.backups.s3;
  if (s.enabled) {
    return s3Choice(
      config.dataDir,
      { bucket: s.bucket, prefix: s.prefix, region: s.region || 'us-east-1', endpoint: s.endpoint || undefined, accessKeyId: s.accessKey, secretAccessKey: s.secret, forcePathStyle: s.forcePathStyle },
      'settings',
    );
  }
  const st = config.storage;
  if (st.type === 's3') {
    return s3Choice(
      config.dataDir,
      { bucket: st.bucket, prefix: st.prefix, region: st.region, endpoint: st.endpoint, accessKeyId: st.accessKeyId, secretAccessKey: st.secretAccessKey, forcePathStyle: st.forcePathStyle },
      'config',
    );
  }
  return { id: `local:${st.path}`, description: `local folder ${st.path}`, build: async () => new LocalStorage(st.path) };
}

/**
 * The engine's one Storage: each call goes to the storage the settings choose at that moment.
 * A job resolves it once (`current()`) and keeps that one to the end, so a settings change
 * mid-backup cannot split an archive between two places.
 */
export class ChosenStorage implements Storage {
  private built: { id: string; storage: Promise<Storage> } | null = null;
  private chosen: { settings: Settings; choice: Choice } | null = null;

  /** `settings()` returns the same object while the settings are unchanged (SettingsStore does). */
  constructor(
    private readonly config: StowageConfig,
    private readonly settings: () => Settings,
  ) {}

  /** The choice for the settings in force, worked out again only when they changed (every storage call asks). */
  private select(): Choice {
    const settings = this.settings();
    if (this.chosen?.settings !== settings) this.chosen = { settings, choice: chooseStorage(this.config, settings) };
    return this.chosen.choice;
  }

  get description(): string {
    return this.select().description;
  }

  /** The storage in force now. */
  current(): Promise<Storage> {
    const choice = this.select();
    if (this.built?.id !== choice.id) this.built = { id: choice.id, storage: choice.build() };
    return this.built.storage;
  }

  async createUpload(key: string): Promise<Upload> {
    return (await this.current()).createUpload(key);
  }

  async get(key: string, range?: { start: number; end?: number }): Promise<Readable> {
    return (await this.current()).get(key, range);
  }

  async stat(key: string): Promise<StoredObject | null> {
    return (await this.current()).stat(key);
  }

  async list(): Promise<readonly StoredObject[]> {
    return (await this.current()).list();
  }

  async delete(key: string): Promise<void> {
    return (await this.current()).delete(key);
  }

  async localCopy(key: string, tempDir: string): Promise<LocalCopy> {
    return (await this.current()).localCopy(key, tempDir);
  }

  async cleanupIncomplete(isWriterAlive: (owner: string) => boolean): Promise<number> {
    return (await this.current()).cleanupIncomplete(isWriterAlive);
  }
}

/** The storage a job works with: the chosen one resolved, or the storage itself. */
export async function resolveStorage(storage: Storage): Promise<Storage> {
  return storage instanceof ChosenStorage ? storage.current() : storage;
}
