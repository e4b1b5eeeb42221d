/**
 * The write-intent log's cap: a workload spread over the unit keeps at most the cap marked — in memory
 * and in the log on the members — by clearing the least recently written idle groups after a flush, so
 * the merge after a crash stays within the cap. Writes are never refused or lost because of it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { MemoryBackend } from '../adapters/faulty/memory-backend.js';
import { ChunkBitmap } from '../core/chunk-bitmap.js';
import { chunkCount, HEADER_BYTES, INTENT_LOG_OFFSET, MiB } from '../core/geometry.js';
import { systemClock } from '../ports/clock.js';
import { startShadowSet } from './engine.js';

const log = pino({ level: 'silent' });
const UNIT = 32 * MiB; // 512 chunks of 64 KiB, 32 intent groups of 1 MiB
const GROUP = MiB;

async function setWithCap(capBytes: number, members = 2) {
  const devs = Array.from({ length: members }, (_, i) => new MemoryBackend(`cap${i}`, HEADER_BYTES + UNIT));
  const byLoc = new Map(devs.map((d) => [d.location, d]));
  const { set } = await startShadowSet({
    members: devs.map((d) => ({ location: d.location })),
    overwrite: false, memberTimeoutMs: 60_000, log, clock: systemClock,
    // No lazy clearing during the test: only the cap clears bits.
    intentClearMs: 3_600_000, intentLogCapBytes: capBytes,
    open: async (loc) => byLoc.get(loc)!,
  });
  return { set, devs, flushes: () => devs.reduce((n, d) => n + d.flushes, 0) };
}

/** The intent log as recorded on a member. */
function loggedOn(m: MemoryBackend): ChunkBitmap {
  const chunks = chunkCount(UNIT, 64 * 1024);
  return new ChunkBitmap(chunks, m.bytes.slice(INTENT_LOG_OFFSET, INTENT_LOG_OFFSET + Math.ceil(chunks / 8)));
}

const groupsOf = (b: ChunkBitmap) => [...new Set(b.list().map((c) => Math.floor(c / 16)))].sort((a, b) => a - b);

test('a write to each of 32 groups in turn keeps at most the cap (4 groups) marked, in memory and on every member; the newest groups stay marked', async (t) => {
  const { set, devs, flushes } = await setWithCap(4 * GROUP);
  t.after(() => set.stop());
  assert.equal(set.tracker.capChunks, 64);
  for (let g = 0; g < 32; g++) {
    await set.write(g * GROUP + 4096, Buffer.alloc(4096, g + 1), false);
    assert.ok(set.tracker.wil.count <= 64, `after group ${g}: ${set.tracker.wil.count} chunks marked, cap 64`);
    for (const d of devs) assert.ok(loggedOn(d).count <= 64, `after group ${g}: ${loggedOn(d).count} chunks in ${d.location}'s log`);
  }
  // Clearing runs in the background once the log nears its cap: let the last one finish.
  await set.tracker.capSettled();
  // Least recently written first: the last group written and the ones just before it are the ones kept.
  const kept = groupsOf(set.tracker.wil);
  assert.ok(kept.includes(31) && kept.every((g) => g >= 27), `kept groups ${kept.join(',')}`);
  for (const d of devs) assert.deepEqual(groupsOf(loggedOn(d)), kept, `${d.location}'s log matches memory`);
  assert.ok(set.tracker.stats.evictions > 0 && flushes() > 0, 'keeping the cap cleared groups after flushing');
  // Every acknowledged write is there.
  for (let g = 0; g < 32; g++) assert.deepEqual(await set.read(g * GROUP + 4096, 4096), Buffer.alloc(4096, g + 1));
});

test('without a cap (0) the same workload marks every group', async (t) => {
  const { set } = await setWithCap(0);
  t.after(() => set.stop());
  for (let g = 0; g < 32; g++) await set.write(g * GROUP, Buffer.alloc(4096, 7), false);
  assert.equal(groupsOf(set.tracker.wil).length, 32);
});

test('eight writers at once over every group: all acknowledged and read back; the log stays within the cap plus the groups in flight', async (t) => {
  const { set } = await setWithCap(8 * GROUP, 3);
  t.after(() => set.stop());
  const expect = new Map<number, number>();
  let most = 0;
  const writer = async (w: number) => {
    for (let i = 0; i < 60; i++) {
      const n = w * 60 + i;
      const off = ((n * 7919) % (UNIT / 4096)) * 4096;
      expect.set(off, n & 0xff);
      await set.write(off, Buffer.alloc(4096, n & 0xff), n % 5 === 0);
      most = Math.max(most, set.tracker.wil.count);
    }
  };
  await Promise.all(Array.from({ length: 8 }, (_, w) => writer(w)));
  for (const [off, v] of expect) assert.deepEqual(await set.read(off, 4096), Buffer.alloc(4096, v), `block at ${off}`);
  assert.ok(set.tracker.stats.evictions > 0, 'the cap was kept by clearing groups');
  // A group a writer is writing cannot be cleared: the bound is the cap plus one group per writer.
  assert.ok(most <= (8 + 8) * 16, `at most ${most} chunks marked`);
});

