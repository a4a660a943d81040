/**
 * A streaming parser for Server-Sent Events (the WHATWG `text/event-stream` format), fed with
 * decoded text chunks of any size: lines may end in CRLF, LF or CR and may be split anywhere
 * between chunks. EventSource itself cannot send an Authorization header, hence this parser
 * over fetch.
 */
export interface SseMessage {
  /** The `event:` field; "message" when absent. */
  event: string;
  /** The `data:` lines joined with "\n". */
  data: string;
  /** The last `id:` seen (it persists across messages, as in EventSource). */
  id: string;
}

export class SseParser {
  private buffer = '';
  private started = false;
  private eventType = '';
  private dataLines: string[] = [];
  private lastEventId = '';

  constructor(private readonly onMessage: (message: SseMessage) => void) {}

  /** Feeds decoded text; complete messages are dispatched as they end. */
  push(text: string): void {
    this.buffer += text;
    if (!this.started && this.buffer.length) {
      this.started = true;
      if (this.buffer.charCodeAt(0) === 0xfeff) this.buffer = this.buffer.slice(1);
    }
    let start = 0;
    for (;;) {
      const cr = this.buffer.indexOf('\r', start);
      const lf = this.buffer.indexOf('\n', start);
      if (cr === -1 && lf === -1) break;
      let end: number;
      let next: number;
      if (cr !== -1 && (lf === -1 || cr < lf)) {
        // A CR as the last character may be the first half of a CRLF: wait for more text.
        if (cr === this.buffer.length - 1) break;
        end = cr;
        next = this.buffer[cr + 1] === '\n' ? cr + 2 : cr + 1;
      } else {
        end = lf;
        next = lf + 1;
      }
      this.line(this.buffer.slice(start, end));
      start = next;
    }
    this.buffer = this.buffer.slice(start);
  }

  /** The stream ended: a trailing CR ends its line; a message without its blank line is dropped, as EventSource does. */
  end(): void {
    if (this.buffer.endsWith('\r')) this.line(this.buffer.slice(0, -1));
    this.buffer = '';
    this.eventType = '';
    this.dataLines = [];
  }

  private line(line: string): void {
    if (line === '') {
      this.dispatch();
      return;
    }
    if (line.startsWith(':')) return; // a comment (keep-alive)
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'event':
        this.eventType = value;
        break;
      case 'data':
        this.dataLines.push(value);
        break;
      case 'id':
        if (!value.includes('\0')) this.lastEventId = value;
        break;
      default: // `retry` and unknown fields: nothing to do without automatic reconnection
    }
  }

  private dispatch(): void {
    const type = this.eventType || 'message';
    const lines = this.dataLines;
    this.eventType = '';
    this.dataLines = [];
    if (!lines.length) return;
    this.onMessage({ event: type, data: lines.join('\n'), id: this.lastEventId });
  }
}
