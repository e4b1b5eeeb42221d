/**
 * A verifying block workload that knows exactly which writes were acknowledged.
 *
 * Every write puts a versioned 4 KiB block on the virtual unit: a 32-byte header (magic, block index,
 * sequence number, round, CRC-32 of the header) repeated over the whole block, so a torn or misplaced
 * block is caught as well as an old one. The model keeps, for every block, the set of versions it may
 * hold: after an acknowledged write exactly that version; a write that was in flight when the engine
 * died adds its version as a possibility (it may or may not have landed); a read that sees one of the
 * possible versions pins the block to it, so a later read must see it again (never two answers), and a
 * block never goes back to a version older than its last acknowledged one. A block never written reads
 * as zeros. At most one request per block is in flight, so acknowledgement order is write order.
 *
 * That is the model of a kill -9: the members' page cache survives, so every acknowledged write does.
 * Writes, acknowledgements and FLUSHes are also reported to protected hooks, which do nothing here; the
 * power-loss model (power-model.ts) uses them to know which writes were durable.
 */
import { open } from 'node:fs/promises';
import { crc32 } from '@shadowset/engine/core/crc32';
import { HEADER_BYTES } from '@shadowset/engine/core/geometry';
import type { BlockBackend } from '@shadowset/engine/ports/block-backend';

/** What the workload needs of an NBD client (the engine's own client is one). */
export type BlockClient = Pick<BlockBackend, 'read' | 'write' | 'flush'>;

export const BLOCK = 4096;
const HEADER = 32;
const MAGIC = 0x53485456; // "SHTV"

/** The content of version `seq` of `block` (seq 0 is the never-written block: zeros). */
export function blockContent(block: number, seq: number, round: number): Buffer {
  if (seq === 0) return Buffer.alloc(BLOCK);
  const h = Buffer.alloc(HEADER);
  h.writeUInt32BE(MAGIC, 0);
  h.writeUInt32BE(block, 4);
  h.writeUInt32BE(Math.floor(seq / 2 ** 32), 8);
  h.writeUInt32BE(seq >>> 0, 12);
  h.writeUInt32BE(round, 16);
  h.writeUInt32BE(crc32(h.subarray(0, 20)), 20);
  return Buffer.allocUnsafe(BLOCK).fill(h);
}

const ZERO = Buffer.alloc(BLOCK);

/** The version a 4 KiB block holds, or a description of why it is no version at all. */
const scratch = Buffer.allocUnsafe(BLOCK);

export function blockVersion(buf: Buffer, block: number): number | string {
  if (buf.equals(ZERO)) return 0;
  if (buf.readUInt32BE(0) !== MAGIC) return 'not a workload block';
  if (crc32(buf.subarray(0, 20)) !== buf.readUInt32BE(20)) return 'header checksum mismatch';
  const owner = buf.readUInt32BE(4);
  if (owner !== block) return `holds block ${owner}`;
  const seq = buf.readUInt32BE(8) * 2 ** 32 + buf.readUInt32BE(12);
  if (!buf.equals(scratch.fill(buf.subarray(0, HEADER)))) return `torn (version ${seq} only in part)`;
  return seq;
}

export interface WorkloadStats {
  writesIssued: number;
  writesAcked: number;
  /** Writes that failed because the engine went away: their fate is unknown. */
  writesUnknown: number;
  readsChecked: number;
  flushes: number;
}

export interface RunOptions {
  /** Requests in flight. */
  queueDepth: number;
  /** Fraction of operations that are verifying reads. */
  readFraction: number;
  /** One write in this many carries FUA; one operation in `flushEvery` is a FLUSH (0: never). */
  fuaEvery: number;
  flushEvery: number;
  /** Pick blocks in [hotFirst, hotFirst+hotBlocks) with probability hotShare, else anywhere. */
  hot?: { first: number; blocks: number; share: number };
  round: number;
  /** Called when the first request was issued. */
  onStart?: () => void;
}

export class BlockWorkload {
  /** Possible versions per block; `undefined` means only zeros. */
  protected readonly allowed: (number[] | undefined)[];
  private readonly busy: Uint8Array;
  private seq = 0;
  /** Errors that were not the engine going away (a failure of the test). */
  readonly problems: string[] = [];
  /** Set before killing the engine: request failures from then on are expected. */
  engineGone = false;
  /** Blocks whose write was in flight when the last run ended by the engine going away. */
  unknownBlocks: number[] = [];
  readonly totals: WorkloadStats = { writesIssued: 0, writesAcked: 0, writesUnknown: 0, readsChecked: 0, flushes: 0 };

  constructor(readonly blocks: number, private readonly rand: () => number, readonly baseOffset = 0) {
    this.allowed = new Array<number[] | undefined>(blocks);
    this.busy = new Uint8Array(blocks);
  }

  /** Blocks that ever got an acknowledged or possibly-landed write. */
  get touched(): number {
    let n = 0;
    for (const a of this.allowed) if (a !== undefined) n++;
    return n;
  }

  private pick(o: RunOptions): number {
    for (let i = 0; i < 64; i++) {
      const b = o.hot && this.rand() < o.hot.share
        ? o.hot.first + Math.floor(this.rand() * o.hot.blocks)
        : Math.floor(this.rand() * this.blocks);
      if (!this.busy[b]) return b;
    }
    return -1;
  }

