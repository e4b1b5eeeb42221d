import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { HttpApi } from './http-server.js';

const TOKEN = 'k'.repeat(40);
const ran: string[] = [];
const api = new HttpApi(pino({ level: 'silent' }), { token: TOKEN });
api.route('GET', '/healthz', async () => ({ json: { ok: true } }));
api.route('GET', '/v1/status', async () => (ran.push('status'), { json: { state: 'Steady' } }));
api.route('POST', '/v1/members/add', async (b) => (ran.push(`add ${JSON.stringify(b)}`), { json: { id: 'x' } }));
const a = await api.listen('127.0.0.1', 0);
after(() => api.close());

const call = async (method: string, path: string, auth?: string) => {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (auth !== undefined) headers.authorization = auth;
  const res = await fetch(`http://127.0.0.1:${a.port}${path}`, { method, headers, ...(method === 'POST' ? { body: '{"location":"/dev/sda"}' } : {}) });
  return { status: res.status, body: await res.json() as { code?: string } };
};

test('with a token, every route but GET /healthz answers 401 ENG_UNAUTHORIZED to a missing or wrong token, and runs nothing', async () => {
  const wrong = [undefined, '', `Bearer ${'k'.repeat(39)}`, `Bearer ${'k'.repeat(41)}`, `Bearer ${'j'.repeat(40)}`, `bearer ${TOKEN}`, `Basic ${TOKEN}`, `Bearer  ${TOKEN}`, TOKEN];
  for (const auth of wrong) {
    for (const [method, path] of [['GET', '/v1/status'], ['POST', '/v1/members/add'], ['GET', '/nowhere'], ['POST', '/healthz']] as const) {
      const r = await call(method, path, auth);
      assert.equal(r.status, 401, `${method} ${path} with ${JSON.stringify(auth)}`);
      assert.equal(r.body.code, 'ENG_UNAUTHORIZED');
    }
  }
  assert.deepEqual(ran, [], 'no handler ran');
  assert.equal((await call('GET', '/healthz')).status, 200, 'health needs no token');
});

test('the right token reaches the routes', async () => {
  assert.equal((await call('GET', '/v1/status', `Bearer ${TOKEN}`)).status, 200);
  assert.equal((await call('POST', '/v1/members/add', `Bearer ${TOKEN}`)).status, 200);
  assert.equal((await call('GET', '/nowhere', `Bearer ${TOKEN}`)).status, 404);
  assert.deepEqual(ran, ['status', 'add {"location":"/dev/sda"}']);
});

test('bound but not yet routed (the set is still being assembled): 503 STARTING with Retry-After, /healthz too, not 404', async () => {
  const early = new HttpApi(pino({ level: 'silent' }));
  const e = await early.listen('127.0.0.1', 0);
  try {
    for (const path of ['/healthz', '/v1/status']) {
      const res = await fetch(`http://127.0.0.1:${e.port}${path}`);
      assert.equal(res.status, 503, path);
      assert.equal(res.headers.get('retry-after'), '1');
      assert.equal(((await res.json()) as { code: string }).code, 'STARTING');
    }
    early.route('GET', '/healthz', async () => ({ json: { ok: true } }));
    assert.equal((await fetch(`http://127.0.0.1:${e.port}/healthz`)).status, 200, 'routed: answered');
  } finally {
    await early.close();
  }
});
