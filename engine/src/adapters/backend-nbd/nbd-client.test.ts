/**
 * The engine's NBD client against small fake servers: block sizes and transmission flags a member must
 * not be accepted with, and close() with requests in flight (answered late, or never).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { isEngineError } from '../../core/errors.js';
import { ByteQueue } from '../nbd/byte-queue.js';
import * as P from '../nbd/protocol.js';
import { NbdClientBackend } from './nbd-client.js';

const SIZE = 1 << 20;
const GOOD_FLAGS = P.TF_HAS_FLAGS | P.TF_SEND_FLUSH | P.TF_SEND_FUA | P.TF_SEND_WRITE_ZEROES;
const dir = mkdtempSync(join(tmpdir(), 'nbd-client-'));
after(() => rmSync(dir, { recursive: true, force: true }));

interface FakeOptions {
  flags?: number;
  /** Body of NBD_INFO_BLOCK_SIZE after its type: [minimum, preferred, maximum], raw bytes, or none. */
  blockSize?: [number, number, number] | Buffer | null;
}

interface Seen {
  type: number;
  flags: number;
  length: number;
}

/** A fake NBD server on a unix socket: one export of SIZE bytes in memory; replies can be held back. */
class FakeServer {
  readonly disk = Buffer.alloc(SIZE);
  readonly seen: Seen[] = [];
  readonly path: string;
  /** While set, replies wait here (in order) instead of being sent. */
  held: (() => void)[] | null = null;
  closed = false;
  private readonly srv: net.Server;
  private readonly socks = new Set<net.Socket>();

  constructor(name: string, private readonly o: FakeOptions = {}) {
    this.path = join(dir, name);
    this.srv = net.createServer((s) => this.serve(s));
  }

  get uri(): string {
    return `nbd+unix:///x?socket=${this.path}`;
  }

  listen(): Promise<void> {
    return new Promise((r) => this.srv.listen(this.path, () => r()));
  }

  /** Stop listening and drop every connection (a client a test failed to close must not hold it up). */
  close(): Promise<void> {
    for (const s of this.socks) s.destroy();
    return new Promise((r) => this.srv.close(() => r()));
  }

  releaseReplies(): void {
    const h = this.held ?? [];
    this.held = null;
    for (const f of h) f();
  }

  private serve(s: net.Socket): void {
    this.socks.add(s);
    s.on('error', () => undefined);
    s.on('close', () => (this.closed = true));
    const hello = Buffer.alloc(18);
    hello.writeBigUInt64BE(P.NBDMAGIC, 0);
    hello.writeBigUInt64BE(P.IHAVEOPT, 8);
    hello.writeUInt16BE(P.FLAG_FIXED_NEWSTYLE | P.FLAG_NO_ZEROES, 16);
    s.write(hello);
    const q = new ByteQueue();
    let stage: 'flags' | 'option' | 'requests' = 'flags';
    let pending: { flags: number; type: number; handle: bigint; offset: number; length: number } | null = null;
    s.on('data', (b: Buffer) => {
      q.push(b);
      for (;;) {
        if (stage === 'flags') {
          if (q.length < 4) return;
          q.take(4);
          stage = 'option';
        } else if (stage === 'option') {
          if (q.length < 16) return;
          const h = q.take(16);
          const len = h.readUInt32BE(12);
          q.take(len); // the client sends OPT_GO in one piece
          this.go(s, h.readUInt32BE(8));
          stage = 'requests';
        } else {
          if (!pending) {
            if (q.length < 28) return;
            const h = q.take(28);
            pending = { flags: h.readUInt16BE(4), type: h.readUInt16BE(6), handle: h.readBigUInt64BE(8), offset: Number(h.readBigUInt64BE(16)), length: h.readUInt32BE(24) };
          }
          const r = pending;
          if (r.type === P.CMD_WRITE && q.length < r.length) return; // wait for the payload
          pending = null;
          this.seen.push({ type: r.type, flags: r.flags, length: r.length });
          if (r.type === P.CMD_DISC) return void s.end();
          if (r.type === P.CMD_WRITE) q.take(r.length).copy(this.disk, r.offset);
          const reply = Buffer.alloc(16);
          reply.writeUInt32BE(P.SIMPLE_REPLY_MAGIC, 0);
          reply.writeBigUInt64BE(r.handle, 8);
          const send = () => s.write(r.type === P.CMD_READ ? Buffer.concat([reply, this.disk.subarray(r.offset, r.offset + r.length)]) : reply);
          if (this.held) this.held.push(send);
          else send();
        }
      }
    });
  }

