/**
 * The power-loss model against an in-memory disk with a volatile write cache: a correct disk passes, a
 * disk whose FLUSH persists nothing is caught, and the kill -9 model stays strict about the same loss.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { prng } from '@shadowset/testkit/prng';
import { BLOCK, BlockWorkload, type BlockClient } from '@shadowset/testkit/engine/block-workload';
import { PowerLossWorkload } from './power-model.js';

const BLOCKS = 256;

/** 4 KiB blocks; writes land in a cache that a power loss drops unless FLUSHed or written with FUA. */
class VolatileDisk implements BlockClient {
  private readonly stable = new Map<number, Buffer>();
  private readonly cache = new Map<number, Buffer>();
  private dead = false;
  writes = 0;
  onWrite: (() => void) | null = null;

  constructor(private readonly rand: () => number, private readonly flushPersists = true) {}

  /** Requests complete out of order, a few event-loop turns later; after a power loss they fail. */
  private async later(): Promise<void> {
    for (let i = Math.floor(this.rand() * 4); i >= 0; i--) await new Promise((r) => setImmediate(r));
    if (this.dead) throw new Error('power lost');
  }

  async read(buf: Buffer, offset: number): Promise<void> {
    await this.later();
    for (let i = 0; i < buf.length; i += BLOCK) {
      const b = (offset + i) / BLOCK;
      const src = this.cache.get(b) ?? this.stable.get(b);
      if (src) src.copy(buf, i);
      else buf.fill(0, i, i + BLOCK);
    }
  }

  async write(buf: Buffer, offset: number, fua: boolean): Promise<void> {
    // A FUA write caught by the power loss may or may not have reached stable storage.
    if (fua && this.rand() < 0.5) this.stable.set(offset / BLOCK, Buffer.from(buf));
    await this.later();
    this.cache.set(offset / BLOCK, Buffer.from(buf));
    if (fua) this.stable.set(offset / BLOCK, Buffer.from(buf));
    this.writes++;
    this.onWrite?.();
  }

  async flush(): Promise<void> {
    const blocks = [...this.cache.keys()];
    await this.later();
    // Writes back what the cache holds now, as a cache does (never an older copy of a block).
    if (this.flushPersists) for (const b of blocks) this.stable.set(b, this.cache.get(b)!);
  }

  powerLoss(): void {
    this.dead = true;
    this.cache.clear();
  }

  powerOn(): void {
    this.dead = false;
  }
}

/** Rounds of a workload ended by a power loss, each followed by reading the whole disk back. */
async function rounds(model: BlockWorkload, disk: VolatileDisk, n: number, afterLoss: () => void): Promise<void> {
  for (let round = 0; round < n; round++) {
    const stopAt = disk.writes + 200;
    const stop = new Promise<void>((r) => (disk.onWrite = () => disk.writes >= stopAt && r()));
    model.engineGone = false;
    await model.run(disk, { queueDepth: 8, readFraction: 0.2, fuaEvery: 10, flushEvery: 20, round }, stop.then(() => {
      model.engineGone = true;
      disk.powerLoss();
    }));
    afterLoss();
    disk.powerOn();
    await model.verifyAll(disk, `after loss ${round}`);
  }
}

test('power-loss model: a disk that keeps its flushed and FUA writes passes, unflushed ones may go', async () => {
  const rand = prng(7);
  const disk = new VolatileDisk(rand);
  const model = new PowerLossWorkload(BLOCKS, rand);
  await rounds(model, disk, 20, () => model.powerLoss());
  assert.deepEqual(model.problems, []);
  assert.equal(model.counts.losses, 20);
  assert.equal(model.counts.durableLost, 0);
  assert.ok(model.counts.durableChecked > 100, JSON.stringify(model.counts));
  assert.ok(model.counts.unflushedRolledBack > 20, `the losses took unflushed writes: ${JSON.stringify(model.counts)}`);
});

test('power-loss model: a disk whose FLUSH persists nothing loses durable writes and is caught', async () => {
  const rand = prng(8);
  const disk = new VolatileDisk(rand, false);
  const model = new PowerLossWorkload(BLOCKS, rand);
  await rounds(model, disk, 5, () => model.powerLoss());
  assert.ok(model.counts.durableLost > 0, JSON.stringify(model.counts));
  assert.ok(model.problems.some((p) => p.includes('lost its durable version')), model.problems.slice(0, 3).join('\n'));
});

test('kill -9 model: the same power loss breaks it, since there every acknowledged write must survive', async () => {
  const rand = prng(9);
  const disk = new VolatileDisk(rand);
  const model = new BlockWorkload(BLOCKS, rand);
  await rounds(model, disk, 5, () => undefined);
  assert.ok(model.problems.length > 0, 'acknowledged unflushed writes vanished unnoticed');
});
