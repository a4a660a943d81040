import { describe, expect, it } from 'vitest';
import { ManifestScanner, ManifestSyntaxError } from './manifest-stream.js';

/** Feeds `text` in chunks of `size` bytes; returns what the scanner saw. */
function scan(text: string, size: number) {
  const entries: unknown[] = [];
  const scanner = new ManifestScanner((e, i) => {
    expect(i).toBe(entries.length);
    entries.push(e);
  });
  const bytes = Buffer.from(text, 'utf8');
  for (let i = 0; i < bytes.length; i += size) {
    // A fresh copy per chunk, then scribbled over: the scanner must not keep views into chunks.
    const chunk = Buffer.from(bytes.subarray(i, i + size));
    scanner.push(chunk);
    chunk.fill(0x7e);
  }
  return { ...scanner.end(), entries };
}

const manifest = {
  format: 'stowage-backup',
  note: 'braces } and ] and "quotes" \\ and unicode é ✓ inside strings',
  entries: [{ path: 'files/a', size: 1, nested: { list: [1, [2, { x: '}' }]] } }, { path: 'files/ü', size: -2.5e3 }, true, null, 'x'],
  after: [1, 2],
  n: 12,
};

describe('ManifestScanner', () => {
  it.each([1, 2, 3, 7, 64, 1 << 20])('gives what JSON.parse gives, streamed in %i-byte chunks', (size) => {
    for (const text of [JSON.stringify(manifest), JSON.stringify(manifest, null, 2), ` \n${JSON.stringify(manifest, null, '\t')}\n `]) {
      const { top, entries, entriesStreamed } = scan(text, size);
      const { entries: expected, ...rest } = JSON.parse(text) as typeof manifest;
      expect(entriesStreamed).toBe(true);
      expect(entries).toEqual(expected);
      expect(top).toEqual(rest);
    }
  });

  it('keeps "entries" that are not an array as a plain value', () => {
    expect(scan('{"entries": {"a": 1}}', 3)).toMatchObject({ top: { entries: { a: 1 } }, entriesStreamed: false, entries: [] });
    expect(scan('{"format": "x"}', 3)).toMatchObject({ top: { format: 'x' }, entriesStreamed: false });
    expect(scan('{}', 1)).toMatchObject({ top: {}, entriesStreamed: false });
    expect(scan('{"entries": []}', 1)).toMatchObject({ top: {}, entriesStreamed: true, entries: [] });
  });

  it('returns any other top-level JSON value whole', () => {
    expect(scan('null', 1).top).toBeNull();
    expect(scan('[1, {"a": 2}]', 2).top).toEqual([1, { a: 2 }]);
    expect(scan('"stowage-backup"', 4).top).toBe('stowage-backup');
  });

  it('makes "__proto__" an own property, as JSON.parse does', () => {
    const { top } = scan('{"__proto__": {"polluted": true}, "a": 1}', 5);
    expect(Object.getPrototypeOf(top)).toBe(Object.prototype);
    expect(Object.keys(top as object)).toEqual(['__proto__', 'a']);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it.each([
    ['truncated', JSON.stringify(manifest).slice(0, 80)],
    ['truncated in the entries', JSON.stringify(manifest).slice(0, JSON.stringify(manifest).indexOf('files/ü'))],
    ['empty', ''],
    ['trailing garbage', '{"a": 1} x'],
    ['a trailing comma in the object', '{"a": 1,}'],
    ['a trailing comma in the entries', '{"entries": [{"a": 1},]}'],
    ['a missing comma', '{"a": 1 "b": 2}'],
    ['a missing colon', '{"a" 1}'],
    ['a key that is not a string', '{a: 1}'],
    ['a bad literal', '{"a": tru}'],
    ['a bad entry', '{"entries": [{"a": 1}, {"b": nul}]}'],
    ['two values in one entry', '{"entries": [{"a": 1} {"b": 2}]}'],
    ['entries twice', '{"entries": [], "entries": []}'],
    ['mismatched brackets', '{"entries": [{"a": [1}]]}'],
    ['not JSON at all', 'PK\u0003\u0004'],
  ])('refuses %s as a ManifestSyntaxError', (_label, text) => {
    for (const size of [1, 4, 1024]) expect(() => scan(text, size)).toThrow(ManifestSyntaxError);
  });

  it('accepts exactly what JSON.parse accepts on a sample of damaged texts', () => {
    const text = JSON.stringify(manifest);
    for (let cut = 0; cut < text.length; cut += 3) {
      const damaged = text.slice(0, cut) + text.slice(cut + 1);
      let expected = true;
      try {
        JSON.parse(damaged);
      } catch {
        expected = false;
      }
      let got = true;
      try {
        scan(damaged, 5);
      } catch (err) {
        expect(err).toBeInstanceOf(ManifestSyntaxError);
        got = false;
      }
      // A removed byte can make a valid "entries" appear twice only by JSON rules; none here.
      expect(got, damaged).toBe(expected);
    }
  });
});
