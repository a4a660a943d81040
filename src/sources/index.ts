import type { SourceConfig } from '../config/schema.js';
import { DirSource } from './dir.js';
import { PostgresSource } from './postgres.js';
import { SqliteSource } from './sqlite.js';
import type { Source } from './source.js';

export function createSource(config: SourceConfig): Source {
  switch (config.kind) {
    case 'dir':
      return new DirSource(config.name, config.path);
    case 'sqlite':
      return new SqliteSource(config.name, config.path);
    case 'postgres':
      return new PostgresSource(config);
  }
}

export { DirSource, SqliteSource, PostgresSource };
export { EmptySource, createEmptySource } from './empty.js';
export type { Source, BackupContext } from './source.js';
export { ExcludeRules, fnmatchToRegExp } from './fnmatch.js';
