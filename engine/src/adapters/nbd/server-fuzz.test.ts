/**
 * Property tests: malformed handshakes and requests thrown at a real NBD server on a unix socket.
 * The server must answer or hang up, never crash, never call the handler outside the export, and keep
 * serving well-behaved clients afterwards. In the transmission phase every request is checked against
 * a model: exactly one reply with its handle, the errno engine/README.md promises, the data a READ must
 * return, and the connection closed where the protocol says (bad magic, DISC).
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
import { handshake, option, requestHeader, ServerStream, type Reply } from './test-support.js';

const SIZE = 1 << 20;
const MAX_PAYLOAD = 65536;
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
  // base:allocation is offered (so its options are parsed), though no connection below selects it.
  dataExtents: async () => [[0, 4096]],
};

const dir = mkdtempSync(join(tmpdir(), 'nbd-fuzz-'));
const sock = join(dir, 's');
const server = new NbdServer({ exportName: 'x', description: 'fuzz', handler, log: pino({ level: 'silent' }), multiConn: true, maxPayload: MAX_PAYLOAD });
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
      const pre = withFlags ? handshake(false).subarray(0, 4) : Buffer.alloc(0);
      await exchange(Buffer.concat([pre, Buffer.from(junk)]));
    }),
    { numRuns: 150 },
  );
  assert.deepEqual(violations, []);
  await stillServes();
});

test('malformed meta-context options (LIST and SET, with or without structured replies) are answered or hung up on', async () => {
  const u32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n >>> 0);
    return b;
  };
  // Mostly well-formed lengths with random contents and counts, sometimes pure junk.
  const bodyArb = fc.oneof(
    fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
    fc.tuple(fc.string({ maxLength: 20 }), fc.oneof(fc.nat(4), fc.constant(0xffffffff)), fc.array(fc.string({ maxLength: 30 }), { maxLength: 4 }), fc.nat(3)).map(([name, count, queries, junk]) =>
      Buffer.concat([u32(Buffer.byteLength(name)), Buffer.from(name), u32(count), ...queries.flatMap((q) => [u32(Buffer.byteLength(q)), Buffer.from(q)]), Buffer.alloc(junk)]),
    ),
  );
  await fc.assert(
    fc.asyncProperty(fc.boolean(), fc.array(fc.tuple(fc.constantFrom(P.OPT_LIST_META_CONTEXT, P.OPT_SET_META_CONTEXT), bodyArb), { minLength: 1, maxLength: 4 }), async (structured, opts) => {
      const flags = handshake(false).subarray(0, 4);
      const parts = [flags, ...(structured ? [option(P.OPT_STRUCTURED_REPLY, Buffer.alloc(0))] : []), ...opts.map(([o, b]) => option(o, b))];
      const got = await exchange(Buffer.concat(parts));
      const stream = new ServerStream(() => null);
      stream.push(got);
      assert.equal(stream.garbage, null, 'only option replies come back');
      // Every option is answered, with an ACK or an error as its last reply.
      const finals = stream.options.filter((r) => r.type === P.REP_ACK || r.type >= 0x80000000);
      assert.equal(finals.length, opts.length + (structured ? 1 : 0));
    }),
    { numRuns: 200 },
  );
  assert.deepEqual(violations, []);
  await stillServes();
});

const requestArb = fc.record({
  type: fc.oneof(fc.constantFrom(0, 1, 2, 3, 4, 5, 6, 7), fc.integer({ min: 0, max: 0xffff })),
  flags: fc.oneof(fc.constant(0), fc.constant(1), fc.integer({ min: 0, max: 0xffff })),
  offset: fc.oneof(fc.bigInt({ min: 0n, max: BigInt(SIZE) }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })),
  length: fc.oneof(fc.integer({ min: 0, max: 9000 }), fc.constantFrom(MAX_PAYLOAD, MAX_PAYLOAD + 1, 0xffffffff)),
  payloadShort: fc.boolean(),
  fill: fc.integer({ min: 0, max: 255 }),
  badMagic: fc.integer({ min: 0, max: 15 }).map((n) => n === 0),
});

/** What the server must answer to one request (data: what a successful READ returns). */
interface Expected {
  handle: bigint;
  errno: number;
  data: Buffer | null;
}

const ALLOWED_FLAGS: Record<number, number> = {
  [P.CMD_READ]: 0,
  [P.CMD_WRITE]: P.CMD_FLAG_FUA,
  [P.CMD_DISC]: 0,
  [P.CMD_FLUSH]: 0,
  [P.CMD_TRIM]: P.CMD_FLAG_FUA,
  [P.CMD_WRITE_ZEROES]: P.CMD_FLAG_FUA | P.CMD_FLAG_NO_HOLE,
};

/** The errno engine/README.md promises for a request (0: it runs), written apart from validate.ts. */
function outcome(type: number, flags: number, offset: bigint, length: number): number {
  const allowed = ALLOWED_FLAGS[type];
  if (allowed === undefined || (flags & ~allowed) !== 0) return P.NBD_EINVAL;
  if (type === P.CMD_DISC) return 0;
  if (type === P.CMD_FLUSH) return offset === 0n && length === 0 ? 0 : P.NBD_EINVAL;
  if (length === 0) return P.NBD_EINVAL;
  if ((type === P.CMD_READ || type === P.CMD_WRITE) && length > MAX_PAYLOAD) return P.NBD_EINVAL;
  if (offset + BigInt(length) > BigInt(SIZE)) return type === P.CMD_WRITE || type === P.CMD_WRITE_ZEROES ? P.NBD_ENOSPC : P.NBD_EINVAL;
  return 0;
}

