/**
 * Seeded simulation of the engine: random concurrent writes and flushes, crashes that leave writes
 * half-done on members, power losses that also drop every write not yet flushed (or written with FUA),
 * member faults, removals with write bitmaps and returns, against in-memory members with random
 * latencies. Invariants checked throughout:
 *  - no acknowledged write is ever lost (a read returns the last acknowledged version of a block, or a
 *    version written after it); after a power loss, the last version made durable by FUA or by an
 *    acknowledged flush;
 *  - after every resync, all full members are byte-identical;
 *  - while a member is away, every chunk written since it left is set in its bitmap.
 * The seed of a failing run is printed; SIM_SEEDS and SIM_STEPS widen the search.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { MemoryBackend } from '../adapters/faulty/memory-backend.js';
import { EngineError } from '../core/errors.js';
import { HEADER_BYTES, MiB } from '../core/geometry.js';
import type { BlockBackend } from '../ports/block-backend.js';
import { systemClock } from '../ports/clock.js';
import { startShadowSet, type StartedSet } from './engine.js';

const BLOCK = 4096;
const DATA = 2 * MiB; // 512 blocks, 32 chunks of 64 KiB
const BLOCKS = DATA / BLOCK;
const log = pino({ level: 'silent' });

function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 0x100000000;
  };
}

/**
 * A member whose writes land after a random delay; a crash drops what has not landed yet. `mem` is what
 * reads see (the volatile cache); `durable` what survives a power loss: a flush copies the cache into
 * it, a FUA write goes to both.
 */
class SimDisk {
  readonly mem: MemoryBackend;
  readonly durable: Buffer;
  epoch = 0;
  failWrites = false;
  constructor(readonly name: string, readonly rand: () => number) {
    this.mem = new MemoryBackend(name, HEADER_BYTES + DATA);
    this.durable = Buffer.alloc(this.mem.size);
  }
  /** Power loss: everything not on stable storage is gone. */
  losePower(): void {
    this.durable.copy(this.mem.bytes);
  }
  handle(): BlockBackend {
    return handleOf(this);
  }
}

function handleOf(disk: SimDisk): BlockBackend {
  {
    const epoch = disk.epoch;
    const live = () => disk.epoch === epoch;
    const later = async () => {
      for (let i = Math.floor(disk.rand() * 4); i > 0; i--) await new Promise((r) => setImmediate(r));
    };
    const dead = () => new Promise<void>(() => undefined); // a crashed engine's I/O never completes
    return {
      location: disk.name,
      size: disk.mem.size,
      async read(buf, off) {
        await later();
        if (!live()) return dead();
        return disk.mem.read(buf, off);
      },
      async write(buf, off, fua) {
        const copy = Buffer.from(buf);
        await later();
        if (!live()) return dead();
        if (disk.failWrites) throw new EngineError('ENG_IO', `injected write error on ${disk.name}`);
        await disk.mem.write(copy, off);
        if (fua) copy.copy(disk.durable, off);
      },
      async flush() {
        await later();
        if (!live()) return dead();
        disk.mem.bytes.copy(disk.durable);
      },
      async discard(off, len) {
        if (!live()) return dead();
        return disk.mem.discard(off, len);
      },
      async writeZeroes(off, len, fua) {
        await later();
        if (!live()) return dead();
        if (disk.failWrites) throw new EngineError('ENG_IO', `injected write error on ${disk.name}`);
        await disk.mem.writeZeroes(off, len);
        if (fua) disk.durable.fill(0, off, off + len);
      },
      async close() {},
    };
  }
}

interface Model {
  /** Last acknowledged version per block (0 = never written). */
  acked: Uint32Array;
  /** Highest version ever issued per block. */
  issued: Uint32Array;
  /** Highest version known to be on stable storage (FUA, or acknowledged before an acknowledged flush). */
  durable: Uint32Array;
}

function blockData(block: number, version: number): Buffer {
  const b = Buffer.alloc(BLOCK);
  b.writeUInt32LE(block, 0);
  b.writeUInt32LE(version, 4);
  b.fill(version & 0xff, 8);
  return b;
}

async function start(all: SimDisk[], attach: SimDisk[] = all): Promise<StartedSet> {
  return startShadowSet({
    members: attach.map((d) => ({ location: d.name })),
    overwrite: false, memberTimeoutMs: 60_000, log, clock: systemClock, intentClearMs: 5, intentIdlePasses: 1,
    open: async (loc) => {
      const d = all.find((x) => x.name === loc);
      if (!d) throw new EngineError('ENG_INVALID_ARGUMENT', `no disk ${loc}`);
      return d.handle();
    },
  });
}

async function settle(s: StartedSet): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (s.set.resync.jobs.length > 0) {
    if (Date.now() > deadline) throw new Error('resync did not finish');
    await new Promise((r) => setTimeout(r, 2));
  }
}

function checkIdentical(s: StartedSet, disks: SimDisk[], seed: number, step: number): void {
  const full = s.set.members.filter((m) => m.isFull).map((m) => disks.find((d) => d.name === m.location)!);
  for (const d of full.slice(1)) {
    const a = full[0]!.mem.bytes.subarray(HEADER_BYTES);
    const b = d.mem.bytes.subarray(HEADER_BYTES);
    assert.ok(a.equals(b), `seed ${seed} step ${step}: full members ${full[0]!.name} and ${d.name} differ`);
  }
}

