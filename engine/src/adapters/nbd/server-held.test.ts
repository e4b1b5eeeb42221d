/**
 * The engine binds its listeners before it opens any member; a client that connects meanwhile is held,
 * not greeted, and served once the set is ready — or dropped if the start fails.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { pino } from 'pino';
import { NbdClientBackend } from '../backend-nbd/nbd-client.js';
import { NbdServer, type NbdHandler } from './server.js';

const SIZE = 1 << 20;
let ready = false;
const handler: NbdHandler = {
  size: () => {
    assert.ok(ready, 'the export was described before the set was ready');
    return SIZE;
  },
  read: async (_off, len) => Buffer.alloc(len, 0x5a),
  write: async () => undefined,
  flush: async () => undefined,
  trim: async () => undefined,
  writeZeroes: async () => undefined,
};

async function waitFor(what: string, f: () => boolean): Promise<void> {
  // Nothing announces a held connection but the count: poll it, one event-loop turn at a time, for 5 s at most.
  const deadline = Date.now() + 5000;
  while (!f() && Date.now() < deadline) await new Promise((r) => setImmediate(r));
  assert.ok(f(), what);
}

test('a client that connects before release() waits, then is served', async () => {
  const server = new NbdServer({ exportName: 'x', description: 'held', handler, log: pino({ level: 'silent' }), multiConn: true, held: true });
  const { port } = await server.listenTcp('127.0.0.1', 0);
  let opened = false;
  const client = NbdClientBackend.open(`nbd://127.0.0.1:${port}/x`, 5000).then((c) => ((opened = true), c));
  await waitFor('the connection is held', () => server.waiting === 1);
  assert.equal(opened, false, 'not greeted while held');
  ready = true;
  server.release();
  const c = await client;
  const b = Buffer.alloc(4096);
  await c.read(b, 0);
  assert.equal(b[0], 0x5a);
  await c.close();
  await server.close();
});

test('held clients are dropped when the server closes without release (a start that failed)', async () => {
  const server = new NbdServer({ exportName: 'x', description: 'held', handler, log: pino({ level: 'silent' }), multiConn: true, held: true });
  const { port } = await server.listenTcp('127.0.0.1', 0);
  const client = NbdClientBackend.open(`nbd://127.0.0.1:${port}/x`, 5000);
  await waitFor('the connection is held', () => server.waiting === 1);
  await server.close();
  await assert.rejects(client, /closed/);
});

test('a held client that resets its connection does not take the server down', async () => {
  const server = new NbdServer({ exportName: 'x', description: 'held', handler, log: pino({ level: 'silent' }), multiConn: true, held: true });
  const { port } = await server.listenTcp('127.0.0.1', 0);
  const raw = net.connect(port, '127.0.0.1');
  await new Promise((r) => raw.once('connect', r));
  await waitFor('the connection is held', () => server.waiting === 1);
  // Bytes for the held socket to read, then a reset: its next read fails with ECONNRESET ('error').
  // Nothing tells when the server has read them: give it 100 ms (a reset sent at once is not seen at all).
  await new Promise((r) => raw.write(Buffer.alloc(100), r));
  await new Promise((r) => setTimeout(r, 100));
  raw.resetAndDestroy();
  await waitFor('the reset connection is forgotten while held', () => server.waiting === 0);
  server.release();
  const c = await NbdClientBackend.open(`nbd://127.0.0.1:${port}/x`, 5000);
  await c.close();
  await server.close();
});
