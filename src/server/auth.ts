import crypto from 'node:crypto';
import { promisify } from 'node:util';
import type Database from 'better-sqlite3';
import { SignJWT, decodeJwt, jwtVerify } from 'jose';
import type { Catalogue } from '../engine/catalogue.js';
import { StowageError } from '../errors.js';
import { SCOPES, type ApiToken, type Scope, type Superuser } from './schemas.js';

/**
 * Who may call the API, and how that is proven:
 * - superusers (email + scrypt password) log in for a signed session token (a JWT, as
 *   PocketBase issues, so its SDK's auth store understands it); changing or deleting a
 *   superuser rotates its token key, which revokes every session it had;
 * - API tokens for scripts: random, shown once, stored as a SHA-256 hash (they carry 256 bits
 *   of entropy, so a slow hash adds nothing), each limited to scopes;
 * - download tokens: 3-minute JWTs, optionally bound to one backup key;
 * - a one-time setup token, printed at first start, to create the first superuser.
 * Every secret comparison is constant-time.
 */

const scrypt = promisify(crypto.scrypt) as (password: crypto.BinaryLike, salt: crypto.BinaryLike, keylen: number, options: crypto.ScryptOptions) => Promise<Buffer>;

// N=2^15, r=8: 32 MiB and ~60 ms per hash here; enough to make offline guessing costly
// without letting a burst of logins exhaust memory (the login limiter caps the burst).
const SCRYPT = { N: 32768, r: 8, p: 1, keylen: 32, maxmem: 64 * 1024 * 1024 };
export const MIN_PASSWORD_LENGTH = 10;
export const SESSION_TTL_SECONDS = 14 * 24 * 3600;
export const FILE_TOKEN_TTL_SECONDS = 180;
export const SETUP_TOKEN_TTL_MS = 3600_000;
const SUPERUSERS_COLLECTION_ID = 'pbc_3142635823'; // the id PocketBase gives _superusers
const API_TOKEN_PREFIX = 'stw_';

export type Principal =
  | { kind: 'superuser'; id: string; email: string }
  | { kind: 'token'; id: string; name: string; scopes: Scope[] };

export function can(principal: Principal, scope: Scope): boolean {
  return principal.kind === 'superuser' || principal.scopes.includes(scope);
}

export function describePrincipal(p: Principal): string {
  return p.kind === 'superuser' ? `superuser ${p.email}` : `API token "${p.name}" (${p.id})`;
}

