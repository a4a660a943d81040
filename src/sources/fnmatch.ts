/**
 * Exclude rules with Python's `fnmatch` semantics (what the NetBox Backup Points document
 * specifies): matched against the path relative to the source, case-sensitive, `*` matches any
 * run of characters including `/`, `?` one character, `[seq]` / `[!seq]` a set. A rule that
 * matches a folder excludes everything below it.
 *
 * Hand-written: glob libraries (picomatch, minimatch) deliberately stop `*` at `/`, which is
 * exactly the behaviour these rules must not have.
 */
export function fnmatchToRegExp(pattern: string): RegExp {
  let re = '';
  let i = 0;
  const n = pattern.length;
  while (i < n) {
    const c = pattern[i++]!;
    if (c === '*') {
      while (pattern[i] === '*') i++;
      re += '.*';
    } else if (c === '?') {
      re += '.';
    } else if (c === '[') {
      let j = i;
      if (pattern[j] === '!') j++;
      if (pattern[j] === ']') j++;
      while (j < n && pattern[j] !== ']') j++;
      if (j >= n) {
        re += '\\[';
      } else {
        let body = pattern.slice(i, j);
        i = j + 1;
        let negate = false;
        if (body.startsWith('!')) {
          negate = true;
          body = body.slice(1);
        }
        // Escape what is special inside a JS class; keep ranges (a-z) working.
        body = body.replace(/[\\\]^]/g, (m) => `\\${m}`);
        re += negate ? `[^${body}]` : `[${body}]`;
      }
    } else {
      re += c.replace(/[.+^${}()|\\/\]-]/g, (m) => `\\${m}`);
    }
  }
  return new RegExp(`^${re}$`, 's');
}

/** A compiled set of rules. `matches(rel)` is true when the path itself is excluded. */
export class ExcludeRules {
  readonly rules: readonly string[];
  private readonly compiled: RegExp[];

  constructor(rules: readonly string[]) {
    this.rules = [...new Set(rules.map(normaliseRule).filter((r) => r.length > 0))];
    this.compiled = this.rules.map(fnmatchToRegExp);
  }

  /** True if `relPath` (posix, relative to the source root) is excluded by a rule. */
  matches(relPath: string): boolean {
    for (const re of this.compiled) if (re.test(relPath)) return true;
    return false;
  }

  /** True if the path or any folder above it is excluded. */
  excludes(relPath: string): boolean {
    if (this.matches(relPath)) return true;
    let idx = relPath.indexOf('/');
    while (idx !== -1) {
      if (this.matches(relPath.slice(0, idx))) return true;
      idx = relPath.indexOf('/', idx + 1);
    }
    return false;
  }

  /** `.` (the whole source) is excluded. */
  get excludesEverything(): boolean {
    return this.rules.includes('.');
  }
}

/** Rules are written relative to the source: strip `./` and a trailing `/` (a folder rule). */
function normaliseRule(rule: string): string {
  let r = rule.trim();
  if (r === '.' || r === './') return '.';
  while (r.startsWith('./')) r = r.slice(2);
  while (r.length > 1 && r.endsWith('/')) r = r.slice(0, -1);
  return r;
}
