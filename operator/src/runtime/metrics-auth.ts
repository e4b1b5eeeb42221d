/**
 * Who may read the operator's /metrics: the Kubernetes way (as kube-rbac-proxy and the kubelet do it). A
 * request carries `Authorization: Bearer <token>`; the API server says whose token it is (TokenReview) and
 * whether that user may `get` the non-resource URL /metrics (SubjectAccessReview). Positive answers are
 * remembered briefly, keyed by a hash of the token, so a scraper costs the API server two reviews a minute
 * rather than two per scrape; refusals are not remembered, so a new RoleBinding takes effect at once.
 */
import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import type { ReviewClient } from '../kube/reviews.js';

export type MetricsAuthMode = 'kubernetes' | 'none';
export const METRICS_AUTH_MODES: readonly MetricsAuthMode[] = ['kubernetes', 'none'];
export const METRICS_PATH = '/metrics';

export type AuthOutcome =
  | { allowed: true; user: string; cached: boolean }
  | { allowed: false; status: 401 | 403 | 503; reason: string };

export interface MetricsAuthOptions {
  reviews: ReviewClient;
  /** How long an allowed token stays allowed without asking again (60 s). */
  ttlMs?: number;
  /** Most tokens remembered at once (256); the oldest is forgotten first. */
  maxEntries?: number;
  /** Reviews under way at once (8); beyond that a request gets 503 instead of queueing more API calls. */
  maxInFlight?: number;
  now?: () => number;
}

/** RFC 6750's b64token, which JWTs (ServiceAccount tokens) satisfy; anything else is refused unasked. */
const BEARER = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i;
const MAX_TOKEN_CHARS = 8192;

export class MetricsAuthenticator {
  private readonly cache = new Map<string, { user: string; expires: number }>();
  private inFlight = 0;
  private readonly ttlMs: number;
  private readonly maxEntries: number;
  private readonly maxInFlight: number;
  private readonly now: () => number;

  constructor(private readonly o: MetricsAuthOptions) {
    this.ttlMs = o.ttlMs ?? 60_000;
    this.maxEntries = o.maxEntries ?? 256;
    this.maxInFlight = o.maxInFlight ?? 8;
    this.now = o.now ?? Date.now;
  }

  /** Tokens remembered now (for tests and the bound). */
  get cached(): number {
    return this.cache.size;
  }

  /** The answer for a request's Authorization header. Never throws: a failed review is a 503. */
  async check(authorization: string | undefined): Promise<AuthOutcome> {
    const m = authorization && authorization.length <= MAX_TOKEN_CHARS + 16 ? BEARER.exec(authorization) : null;
    if (!m) return { allowed: false, status: 401, reason: authorization ? 'not a bearer token' : 'no bearer token' };
    const key = createHash('sha256').update(m[1]!).digest('hex');
    const hit = this.cache.get(key);
    if (hit && hit.expires > this.now()) return { allowed: true, user: hit.user, cached: true };
    if (hit) this.cache.delete(key);
    if (this.inFlight >= this.maxInFlight) return { allowed: false, status: 503, reason: 'too many reviews under way' };
    this.inFlight++;
    try {
      const user = await this.o.reviews.authenticate(m[1]!);
      if (!user) return { allowed: false, status: 401, reason: 'the API server does not accept the token' };
      if (!(await this.o.reviews.authorizeNonResource(user, 'get', METRICS_PATH))) {
        return { allowed: false, status: 403, reason: `${user.username} may not get ${METRICS_PATH}` };
      }
      this.remember(key, user.username);
      return { allowed: true, user: user.username, cached: false };
    } catch (e) {
      return { allowed: false, status: 503, reason: `review failed: ${(e as Error).message}` };
    } finally {
      this.inFlight--;
    }
  }

  private remember(key: string, user: string): void {
    this.cache.delete(key);
    while (this.cache.size >= this.maxEntries) {
      // A Map iterates in insertion order: the first key is the oldest entry.
      this.cache.delete(this.cache.keys().next().value!);
    }
    this.cache.set(key, { user, expires: this.now() + this.ttlMs });
  }
}

/** `[HOST]:PORT` (HOST an IP address, bracketed for IPv6; empty: every interface) → host and port. */
export function parseListenAddress(flag: string, addr: string): { host: string; port: number } {
  const i = addr.lastIndexOf(':');
  let host = i < 0 ? '' : addr.slice(0, i);
  const portText = addr.slice(i + 1);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  const port = Number(portText);
  if (i < 0 || !/^\d{1,5}$/.test(portText) || port > 65535 || (host !== '' && isIP(host) === 0)) {
    throw new Error(`${flag}: '${addr}' is not [HOST]:PORT with HOST an IP address (empty for every interface) and PORT 0..65535`);
  }
  return { host: host || '0.0.0.0', port };
}

/** Whether a listener on `host` is reachable from this machine only. */
export function isLoopback(host: string): boolean {
  if (isIP(host) === 4) return host.startsWith('127.');
  const h = host.toLowerCase();
  return h === '::1' || (h.startsWith('::ffff:') && isIP(h.slice(7)) === 4 && h.slice(7).startsWith('127.'));
}

export function parseMetricsAuthMode(text: string): MetricsAuthMode {
  if (!METRICS_AUTH_MODES.includes(text as MetricsAuthMode)) {
    throw new Error(`--metrics-auth: '${text}' is not one of ${METRICS_AUTH_MODES.join(', ')}`);
  }
  return text as MetricsAuthMode;
}

/**
 * The metrics listener's settings as given, checked: a known mode, a valid address, and `none` only on a
 * loopback address (every listener is local or authenticated).
 */
export function checkMetricsListener(address: string, auth: string): { host: string; port: number; auth: MetricsAuthMode } {
  parseMetricsAuthMode(auth);
  const { host, port } = parseListenAddress('--metrics-bind-address', address);
  if (auth === 'none' && !isLoopback(host)) {
    throw new Error(`--metrics-auth=none serves /metrics to anyone who can connect, so it is allowed only on a loopback address `
      + `(e.g. --metrics-bind-address=127.0.0.1:8081), not '${address}'; use --metrics-auth=kubernetes (the default)`);
  }
  return { host, port, auth: auth as MetricsAuthMode };
}
