/**
 * The server's side of base:allocation, byte by byte: the meta-context options (malformed ones refused
 * and the connection kept), BLOCK_STATUS only once the context is selected, REQ_ONE, and no context at
 * all where the device cannot say.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { pino } from 'pino';
import { BASE_ALLOCATION_ID } from './block-status.js';
import * as P from './protocol.js';
import { NbdServer } from './server.js';
import { option, requestHeader, ServerStream, type Reply } from './test-support.js';

const SIZE = 1 << 20;

function metaRequest(name: string, queries: string[], o: { count?: number; trailing?: number; nameLen?: number } = {}): Buffer {
  const parts: Buffer[] = [];
  const n = Buffer.from(name);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(o.nameLen ?? n.length);
  parts.push(head, n);
  const count = Buffer.alloc(4);
  count.writeUInt32BE(o.count ?? queries.length);
  parts.push(count);
  for (const q of queries) {
    const l = Buffer.alloc(4);
    l.writeUInt32BE(Buffer.byteLength(q));
    parts.push(l, Buffer.from(q));
  }
  parts.push(Buffer.alloc(o.trailing ?? 0));
  return Buffer.concat(parts);
}

/** Connect, send `opts` (after the client flags, ending with OPT_GO) and then `requests`; collect replies. */
async function session(withExtents: boolean, opts: Buffer[], requests: Buffer[], expectReplies: number): Promise<{ options: ServerStream['options']; replies: Reply[]; stream: ServerStream }> {
  const server = new NbdServer({
    exportName: 'm', description: 'member', log: pino({ level: 'silent' }), multiConn: true,
    handler: {
      size: () => SIZE,
      read: async (_o, len) => Buffer.alloc(len),
      write: async () => undefined,
      flush: async () => undefined,
      trim: async () => undefined,
      writeZeroes: async () => undefined,
      ...(withExtents ? { dataExtents: async () => [[4096, 8192]] as Array<[number, number]> } : {}),
    },
  });
  const { port } = await server.listenTcp('127.0.0.1', 0);
  const stream = new ServerStream(() => null);
  const replies: Reply[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      const sock = net.connect(port, '127.0.0.1', () => {
        const flags = Buffer.alloc(4);
        flags.writeUInt32BE(P.CLIENT_FLAG_FIXED_NEWSTYLE | P.CLIENT_FLAG_NO_ZEROES);
        sock.write(Buffer.concat([flags, ...opts, option(P.OPT_GO, Buffer.alloc(6)), ...requests]));
      });
      const timer = setTimeout(() => reject(new Error(`${replies.length} of ${expectReplies} replies; options ${JSON.stringify(stream.options.map((o) => [o.opt, o.type]))}`)), 5000);
      sock.on('data', (b: Buffer) => {
        replies.push(...stream.push(b));
        if (stream.garbage) reject(new Error(stream.garbage));
        if (replies.length >= expectReplies && stream.options.some((o) => o.opt === P.OPT_GO)) {
          clearTimeout(timer);
          sock.destroy();
          resolve();
        }
      });
      sock.on('error', reject);
    });
  } finally {
    await server.close();
  }
  return { options: stream.options, replies, stream };
}

const bs = (handle: bigint, offset: number, length: number, flags = 0) => requestHeader({ type: P.CMD_BLOCK_STATUS, handle, offset, length, flags });
const descriptors = (r: Reply) => {
  const out: number[][] = [];
  for (let i = 4; i < r.data!.length; i += 8) out.push([r.data!.readUInt32BE(i), r.data!.readUInt32BE(i + 4)]);
  return { id: r.data!.readUInt32BE(0), out };
};

