/**
 * A member's holes over NBD (NbdClientBackend.dataExtents): the engine's client against its own server
 * (base:allocation answered from the device's data extents), against servers that cannot or may not
 * say, and against servers whose answers break the protocol — which must give "unknown" (read all),
 * never a wrong map, and leave the data connection working.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { pino } from 'pino';
import { ByteQueue } from '../nbd/byte-queue.js';
import * as P from '../nbd/protocol.js';
import { NbdServer, type NbdHandler } from '../nbd/server.js';
import { NbdClientBackend } from './nbd-client.js';

const GiB = 1024 ** 3;

function handler(size: number, extents: (() => Promise<Array<[number, number]> | null>) | undefined): NbdHandler {
  return {
    size: () => size,
    read: async (_off, len) => Buffer.alloc(len, 0x77),
    write: async () => undefined,
    flush: async () => undefined,
    trim: async () => undefined,
    writeZeroes: async () => undefined,
    ...(extents ? { dataExtents: extents } : {}),
  };
}

async function withServer(h: NbdHandler, multiConn: boolean, body: (c: NbdClientBackend, s: NbdServer) => Promise<void>): Promise<void> {
  const server = new NbdServer({ exportName: 'm', description: 'member', handler: h, log: pino({ level: 'silent' }), multiConn });
  const { port } = await server.listenTcp('127.0.0.1', 0);
  const c = await NbdClientBackend.open(`nbd://127.0.0.1:${port}/m`, 5000);
  try {
    await body(c, server);
  } finally {
    await c.close();
    await server.close();
  }
}

test('the map of a 9 GiB export comes back whole, asked in pieces of under 4 GiB on a second connection; the data connection keeps simple replies', async () => {
  const ext: Array<[number, number]> = [[0, 4096], [GiB, GiB + 65536], [4 * GiB - 4096, 4 * GiB + 8192], [9 * GiB - 512, 9 * GiB]];
  await withServer(handler(9 * GiB, async () => ext), true, async (c, s) => {
    assert.deepEqual(await c.dataExtents(), ext);
    assert.equal(s.stats.requests.BLOCK_STATUS, 3, 'three requests cover 9 GiB');
    assert.equal(s.stats.connectionsTotal, 2, 'asked on a connection of its own');
    assert.equal(await c.holdsNoData(), false);
    const b = Buffer.alloc(4096);
    await c.read(b, GiB);
    assert.equal(b[0], 0x77, 'the data connection still reads');
  });
});

test('more extents than one answer holds: the client asks again from where the answer ended', async () => {
  const ext: Array<[number, number]> = [];
  for (let i = 0; i < 20_000; i++) ext.push([i * 8192 + 512, i * 8192 + 4096]);
  await withServer(handler(20_000 * 8192, async () => ext), true, async (c, s) => {
    assert.deepEqual(await c.dataExtents(), ext);
    assert.ok(s.stats.requests.BLOCK_STATUS! >= 5, `${s.stats.requests.BLOCK_STATUS} requests for 40,001 descriptors`);
  });
});

test('an export with no data: an empty map, and holdsNoData', async () => {
  await withServer(handler(GiB, async () => []), true, async (c) => {
    assert.deepEqual(await c.dataExtents(), []);
    assert.equal(await c.holdsNoData(), true);
  });
});

test('a device that cannot say (its question fails, or answers null) is answered "data" everywhere', async () => {
  await withServer(handler(GiB, async () => Promise.reject(new Error('xfs_io missing'))), true, async (c) => {
    assert.deepEqual(await c.dataExtents(), [[0, GiB]]);
    assert.equal(await c.holdsNoData(), false);
  });
  await withServer(handler(GiB, async () => null), true, async (c) => {
    assert.deepEqual(await c.dataExtents(), [[0, GiB]]);
  });
});

test('unknown without CAN_MULTI_CONN (another connection might not see this one\'s writes), and where base:allocation is not offered', async () => {
  let asked = 0;
  await withServer(handler(GiB, async () => (asked++, [])), false, async (c, s) => {
    assert.equal(await c.dataExtents(), null);
    assert.equal(await c.holdsNoData(), false);
    assert.equal(asked, 0);
    assert.equal(s.stats.connectionsTotal, 1, 'no second connection was even opened');
  });
  await withServer(handler(GiB, undefined), true, async (c, s) => {
    assert.equal(await c.dataExtents(), null);
    assert.equal(s.stats.requests.BLOCK_STATUS, undefined);
  });
});

type Answer = (handle: bigint, offset: number, length: number) => Buffer;

function chunk(handle: bigint, type: number, payload: Buffer, done = true): Buffer {
  const h = Buffer.alloc(20);
  h.writeUInt32BE(P.STRUCTURED_REPLY_MAGIC, 0);
  h.writeUInt16BE(done ? P.REPLY_FLAG_DONE : 0, 4);
  h.writeUInt16BE(type, 6);
  h.writeBigUInt64BE(handle, 8);
  h.writeUInt32BE(payload.length, 16);
  return Buffer.concat([h, payload]);
}

function status(id: number, ds: number[][]): Buffer {
  const b = Buffer.alloc(4 + 8 * ds.length);
  b.writeUInt32BE(id, 0);
  ds.forEach(([n, f], i) => {
    b.writeUInt32BE(n!, 4 + 8 * i);
    b.writeUInt32BE(f!, 8 + 8 * i);
  });
  return b;
}

/**
 * A fake member server of 1 MiB (multi-conn): structured replies and base:allocation (context 9) are
 * agreed to when asked, READ answers zeros with simple replies, BLOCK_STATUS answers with `answer`.
 */
