/**
 * Property tests: malformed handshakes and requests thrown at a real NBD server on a unix socket.
 * The server must answer or hang up, never crash, never call the handler outside the export, and keep
 * serving well-behaved clients afterwards.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { pino } from 'pino';
import { NbdClientBackend } from '../backend-nbd/nbd-client.js';
import * as P from './protocol.js';
import { NbdServer, type NbdHandler } from './server.js';

const SIZE = 1 << 20;
const disk = Buffer.alloc(SIZE);
const violations: string[] = [];
const check = (op: string, off: number, len: number) => {
  if (!Number.isSafeInteger(off) || off < 0 || len < 0 || off + len > SIZE) violations.push(`${op} ${off}+${len}`);
};
const handler: NbdHandler = {
  size: () => SIZE,
  read: async (off, len) => (check('read', off, len), Buffer.from(disk.subarray(off, off + len))),
  write: async (off, data) => (check('write', off, data.length), void data.copy(disk, off)),
  flush: async () => undefined,
  trim: async (off, len) => check('trim', off, len),
  writeZeroes: async (off, len) => (check('zero', off, len), void disk.fill(0, off, off + len)),
};

const dir = mkdtempSync(join(tmpdir(), 'nbd-fuzz-'));
const sock = join(dir, 's');
const server = new NbdServer({ exportName: 'x', description: 'fuzz', handler, log: pino({ level: 'silent' }), multiConn: true, maxPayload: 65536 });
await server.listenUnix(sock);
after(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Send bytes, half-close, and collect everything the server says until it closes. */
function exchange(bytes: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const c = net.connect(sock);
    const got: Buffer[] = [];
    c.on('data', (b) => got.push(b));
    c.on('error', () => resolve(Buffer.concat(got)));
    c.on('close', () => resolve(Buffer.concat(got)));
    c.write(bytes, (e) => (e ? reject(e) : c.end()));
  });
}

function goPrefix(structured: boolean): Buffer {
  const parts: Buffer[] = [];
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(P.CLIENT_FLAG_FIXED_NEWSTYLE | P.CLIENT_FLAG_NO_ZEROES);
  parts.push(flags);
  const opt = (o: number, data: Buffer) => {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(P.IHAVEOPT, 0);
    h.writeUInt32BE(o, 8);
    h.writeUInt32BE(data.length, 12);
    parts.push(h, data);
  };
  if (structured) opt(P.OPT_STRUCTURED_REPLY, Buffer.alloc(0));
  const go = Buffer.alloc(6);
  opt(P.OPT_GO, go); // empty name, no info requests
  return Buffer.concat(parts);
}

async function stillServes(): Promise<void> {
  const c = await NbdClientBackend.open(`nbd+unix:///x?socket=${sock}`);
  const b = Buffer.alloc(4096, 0x77);
  await c.write(b, 8192, false);
  const r = Buffer.alloc(4096);
  await c.read(r, 8192);
  assert.deepEqual(r, b);
  await c.close();
}

test('garbage during negotiation is answered or hung up on, never crashes the server', async () => {
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ minLength: 0, maxLength: 600 }), fc.boolean(), async (junk, withFlags) => {
      const pre = withFlags ? goPrefix(false).subarray(0, 4) : Buffer.alloc(0);
      await exchange(Buffer.concat([pre, Buffer.from(junk)]));
    }),
    { numRuns: 150 },
  );
  assert.deepEqual(violations, []);
  await stillServes();
});

const requestArb = fc.record({
  type: fc.oneof(fc.constantFrom(0, 1, 3, 4, 5, 6, 7), fc.integer({ min: 0, max: 0xffff })),
  flags: fc.oneof(fc.constant(0), fc.constant(1), fc.integer({ min: 0, max: 0xffff })),
  offset: fc.oneof(fc.bigInt({ min: 0n, max: BigInt(SIZE) }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })),
  length: fc.oneof(fc.integer({ min: 0, max: 9000 }), fc.constantFrom(65536, 65537, 0xffffffff)),
  payloadShort: fc.boolean(),
});

test('random requests get a reply per request (or a hang-up) and never touch bytes outside the export', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(requestArb, { minLength: 1, maxLength: 6 }), fc.boolean(), async (reqs, structured) => {
      const parts: Buffer[] = [goPrefix(structured)];
      for (const [i, r] of reqs.entries()) {
        const h = Buffer.alloc(28);
        h.writeUInt32BE(P.REQUEST_MAGIC, 0);
        h.writeUInt16BE(r.flags, 4);
        h.writeUInt16BE(r.type === P.CMD_DISC ? 0 : r.type, 6);
        h.writeBigUInt64BE(BigInt(i + 1), 8);
        h.writeBigUInt64BE(r.offset, 16);
        h.writeUInt32BE(r.length, 24);
        parts.push(h);
        if (r.type === P.CMD_WRITE) parts.push(Buffer.alloc(r.payloadShort ? Math.min(r.length, 100) : Math.min(r.length, 70000), 0xab));
      }
      const reply = await exchange(Buffer.concat(parts));
      assert.ok(reply.length >= 18, 'server greeted');
    }),
    { numRuns: 200 },
  );
  assert.deepEqual(violations, []);
  await stillServes();
});

test('out-of-range and unknown requests are answered with the protocol errors', async () => {
  const c = await NbdClientBackend.open(`nbd+unix:///x?socket=${sock}`);
  await assert.rejects(c.read(Buffer.alloc(4096), SIZE - 1024), /answered error 22/);
  await assert.rejects(c.write(Buffer.alloc(4096), SIZE - 1024, false), /answered error 28/);
  await c.close();
  assert.deepEqual(violations, []);
});
