import { describe, expect, it } from 'vitest';
import { LoginLimiter } from './auth.js';

/** The login limiter on its own, with explicit times (the API tests drive it through HTTP). */
describe('LoginLimiter', () => {
  const t0 = Date.parse('2026-11-22T10:00:00Z');
  const limits = { perIp: 3, perAccount: 2, windowMs: 60_000, maxKeys: 100 };

  it('locks an address after perIp failures, whatever the accounts, until the oldest failure leaves the window', () => {
    const l = new LoginLimiter(limits);
    l.fail('203.0.113.7', 'a@example.com', t0);
    l.fail('203.0.113.7', 'b@example.com', t0 + 10_000);
    expect(l.retryAfter('203.0.113.7', 'c@example.com', t0 + 10_000)).toBe(0);
    l.fail('203.0.113.7', 'c@example.com', t0 + 20_000);
    // Locked for a fresh account too; another address is not.
    expect(l.retryAfter('203.0.113.7', 'fresh@example.com', t0 + 20_000)).toBe(40);
    expect(l.retryAfter('203.0.113.8', 'fresh@example.com', t0 + 20_000)).toBe(0);
    // Sliding: once the first failure is a minute old, one more attempt is allowed.
    expect(l.retryAfter('203.0.113.7', 'fresh@example.com', t0 + 59_999)).toBe(1);
    expect(l.retryAfter('203.0.113.7', 'fresh@example.com', t0 + 60_000)).toBe(0);
  });

  it('locks an account after perAccount failures from any addresses; a success clears the account, not the address', () => {
    const l = new LoginLimiter(limits);
    l.fail('198.51.100.1', 'Victim@Example.com ', t0);
    l.fail('198.51.100.2', 'victim@example.com', t0 + 1000);
    expect(l.retryAfter('198.51.100.3', 'victim@example.com', t0 + 1000)).toBe(59);
    l.succeed('victim@example.com');
    expect(l.retryAfter('198.51.100.3', 'victim@example.com', t0 + 1000)).toBe(0);
    l.fail('192.0.2.1', 'x@example.com', t0);
    l.fail('192.0.2.1', 'y@example.com', t0);
    l.fail('192.0.2.1', 'z@example.com', t0);
    l.succeed('z@example.com');
    expect(l.retryAfter('192.0.2.1', 'z@example.com', t0)).toBe(60);
  });

  it('keeps at most maxKeys addresses and accounts, dropping the oldest', () => {
    const l = new LoginLimiter({ ...limits, perIp: 1, maxKeys: 4 });
    l.fail('10.0.0.1', 'one@example.com', t0);
    expect(l.retryAfter('10.0.0.1', 'other@example.com', t0)).toBeGreaterThan(0);
    l.fail('10.0.0.2', 'two@example.com', t0);
    l.fail('10.0.0.3', 'three@example.com', t0); // 6 keys: the first address and account are dropped
    expect(l.retryAfter('10.0.0.1', 'other@example.com', t0)).toBe(0);
    expect(l.retryAfter('10.0.0.3', 'other@example.com', t0)).toBeGreaterThan(0);
  });
});