export async function hashPassword(password: string): Promise<string> {
  const salt = crypto.randomBytes(16);
  const hash = await scrypt(password, salt, SCRYPT.keylen, SCRYPT);
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [scheme, n, r, p, salt, hash] = stored.split('$');
  if (scheme !== 'scrypt' || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64');
  const actual = await scrypt(password, Buffer.from(salt, 'base64'), expected.length, { N: Number(n), r: Number(r), p: Number(p), maxmem: SCRYPT.maxmem });
  return crypto.timingSafeEqual(actual, expected);
}

/** Constant-time equality of two strings of any lengths (both are hashed first). */
export function safeEqual(a: string, b: string): boolean {
  const ha = crypto.createHash('sha256').update(a).digest();
  const hb = crypto.createHash('sha256').update(b).digest();
  return crypto.timingSafeEqual(ha, hb);
}

function sha256(text: string): string {
  return crypto.createHash('sha256').update(text).digest('hex');
}

export function checkPassword(password: string): void {
  if (password.length < MIN_PASSWORD_LENGTH) {
    throw new StowageError('USAGE', `the password must be at least ${MIN_PASSWORD_LENGTH} characters`, {
      details: { fields: [{ field: 'password', message: `must be at least ${MIN_PASSWORD_LENGTH} characters` }] },
    });
  }
}

const EMAIL = /^[^\s@]+@[^\s@]+$/;

function checkEmail(email: string): string {
  const e = email.trim();
  if (!EMAIL.test(e) || e.length > 320) {
    throw new StowageError('USAGE', `"${email}" is not an email address`, { details: { fields: [{ field: 'email', message: 'must be an email address' }] } });
  }
  return e;
}

interface SuperuserRow {
  id: string;
  email: string;
  password_hash: string;
  token_key: string;
  created_at: string;
  updated_at: string;
}

interface TokenRow {
  id: string;
  name: string;
  scopes: string;
  secret_hash: string;
  created_at: string;
  last_used_at: string | null;
  expires_at: string | null;
}

function toSuperuser(r: SuperuserRow): Superuser {
  return { id: r.id, email: r.email, collectionName: '_superusers', collectionId: SUPERUSERS_COLLECTION_ID, created: r.created_at, updated: r.updated_at };
}

function toApiToken(r: TokenRow): ApiToken {
  return { id: r.id, name: r.name, scopes: JSON.parse(r.scopes) as string[], createdAt: r.created_at, lastUsedAt: r.last_used_at, expiresAt: r.expires_at };
}

export class AuthService {
  private readonly db: Database.Database;
  private readonly catalogue: Catalogue;
  private secretKey: Uint8Array | undefined;
  // Compared against when the email is unknown, so a login takes as long either way.
  private dummyHash: Promise<string> | undefined;

  constructor(catalogue: Catalogue) {
    this.catalogue = catalogue;
    this.db = catalogue.database;
  }

  /** The signing secret, made on first use and kept in the database (never logged or served). */
  private secret(): Uint8Array {
    if (!this.secretKey) {
      let value = this.catalogue.getSetting('auth.secret');
      if (!value) {
        value = crypto.randomBytes(32).toString('base64');
        this.db.prepare('INSERT OR IGNORE INTO settings (name, value, updated_at) VALUES (?, ?, ?)').run('auth.secret', value, new Date().toISOString());
        value = this.catalogue.getSetting('auth.secret')!;
      }
      this.secretKey = Buffer.from(value, 'base64');
    }
    return this.secretKey;
  }

  private sessionKey(row: SuperuserRow): Uint8Array {
    return crypto.createHmac('sha256', this.secret()).update(`session:${row.token_key}`).digest();
  }

  private fileKey(): Uint8Array {
    return crypto.createHmac('sha256', this.secret()).update('file').digest();
  }

  // ---- superusers

  countSuperusers(): number {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM superusers').get() as { n: number }).n;
  }

  listSuperusers(): Superuser[] {
    return (this.db.prepare('SELECT * FROM superusers ORDER BY created_at').all() as SuperuserRow[]).map(toSuperuser);
  }

  private findSuperuser(email: string): SuperuserRow | undefined {
    return this.db.prepare('SELECT * FROM superusers WHERE email = ?').get(email.trim()) as SuperuserRow | undefined;
  }

  async createSuperuser(email: string, password: string): Promise<Superuser> {
    const e = checkEmail(email);
    checkPassword(password);
    if (this.findSuperuser(e)) throw new StowageError('USAGE', `a superuser ${e} already exists; use "stowage superuser update" to change the password`, { details: { fields: [{ field: 'email', message: 'already exists' }] } });
    const now = new Date().toISOString();
    const row: SuperuserRow = { id: crypto.randomBytes(8).toString('hex'), email: e, password_hash: await hashPassword(password), token_key: crypto.randomBytes(16).toString('hex'), created_at: now, updated_at: now };
    this.db.prepare('INSERT INTO superusers (id, email, password_hash, token_key, created_at, updated_at) VALUES (@id, @email, @password_hash, @token_key, @created_at, @updated_at)').run(row);
    return toSuperuser(row);
  }

  /** Changes the password; every session of that superuser ends. */
  async updateSuperuser(email: string, password: string): Promise<Superuser> {
    checkPassword(password);
    const row = this.findSuperuser(email);
    if (!row) throw new StowageError('USAGE', `no superuser ${email}; "stowage superuser list" shows them`);
    const updated = { ...row, password_hash: await hashPassword(password), token_key: crypto.randomBytes(16).toString('hex'), updated_at: new Date().toISOString() };
    this.db.prepare('UPDATE superusers SET password_hash = @password_hash, token_key = @token_key, updated_at = @updated_at WHERE id = @id').run(updated);
    return toSuperuser(updated);
  }

  async upsertSuperuser(email: string, password: string): Promise<{ superuser: Superuser; created: boolean }> {
    const row = this.findSuperuser(email);
    if (!row) return { superuser: await this.createSuperuser(email, password), created: true };
    if (await verifyPassword(password, row.password_hash)) return { superuser: toSuperuser(row), created: false }; // unchanged: keep sessions
    return { superuser: await this.updateSuperuser(email, password), created: false };
  }

  deleteSuperuser(email: string): void {
    const r = this.db.prepare('DELETE FROM superusers WHERE email = ?').run(email.trim());
    if (r.changes === 0) throw new StowageError('USAGE', `no superuser ${email}; "stowage superuser list" shows them`);
  }

  /** The superuser for these credentials, or null; takes the same time whether or not the email exists. */
  async login(identity: string, password: string): Promise<Superuser | null> {
    const row = this.findSuperuser(identity);
    this.dummyHash ??= hashPassword(crypto.randomBytes(16).toString('hex'));
    const ok = await verifyPassword(password, row?.password_hash ?? (await this.dummyHash));
    return row && ok ? toSuperuser(row) : null;
  }

  async issueSession(user: Superuser): Promise<string> {
    const row = this.findSuperuser(user.email);
    if (!row) throw new StowageError('USAGE', 'that superuser no longer exists');
    return new SignJWT({ type: 'auth', collectionId: SUPERUSERS_COLLECTION_ID, collectionName: '_superusers', refreshable: true })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setSubject(row.id)
      .setIssuedAt()
      .setExpirationTime(`${SESSION_TTL_SECONDS}s`)
      .sign(this.sessionKey(row));
  }

  // ---- API tokens

  createApiToken(name: string, scopes: Scope[], expiresInDays?: number): { token: string; record: ApiToken } {
    const bad = scopes.filter((s) => !SCOPES.includes(s));
    if (bad.length) throw new StowageError('USAGE', `unknown scope ${bad.join(', ')}; scopes are: ${SCOPES.join(', ')}`, { details: { fields: [{ field: 'scopes', message: `unknown scope ${bad.join(', ')}` }] } });
    if (!scopes.length) throw new StowageError('USAGE', `give the token at least one scope: ${SCOPES.join(', ')}`, { details: { fields: [{ field: 'scopes', message: 'at least one scope' }] } });
    const id = crypto.randomBytes(6).toString('hex');
    const secret = crypto.randomBytes(32).toString('base64url');
    const now = new Date();
    const row: TokenRow = {
      id,
      name,
      scopes: JSON.stringify([...new Set(scopes)]),
      secret_hash: sha256(secret),
      created_at: now.toISOString(),
      last_used_at: null,
      expires_at: expiresInDays ? new Date(now.getTime() + expiresInDays * 86400_000).toISOString() : null,
    };
    this.db.prepare('INSERT INTO api_tokens (id, name, scopes, secret_hash, created_at, last_used_at, expires_at) VALUES (@id, @name, @scopes, @secret_hash, @created_at, @last_used_at, @expires_at)').run(row);
    return { token: `${API_TOKEN_PREFIX}${id}_${secret}`, record: toApiToken(row) };
  }

  listApiTokens(): ApiToken[] {
    return (this.db.prepare('SELECT * FROM api_tokens ORDER BY created_at').all() as TokenRow[]).map(toApiToken);
  }

  revokeApiToken(id: string): void {
    const r = this.db.prepare('DELETE FROM api_tokens WHERE id = ?').run(id);
    if (r.changes === 0) throw new StowageError('USAGE', `no API token ${id}; list them with "stowage token list"`);
  }

  private checkApiToken(token: string): Principal | null {
    const m = /^stw_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$/.exec(token);
    if (!m) return null;
    const row = this.db.prepare('SELECT * FROM api_tokens WHERE id = ?').get(m[1]) as TokenRow | undefined;
    // The lookup is by the public id; the secret part is compared in constant time.
    if (!row || !crypto.timingSafeEqual(Buffer.from(sha256(m[2]!), 'hex'), Buffer.from(row.secret_hash, 'hex'))) return null;
    if (row.expires_at && Date.parse(row.expires_at) < Date.now()) return null;
    // last_used_at to the minute: a write on every request cost ~6 ms per list (bench/README.md).
    const now = Date.now();
    if (!row.last_used_at || now - Date.parse(row.last_used_at) > 60_000) {
      this.db.prepare('UPDATE api_tokens SET last_used_at = ? WHERE id = ?').run(new Date(now).toISOString(), row.id);
    }
    return { kind: 'token', id: row.id, name: row.name, scopes: JSON.parse(row.scopes) as Scope[] };
  }

  // ---- request authentication

  /** The principal for an Authorization header value (with or without "Bearer "), or null. */
  async authenticate(header: string | undefined): Promise<Principal | null> {
    if (!header) return null;
    const token = header.replace(/^Bearer\s+/i, '').trim();
    if (!token) return null;
    if (token.startsWith(API_TOKEN_PREFIX)) return this.checkApiToken(token);
    try {
      const claims = decodeJwt(token);
      if (claims.type !== 'auth' || typeof claims.sub !== 'string') return null;
      const row = this.db.prepare('SELECT * FROM superusers WHERE id = ?').get(claims.sub) as SuperuserRow | undefined;
      if (!row) return null;
      await jwtVerify(token, this.sessionKey(row), { algorithms: ['HS256'] });
      return { kind: 'superuser', id: row.id, email: row.email };
    } catch {
      return null;
    }
  }

  // ---- download tokens

  /** A download token, valid FILE_TOKEN_TTL_SECONDS from `now` (a test may issue one in the past). */
  async issueFileToken(principal: Principal, key?: string, now = Date.now()): Promise<string> {
    const iat = Math.floor(now / 1000);
    return new SignJWT({ type: 'file', by: principal.kind === 'superuser' ? `su:${principal.id}` : `tok:${principal.id}`, ...(key ? { key } : {}) })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setIssuedAt(iat)
      .setExpirationTime(iat + FILE_TOKEN_TTL_SECONDS)
      .sign(this.fileKey());
  }

  /** True if `token` is a live download token that allows `key`. */
  async checkFileToken(token: string, key: string): Promise<boolean> {
    try {
      const { payload } = await jwtVerify(token, this.fileKey(), { algorithms: ['HS256'] });
      if (payload.type !== 'file') return false;
      if (payload.key !== undefined && payload.key !== key) return false;
      // A token made by a superuser or API token that has since been removed is void.
      const by = String(payload.by ?? '');
      if (by.startsWith('su:')) return this.db.prepare('SELECT 1 FROM superusers WHERE id = ?').get(by.slice(3)) !== undefined;
      if (by.startsWith('tok:')) return this.db.prepare('SELECT 1 FROM api_tokens WHERE id = ?').get(by.slice(4)) !== undefined;
      return false;
    } catch {
      return false;
    }
  }

  // ---- first-start setup

  /** A fresh one-time setup token (valid 1 hour); only its hash is stored. */
  createSetupToken(): string {
    const token = crypto.randomBytes(24).toString('base64url');
    this.catalogue.setSetting('auth.setupToken', JSON.stringify({ hash: sha256(token), expiresAt: Date.now() + SETUP_TOKEN_TTL_MS }));
    return token;
  }

  /** Creates the first superuser with the setup token; refused once any superuser exists. */
  async completeSetup(token: string, email: string, password: string): Promise<Superuser> {
    const stored = this.catalogue.getSetting('auth.setupToken');
    const parsed = stored ? (JSON.parse(stored) as { hash: string; expiresAt: number }) : null;
    const valid = parsed !== null && safeEqual(sha256(token), parsed.hash) && parsed.expiresAt > Date.now();
    if (!valid || this.countSuperusers() > 0) {
      throw new StowageError('USAGE', 'the setup link is invalid, expired or already used; restart the server for a new one, or use "stowage superuser create"', {
        details: { fields: [{ field: 'token', message: 'invalid or expired' }] },
      });
    }
    const user = await this.createSuperuser(email, password);
    this.catalogue.setSetting('auth.setupToken', null);
    return user;
  }
}

/**
 * Failed logins per client address and per account, in a sliding window. Memory is bounded:
 * at most `maxKeys` addresses and accounts are tracked, the oldest dropped first.
 */
export class LoginLimiter {
  private readonly failures = new Map<string, number[]>();

  constructor(
    private readonly limits = { perIp: 20, perAccount: 10, windowMs: 10 * 60_000, maxKeys: 10_000 },
  ) {}

  private recent(key: string, now: number): number[] {
    const list = (this.failures.get(key) ?? []).filter((t) => now - t < this.limits.windowMs);
    if (list.length) this.failures.set(key, list);
    else this.failures.delete(key);
    return list;
  }

  /** Seconds until another attempt is allowed, or 0 if it is allowed now. */
  retryAfter(ip: string, account: string, now = Date.now()): number {
    let wait = 0;
    for (const [key, limit] of [[`ip:${ip}`, this.limits.perIp], [`acct:${account.trim().toLowerCase()}`, this.limits.perAccount]] as const) {
      const list = this.recent(key, now);
      if (list.length >= limit) wait = Math.max(wait, Math.ceil((list[list.length - limit]! + this.limits.windowMs - now) / 1000));
    }
    return wait;
  }

  fail(ip: string, account: string, now = Date.now()): void {
    for (const key of [`ip:${ip}`, `acct:${account.trim().toLowerCase()}`]) {
      const list = this.recent(key, now);
      list.push(now);
      this.failures.delete(key); // re-insert: Map order is the eviction order
      this.failures.set(key, list);
    }
    while (this.failures.size > this.limits.maxKeys) this.failures.delete(this.failures.keys().next().value!);
  }

  succeed(account: string): void {
    this.failures.delete(`acct:${account.trim().toLowerCase()}`);
  }
}
