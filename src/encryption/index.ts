/**
 * Streaming encryption for backups (issue 6): age (age-encryption.org/v1, interoperable with the
 * age CLI) and Stowage's chunked AES-256-GCM format for exports with a caller's key. Both are
 * node:stream Transforms with bounded memory. docs/FORMAT.md sections 6 and 7 describe the formats.
 */
export {
  createAgeEncryptStream,
  createAgeDecryptStream,
  isAgeFile,
  generateIdentity,
  parseIdentityFile,
  recipientOf,
  type AgeEncryptOptions,
  type AgeDecryptOptions,
} from './age.js';
export { createAesGcmEncryptStream, createAesGcmDecryptStream, parseAesKey, isAesGcmFile } from './aes-gcm.js';