  private go(s: net.Socket, opt: number): void {
    const rep = (type: number, body: Buffer) => {
      const h = Buffer.alloc(20);
      h.writeBigUInt64BE(P.OPTION_REPLY_MAGIC, 0);
      h.writeUInt32BE(opt, 8);
      h.writeUInt32BE(type, 12);
      h.writeUInt32BE(body.length, 16);
      s.write(Buffer.concat([h, body]));
    };
    const exp = Buffer.alloc(12);
    exp.writeUInt16BE(P.INFO_EXPORT, 0);
    exp.writeBigUInt64BE(BigInt(SIZE), 2);
    exp.writeUInt16BE(this.o.flags ?? GOOD_FLAGS, 10);
    rep(P.REP_INFO, exp);
    const bs = this.o.blockSize === undefined ? [1, 4096, 32 << 20] : this.o.blockSize;
    if (bs) {
      let body = Buffer.isBuffer(bs) ? bs : Buffer.alloc(12);
      if (!Buffer.isBuffer(bs)) bs.forEach((v, i) => body.writeUInt32BE(v, 4 * i));
      body = Buffer.concat([Buffer.from([0, P.INFO_BLOCK_SIZE]), body]);
      rep(P.REP_INFO, body);
    }
    rep(P.REP_ACK, Buffer.alloc(0));
  }
}

let n = 0;
async function fake(t: { after(fn: () => Promise<void>): void }, o: FakeOptions = {}): Promise<FakeServer> {
  const f = new FakeServer(`s${n++}`, o);
  await f.listen();
  t.after(() => f.close());
  return f;
}

const refusals: [string, FakeOptions, RegExp][] = [
  ['a maximum block size of 0', { blockSize: [1, 4096, 0] }, /minimum 1, preferred 4096, maximum 0\b/],
  ['a minimum that is not a power of two', { blockSize: [3, 4096, 32 << 20] }, /minimum 3, .*power of two/],
  ['a minimum over 64 KiB', { blockSize: [1 << 17, 1 << 17, 1 << 20] }, /minimum 131072, .*64 KiB/],
  ['a minimum of 0', { blockSize: [0, 4096, 32 << 20] }, /minimum 0, /],
  ['a preferred size under 512', { blockSize: [1, 256, 32 << 20] }, /preferred 256, .*preferred/],
  ['a preferred size that is not a power of two', { blockSize: [1, 3000, 32 << 20] }, /preferred 3000, .*preferred/],
  ['a maximum under the preferred size', { blockSize: [1, 4096, 2048] }, /maximum 2048\b.*maximum/],
  ['a maximum that is no multiple of the minimum', { blockSize: [512, 4096, 4096 * 3 + 100] }, /maximum 12388\b.*multiple/],
  ['a block size record of the wrong length', { blockSize: Buffer.alloc(8) }, /NBD_INFO_BLOCK_SIZE of 10 bytes/],
  ['a minimum block size over 1', { blockSize: [512, 4096, 32 << 20] }, /minimum 512\b.*any byte offset/],
  ['a minimum block size of 4 KiB', { blockSize: [4096, 4096, 32 << 20] }, /minimum 4096\b.*any byte offset/],
  ['no FLUSH', { flags: P.TF_HAS_FLAGS | P.TF_SEND_FUA }, /does not support FLUSH; writes acknowledged by the set could not be made durable on it/],
  ['no transmission flags at all', { flags: 0 }, /does not support FLUSH/],
];

for (const [what, o, message] of refusals) {
  test(`a member server advertising ${what} is refused at open, naming the member`, { timeout: 10_000 }, async (t) => {
    const f = await fake(t, o);
    await assert.rejects(NbdClientBackend.open(f.uri, 5000), (e: unknown) => {
      assert.ok(isEngineError(e), String(e));
      assert.ok(e.message.includes(f.uri), `names the member: ${e.message}`);
      assert.match(e.message, message);
      t.diagnostic(e.message);
      return true;
    });
  });
}