  /** Check what a read returned against the model; pins the block to the version seen. */
  check(block: number, buf: Buffer, where: string): void {
    const v = blockVersion(buf, block);
    const allowed = this.allowed[block] ?? [0];
    if (typeof v === 'string' || !allowed.includes(v)) {
      this.problems.push(`${where}: block ${block} (offset ${this.baseOffset + block * BLOCK}) ${typeof v === 'string' ? v : `holds version ${v}`}; allowed ${JSON.stringify(allowed)}`);
      return;
    }
    if (v !== 0 || this.allowed[block] !== undefined) this.allowed[block] = [v];
  }

  /**
   * Run until `stop` resolves or a request fails. Resolves with what this run did; failures after
   * `engineGone` was set only make the in-flight writes' outcome unknown.
   */
  async run(client: BlockClient, o: RunOptions, stop: Promise<void>): Promise<WorkloadStats> {
    const stats: WorkloadStats = { writesIssued: 0, writesAcked: 0, writesUnknown: 0, readsChecked: 0, flushes: 0 };
    let stopped = false;
    void stop.then(() => (stopped = true));
    let started = false;
    this.unknownBlocks = [];
    const fail = (what: string, e: unknown) => {
      stopped = true;
      if (!this.engineGone) this.problems.push(`${what} failed while the engine was up: ${e instanceof Error ? e.message : String(e)}`);
    };
    const worker = async () => {
      while (!stopped) {
        if (!started) {
          started = true;
          o.onStart?.();
        }
        const r = this.rand();
        if (o.flushEvery > 0 && r < 1 / o.flushEvery) {
          const mark = this.flushIssued();
          try {
            await client.flush();
            this.flushAcked(mark);
            stats.flushes++;
          } catch (e) {
            fail('FLUSH', e);
          }
          continue;
        }
        const b = this.pick(o);
        if (b < 0) {
          await new Promise((res) => setImmediate(res));
          continue;
        }
        this.busy[b] = 1;
        const off = this.baseOffset + b * BLOCK;
        if (this.rand() < o.readFraction) {
          const buf = Buffer.allocUnsafe(BLOCK);
          try {
            await client.read(buf, off);
            this.check(b, buf, `read during round ${o.round}`);
            stats.readsChecked++;
          } catch (e) {
            fail('READ', e);
          }
          this.busy[b] = 0;
          continue;
        }
        const seq = ++this.seq;
        const fua = o.fuaEvery > 0 && seq % o.fuaEvery === 0;
        stats.writesIssued++;
        this.writeIssued(b, seq);
        try {
          await client.write(blockContent(b, seq, o.round), off, fua);
          this.allowed[b] = [seq];
          this.writeAcked(b, seq, fua);
          stats.writesAcked++;
        } catch (e) {
          // Unacknowledged: it may or may not have landed.
          (this.allowed[b] ??= [0]).push(seq);
          this.unknownBlocks.push(b);
          stats.writesUnknown++;
          fail('WRITE', e);
        }
        this.busy[b] = 0;
      }
    };
    await Promise.all(Array.from({ length: o.queueDepth }, worker));
    for (const k of Object.keys(stats) as (keyof WorkloadStats)[]) this.totals[k] += stats[k];
    return stats;
  }

  /** Hooks for a model that tracks durability (none here: the page cache keeps every acknowledged write). */
  protected writeIssued(_block: number, _seq: number): void {}
  protected writeAcked(_block: number, _seq: number, _fua: boolean): void {}
  /** Called as a FLUSH is issued; what it returns is passed to `flushAcked` when the FLUSH succeeds. */
  protected flushIssued(): number {
    return 0;
  }
  protected flushAcked(_mark: number): void {}

  /** Read every block through NBD (1 MiB requests, a few at once) and check it. */
  async verifyAll(client: BlockClient, where: string): Promise<void> {
    const step = 256; // blocks per request
    let next = 0;
    const worker = async () => {
      const buf = Buffer.allocUnsafe(step * BLOCK);
      for (;;) {
        const first = next;
        next += step;
        if (first >= this.blocks) return;
        const n = Math.min(step, this.blocks - first);
        const part = buf.subarray(0, n * BLOCK);
        await client.read(part, this.baseOffset + first * BLOCK);
        for (let i = 0; i < n; i++) this.check(first + i, part.subarray(i * BLOCK, (i + 1) * BLOCK), where);
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
  }

  /** Check every block as stored in a member file's data area (engine stopped). */
  async verifyMember(path: string): Promise<void> {
    const fh = await open(path, 'r');
    try {
      const step = 1024;
      const buf = Buffer.alloc(step * BLOCK);
      for (let first = 0; first < this.blocks; first += step) {
        const n = Math.min(step, this.blocks - first);
        const part = buf.subarray(0, n * BLOCK);
        part.fill(0);
        await fh.read(part, 0, part.length, HEADER_BYTES + this.baseOffset + first * BLOCK);
        for (let i = 0; i < n; i++) this.check(first + i, part.subarray(i * BLOCK, (i + 1) * BLOCK), `member ${path}`);
      }
    } finally {
      await fh.close();
    }
  }
}
