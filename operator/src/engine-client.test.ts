import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { EngineCallError, EngineClient, refusalCode, unanswered } from './engine-client.js';

/** An HTTP server answering every request with `status` and `body` (JSON; a string is sent as it is). */
async function answering(status: number, body: unknown): Promise<{ base: string; auth: (string | undefined)[]; close: () => Promise<void> }> {
  const auth: (string | undefined)[] = [];
  const srv = http.createServer((req, res) => {
    auth.push(req.headers.authorization);
    res.writeHead(status, { 'content-type': 'application/json' }).end(typeof body === 'string' ? body : JSON.stringify(body));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const { port } = srv.address() as AddressInfo;
  return { base: `http://127.0.0.1:${port}`, auth, close: () => new Promise<void>((r) => srv.close(() => r())) };
}

test('status: an engine error code is a refusal; a missing route (an engine still starting) or a stop is not', async () => {
  const cases: [number, unknown, boolean][] = [
    [409, { code: 'ENG_FOREIGN_DATA', message: 'holds data without shadow metadata' }, false],
    [404, { code: 'NOT_FOUND', message: 'GET /v1/status' }, true],
    [503, { code: 'STARTING', message: 'the engine is starting' }, true],
    [503, { code: 'ENG_SHUTTING_DOWN', message: 'stopping' }, true],
  ];
  for (const [status, body, unreachable] of cases) {
    const s = await answering(status, body);
    try {
      const a = await new EngineClient(2000).status({ base: s.base, token: 't'.repeat(64) });
      assert.equal(a.ok, false);
      assert.equal(!a.ok && a.unreachable, unreachable, JSON.stringify(body));
    } finally {
      await s.close();
    }
  }
});

test('every request carries the set\'s bearer token; a 401 is the engine\'s refusal, not silence', async () => {
  const s = await answering(401, { code: 'ENG_UNAUTHORIZED', message: 'a valid bearer token is required' });
  try {
    const client = new EngineClient(2000);
    const a = await client.status({ base: s.base, token: 'k'.repeat(64) });
    assert.deepEqual(a, { ok: false, code: 'ENG_UNAUTHORIZED', message: 'a valid bearer token is required', unreachable: false });
    await assert.rejects(client.settings({ base: s.base, token: 'k'.repeat(64) }, { maxCopies: 2 }), /ENG_UNAUTHORIZED/);
    assert.deepEqual(s.auth, [`Bearer ${'k'.repeat(64)}`, `Bearer ${'k'.repeat(64)}`]);
  } finally {
    await s.close();
  }
});

test('answers are validated by the engine\'s schemas: a well-formed one comes back typed, one off its schema is an error', async () => {
  const t = (base: string) => ({ base, token: 't'.repeat(64) });
  const good = await answering(200, { id: 'm1', state: 'Minicopy' });
  try {
    assert.deepEqual(await new EngineClient(2000).add(t(good.base), { location: '/dev/shadow/m1' }), { id: 'm1', state: 'Minicopy' });
    assert.deepEqual(await new EngineClient(2000).return(t(good.base), { member: 'm1' }), { id: 'm1', state: 'Minicopy' });
  } finally {
    await good.close();
  }
  const cases: [string, unknown, (c: EngineClient, base: string) => Promise<unknown>][] = [
    ['a state the engine does not have', { id: 'm1', state: 'Copying' }, (c, b) => c.add(t(b), { location: '/dev/shadow/m1' })],
    ['no state', { id: 'm1' }, (c, b) => c.return(t(b), { member: 'm1' })],
    ['a remove answer without its bitmap', { id: 'm1', state: 'Removed' }, (c, b) => c.remove(t(b), { member: 'm1' })],
    ['a bitmap delete answer without deleted', {}, (c, b) => c.deleteBitmap(t(b), 'b1')],
    ['settings without their fields', { maxCopies: 2 }, (c, b) => c.settings(t(b), { maxCopies: 2 })],
  ];
  for (const [what, body, call] of cases) {
    const s = await answering(200, body);
    try {
      await assert.rejects(call(new EngineClient(2000), s.base), (e) => e instanceof EngineCallError && e.code === 'OP_ENGINE' && /off its schema/.test(e.message) && refusalCode(e) === null, what);
    } finally {
      await s.close();
    }
  }
});

test('an error answer is read by its code: a refusal carries the engine\'s code, a server error or a non-engine body does not', async () => {
  const cases: [number, unknown, string | null][] = [
    [409, { code: 'ENG_FOREIGN_DATA', message: 'holds data without shadow metadata' }, 'ENG_FOREIGN_DATA'],
    [409, { code: 'ENG_BITMAP_REQUIRED', message: 'no usable write bitmap' }, 'ENG_BITMAP_REQUIRED'],
    [502, { code: 'ENG_IO', message: 'member unreachable' }, null],
    [409, { message: 'no code' }, null],
  ];
  for (const [status, body, code] of cases) {
    const s = await answering(status, body);
    try {
      const e = await new EngineClient(2000).add({ base: s.base, token: 't'.repeat(64) }, { location: '/dev/shadow/m1' }).then(() => null, (x: unknown) => x);
      assert.ok(e instanceof EngineCallError, JSON.stringify(body));
      assert.equal(refusalCode(e), code, JSON.stringify(body));
    } finally {
      await s.close();
    }
  }
});

test('a call the engine does not answer in time is "unanswered" (retried later, status still written); a refusal or an error answer is not', async () => {
  const silent = http.createServer(() => undefined); // holds every request, as a call blocked on a silent member does
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
  const refusing = await answering(409, { code: 'ENG_CONFLICT', message: 'busy' });
  const failing = await answering(500, { code: 'ENG_INTERNAL', message: 'boom' });
  try {
    const client = new EngineClient(300);
    const body = { member: 'm', minicopy: 'Optional' as const };
    const base = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
    const timedOut = await client.return({ base, token: 't'.repeat(64) }, body).then(() => null, (e: unknown) => e);
    assert.ok(timedOut instanceof EngineCallError && unanswered(timedOut), `timed out: ${String(timedOut)}`);
    const refused = await client.return({ base: refusing.base, token: 't'.repeat(64) }, body).then(() => null, (e: unknown) => e);
    assert.equal(unanswered(refused), false);
    assert.equal(refusalCode(refused), 'ENG_CONFLICT');
    const failed = await client.return({ base: failing.base, token: 't'.repeat(64) }, body).then(() => null, (e: unknown) => e);
    assert.equal(unanswered(failed), false, 'an answer, even an error, is not silence');
    assert.equal(unanswered(new Error('other')), false);
  } finally {
    silent.closeAllConnections();
    await new Promise<void>((r) => silent.close(() => r()));
    await refusing.close();
    await failing.close();
  }
});