async function fakeServer(answer: Answer, body: (c: NbdClientBackend) => Promise<void>): Promise<void> {
  const size = 1 << 20;
  const socks = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    socks.add(s);
    s.on('error', () => undefined);
    const q = new ByteQueue();
    const hello = Buffer.alloc(18);
    hello.writeBigUInt64BE(P.NBDMAGIC, 0);
    hello.writeBigUInt64BE(P.IHAVEOPT, 8);
    hello.writeUInt16BE(P.FLAG_FIXED_NEWSTYLE | P.FLAG_NO_ZEROES, 16);
    s.write(hello);
    let stage: 'flags' | 'options' | 'requests' = 'flags';
    const rep = (opt: number, type: number, data = Buffer.alloc(0)) => {
      const h = Buffer.alloc(20);
      h.writeBigUInt64BE(P.OPTION_REPLY_MAGIC, 0);
      h.writeUInt32BE(opt, 8);
      h.writeUInt32BE(type, 12);
      h.writeUInt32BE(data.length, 16);
      s.write(Buffer.concat([h, data]));
    };
    s.on('data', (b: Buffer) => {
      q.push(b);
      for (;;) {
        if (stage === 'flags') {
          if (q.length < 4) return;
          q.take(4);
          stage = 'options';
        } else if (stage === 'options') {
          if (q.length < 16) return;
          const h = q.take(16);
          const opt = h.readUInt32BE(8);
          const len = h.readUInt32BE(12);
          q.take(len); // small options, sent whole
          if (opt === P.OPT_SET_META_CONTEXT) {
            const ctx = Buffer.from('\0\0\0\x09base:allocation', 'latin1');
            rep(opt, P.REP_META_CONTEXT, ctx);
          }
          if (opt === P.OPT_GO) {
            const info = Buffer.alloc(12);
            info.writeUInt16BE(P.INFO_EXPORT, 0);
            info.writeBigUInt64BE(BigInt(size), 2);
            info.writeUInt16BE(P.TF_HAS_FLAGS | P.TF_SEND_FLUSH | P.TF_CAN_MULTI_CONN, 10);
            rep(opt, P.REP_INFO, info);
            stage = 'requests';
          }
          rep(opt, P.REP_ACK);
        } else {
          if (q.length < 28) return;
          const r = q.take(28);
          const type = r.readUInt16BE(6);
          const handle = r.readBigUInt64BE(8);
          if (type === P.CMD_DISC) return void s.end();
          const simple = Buffer.alloc(16);
          simple.writeUInt32BE(P.SIMPLE_REPLY_MAGIC, 0);
          simple.writeBigUInt64BE(handle, 8);
          if (type === P.CMD_READ) s.write(Buffer.concat([simple, Buffer.alloc(r.readUInt32BE(24))]));
          else if (type === P.CMD_BLOCK_STATUS) s.write(answer(handle, Number(r.readBigUInt64BE(16)), r.readUInt32BE(24)));
          else s.write(simple);
        }
      }
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const { port } = srv.address() as net.AddressInfo;
  const c = await NbdClientBackend.open(`nbd://127.0.0.1:${port}/m`, 5000);
  try {
    await body(c);
  } finally {
    await c.close();
    for (const s of socks) s.destroy();
    await new Promise<void>((r) => srv.close(() => r()));
  }
}

test('answers that break the protocol make the map unknown, never wrong, and the data connection goes on', async () => {
  const cases: Array<[string, Answer]> = [
    ['another context', (h, _o, n) => chunk(h, P.REPLY_TYPE_BLOCK_STATUS, status(3, [[n, 3]]))],
    ['a descriptor of length 0', (h, _o, n) => chunk(h, P.REPLY_TYPE_BLOCK_STATUS, status(9, [[0, 3], [n, 3]]))],
    ['no descriptors', (h) => chunk(h, P.REPLY_TYPE_BLOCK_STATUS, status(9, []))],
    ['a descriptor after the end', (h, _o, n) => chunk(h, P.REPLY_TYPE_BLOCK_STATUS, status(9, [[n, 3], [512, 0]]))],
    ['two answers for one context', (h, _o, n) => Buffer.concat([chunk(h, P.REPLY_TYPE_BLOCK_STATUS, status(9, [[n, 3]]), false), chunk(h, P.REPLY_TYPE_BLOCK_STATUS, status(9, [[n, 3]]))])],
    ['done with no answer', (h) => chunk(h, P.REPLY_TYPE_NONE, Buffer.alloc(0))],
    ['a data chunk', (h) => chunk(h, P.REPLY_TYPE_OFFSET_DATA, Buffer.alloc(8 + 512))],
    ['an error chunk', (h) => {
      const p = Buffer.alloc(6 + 4);
      p.writeUInt32BE(P.NBD_EIO, 0);
      p.writeUInt16BE(4, 4);
      p.write('oops', 6);
      return chunk(h, P.REPLY_TYPE_ERROR, p);
    }],
    ['a simple reply', (h) => {
      const b = Buffer.alloc(16);
      b.writeUInt32BE(P.SIMPLE_REPLY_MAGIC, 0);
      b.writeBigUInt64BE(h, 8);
      return b;
    }],
    ['an answer for another handle', (h, _o, n) => chunk(h + 100n, P.REPLY_TYPE_BLOCK_STATUS, status(9, [[n, 3]]))],
    ['a chunk too large to take', (h) => {
      const c = chunk(h, P.REPLY_TYPE_BLOCK_STATUS, status(9, [[512, 3]]));
      c.writeUInt32BE(64 << 20, 16);
      return c;
    }],
  ];
  for (const [what, answer] of cases) {
    await fakeServer(answer, async (c) => {
      assert.equal(await c.dataExtents(), null, what);
      const b = Buffer.alloc(512, 1);
      await c.read(b, 0);
      assert.equal(b[0], 0, `${what}: the data connection still reads`);
    });
  }
  // The same server with a good answer: a map (the fake itself works).
  await fakeServer((h, _o, n) => chunk(h, P.REPLY_TYPE_BLOCK_STATUS, status(9, [[4096, 0], [n - 4096, 3]])), async (c) => {
    assert.deepEqual(await c.dataExtents(), [[0, 4096]]);
  });
});

test('a server that does not answer in time: unknown after statusLimitMs, and the data connection goes on', async () => {
  await fakeServer(() => Buffer.alloc(0), async (c) => {
    c.statusLimitMs = 300;
    const t0 = Date.now();
    assert.equal(await c.dataExtents(), null);
    const took = Date.now() - t0;
    assert.ok(took >= 250 && took < 5000, `gave up after ${took} ms`);
    const b = Buffer.alloc(512, 1);
    await c.read(b, 0);
    assert.equal(b[0], 0);
  });
});
