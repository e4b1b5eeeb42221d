import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { EngineClient } from './engine-client.js';

/** An HTTP server answering GET /v1/status with `status` and `body`. */
async function answering(status: number, body: unknown): Promise<{ base: string; auth: (string | undefined)[]; close: () => Promise<void> }> {
  const auth: (string | undefined)[] = [];
  const srv = http.createServer((req, res) => {
    auth.push(req.headers.authorization);
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const { port } = srv.address() as AddressInfo;
  return { base: `http://127.0.0.1:${port}`, auth, close: () => new Promise<void>((r) => srv.close(() => r())) };
}

test('status: an engine error code is a refusal; a missing route (an engine still starting) or a stop is not', async () => {
  const cases: [number, unknown, boolean][] = [
    [409, { code: 'ENG_FOREIGN_DATA', message: 'holds data without shadow metadata' }, false],
    [404, { code: 'NOT_FOUND', message: 'GET /v1/status' }, true],
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
