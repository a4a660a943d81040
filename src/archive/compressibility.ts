/**
 * Decides by content, not by file name, whether deflating an entry is worth it. Deflate
 * gains nothing on JPEG, video or encrypted bytes and costs ~30 MB/s of a core, so those are
 * stored. The test is the order-0 byte entropy of a sample: already-compressed data sits at
 * ~7.9-8.0 bits per byte, text and databases well below 7.
 */
const SAMPLE_BYTES = 16 * 1024;
const STORE_ABOVE_BITS_PER_BYTE = 7.5;
/** Below this, a histogram says little (a 100-byte file cannot exceed log2(100) bits); just try. */
const MIN_SAMPLE = 1024;

export function looksIncompressible(data: Buffer): boolean {
  if (data.length < MIN_SAMPLE) return false;
  // Sample from the middle too: many formats have a compressible header then random payload.
  const counts = new Uint32Array(256);
  const half = Math.min(SAMPLE_BYTES / 2, Math.floor(data.length / 2));
  for (let i = 0; i < half; i++) counts[data[i]!]!++;
  const mid = Math.floor(data.length / 2);
  for (let i = mid; i < mid + half; i++) counts[data[i]!]!++;
  const n = half * 2;
  let entropy = 0;
  for (let i = 0; i < 256; i++) {
    const c = counts[i]!;
    if (c === 0) continue;
    const p = c / n;
    entropy -= p * Math.log2(p);
  }
  // Small samples underestimate entropy (not every byte value can appear); scale the limit.
  const limit = Math.min(STORE_ABOVE_BITS_PER_BYTE, Math.log2(n) * 0.8);
  return entropy >= limit;
}
