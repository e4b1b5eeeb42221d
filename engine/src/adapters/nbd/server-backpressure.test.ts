/**
 * Backpressure of the NBD server: a client that pipelines requests and does not read the replies must
 * not make the server hold more than its memory budget; once the client reads, every request it sent is
 * answered, correctly and once. An in-process server with a memory disk, raw clients on a unix socket.
 */
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { pino } from 'pino';
import * as P from './protocol.js';
import { NbdServer, type NbdHandler, type NbdServerOptions } from './server.js';
import { handshake, option, requestHeader, ServerStream } from './test-support.js';

const MiB = 1 << 20;
const DISK = 64 * MiB;
const disk = randomFillSync(Buffer.alloc(DISK));
const dir = mkdtempSync(join(tmpdir(), 'nbd-backpressure-'));
after(() => rmSync(dir, { recursive: true, force: true }));

let reads = 0;
/** Writes wait here while a test holds them. */
let writeGate: Promise<void> | null = null;
let writesStarted = 0;
const handler: NbdHandler = {
  size: () => DISK,
  read: async (off, len) => {
    reads++;
    sample();
    return Buffer.from(disk.subarray(off, off + len)); // a fresh buffer per read, as the engine's are
  },
  write: async (off, data) => {
    writesStarted++;
    sample();
    if (writeGate) await writeGate;
    data.copy(disk, off);
  },
  flush: async () => undefined,
  trim: async () => undefined,
  writeZeroes: async (off, len) => void disk.fill(0, off, off + len),
};

/** Highest figures seen while a test runs: the server's held bytes and the process's memory. */
const peak = { held: 0, rss: 0, arrayBuffers: 0 };
/** The same figures when the test's server started. */
const base = { rss: 0, arrayBuffers: 0 };
const mib = (n: number) => `${(n / MiB).toFixed(1)} MiB`;
let current: NbdServer | null = null;
function sample(): void {
  if (current) peak.held = Math.max(peak.held, current.stats.heldBytes);
  const m = process.memoryUsage();
  peak.rss = Math.max(peak.rss, m.rss);
  peak.arrayBuffers = Math.max(peak.arrayBuffers, m.arrayBuffers);
}

async function startServer(t: { after(fn: () => Promise<void>): void }, name: string, opts: Partial<NbdServerOptions> = {}): Promise<{ server: NbdServer; sock: string }> {
  const server = new NbdServer({ exportName: '', description: 'bp', handler, log: pino({ level: 'silent' }), multiConn: true, ...opts });
  const sock = join(dir, name);
  await server.listenUnix(sock);
  t.after(() => server.close());
  current = server;
  peak.held = 0;
  const m = process.memoryUsage();
  base.rss = peak.rss = m.rss;
  base.arrayBuffers = peak.arrayBuffers = m.arrayBuffers;
  const timer = setInterval(sample, 2);
  t.after(async () => clearInterval(timer));
  return { server, sock };
}

