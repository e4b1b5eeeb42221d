import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { FaultyBackend } from '../adapters/faulty/faulty-backend.js';
import { MemoryBackend } from '../adapters/faulty/memory-backend.js';
import { HEADER_BYTES, MiB } from '../core/geometry.js';
import { decodeScb, pickScb, type Scb } from '../core/scb.js';
import { SCB_SLOT_BYTES } from '../core/geometry.js';
import { systemClock } from '../ports/clock.js';
import { startShadowSet } from './engine.js';

const log = pino({ level: 'silent' });
const RAW = HEADER_BYTES + 4 * MiB;

async function setOf(n: number, timeoutMs = 60_000) {
  const devs = Array.from({ length: n }, (_, i) => new FaultyBackend(new MemoryBackend(`mem${i}`, RAW)));
  const byLoc = new Map(devs.map((d) => [d.location, d]));
  const { set } = await startShadowSet({
    members: devs.map((d) => ({ location: d.location })),
    overwrite: false, memberTimeoutMs: timeoutMs, log, clock: systemClock,
    open: async (loc) => byLoc.get(loc)!,
  });
  return { set, devs, mem: devs.map((d) => d.inner as MemoryBackend) };
}

function scbOf(m: MemoryBackend) {
  const d = pickScb(decodeScb(m.bytes.subarray(0, SCB_SLOT_BYTES)), decodeScb(m.bytes.subarray(SCB_SLOT_BYTES, 2 * SCB_SLOT_BYTES)));
  assert.equal(d.kind, 'ok');
  return (d as { scb: Scb }).scb;
}

const data = (byte: number, len = 4096) => Buffer.alloc(len, byte);
const region = (m: MemoryBackend, off: number, len: number) => m.bytes.subarray(HEADER_BYTES + off, HEADER_BYTES + off + len);

test('a write reaches every member; a read returns it', async () => {
  const { set, mem } = await setOf(3);
  await set.write(8192, data(0x5a), false);
  for (const m of mem) assert.deepEqual(region(m, 8192, 4096), data(0x5a));
  assert.deepEqual(await set.read(8192, 4096), data(0x5a));
  await set.stop();
});

test('reads go to the member with the lowest read cost plus queue depth', async () => {
  const { set } = await setOf(2);
  set.members[0]!.readCost = 10;
  set.members[1]!.readCost = 1;
  await set.read(0, 4096);
  await set.read(4096, 4096);
  assert.equal(set.members[0]!.counters.reads, 0);
  assert.equal(set.members[1]!.counters.reads, 2);
  await set.stop();
});

test('a read error is repaired from another member and good data returned', async () => {
  const { set, devs, mem } = await setOf(2);
  await set.write(0, data(0x11, 8192), false);
  region(mem[0]!, 0, 4096).fill(0xee); // the bad copy
  set.members[0]!.readCost = 0;
  set.members[1]!.readCost = 5;
  devs[0]!.plan = { readErrors: { from: HEADER_BYTES, to: HEADER_BYTES + 4096 } };
  const got = await set.read(0, 4096);
  assert.deepEqual(got, data(0x11));
  assert.deepEqual(region(mem[0]!, 0, 4096), data(0x11), 'bad block rewritten on the failing member');
  assert.equal(set.members[0]!.counters.repairs, 1);
  assert.equal(set.members[0]!.state, 'InSync');
  await set.stop();
});

test('a member that keeps failing writes is removed, recorded on survivors, and no acknowledged write is lost', async () => {
  const { set, devs, mem } = await setOf(2);
  const gen0 = set.generation;
  devs[1]!.plan = { writeErrors: true };
  await set.write(0, data(0x22), false); // acknowledged
  assert.equal(set.members[1]!.state, 'Faulted');
  assert.equal(set.generation, gen0 + 1);
  const rec = scbOf(mem[0]!);
  assert.equal(rec.generation, gen0 + 1);
  assert.equal(rec.members.find((m) => m.id === set.members[1]!.id)!.state, 'Faulted');
  assert.deepEqual(region(mem[0]!, 0, 4096), data(0x22));
  await set.write(4096, data(0x23), false);
  assert.deepEqual(await set.read(4096, 4096), data(0x23));
  await set.stop();
  assert.equal(scbOf(mem[0]!).clean, true);
});