async function checkReads(s: StartedSet, model: Model, seed: number, step: number): Promise<void> {
  for (let blk = 0; blk < BLOCKS; blk++) {
    if (model.acked[blk] === 0 && model.issued[blk] === 0) continue;
    const got = await s.set.read(blk * BLOCK, BLOCK);
    const version = got.readUInt32LE(4);
    const isZero = got.every((x) => x === 0);
    const ok = isZero ? model.acked[blk] === 0 : got.readUInt32LE(0) === blk && version >= model.acked[blk]! && version <= model.issued[blk]!;
    assert.ok(ok, `seed ${seed} step ${step}: block ${blk} reads version ${isZero ? 0 : version}, acknowledged ${model.acked[blk]}`);
  }
}

async function simulate(seed: number, steps: number): Promise<void> {
  const rand = rng(seed);
  const pick = (n: number) => Math.floor(rand() * n);
  const disks = Array.from({ length: 3 }, (_, i) => new SimDisk(`d${i}`, rand));
  const model: Model = { acked: new Uint32Array(BLOCKS), issued: new Uint32Array(BLOCKS), durable: new Uint32Array(BLOCKS) };
  let s = await start(disks);
  let away: string | null = null; // member id removed with a bitmap
  let awayDisk: string | undefined;
  let writtenSinceAway = new Set<number>();
  try {
    for (let step = 0; step < steps; step++) {
      const action = rand();
      if (action < 0.55) {
        // A burst of concurrent writes; some may overlap.
        const n = 1 + pick(12);
        const ops: Promise<void>[] = [];
        for (let i = 0; i < n; i++) {
          const blk = pick(BLOCKS);
          const v = ++model.issued[blk]!;
          const awayNow = away;
          const fua = rand() < 0.1;
          ops.push(s.set.write(blk * BLOCK, blockData(blk, v), fua).then(() => {
            if (v > model.acked[blk]!) model.acked[blk] = v;
            if (fua && v > model.durable[blk]!) model.durable[blk] = v;
            if (awayNow && away === awayNow) writtenSinceAway.add(Math.floor((blk * BLOCK) / s.set.chunkSize));
          }));
        }
        if (rand() < 0.25) {
          // Crash with these writes in flight: some members got them, some did not. Half the crashes
          // are power losses: members also lose what was never flushed.
          await new Promise((r) => setImmediate(r));
          s.set.halt();
          for (const d of disks) d.epoch++;
          if (rand() < 0.5) {
            for (const d of disks) d.losePower();
            model.acked.set(model.durable);
          }
          s = await start(disks, disks.filter((d) => d.name !== awayDisk));
          await settle(s);
          checkIdentical(s, disks, seed, step);
          await checkReads(s, model, seed, step);
          continue;
        }
        await Promise.all(ops);
        if (rand() < 0.3) {
          // An acknowledged flush makes every write acknowledged before it durable.
          const before = model.acked.slice();
          await s.set.flush();
          for (let b = 0; b < BLOCKS; b++) if (before[b]! > model.durable[b]!) model.durable[b] = before[b]!;
        }
      } else if (action < 0.7 && !away) {
        const full = s.set.members.filter((m) => m.isFull);
        if (full.length >= 2) {
          const victim = full[pick(full.length)]!;
          const r = await s.control.removeMember({ member: victim.id, minicopy: 'Required', force: false });
          assert.ok(r.bitmap, `seed ${seed} step ${step}: no bitmap created`);
          away = victim.id;
          awayDisk = victim.location;
          writtenSinceAway = new Set();
        }
      } else if (action < 0.85 && away) {
        const b = [...s.set.tracker.bitmaps.values()].find((x) => x.desc.member === away);
        assert.ok(b, `seed ${seed} step ${step}: bitmap of the away member is gone`);
        for (const c of writtenSinceAway) assert.ok(b.map.has(c), `seed ${seed} step ${step}: chunk ${c} written while away is clean in the bitmap`);
        await s.control.returnMember({ member: away, location: awayDisk, minicopy: 'Required' });
        away = null;
        awayDisk = undefined;
        await settle(s);
        checkIdentical(s, disks, seed, step);
      } else if (action < 0.9 && !away) {
        // A member fault: its writes fail; it is removed and I/O continues.
        const full = s.set.members.filter((m) => m.isFull);
        if (full.length >= 2) {
          const chosen = full[pick(full.length)]!.location;
          const victim = disks.find((d) => d.name === chosen)!;
          victim.failWrites = true;
          const blk = pick(BLOCKS);
          const v = ++model.issued[blk]!;
          await s.set.write(blk * BLOCK, blockData(blk, v), false);
          model.acked[blk] = Math.max(model.acked[blk]!, v);
          victim.failWrites = false;
          const m = s.set.members.find((x) => x.location === victim.name)!;
          assert.equal(m.state, 'Faulted', `seed ${seed} step ${step}: failing member not removed`);
          // Bring it back as a returning member (a full copy: it has no bitmap).
          await s.control.returnMember({ member: m.id, minicopy: 'Optional' });
          await settle(s);
          checkIdentical(s, disks, seed, step);
        }
      } else {
        await settle(s);
        checkIdentical(s, disks, seed, step);
        await checkReads(s, model, seed, step);
      }
    }
    await settle(s);
    await checkReads(s, model, seed, steps);
    checkIdentical(s, disks, seed, steps);
  } finally {
    await s.set.stop().catch(() => undefined);
  }
}

test('seeded simulation: crashes, faults, removals and returns never lose an acknowledged write', async () => {
  const seeds = Number(process.env.SIM_SEEDS ?? 12);
  const steps = Number(process.env.SIM_STEPS ?? 40);
  const base = Number(process.env.SIM_SEED ?? 1);
  for (let seed = base; seed < base + seeds; seed++) {
    try {
      await simulate(seed, steps);
    } catch (e) {
      console.error(`simulation failed with seed ${seed} (rerun: SIM_SEED=${seed} SIM_SEEDS=1)`);
      throw e;
    }
  }
});