/**
 * Walk the bytes sent after the handshake as the protocol defines them (a WRITE header is followed by
 * its payload whatever the server thinks of it), keeping a model of the disk, and say what must come
 * back: one reply per request, and how the connection ends.
 */
function expectFrom(tx: Buffer, model: Buffer): { replies: Expected[]; end: 'badMagic' | 'disc' | 'open' } {
  const replies: Expected[] = [];
  let pos = 0;
  while (pos + 28 <= tx.length) {
    if (tx.readUInt32BE(pos) !== P.REQUEST_MAGIC) return { replies, end: 'badMagic' };
    const flags = tx.readUInt16BE(pos + 4);
    const type = tx.readUInt16BE(pos + 6);
    const handle = tx.readBigUInt64BE(pos + 8);
    const offset = tx.readBigUInt64BE(pos + 16);
    const length = tx.readUInt32BE(pos + 24);
    pos += 28;
    let payload: Buffer | null = null;
    if (type === P.CMD_WRITE) {
      if (pos + length > tx.length) break; // the server still waits for the rest of the payload
      payload = tx.subarray(pos, pos + length);
      pos += length;
    }
    const errno = outcome(type, flags, offset, length);
    if (type === P.CMD_DISC && errno === 0) return { replies, end: 'disc' };
    const off = Number(offset);
    let data: Buffer | null = null;
    if (errno === 0 && type === P.CMD_READ) data = Buffer.from(model.subarray(off, off + length));
    if (errno === 0 && payload) payload.copy(model, off);
    if (errno === 0 && type === P.CMD_WRITE_ZEROES) model.fill(0, off, off + length);
    replies.push({ handle, errno, data });
  }
  return { replies, end: 'open' };
}

/**
 * Send the bytes and collect replies. A connection the server should keep open is ended by the client
 * once every expected reply is in (anything more would arrive before the close); otherwise the server
 * must close it. Bounded: a missing reply or close fails after 5 s.
 */
function transmit(bytes: Buffer, exp: ReturnType<typeof expectFrom>): Promise<{ stream: ServerStream; replies: Reply[]; timedOut: boolean }> {
  const reads = new Map(exp.replies.filter((e) => e.data).map((e) => [e.handle, e.data!.length]));
  const stream = new ServerStream((h) => reads.get(h) ?? null);
  const replies: Reply[] = [];
  return new Promise((resolve) => {
    const c = net.connect(sock);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      c.destroy();
    }, 5000);
    const enough = () => exp.end === 'open' && replies.length >= exp.replies.length;
    c.on('data', (b: Buffer) => {
      replies.push(...stream.push(b));
      if (enough()) c.end();
    });
    c.on('error', () => undefined);
    c.on('close', () => {
      clearTimeout(timer);
      resolve({ stream, replies, timedOut });
    });
    c.write(bytes, () => {
      if (enough()) c.end();
    });
  });
}

test('every request gets exactly one reply with its handle and the expected outcome, or the connection closes as it must', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(requestArb, { minLength: 1, maxLength: 8 }), fc.boolean(), async (reqs, structured) => {
      const parts: Buffer[] = [];
      for (const [i, r] of reqs.entries()) {
        parts.push(requestHeader({ ...r, handle: BigInt(i + 1), magic: r.badMagic ? 0x25609514 : P.REQUEST_MAGIC }));
        if (r.type === P.CMD_WRITE) parts.push(Buffer.alloc(r.payloadShort ? Math.min(r.length, 100) : Math.min(r.length, 70000), r.fill));
      }
      const tx = Buffer.concat(parts);
      const exp = expectFrom(tx, Buffer.from(disk));
      const got = await transmit(Buffer.concat([handshake(structured), tx]), exp);
      assert.equal(got.timedOut, false, `no ${exp.end === 'open' ? `${exp.replies.length} replies` : 'close by the server'} within 5 s (${got.replies.length} replies)`);
      assert.equal(got.stream.garbage, null);
      const seen = new Set<bigint>();
      for (const r of got.replies) {
        const e = exp.replies.find((x) => x.handle === r.handle);
        assert.ok(e, `reply for handle ${r.handle}, which no request had`);
        assert.ok(!seen.has(r.handle), `second reply for handle ${r.handle}`);
        seen.add(r.handle);
        assert.equal(r.error, e.errno, `handle ${r.handle}: errno`);
        assert.equal(r.structured, structured && (r.error !== 0 || e.data !== null), `handle ${r.handle}: reply kind`);
        if (e.data) assert.ok(r.data?.equals(e.data), `handle ${r.handle}: data read`);
      }
      // A bad magic closes the connection at once: replies still due may be lost, never wrong.
      if (exp.end !== 'badMagic') assert.equal(seen.size, exp.replies.length, 'a reply for every request');
    }),
    { numRuns: 300, interruptAfterTimeLimit: 120_000, markInterruptAsFailure: true },
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
