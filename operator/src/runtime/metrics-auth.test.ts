// The metrics listener's guard with a fake review client: who gets 401, 403, 503 or the metrics, what is
// asked of the API server, and what the cache remembers (allowed tokens only, briefly, a bounded number).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { ReviewClient, ReviewedUser } from '../kube/reviews.js';
import { HttpListeners } from './http-listeners.js';
import { checkMetricsListener, isLoopback, MetricsAuthenticator, parseListenAddress } from './metrics-auth.js';

const METRICS = '# TYPE shadowset_operator_leader gauge\nshadowset_operator_leader 1\n';
const silent = pino({ level: 'silent' });

/** Tokens the fake API server knows, and which users it lets get /metrics. */
class FakeReviews implements ReviewClient {
  tokenReviews: string[] = [];
  accessReviews: { user: ReviewedUser; verb: string; path: string }[] = [];
  fail = false;
  /** While set, every TokenReview waits for it. */
  gate: Promise<void> | null = null;
  constructor(private readonly tokens: Record<string, ReviewedUser>, private readonly allowed: Set<string>) {}

  async authenticate(token: string): Promise<ReviewedUser | null> {
    this.tokenReviews.push(token);
    if (this.gate) await this.gate;
    if (this.fail) throw new Error('POST /apis/authentication.k8s.io/v1/tokenreviews: 500 etcd unavailable');
    return this.tokens[token] ?? null;
  }

  async authorizeNonResource(user: ReviewedUser, verb: string, path: string): Promise<boolean> {
    this.accessReviews.push({ user, verb, path });
    return this.allowed.has(user.username);
  }
}

const scraper: ReviewedUser = { username: 'system:serviceaccount:monitoring:prometheus', uid: 'u-1', groups: ['system:serviceaccounts', 'system:authenticated'], extra: { 'authentication.kubernetes.io/pod-name': ['prom-0'] } };
const stranger: ReviewedUser = { username: 'system:serviceaccount:default:app', groups: ['system:serviceaccounts'] };
const fakeReviews = () => new FakeReviews({ 'scraper-token': scraper, 'stranger-token': stranger }, new Set([scraper.username]));

async function withListener(reviews: ReviewClient, fn: (base: string, l: HttpListeners) => Promise<void>, ttlMs?: number): Promise<void> {
  const l = new HttpListeners({
    metrics: { address: '127.0.0.1:0', auth: 'kubernetes' }, healthAddress: '127.0.0.1:0', reviews,
    renderMetrics: () => METRICS, log: silent, authCacheTtlMs: ttlMs,
  });
  await l.start();
  try {
    await fn(`http://${l.metricsAddress}`, l);
  } finally {
    await l.stop();
  }
}
const get = (url: string, token: string, init: RequestInit = {}) => fetch(url, { ...init, headers: { authorization: `Bearer ${token}` } });

test('no token, or not a bearer token: 401 with a Bearer challenge, no metrics, and nothing asked of the API server', async () => {
  const reviews = fakeReviews();
  await withListener(reviews, async (base) => {
    for (const auth of [undefined, 'Basic dXNlcjpwYXNz', 'Bearer', 'Bearer two words', `Bearer ${'a'.repeat(10_000)}`]) {
      const res = await fetch(`${base}/metrics`, { headers: auth === undefined ? {} : { authorization: auth } });
      assert.equal(res.status, 401, String(auth).slice(0, 30));
      assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="shadowset-operator"');
      assert.doesNotMatch(await res.text(), /shadowset_/);
    }
  });
  assert.deepEqual(reviews.tokenReviews, []);
  assert.deepEqual(reviews.accessReviews, []);
});

test('a token the API server does not accept: 401, no access review, and it is asked again next time (not cached)', async () => {
  const reviews = fakeReviews();
  await withListener(reviews, async (base) => {
    for (let i = 0; i < 2; i++) {
      const res = await get(`${base}/metrics`, 'forged-token');
      assert.equal(res.status, 401);
      assert.doesNotMatch(await res.text(), /shadowset_/);
    }
  });
  assert.deepEqual(reviews.tokenReviews, ['forged-token', 'forged-token']);
  assert.deepEqual(reviews.accessReviews, []);
});

