/**
 * Reads a manifest's JSON as it is inflated, handing over one `entries` element at a time, so a
 * restore never holds the manifest's text or its tens of thousands of entry objects at once
 * (JSON.parse of a 25,000-entry manifest added ~40 MB to a restore's peak RSS). Everything but
 * the entries is collected into an object, as JSON.parse would build it.
 *
 * This only finds where each value ends (strings, nesting); each value's own text still goes
 * through JSON.parse, so what is accepted is exactly JSON.
 */
export class ManifestSyntaxError extends Error {}

export interface ScannedManifest {
  /** The top-level value without `entries` (when `entries` was an array); any JSON value. */
  top: unknown;
  /** Whether `entries` was present as an array (its elements went to `onEntry`). */
  entriesStreamed: boolean;
}

const WS = new Set([0x20, 0x09, 0x0a, 0x0d]);
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const LITERAL_END = new Set([...WS, 0x2c, 0x5d, 0x7d]); // whitespace , ] }
/** { [ " - 0-9 t f n */
const VALUE_START = new Set([0x7b, 0x5b, QUOTE, 0x2d, ...'0123456789tfn'.split('').map((d) => d.charCodeAt(0))]);

/** Finds the end of one JSON value, resumable across chunks. */
class ValueEnd {
  private depth = 0;
  private inString = false;
  private escaped = false;
  private kind: 'compound' | 'string' | 'literal' | undefined;

  reset(): void {
    this.depth = 0;
    this.inString = false;
    this.escaped = false;
    this.kind = undefined;
  }

  /** Index just past the value's end in `buf` (scanning from `from`), or -1 if it goes on. */
  scan(buf: Buffer, from: number): number {
    let i = from;
    if (this.kind === undefined) {
      const c = buf[i]!;
      this.kind = c === 0x7b || c === 0x5b ? 'compound' : c === QUOTE ? 'string' : 'literal';
      if (this.kind === 'compound') this.depth = 1;
      if (this.kind === 'string') this.inString = true;
      i++;
    }
    if (this.kind === 'literal') {
      while (i < buf.length && !LITERAL_END.has(buf[i]!)) i++;
      return i < buf.length ? i : -1;
    }
    for (; i < buf.length; i++) {
      const c = buf[i]!;
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === BACKSLASH) this.escaped = true;
        else if (c === QUOTE) {
          this.inString = false;
          if (this.kind === 'string') return i + 1;
        }
      } else if (c === QUOTE) this.inString = true;
      else if (c === 0x7b || c === 0x5b) this.depth++;
      else if ((c === 0x7d || c === 0x5d) && --this.depth === 0) return i + 1;
    }
    return -1;
  }

  /** At the end of input only a literal (`1`, `true`) can be complete without a delimiter. */
  get completeAtEnd(): boolean {
    return this.kind === 'literal';
  }
}

type State = 'start' | 'other' | 'key-or-close' | 'key' | 'colon' | 'value' | 'comma-or-close' | 'entry-or-close' | 'entry' | 'entry-comma-or-close' | 'done';

export class ManifestScanner {
  private state: State = 'start';
  private readonly value = new ValueEnd();
  /** Bytes of a value that spans chunks. */
  private parts: Buffer[] = [];
  private inValue = false;
  private key = '';
  private readonly top: Record<string, unknown> = {};
  private entriesStreamed = false;
  private entryIndex = 0;
  private position = 0;

  constructor(private readonly onEntry: (entry: unknown, index: number) => void) {}

  push(chunk: Buffer): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.inValue) {
        const end = this.value.scan(chunk, i);
        if (end < 0) {
          this.parts.push(Buffer.from(chunk.subarray(i))); // the caller may reuse `chunk`
          break;
        }
        this.parts.push(chunk.subarray(i, end));
        this.finishValue();
        i = end;
        continue;
      }
      const c = chunk[i]!;
      if (this.state === 'other') {
        this.parts.push(Buffer.from(chunk.subarray(i)));
        break;
      }
      if (WS.has(c)) {
        i++;
        continue;
      }
      switch (this.state) {
        case 'start':
          if (c !== 0x7b) {
            this.state = 'other'; // not an object: judged whole at the end
            continue;
          }
          this.state = 'key-or-close';
          break;
        case 'key-or-close':
          if (c !== 0x7d) {
            this.state = 'key'; // the same byte again, as a key
            continue;
          }
          this.state = 'done';
          break;
        case 'key':
          if (c !== QUOTE) this.unexpected(c, i);
          this.state = 'key';
          this.startValue();
          continue;
        case 'colon':
          if (c !== 0x3a) this.unexpected(c, i);
          this.state = 'value';
          break;
        case 'value':
          if (this.key === 'entries' && (this.entriesStreamed || 'entries' in this.top)) throw new ManifestSyntaxError('"entries" appears twice');
          if (this.key === 'entries' && c === 0x5b) {
            this.entriesStreamed = true;
            this.state = 'entry-or-close';
            break;
          }
          if (!VALUE_START.has(c)) this.unexpected(c, i);
          this.startValue();
          continue;
        case 'comma-or-close':
          if (c === 0x2c) this.state = 'key';
          else if (c === 0x7d) this.state = 'done';
          else this.unexpected(c, i);
          break;
        case 'entry-or-close':
          if (c !== 0x5d) {
            this.state = 'entry'; // the same byte again, as an element
            continue;
          }
          this.state = 'comma-or-close';
          break;
        case 'entry':
          if (!VALUE_START.has(c)) this.unexpected(c, i);
          this.state = 'entry';
          this.startValue();
          continue;
        case 'entry-comma-or-close':
          if (c === 0x2c) this.state = 'entry';
          else if (c === 0x5d) this.state = 'comma-or-close';
          else this.unexpected(c, i);
          break;
        case 'done':
          this.unexpected(c, i);
      }
      i++;
    }
    this.position += chunk.length;
  }

  /** Call after the last chunk. */
  end(): ScannedManifest {
    if (this.state === 'other') return { top: parseJson(Buffer.concat(this.parts)), entriesStreamed: false };
    if (this.inValue && this.value.completeAtEnd) this.finishValue();
    if (this.state !== 'done' || this.inValue) throw new ManifestSyntaxError('unexpected end of JSON input');
    return { top: this.top, entriesStreamed: this.entriesStreamed };
  }

  private startValue(): void {
    this.inValue = true;
    this.value.reset();
    this.parts = [];
  }

  private finishValue(): void {
    const text = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts);
    this.parts = [];
    this.inValue = false;
    const v = parseJson(text);
    switch (this.state) {
      case 'key':
        this.key = v as string;
        this.state = 'colon';
        break;
      case 'value':
        // As JSON.parse does: an own property even for "__proto__", the last of duplicate keys wins.
        Object.defineProperty(this.top, this.key, { value: v, enumerable: true, writable: true, configurable: true });
        this.state = 'comma-or-close';
        break;
      case 'entry':
        this.onEntry(v, this.entryIndex++);
        this.state = 'entry-comma-or-close';
        break;
      default:
        throw new Error(`manifest scanner: value in state ${this.state}`);
    }
  }

  private unexpected(c: number, i: number): never {
    throw new ManifestSyntaxError(`unexpected ${JSON.stringify(String.fromCharCode(c))} at byte ${this.position + i}`);
  }
}

function parseJson(text: Buffer): unknown {
  try {
    return JSON.parse(text.toString('utf8'));
  } catch (err) {
    throw new ManifestSyntaxError((err as Error).message);
  }
}