test('a hung member is removed after the member timeout and I/O continues', async () => {
  const { set, devs, mem } = await setOf(2, 200);
  devs[1]!.plan = { hang: true };
  const t0 = Date.now();
  await set.write(0, data(0x33), true);
  const waited = Date.now() - t0;
  assert.ok(waited >= 150, `write waited ${waited} ms for the timeout`);
  assert.equal(set.members[1]!.state, 'Faulted');
  assert.deepEqual(region(mem[0]!, 0, 4096), data(0x33));
  await set.write(4096, data(0x34), false);
  await set.flush();
  await set.stop();
});

test('when the last full member fails, the write is not acknowledged and the member stays', async () => {
  const { set, devs } = await setOf(1);
  try {
    await set.write(0, data(1), false); // its chunk is now marked in the intent log: no metadata write next
    devs[0]!.plan = { writeErrors: true, flushErrors: true };
    await assert.rejects(set.write(0, data(2), false), /failed on every full member/);
    await assert.rejects(set.flush(), /flush failed on the last full member/);
    // The set keeps its last full member (it would have nothing left to read from): reads still answer,
    // with the data as it was before the failed write.
    assert.equal(set.members[0]!.state, 'InSync');
    assert.deepEqual(await set.read(0, 4096), data(1));
  } finally {
    devs[0]!.plan = {};
    await set.stop();
  }
});

test('a write that fails on the last full member is taken back from copy targets that got it', async () => {
  const { set, devs, mem } = await setOf(2);
  try {
    await set.write(0, data(0x41), false);
    set.members[1]!.state = 'FullCopy'; // as if it were a copy target that already has this chunk
    devs[0]!.plan = { writeErrors: true };
    await assert.rejects(set.write(0, data(0x42), false));
    assert.equal(set.members[0]!.state, 'InSync');
    assert.deepEqual(region(mem[1]!, 0, 4096), data(0x41), 'the copy target kept a write no full member has');
  } finally {
    devs[0]!.plan = {};
    await set.stop();
  }
});

test('writes outside the virtual unit are refused before reaching members', async () => {
  const { set, mem } = await setOf(2);
  await assert.rejects(set.write(set.size - 100, data(9), false), /outside the virtual unit/);
  for (const m of mem) assert.equal(m.bytes.subarray(HEADER_BYTES + set.size - 100).every((b) => b === 0), true);
  await set.stop();
});

test('the record (six entries at most) always lists the writable members, former ones are dropped first', async () => {
  const devs = new Map(Array.from({ length: 8 }, (_, i) => [`d${i}`, new MemoryBackend(`d${i}`, RAW)]));
  const { set, control } = await startShadowSet({
    members: [{ location: 'd0' }, { location: 'd1' }], overwrite: false, memberTimeoutMs: 60_000, log, clock: systemClock,
    open: async (loc) => devs.get(loc)!,
  });
  try {
    // Four members come and go, then a fifth joins: seven member entries, of which three are writable.
    for (const loc of ['d2', 'd3', 'd4', 'd5']) {
      const { id } = await control.addMember({ location: loc, noCopy: true, confirmOverwrite: false });
      await control.removeMember({ member: id, minicopy: 'Never', force: false });
    }
    const { id } = await control.addMember({ location: 'd6', noCopy: true, confirmOverwrite: false });
    assert.equal(set.members.length, 7);
    const rec = scbOf(devs.get('d0')!);
    assert.equal(rec.members.length, 6);
    for (const m of set.members.filter((x) => x.isWritable)) assert.ok(rec.members.some((x) => x.id === m.id), `writable member ${m.location} missing from the record`);
    assert.ok(rec.members.some((x) => x.id === id));
  } finally {
    await set.stop();
  }
});