test('a log over its cap (every marked group was busy) is brought back under it by the periodic pass', async (t) => {
  const { set } = await setWithCap(4 * GROUP);
  t.after(() => set.stop());
  // All at once: every group is in flight when the cap is crossed, so nothing can be cleared then.
  await Promise.all(Array.from({ length: 32 }, (_, g) => set.write(g * GROUP, Buffer.alloc(4096, g), false)));
  assert.ok(set.tracker.wil.count > 64, 'over the cap while every group was busy');
  await set.tracker.keepCap();
  assert.ok(set.tracker.wil.count <= 64, `${set.tracker.wil.count} chunks marked after the pass`);
});

test('a busy group is never cleared: a write still in flight keeps its group marked', async (t) => {
  const { set, devs } = await setWithCap(1 * GROUP);
  t.after(() => set.stop());
  // Hold a write to group 0 in flight on one member.
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const write = devs[0]!.write.bind(devs[0]!);
  let holding = true;
  devs[0]!.write = async (buf: Buffer, off: number) => {
    if (holding && off === HEADER_BYTES) {
      holding = false;
      await held;
    }
    return write(buf, off);
  };
  const slow = set.write(0, Buffer.alloc(4096, 9), false);
  await new Promise((r) => setTimeout(r, 20));
  await set.write(5 * GROUP, Buffer.alloc(4096, 5), false);
  assert.ok(set.tracker.wil.has(0), 'group 0 has a write in flight: still marked');
  release();
  await slow;
  assert.deepEqual(await set.read(0, 4096), Buffer.alloc(4096, 9));
});

test('while the cap is being kept, a write to a newly marked group never reaches a member before that group\'s mark does', async (t) => {
  const { set, devs } = await setWithCap(1 * GROUP);
  t.after(() => set.stop());
  await set.write(0, Buffer.alloc(4096, 1), false); // group 0 marked: the log is at its cap
  // Hold the members' flushes for a while: the eviction the next new group starts waits in its flush.
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  t.after(() => release()); // after-hooks run last-in first-out: before the set's stop, which flushes
  const second = HEADER_BYTES + 2 * GROUP + 3 * 65536;
  const markedWhenIssued: boolean[] = [];
  for (const d of devs) {
    const flush = d.flush.bind(d);
    d.flush = async () => {
      await held;
      await flush();
    };
    const write = d.write.bind(d);
    d.write = async (buf: Buffer, off: number) => {
      if (off === second) markedWhenIssued.push(loggedOn(d).has(32));
      return write(buf, off);
    };
  }
  const first = set.write(2 * GROUP, Buffer.alloc(4096, 2), false); // marks group 2: over the cap
  await new Promise((r) => setTimeout(r, 20));
  // Group 2 is set in memory now; a write to another chunk of it finds the bit set, and must still not
  // be issued until the group's mark is on the members.
  const next = set.write(second - HEADER_BYTES, Buffer.alloc(4096, 3), false);
  await new Promise((r) => setTimeout(r, 20));
  release();
  await Promise.all([first, next]);
  assert.deepEqual(markedWhenIssued, devs.map(() => true), 'each member\'s log had group 2 when the write reached it');
});

test('one flush clears a quarter of the cap or more: 32 groups written in turn under a cap of 8 take at most 10 flushes', async (t) => {
  const { set, flushes } = await setWithCap(8 * GROUP);
  t.after(() => set.stop());
  for (let g = 0; g < 32; g++) await set.write(g * GROUP + 8192, Buffer.alloc(4096, g + 1), false);
  await set.tracker.capSettled();
  const { evictions, evicted } = set.tracker.stats;
  // 24 or more groups had to be cleared. Clearing at the cap down to 7/8 of it (two groups per flush) took
  // 12 flushes; from 3/4 of it down to half, three groups or more go per flush (9 flushes in this test).
  assert.ok(evictions > 0 && evictions <= 10, `${evictions} flushes to keep the cap (${evicted} chunks cleared)`);
  assert.ok(flushes() <= 2 * 10, `${flushes()} member flushes`);
  assert.ok(set.tracker.wil.count <= 8 * 16);
});

test('clearing starts before the cap is reached and holds no write back until the log is at its cap; then the write that would pass it waits', async (t) => {
  const { set, devs } = await setWithCap(4 * GROUP);
  t.after(() => set.stop());
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  t.after(() => release()); // after-hooks run last-in first-out: before the set's stop, which flushes
  let flushesAsked = 0;
  for (const d of devs) {
    const flush = d.flush.bind(d);
    d.flush = async () => {
      flushesAsked++;
      await held;
      await flush();
    };
  }
  // Four groups: the fourth takes the log past 3/4 of its cap, and clearing starts (its flush is held).
  for (let g = 0; g < 4; g++) await set.write(g * GROUP, Buffer.alloc(4096, g + 1), false);
  assert.ok(flushesAsked > 0, 'clearing started before the log reached its cap');
  assert.equal(set.tracker.wil.count, 64, 'the log is at its cap, and no write waited for the held flush');
  // A fifth group would pass the cap: that write waits until the clearing is done.
  let done = false;
  const fifth = set.write(4 * GROUP, Buffer.alloc(4096, 5), false).then(() => (done = true));
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(done, false, 'the write that passes the cap waited for the clearing');
  release();
  await fifth;
  await set.tracker.capSettled();
  assert.ok(set.tracker.wil.count <= 64, `${set.tracker.wil.count} chunks marked after the clearing`);
  assert.deepEqual(await set.read(4 * GROUP, 4096), Buffer.alloc(4096, 5));
});