/** Wait for a condition checked every few milliseconds, failing after `ms`. */
async function until(what: string, cond: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** What a reply said: its errno and, for a READ, whether its data were the disk's (data are not kept). */
interface Seen {
  error: number;
  dataOk: boolean | null;
}

/** A raw client: it sends what it is given, and reads replies only once told to. */
class RawClient {
  readonly sock: net.Socket;
  readonly stream: ServerStream;
  readonly replies = new Map<bigint, Seen>();
  readonly duplicates: bigint[] = [];
  private waiting: { cond: () => boolean; resolve: () => void } | null = null;

  /** `reads`: handle → disk offset of each READ sent (its length is 1 MiB). */
  constructor(path: string, private readonly reads: Map<bigint, number>) {
    this.sock = net.connect(path);
    this.stream = new ServerStream((h) => (reads.has(h) ? MiB : null));
    this.sock.pause(); // read nothing until startReading()
  }

  startReading(): void {
    this.sock.on('data', (b: Buffer) => {
      for (const r of this.stream.push(b)) {
        if (this.replies.has(r.handle)) this.duplicates.push(r.handle);
        const off = this.reads.get(r.handle);
        const dataOk = r.data && off !== undefined ? r.data.equals(disk.subarray(off, off + MiB)) : null;
        this.replies.set(r.handle, { error: r.error, dataOk });
      }
      if (this.waiting?.cond()) this.waiting.resolve();
    });
    this.sock.resume();
  }

  /** Resolves once n distinct handles have been answered; rejects if the connection ends first. */
  replied(n: number): Promise<void> {
    return this.waitFor(`${n} replies`, () => this.replies.size >= n);
  }

  waitFor(what: string, cond: () => boolean, ms = 30_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} after ${ms} ms (${this.replies.size} replies)`)), ms);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      if (cond()) return done();
      this.waiting = { cond, resolve: done };
      this.sock.once('close', () => reject(new Error(`connection closed before ${what} (${this.replies.size} replies)`)));
    });
  }
}

function pipelinedReads(count: number, first = 1n): { bytes: Buffer; offsets: Map<bigint, number> } {
  const offsets = new Map<bigint, number>();
  const parts: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const handle = first + BigInt(i);
    const offset = ((i * 7) % (DISK / MiB)) * MiB;
    offsets.set(handle, offset);
    parts.push(requestHeader({ type: P.CMD_READ, handle, offset, length: MiB }));
  }
  return { bytes: Buffer.concat(parts), offsets };
}

function checkReads(c: RawClient, offsets: Map<bigint, number>): void {
  assert.equal(c.stream.garbage, null);
  assert.deepEqual(c.duplicates, [], 'one reply per request');
  for (const [handle, offset] of offsets) {
    const r = c.replies.get(handle);
    assert.ok(r, `reply for handle ${handle}`);
    assert.equal(r.error, 0, `handle ${handle} answered error ${r.error}`);
    assert.equal(r.dataOk, true, `data of handle ${handle} (offset ${offset})`);
  }
  assert.equal(c.replies.size, offsets.size, 'no reply for a handle never sent');
}

test('768 pipelined 1 MiB reads whose replies are not read keep the server within its per-connection budget', async (t) => {
  reads = 0;
  const { server, sock } = await startServer(t, 'one');
  const { bytes, offsets } = pipelinedReads(768);
  const c = new RawClient(sock, offsets);
  t.after(async () => void c.sock.destroy());
  c.sock.write(Buffer.concat([handshake(false), bytes]));
  // The server stops taking requests (or, without backpressure, takes them all).
  await until('the server to stop taking requests', () => server.stats.stalled > 0 || reads === 768);
  sample();
  // Growth while the client read nothing is the server's doing; once it reads, its own copies of the
  // replies are garbage in the same process, so only the server's gauge is followed from then on.
  const stalled = { reads, rss: peak.rss - base.rss, arrayBuffers: peak.arrayBuffers - base.arrayBuffers, held: peak.held };
  c.startReading();
  await c.replied(768);
  checkReads(c, offsets);
  t.diagnostic(`before the client read: ${stalled.reads} reads taken, held ${mib(stalled.held)}, RSS +${mib(stalled.rss)}, buffers +${mib(stalled.arrayBuffers)}; peak held overall ${mib(peak.held)}`);
  // Memory first: it is what the client could take from the engine, with or without a gauge to show it.
  const budget = 64 * MiB;
  assert.ok(stalled.rss < 3 * budget, `process RSS grew by ${mib(stalled.rss)} (budget ${mib(budget)})`);
  assert.ok(stalled.arrayBuffers < 3 * budget, `buffers grew by ${mib(stalled.arrayBuffers)} (budget ${mib(budget)})`);
  assert.ok(stalled.reads < 768, 'the server took every read while none of its replies was read');
  assert.ok(peak.held <= budget + MiB, `the server held ${mib(peak.held)} (budget ${mib(budget)})`);
  assert.equal(server.stats.heldBytes, 0, 'nothing held once every reply is read');
});

test('connections together stay within the total budget; a connection holding nothing still gets a request through', async (t) => {
  reads = 0;
  const { server, sock } = await startServer(t, 'total', { maxTotalBytes: 8 * MiB });
  const clients = [0, 1, 2, 3].map((k) => {
    const { bytes, offsets } = pipelinedReads(32, BigInt(k * 1000 + 1));
    const c = new RawClient(sock, offsets);
    t.after(async () => void c.sock.destroy());
    c.sock.write(Buffer.concat([handshake(k % 2 === 1), bytes]));
    return { c, offsets };
  });
  await until('every connection to stop taking requests', () => server.stats.stalled === 4 || reads === 128);
  const before = { reads, held: peak.held };
  for (const { c } of clients) c.startReading();
  await Promise.all(clients.map(({ c }) => c.replied(32)));
  for (const { c, offsets } of clients) checkReads(c, offsets);
  t.diagnostic(`before the clients read: ${before.reads} reads taken, held ${mib(before.held)}; peak held ${mib(peak.held)}`);
  assert.ok(before.reads < 128, 'the server took every read while none of the replies was read');
  // Up to the total, plus one request for each connection that held nothing when it came.
  assert.ok(peak.held <= 8 * MiB + 4 * MiB + MiB, `the server held ${mib(peak.held)} (total budget 8 MiB)`);
  await until('the server to hold nothing', () => server.stats.heldBytes === 0);
});

test('write payloads are not read beyond the budget while writes run; every write then completes', async (t) => {
  writesStarted = 0;
  let release!: () => void;
  writeGate = new Promise<void>((r) => (release = r));
  t.after(async () => {
    release();
    writeGate = null;
  });
  const { server, sock } = await startServer(t, 'writes', { maxConnectionBytes: 8 * MiB });
  const payloads = new Map<bigint, Buffer>();
  const parts: Buffer[] = [handshake(false)];
  for (let i = 0; i < 48; i++) {
    const handle = BigInt(i + 1);
    const data = randomFillSync(Buffer.alloc(MiB));
    payloads.set(handle, data);
    parts.push(requestHeader({ type: P.CMD_WRITE, handle, offset: i * MiB, length: MiB }), data);
  }
  const c = new RawClient(sock, new Map());
  t.after(async () => void c.sock.destroy());
  c.sock.write(Buffer.concat(parts));
  await until('the server to stop taking writes', () => server.stats.stalled > 0 || writesStarted === 48);
  const before = { writes: writesStarted, held: peak.held };
  release();
  c.startReading();
  await c.replied(48);
  assert.equal(c.stream.garbage, null);
  assert.deepEqual(c.duplicates, []);
  for (const [handle, data] of payloads) {
    assert.equal(c.replies.get(handle)?.error, 0, `write ${handle} answered`);
    const off = Number(handle - 1n) * MiB;
    assert.ok(disk.subarray(off, off + MiB).equals(data), `write ${handle} landed`);
  }
  t.diagnostic(`writes started before any completed: ${before.writes}, held ${mib(before.held)}; peak held ${mib(peak.held)}`);
  assert.ok(before.writes <= 8, `${before.writes} writes of 1 MiB taken with a budget of 8 MiB`);
  assert.ok(peak.held <= 9 * MiB, `the server held ${mib(peak.held)} (budget 8 MiB)`);
});

test('options whose replies are not read stop being read; all are answered once the client reads', async (t) => {
  const { server, sock } = await startServer(t, 'options');
  const c = new RawClient(sock, new Map());
  t.after(async () => void c.sock.destroy());
  // INFO for an unknown export of a long name: the error reply repeats the name, as large as the option.
  const name = Buffer.alloc(60_000, 0x61);
  const info = Buffer.alloc(4 + name.length + 2);
  info.writeUInt32BE(name.length, 0);
  name.copy(info, 4);
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(P.CLIENT_FLAG_FIXED_NEWSTYLE | P.CLIENT_FLAG_NO_ZEROES);
  const count = 200;
  c.sock.write(Buffer.concat([flags, ...new Array<Buffer>(count).fill(option(P.OPT_INFO, info))]));
  await until('the server to stop reading options', () => server.stats.stalled > 0);
  const before = peak.held;
  c.startReading();
  await c.waitFor(`${count} option replies`, () => c.stream.options.length >= count);
  assert.equal(c.stream.garbage, null);
  assert.deepEqual(c.stream.options.map((o) => o.type), new Array(count).fill(P.REP_ERR_UNKNOWN));
  t.diagnostic(`held before the client read: ${mib(before)}; peak ${mib(peak.held)}`);
  assert.ok(peak.held <= 512 * 1024, `the server held ${mib(peak.held)} for options`);
});