test('a member with valid limits is used within them; FUA without SEND_FUA becomes a write and a FLUSH', { timeout: 10_000 }, async (t) => {
  const f = await fake(t, { blockSize: [1, 512, 64 * 1024], flags: P.TF_HAS_FLAGS | P.TF_SEND_FLUSH });
  const c = await NbdClientBackend.open(f.uri, 5000);
  t.after(() => c.close());
  const data = Buffer.alloc(200 * 1024, 0x5a);
  await c.write(data, 3, true);
  const back = Buffer.alloc(data.length);
  await c.read(back, 3);
  assert.ok(back.equals(data));
  const writes = f.seen.filter((s) => s.type === P.CMD_WRITE);
  assert.deepEqual(writes.map((s) => s.length), [65536, 65536, 65536, 8192]);
  assert.ok(writes.every((s) => s.flags === 0), 'no FUA flag sent to a server that did not offer it');
  assert.equal(f.seen[writes.length]?.type, P.CMD_FLUSH, 'the FUA write is followed by a FLUSH');
  assert.ok(f.seen.filter((s) => s.type === P.CMD_READ).every((s) => s.length <= 65536));
});

test('close() waits for requests in flight, which complete, and only then disconnects', { timeout: 10_000 }, async (t) => {
  const f = await fake(t);
  const c = await NbdClientBackend.open(f.uri, 5000);
  f.disk.fill(0x33, 0, 4096);
  f.held = [];
  const buf = Buffer.alloc(4096);
  const read = c.read(buf, 0).then(() => 'read done');
  const write = c.write(Buffer.alloc(4096, 0x44), 8192, false).then(() => 'write done');
  const closing = c.close().then(() => 'closed');
  const events: string[] = [];
  for (const p of [read, write, closing]) void p.then((e) => events.push(e));
  // Requests issued after close() fail at once; close() is idempotent.
  await assert.rejects(c.read(Buffer.alloc(512), 0), (e: unknown) => isEngineError(e, 'ENG_IO'));
  const again = c.close();
  await new Promise((r) => setImmediate(r));
  assert.equal(f.seen.some((s) => s.type === P.CMD_DISC), false, 'no DISC while replies are due');
  f.releaseReplies();
  await Promise.all([read, write, closing, again]);
  assert.deepEqual(events.slice(-1), ['closed']);
  assert.ok(buf.equals(Buffer.alloc(4096, 0x33)));
  assert.ok(f.disk.subarray(8192, 8192 + 4096).equals(Buffer.alloc(4096, 0x44)));
  assert.equal(f.seen.at(-1)?.type, P.CMD_DISC);
});

test('close() on a server that never answers gives up after its bound; requests in flight fail with ENG_IO', { timeout: 10_000 }, async (t) => {
  const f = await fake(t);
  const c = await NbdClientBackend.open(f.uri, 5000);
  c.closeTimeoutMs = 200;
  f.held = [];
  const read = c.read(Buffer.alloc(4096), 0).then(() => null, (e: unknown) => e);
  const t0 = Date.now();
  await c.close();
  const took = Date.now() - t0;
  const err = await read;
  assert.ok(isEngineError(err, 'ENG_IO'), `the read failed with ENG_IO: ${String(err)}`);
  assert.ok(took >= 150 && took < 2000, `close took ${took} ms`);
  await new Promise((r) => setImmediate(r));
  assert.ok(f.closed, 'the connection is gone');
});

test('an option reply announcing more than the client would ever need is refused at once, not buffered', async () => {
  const path = join(dir, 'huge-reply');
  const srv = net.createServer((s) => {
    s.on('error', () => undefined);
    const hello = Buffer.alloc(18);
    hello.writeBigUInt64BE(P.NBDMAGIC, 0);
    hello.writeBigUInt64BE(P.IHAVEOPT, 8);
    hello.writeUInt16BE(P.FLAG_FIXED_NEWSTYLE | P.FLAG_NO_ZEROES, 16);
    s.write(hello);
    s.once('data', () => {
      // An INFO reply header that announces 2 GiB of body, then a trickle of it.
      const h = Buffer.alloc(20);
      h.writeBigUInt64BE(P.OPTION_REPLY_MAGIC, 0);
      h.writeUInt32BE(P.OPT_GO, 8);
      h.writeUInt32BE(P.REP_INFO, 12);
      h.writeUInt32BE(0x7fffffff, 16);
      s.write(Buffer.concat([h, Buffer.alloc(1024)]));
    });
  });
  await new Promise<void>((r) => srv.listen(path, () => r()));
  try {
    const t0 = Date.now();
    await assert.rejects(NbdClientBackend.open(`nbd+unix:///x?socket=${path}`, 10_000), (e) => isEngineError(e) && /too large/.test((e as Error).message));
    assert.ok(Date.now() - t0 < 5000, 'the client waited for the body instead of refusing it');
  } finally {
    await new Promise((r) => srv.close(r));
  }
});
