/**
 * The world of the seeded simulation (runtime/simulation.test.ts): in-memory members with a volatile
 * cache and stable storage, random latencies, injected faults (data writes, metadata writes, flushes),
 * slow members, crashes and power losses; and the model of what the virtual unit may answer.
 */
import { MemoryBackend } from '@shadowset/engine/memory-backend';
import { EngineError } from '@shadowset/engine';
import { HEADER_BYTES } from '@shadowset/engine/core/geometry';
import type { BlockBackend } from '@shadowset/engine/ports/block-backend';

export const SIM_BLOCK = 4096;


/**
 * A member whose requests complete after a random number of event-loop turns; a crash (epoch bump)
 * leaves what has not completed hanging forever. `mem` is what reads see (the volatile cache); `durable`
 * is what survives a power loss: a flush copies the cache into it, a FUA write goes to both.
 */
export class SimDisk {
  readonly mem: MemoryBackend;
  readonly durable: Buffer;
  epoch = 0;
  /** Every write fails (data and metadata). */
  failWrites = false;
  /** Writes to the metadata header fail (SCB, intent log, bitmaps); data writes work. */
  failMeta = false;
  /** Flushes fail. */
  failFlush = false;
  /** Requests take many more turns (a remote member behind a slow link). */
  slow = false;
  /** Backends opened on this disk and not closed. */
  open = 0;
  constructor(readonly name: string, readonly rand: () => number, dataBytes: number) {
    this.mem = new MemoryBackend(name, HEADER_BYTES + dataBytes);
    this.durable = Buffer.alloc(this.mem.size);
  }

  /** Power loss: everything not on stable storage is gone. */
  losePower(): void {
    this.durable.copy(this.mem.bytes);
  }

  clearFaults(): void {
    this.failWrites = this.failMeta = this.failFlush = this.slow = false;
  }

  /** Whether this disk carries shadow metadata (it has been a member of a set). */
  get hasMetadata(): boolean {
    return this.mem.bytes.subarray(0, 8).toString('latin1') === 'SHDWSCB1'
      || this.mem.bytes.subarray(64 * 1024, 64 * 1024 + 8).toString('latin1') === 'SHDWSCB1';
  }

  handle(): BlockBackend {
    return handleOf(this);
  }
}

function handleOf(disk: SimDisk): BlockBackend {
  {
    const epoch = disk.epoch;
    const live = () => disk.epoch === epoch;
    let closed = false;
    disk.open++;
    const later = async () => {
      const turns = Math.floor(disk.rand() * 4) + (disk.slow ? 8 + Math.floor(disk.rand() * 24) : 0);
      for (let i = turns; i > 0; i--) await new Promise((r) => setImmediate(r));
    };
    const dead = () => new Promise<void>(() => undefined); // a crashed engine's I/O never completes
    const gone = () => new EngineError('ENG_IO', `${disk.name}: backend closed`);
    const failWrite = (off: number) => disk.failWrites || (disk.failMeta && off < HEADER_BYTES);
    return {
      location: disk.name,
      size: disk.mem.size,
      async read(buf, off) {
        await later();
        if (!live()) return dead();
        if (closed) throw gone();
        return disk.mem.read(buf, off);
      },
      async write(buf, off, fua) {
        const copy = Buffer.from(buf);
        await later();
        if (!live()) return dead();
        if (closed) throw gone();
        if (failWrite(off)) throw new EngineError('ENG_IO', `injected write error on ${disk.name} at ${off}`);
        await disk.mem.write(copy, off);
        if (fua) copy.copy(disk.durable, off);
      },
      async flush() {
        await later();
        if (!live()) return dead();
        if (closed) throw gone();
        if (disk.failFlush) throw new EngineError('ENG_IO', `injected flush error on ${disk.name}`);
        disk.mem.bytes.copy(disk.durable);
      },
      async discard(off, len) {
        if (!live()) return dead();
        return disk.mem.discard(off, len);
      },
      async writeZeroes(off, len, fua) {
        await later();
        if (!live()) return dead();
        if (closed) throw gone();
        if (failWrite(off)) throw new EngineError('ENG_IO', `injected write error on ${disk.name} at ${off}`);
        await disk.mem.writeZeroes(off, len);
        if (fua) disk.durable.fill(0, off, off + len);
      },
      async close() {
        if (closed) return;
        closed = true;
        disk.open--;
      },
    };
  }
}

/** The content of `version` of `block`: index and version in the first bytes, the version's low byte after. */
export function blockData(block: number, version: number): Buffer {
  const b = Buffer.alloc(SIM_BLOCK);
  b.writeUInt32LE(block, 0);
  b.writeUInt32LE(version, 4);
  b.fill(version & 0xff, 8);
  return b;
}

/**
 * What the unit may answer per block: the version read must be at least `floor` (the last acknowledged
 * version; after a power loss, the last durable one, or what a read already returned) and at most
 * `issued`. A block never written (floor 0, issued 0) reads zeros.
 */
export class SimModel {
  readonly floor: Uint32Array;
  readonly issued: Uint32Array;
  /** Highest version on stable storage: written with FUA, or acknowledged before an acknowledged flush. */
  readonly durable: Uint32Array;
  acked = 0;
  constructor(readonly blocks: number) {
    this.floor = new Uint32Array(blocks);
    this.issued = new Uint32Array(blocks);
    this.durable = new Uint32Array(blocks);
  }

  issue(block: number): number {
    return ++this.issued[block]!;
  }

  ack(block: number, version: number, fua: boolean): void {
    this.acked++;
    if (version > this.floor[block]!) this.floor[block] = version;
    if (fua && version > this.durable[block]!) this.durable[block] = version;
  }

  /** A flush was issued now: returns what to call once it is acknowledged. */
  flushStarted(): () => void {
    const before = this.floor.slice();
    return () => {
      for (let b = 0; b < this.blocks; b++) if (before[b]! > this.durable[b]!) this.durable[b] = before[b]!;
    };
  }

  powerLost(): void {
    this.floor.set(this.durable);
  }

  /** Why `got` is not an answer the unit may give for `block`, or null (and the answer is pinned). */
  check(block: number, got: Buffer): string | null {
    const zero = got.every((x) => x === 0);
    const version = zero ? 0 : got.readUInt32LE(4);
    if (!zero && (got.readUInt32LE(0) !== block || !got.equals(blockData(block, version)))) return `block ${block} holds foreign or torn data`;
    if (version < this.floor[block]! || version > this.issued[block]!) {
      return `block ${block} reads version ${version}; at least ${this.floor[block]} (durable ${this.durable[block]}) and at most ${this.issued[block]} expected`;
    }
    this.floor[block] = version; // later reads must not go back
    return null;
  }
}
