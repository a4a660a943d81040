import { describe, expect, it } from 'vitest';
import { ExcludeRules, fnmatchToRegExp } from './fnmatch.js';

const m = (pattern: string, path: string) => fnmatchToRegExp(pattern).test(path);

describe('fnmatch (Python semantics)', () => {
  it('matches exact paths', () => {
    expect(m('folder/file.json', 'folder/file.json')).toBe(true);
    expect(m('folder/file.json', 'folder/file.jsonx')).toBe(false);
    expect(m('folder/file.json', 'x/folder/file.json')).toBe(false);
  });
  it('lets * cross folder separators', () => {
    expect(m('*.txt', 'a.txt')).toBe(true);
    expect(m('*.txt', 'deep/down/a.txt')).toBe(true);
    expect(m('*.txt', 'a.txt.bak')).toBe(false);
  });
  it('? matches exactly one character', () => {
    expect(m('router-??.txt', 'router-01.txt')).toBe(true);
    expect(m('router-??.txt', 'router-1.txt')).toBe(false);
    expect(m('router-??.txt', 'router-001.txt')).toBe(false);
  });
  it('supports sets, negated sets and literal brackets', () => {
    expect(m('log[0-9].txt', 'log5.txt')).toBe(true);
    expect(m('log[!0-9].txt', 'log5.txt')).toBe(false);
    expect(m('log[!0-9].txt', 'logx.txt')).toBe(true);
    expect(m('a[.txt', 'a[.txt')).toBe(true);
    expect(m('[]]', ']')).toBe(true);
  });
  it('treats regex metacharacters literally', () => {
    expect(m('a+b(1).txt', 'a+b(1).txt')).toBe(true);
    expect(m('a.b', 'axb')).toBe(false);
    expect(m('$HOME^', '$HOME^')).toBe(true);
  });
  it('is case-sensitive like fnmatchcase on POSIX', () => {
    expect(m('*.TXT', 'a.txt')).toBe(false);
  });
});

describe('ExcludeRules', () => {
  it('excludes everything below a folder rule', () => {
    const rules = new ExcludeRules(['logs', 'cache/']);
    expect(rules.excludes('logs')).toBe(true);
    expect(rules.excludes('logs/2024/app.log')).toBe(true);
    expect(rules.excludes('cache/x')).toBe(true);
    expect(rules.excludes('logsx')).toBe(false);
    expect(rules.excludes('sub/logs')).toBe(false);
  });
  it('normalises ./ prefixes and recognises the whole-source rule', () => {
    expect(new ExcludeRules(['./a/b']).excludes('a/b/c')).toBe(true);
    expect(new ExcludeRules(['.']).excludesEverything).toBe(true);
    expect(new ExcludeRules(['a']).excludesEverything).toBe(false);
  });
  it('drops duplicate and empty rules', () => {
    expect(new ExcludeRules(['a', 'a', ' ', '']).rules).toEqual(['a']);
  });
});
