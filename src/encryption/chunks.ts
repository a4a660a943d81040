/**
 * Shared pieces of the two chunked encryption formats (age's STREAM payload and Stowage's
 * AES-256-GCM format): cutting a byte stream into fixed-size blocks while holding the latest full
 * block back until it is known whether more follows (the last block is sealed differently), and
 * a growable buffer for headers that arrive in pieces.
 */
import type { TransformCallback } from 'node:stream';

/**
 * Cuts a stream into blocks of `size` bytes. A full block is handed to `onBlock` only once at
 * least one more byte has arrived, so every block passed there is known not to be the last one;
 * `end()` returns what is held (the last block: empty, short or exactly full). Memory is one
 * block, whatever the size of the pieces written.
 */
export class BlockCutter {
  private readonly held: Buffer;
  private fill = 0;

  constructor(readonly size: number) {
    this.held = Buffer.allocUnsafe(size);
  }

  /** Bytes held back (not yet passed to `onBlock`). */
  get buffered(): number {
    return this.fill;
  }

  /**
   * Feeds `data`. `onBlock` gets a view that is only valid during the call (the held buffer is
   * reused, and blocks inside `data` are passed without a copy).
   */
  write(data: Buffer, onBlock: (block: Buffer) => void): void {
    let off = 0;
    const n = data.length;
    while (off < n) {
      if (this.fill === this.size) {
        // More data follows a full held block: it is not the last.
        onBlock(this.held);
        this.fill = 0;
      }
      if (this.fill === 0) {
        // Whole blocks inside data with more after them: no copy.
        while (n - off > this.size) {
          onBlock(data.subarray(off, off + this.size));
          off += this.size;
        }
      }
      const take = Math.min(this.size - this.fill, n - off);
      data.copy(this.held, this.fill, off, off + take);
      this.fill += take;
      off += take;
    }
  }

  /** The held remainder: the last block. The cutter must not be written to afterwards. */
  end(): Buffer {
    return this.held.subarray(0, this.fill);
  }
}

/** An append-only byte buffer for headers read in pieces, capped at `max` bytes. */
export class GrowBuffer {
  private buf: Buffer = Buffer.allocUnsafe(256);
  length = 0;

  append(data: Buffer): void {
    if (this.length + data.length > this.buf.length) {
      const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.length + data.length));
      this.buf.copy(next, 0, 0, this.length);
      this.buf = next;
    }
    data.copy(this.buf, this.length);
    this.length += data.length;
  }

  view(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

/**
 * Largest chunk counter either format uses (2^48 - 1, 16 EiB of 64 KiB chunks): the 12-byte
 * nonces are written with a 6-byte big-endian write. Reaching it is an error, never a wrap.
 */
export const MAX_COUNTER = 2 ** 48 - 1;

/** Runs `fn` and reports to a Transform callback: `cb()` when it returns, `cb(err)` when it throws. */
export function settle(cb: TransformCallback, fn: () => void): void {
  try {
    fn();
    cb();
  } catch (err) {
    cb(err as Error);
  }
}