test('an authenticated user the SubjectAccessReview denies: 403, no metrics, and not cached', async () => {
  const reviews = fakeReviews();
  await withListener(reviews, async (base) => {
    for (let i = 0; i < 2; i++) {
      const res = await get(`${base}/metrics`, 'stranger-token');
      assert.equal(res.status, 403);
      assert.doesNotMatch(await res.text(), /shadowset_/);
    }
  });
  assert.equal(reviews.tokenReviews.length, 2);
  assert.deepEqual(reviews.accessReviews, [{ user: stranger, verb: 'get', path: '/metrics' }, { user: stranger, verb: 'get', path: '/metrics' }]);
});

test('an allowed user gets the metrics; the access review asks for get /metrics as exactly the reviewed user', async () => {
  const reviews = fakeReviews();
  await withListener(reviews, async (base) => {
    const res = await get(`${base}/metrics`, 'scraper-token');
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/plain; version=0.0.4');
    assert.equal(await res.text(), METRICS);
    // Only reads are served, and a write asks nothing of the API server.
    assert.equal((await get(`${base}/metrics`, 'scraper-token', { method: 'POST' })).status, 405);
    assert.equal((await get(`${base}/other`, 'scraper-token')).status, 404);
  });
  assert.deepEqual(reviews.tokenReviews, ['scraper-token']);
  assert.deepEqual(reviews.accessReviews, [{ user: scraper, verb: 'get', path: '/metrics' }]);
});

test('cache: an allowed token is not reviewed again until its entry expires; another token is', async () => {
  const reviews = fakeReviews();
  await withListener(reviews, async (base, l) => {
    for (let i = 0; i < 3; i++) assert.equal((await get(`${base}/metrics`, 'scraper-token')).status, 200);
    assert.equal(reviews.tokenReviews.length, 1, 'one review for three scrapes');
    assert.equal(l.auth?.cached, 1);
    assert.equal((await get(`${base}/metrics`, 'stranger-token')).status, 403, 'a cached token does not let another in');
  });
  assert.deepEqual(reviews.tokenReviews, ['scraper-token', 'stranger-token']);

  let now = 1_000_000;
  const auth = new MetricsAuthenticator({ reviews: fakeReviews(), ttlMs: 60_000, now: () => now });
  const fake = (auth as unknown as { o: { reviews: FakeReviews } }).o.reviews;
  assert.deepEqual(await auth.check('Bearer scraper-token'), { allowed: true, user: scraper.username, cached: false });
  now += 59_999;
  assert.deepEqual(await auth.check('Bearer scraper-token'), { allowed: true, user: scraper.username, cached: true });
  now += 1;
  assert.deepEqual(await auth.check('Bearer scraper-token'), { allowed: true, user: scraper.username, cached: false }, 'expired: asked again');
  assert.equal(fake.tokenReviews.length, 2);
  // The cache is keyed by a hash: the token itself is not held.
  const keys = [...(auth as unknown as { cache: Map<string, unknown> }).cache.keys()];
  assert.deepEqual(keys.map((k) => /^[0-9a-f]{64}$/.test(k)), [true]);
});

test('cache: bounded, the oldest entry forgotten first', async () => {
  const tokens = Object.fromEntries(['t1', 't2', 't3'].map((t) => [t, { username: `user-${t}` }]));
  const reviews = new FakeReviews(tokens, new Set(Object.values(tokens).map((u) => u.username)));
  const auth = new MetricsAuthenticator({ reviews, maxEntries: 2 });
  for (const t of ['t1', 't2', 't3']) assert.equal((await auth.check(`Bearer ${t}`)).allowed, true);
  assert.equal(auth.cached, 2);
  assert.equal((await auth.check('Bearer t3')).allowed, true);
  assert.equal(reviews.tokenReviews.length, 3, 't3 still cached');
  await auth.check('Bearer t1');
  assert.deepEqual(reviews.tokenReviews, ['t1', 't2', 't3', 't1'], 't1 was forgotten');
  assert.equal(auth.cached, 2);
});

