import type { StowageConfig } from '../config/load.js';
import type { StowageEmitter } from '../events/events.js';
import type { Storage } from '../storage/storage.js';
import type { ExcludeHook } from './backup.js';
import type { Catalogue } from './catalogue.js';

/** What the engine's jobs share: handed to runBackup, runRestore, verify. */
export interface EngineContext {
  config: StowageConfig;
  storage: Storage;
  catalogue: Catalogue;
  events: StowageEmitter;
  excludeHooks: ExcludeHook[];
  /** Scratch space inside the data folder (snapshots, spools, downloads). */
  tempDir: string;
  stowageVersion: string;
  /** Appends to the running job's log (hook output); a no-op outside a job. */
  jobLog: (text: string) => void;
}