test('SET_META_CONTEXT base:allocation after STRUCTURED_REPLY: BLOCK_STATUS answers from the device, REQ_ONE with one descriptor', async () => {
  const { options, replies } = await session(true, [option(P.OPT_STRUCTURED_REPLY, Buffer.alloc(0)), option(P.OPT_SET_META_CONTEXT, metaRequest('m', ['base:allocation']))], [bs(1n, 0, SIZE), bs(2n, 0, SIZE, P.CMD_FLAG_REQ_ONE)], 2);
  const set = options.filter((o) => o.opt === P.OPT_SET_META_CONTEXT);
  assert.deepEqual(set.map((o) => o.type), [P.REP_META_CONTEXT, P.REP_ACK]);
  assert.equal(set[0]!.data.readUInt32BE(0), BASE_ALLOCATION_ID);
  assert.equal(set[0]!.data.subarray(4).toString(), 'base:allocation');
  const byHandle = new Map(replies.map((r) => [r.handle, r]));
  assert.deepEqual(descriptors(byHandle.get(1n)!), { id: BASE_ALLOCATION_ID, out: [[4096, 3], [4096, 0], [SIZE - 8192, 3]] });
  assert.deepEqual(descriptors(byHandle.get(2n)!), { id: BASE_ALLOCATION_ID, out: [[4096, 3]] });
});

test('LIST_META_CONTEXT names base:allocation (id 0) for no query, "base:" or its name, and nothing else', async () => {
  const { options } = await session(true, [
    option(P.OPT_LIST_META_CONTEXT, metaRequest('m', [])),
    option(P.OPT_LIST_META_CONTEXT, metaRequest('', ['base:'])),
    option(P.OPT_LIST_META_CONTEXT, metaRequest('m', ['qemu:dirty-bitmap:x'])),
  ], [], 0);
  const list = options.filter((o) => o.opt === P.OPT_LIST_META_CONTEXT).map((o) => (o.type === P.REP_META_CONTEXT ? `${o.data.readUInt32BE(0)}:${o.data.subarray(4).toString()}` : o.type));
  assert.deepEqual(list, ['0:base:allocation', P.REP_ACK, '0:base:allocation', P.REP_ACK, P.REP_ACK]);
});

test('refused, with the connection kept: SET before structured replies, malformed requests, another export; BLOCK_STATUS without a context is EINVAL', async () => {
  const { options, replies } = await session(true, [
    option(P.OPT_SET_META_CONTEXT, metaRequest('m', ['base:allocation'])), // structured replies not yet asked
    option(P.OPT_STRUCTURED_REPLY, Buffer.alloc(0)),
    option(P.OPT_SET_META_CONTEXT, metaRequest('m', ['base:allocation'], { count: 5 })),
    option(P.OPT_SET_META_CONTEXT, metaRequest('m', ['base:allocation'], { trailing: 3 })),
    option(P.OPT_SET_META_CONTEXT, metaRequest('m', ['base:allocation'], { nameLen: 1 << 30 })),
    option(P.OPT_SET_META_CONTEXT, Buffer.alloc(5)),
    option(P.OPT_SET_META_CONTEXT, metaRequest('other', ['base:allocation'])),
    option(P.OPT_SET_META_CONTEXT, metaRequest('m', ['qemu:allocation-depth'])),
  ], [bs(1n, 0, 4096)], 1);
  const set = options.filter((o) => o.opt === P.OPT_SET_META_CONTEXT).map((o) => o.type);
  assert.deepEqual(set, [P.REP_ERR_INVALID, P.REP_ERR_INVALID, P.REP_ERR_INVALID, P.REP_ERR_INVALID, P.REP_ERR_INVALID, P.REP_ERR_UNKNOWN, P.REP_ACK]);
  assert.equal(replies[0]!.error, P.NBD_EINVAL, 'no context was selected: BLOCK_STATUS refused');
});

test('a later SET without base:allocation deselects it; a device that cannot say offers no context', async () => {
  const again = await session(true, [
    option(P.OPT_STRUCTURED_REPLY, Buffer.alloc(0)),
    option(P.OPT_SET_META_CONTEXT, metaRequest('m', ['base:allocation'])),
    option(P.OPT_SET_META_CONTEXT, metaRequest('m', [])),
  ], [bs(1n, 0, 4096)], 1);
  assert.equal(again.replies[0]!.error, P.NBD_EINVAL);
  const none = await session(false, [option(P.OPT_STRUCTURED_REPLY, Buffer.alloc(0)), option(P.OPT_SET_META_CONTEXT, metaRequest('m', ['base:allocation']))], [bs(1n, 0, 4096)], 1);
  assert.deepEqual(none.options.filter((o) => o.opt === P.OPT_SET_META_CONTEXT).map((o) => o.type), [P.REP_ERR_UNSUP]);
  assert.equal(none.replies[0]!.error, P.NBD_EINVAL);
});
