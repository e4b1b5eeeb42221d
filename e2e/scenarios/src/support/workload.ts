// A verifying write load over a region of the virtual unit. Every write puts a versioned 4 KiB block:
// a 16-byte header (magic, block number, sequence number, its complement) repeated over the block, so an
// old, torn or misplaced block is told apart from the right one. The model knows, per block, the last
// acknowledged version and the versions that were in flight when a connection died (they may or may
// not have landed). A read must show one of those; once read, the block is pinned to what it showed,
// so it can never read differently later. At most one request per block is in flight.
import type { NbdClient } from './nbd-client.js';
import { prng } from '@shadowset/testkit/prng';

export const BLOCK = 4096;
const MAGIC = 0x53534532; // "SSE2"

export function blockContent(block: number, seq: number): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt32BE(MAGIC, 0);
  h.writeUInt32BE(block, 4);
  h.writeUInt32BE(seq, 8);
  h.writeUInt32BE(~seq >>> 0, 12);
  return Buffer.allocUnsafe(BLOCK).fill(h);
}

/** The version a block holds (0: zeros), or why it holds none. */
export function blockVersion(buf: Buffer, block: number): number | string {
  const head = buf.subarray(0, 16);
  if (buf.every((x) => x === 0)) return 0;
  if (head.readUInt32BE(0) !== MAGIC) return 'not a workload block';
  const seq = head.readUInt32BE(8);
  if ((~seq >>> 0) !== head.readUInt32BE(12)) return 'damaged header';
  if (head.readUInt32BE(4) !== block) return `holds block ${head.readUInt32BE(4)}`;
  for (let o = 16; o < BLOCK; o += 16) if (buf.compare(head, 0, 16, o, o + 16) !== 0) return `torn (version ${seq} in part)`;
  return seq;
}

export interface RunOptions {
  queueDepth: number;
  /** share of operations that are verifying reads */
  readFraction: number;
  /** blocks [first, first + count) of the region (default: all of it) */
  first?: number;
  count?: number;
  /** one write in fuaEvery carries FUA (0: none) */
  fuaEvery?: number;
  /** the connection may drop (the engine is being killed): requests failing then are not problems */
  mayLoseConnection?: boolean;
}

export interface RunStats {
  writesAcked: number;
  writesUnknown: number;
  readsChecked: number;
  /** why the run ended early, if it did */
  ended: string | null;
}

export class VersionedBlocks {
  readonly blocks: number;
  private readonly acked: Uint32Array;
  private readonly maybe = new Map<number, number[]>();
  private readonly busy: Uint8Array;
  private seq = 0;
  private rand: () => number;
  /** acknowledged writes so far, over all runs */
  writesAcked = 0;
  readonly problems: string[] = [];

  /** The region starts at byte `offset` of the unit and holds `bytes` (a multiple of 4 KiB). */
  constructor(readonly offset: number, bytes: number, seed = 1) {
    this.blocks = Math.floor(bytes / BLOCK);
    this.acked = new Uint32Array(this.blocks);
    this.busy = new Uint8Array(this.blocks);
    // The tests' seeded PRNG: reproducible choices for a given seed.
    this.rand = prng(seed);
  }

  /** Blocks that hold an acknowledged version. */
  get written(): number {
    let n = 0;
    for (const v of this.acked) if (v !== 0) n++;
    return n;
  }

  check(block: number, buf: Buffer, where: string): void {
    const v = blockVersion(buf, block);
    const acked = this.acked[block]!;
    const maybe = this.maybe.get(block) ?? [];
    if (typeof v === 'string' || (v !== acked && !maybe.includes(v))) {
      const got = typeof v === 'string' ? v : `version ${v}`;
      this.problems.push(`${where}: block ${block} (unit offset ${this.offset + block * BLOCK}) holds ${got}; acknowledged ${acked}${maybe.length ? `, maybe ${maybe.join('/')}` : ''}`);
      return;
    }
    // Seen once, it must read the same from now on.
    this.acked[block] = v;
    this.maybe.delete(block);
  }

  private pick(first: number, count: number): number {
    for (let i = 0; i < 32; i++) {
      const b = first + Math.floor(this.rand() * count);
      if (!this.busy[b]) return b;
    }
    return -1;
  }

  /** Write and read until `stop` is aborted or the connection fails. */
  async run(client: NbdClient, o: RunOptions, stop: AbortSignal): Promise<RunStats> {
    const first = o.first ?? 0;
    const count = o.count ?? this.blocks - first;
    const stats: RunStats = { writesAcked: 0, writesUnknown: 0, readsChecked: 0, ended: null };
    let done = stop.aborted;
    const onAbort = () => (done = true);
    stop.addEventListener('abort', onAbort);
    const failed = (what: string, e: unknown) => {
      if (!done) stats.ended = `${what}: ${(e as Error).message}`;
      done = true;
      if (!o.mayLoseConnection) this.problems.push(`${what} failed: ${(e as Error).message}`);
    };
    const worker = async () => {
      while (!done) {
        const b = this.pick(first, count);
        if (b < 0) {
          await new Promise((r) => setImmediate(r));
          continue;
        }
        this.busy[b] = 1;
        const off = this.offset + b * BLOCK;
        if (this.rand() < o.readFraction) {
          try {
            this.check(b, await client.read(off, BLOCK), 'read under load');
            stats.readsChecked++;
          } catch (e) {
            failed('READ', e);
          }
        } else {
          const seq = ++this.seq;
          try {
            await client.write(off, blockContent(b, seq), !!o.fuaEvery && seq % o.fuaEvery === 0);
            this.acked[b] = seq;
            this.maybe.delete(b);
            stats.writesAcked++;
            this.writesAcked++;
          } catch (e) {
            // Not acknowledged: it may or may not have landed.
            this.maybe.set(b, [...(this.maybe.get(b) ?? []), seq]);
            stats.writesUnknown++;
            failed('WRITE', e);
          }
        }
        this.busy[b] = 0;
      }
    };
    await Promise.all(Array.from({ length: o.queueDepth }, worker));
    stop.removeEventListener('abort', onAbort);
    return stats;
  }

  /** Check every block of the region, read through `read` (the virtual unit, or a member's data area). */
  async verify(read: (offset: number, length: number) => Promise<Buffer>, where: string): Promise<void> {
    const step = 256;
    for (let b = 0; b < this.blocks; b += step) {
      const n = Math.min(step, this.blocks - b);
      const buf = await read(this.offset + b * BLOCK, n * BLOCK);
      for (let i = 0; i < n; i++) this.check(b + i, buf.subarray(i * BLOCK, (i + 1) * BLOCK), where);
    }
  }
}

/** A workload running in the background; `stop()` ends it and returns what it did. */
export function background(w: VersionedBlocks, client: NbdClient, o: RunOptions): { stop: () => Promise<RunStats>; done: Promise<RunStats> } {
  const ac = new AbortController();
  const done = w.run(client, o, ac.signal);
  return {
    done,
    stop: async () => {
      ac.abort();
      return done;
    },
  };
}
