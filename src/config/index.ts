export { loadConfig, loadConfigFile, parseConfig, resolveConfig, defaultConfig, isDefaultConfig, CONFIG_FILE_NAME, type StowageConfig, type LoadOptions } from './load.js';
export type { SourceConfig, RestorePolicy } from './schema.js';
