/**
 * Connections an NBD server will not keep: one that never finishes negotiating (it could otherwise sit
 * on a TLS-required listener for ever, never authenticating), and any beyond the connection limit.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { pino } from 'pino';
import { NbdServer } from './server.js';
import { handshake } from './test-support.js';

const dir = mkdtempSync(join(tmpdir(), 'nbd-limits-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function server(o: { negotiationTimeoutMs?: number; maxConnections?: number }): NbdServer {
  return new NbdServer({
    exportName: 'shadow', description: 'test', log: pino({ level: 'silent' }), multiConn: true, ...o,
    handler: {
      size: () => 1 << 20,
      read: async (_off, len) => Buffer.alloc(len),
      write: async () => undefined,
      flush: async () => undefined,
      trim: async () => undefined,
      writeZeroes: async () => undefined,
    },
  });
}

function connect(path: string): Promise<{ sock: net.Socket; closed: Promise<number> }> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const sock = net.connect(path, () => resolve({ sock, closed: new Promise((r) => sock.once('close', () => r(Date.now() - t0))) }));
    sock.on('error', () => undefined);
    sock.once('error', reject);
    sock.resume();
  });
}

test('a client that does not finish negotiating is closed after the deadline; one that did is not', async () => {
  const srv = server({ negotiationTimeoutMs: 300 });
  const path = join(dir, 'deadline.sock');
  await srv.listenUnix(path);
  try {
    const silent = await connect(path);
    const done = await connect(path);
    done.sock.write(handshake(false));
    const waited = await silent.closed;
    assert.ok(waited >= 250 && waited < 5000, `the silent client was closed after ${waited} ms`);
    assert.equal(srv.stats.negotiationTimeouts, 1);
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(done.sock.destroyed, false, 'a client in the transmission phase was closed');
    done.sock.destroy();
  } finally {
    await srv.close();
  }
});

test('connections beyond the limit are closed at once', async () => {
  const srv = server({ maxConnections: 3 });
  const path = join(dir, 'limit.sock');
  await srv.listenUnix(path);
  try {
    const kept = [await connect(path), await connect(path), await connect(path)];
    const extra = await connect(path);
    const waited = await extra.closed;
    assert.ok(waited < 2000, `the extra connection stayed ${waited} ms`);
    assert.equal(srv.stats.refusedConnections, 1);
    for (const k of kept) assert.equal(k.sock.destroyed, false);
    kept[0]!.sock.destroy();
    await kept[0]!.closed;
    await new Promise((r) => setTimeout(r, 50));
    const again = await connect(path);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(again.sock.destroyed, false, 'a connection was refused below the limit');
    for (const k of [...kept.slice(1), again]) k.sock.destroy();
  } finally {
    await srv.close();
  }
});

test('the Unix socket is mode 0660 (owner and group)', async () => {
  const path = join(dir, 'mode.sock');
  const srv = server({});
  await srv.listenUnix(path);
  try {
    assert.equal(statSync(path).mode & 0o777, 0o660);
    const c = await connect(path);
    c.sock.destroy();
  } finally {
    await srv.close();
  }
});