test('a failed review is a 503 (never the metrics, never cached); too many at once are refused without asking', async () => {
  const reviews = fakeReviews();
  await withListener(reviews, async (base) => {
    reviews.fail = true;
    const res = await get(`${base}/metrics`, 'scraper-token');
    assert.equal(res.status, 503);
    assert.doesNotMatch(await res.text(), /shadowset_/);
    reviews.fail = false;
    assert.equal((await get(`${base}/metrics`, 'scraper-token')).status, 200, 'asked again once the API server answers');
  });
  assert.equal(reviews.tokenReviews.length, 2);

  const slow = fakeReviews();
  let open!: () => void;
  slow.gate = new Promise<void>((r) => (open = r));
  const auth = new MetricsAuthenticator({ reviews: slow, maxInFlight: 2 });
  const pending = [auth.check('Bearer scraper-token'), auth.check('Bearer stranger-token')];
  assert.deepEqual(await auth.check('Bearer other-token'), { allowed: false, status: 503, reason: 'too many reviews under way' });
  assert.equal(slow.tokenReviews.length, 2, 'the third was not asked');
  open();
  assert.deepEqual((await Promise.all(pending)).map((v) => v.allowed), [true, false]);
  assert.equal((await auth.check('Bearer other-token')).allowed, false, 'a slot is free again (and the token is unknown: 401)');
  assert.equal(slow.tokenReviews.length, 3);
});

test('/healthz is open and says only ok; with auth none on loopback /metrics needs no token', async () => {
  const reviews = fakeReviews();
  await withListener(reviews, async (_base, l) => {
    const res = await fetch(`http://${l.healthAddress}/healthz`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { ok: true });
    assert.equal((await fetch(`http://${l.healthAddress}/metrics`)).status, 404, 'metrics are not on the health listener');
  });
  const open = new HttpListeners({ metrics: { address: '127.0.0.1:0', auth: 'none' }, renderMetrics: () => METRICS, log: silent });
  await open.start();
  try {
    assert.equal(await (await fetch(`http://${open.metricsAddress}/metrics`)).text(), METRICS);
  } finally {
    await open.stop();
  }
  assert.equal(reviews.tokenReviews.length, 0);
});

test('--metrics-auth=none is refused unless the metrics address is loopback; addresses and modes are checked', () => {
  for (const addr of [':8081', '0.0.0.0:8081', '10.0.0.5:8081', '[::]:8081', '[::ffff:10.0.0.1]:8081']) {
    assert.throws(() => checkMetricsListener(addr, 'none'), /--metrics-auth=none .* only on a loopback address/, addr);
    assert.throws(() => new HttpListeners({ metrics: { address: addr, auth: 'none' }, renderMetrics: () => '', log: silent }), /loopback/);
    assert.equal(checkMetricsListener(addr, 'kubernetes').auth, 'kubernetes');
  }
  for (const addr of ['127.0.0.1:8081', '127.0.0.2:0', '[::1]:8081']) assert.equal(checkMetricsListener(addr, 'none').auth, 'none', addr);
  assert.throws(() => checkMetricsListener('127.0.0.1:8081', 'off'), /--metrics-auth: 'off' is not one of kubernetes, none/);
  for (const bad of ['8081', 'localhost:8081', '127.0.0.1:99999', '127.0.0.1:', 'x:1']) {
    assert.throws(() => parseListenAddress('--metrics-bind-address', bad), /is not \[HOST\]:PORT/, bad);
  }
  assert.deepEqual(parseListenAddress('f', ':8082'), { host: '0.0.0.0', port: 8082 });
  assert.deepEqual(parseListenAddress('f', '[::1]:9'), { host: '::1', port: 9 });
  assert.equal(isLoopback('::ffff:127.0.0.1'), true);
  assert.equal(isLoopback('128.0.0.1'), false);
  assert.throws(() => new HttpListeners({ metrics: { address: ':0', auth: 'kubernetes' }, renderMetrics: () => '', log: silent }), /needs a review client/);
});
