/**
 * Start-up with members that cannot be had: a member that cannot be opened is left out (recorded away,
 * with a write bitmap) if the set's record knows it; a location no record knows is refused; the witness
 * refuses a start whose newest record is older than one already recorded; a member removed by request
 * stays out with --keep-removed, untouched.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { MemoryBackend } from '../adapters/faulty/memory-backend.js';
import { EngineError, isEngineError } from '../core/errors.js';
import { HEADER_BYTES, MiB } from '../core/geometry.js';
import { systemClock } from '../ports/clock.js';
import { startShadowSet, type StartOptions } from './engine.js';

const log = pino({ level: 'silent' });
const RAW = HEADER_BYTES + 4 * MiB;

function world(names: string[]) {
  const disks = new Map(names.map((n) => [n, new MemoryBackend(n, RAW)]));
  const down = new Set<string>();
  const opts = (members: string[], extra: Partial<StartOptions> = {}): StartOptions => ({
    members: members.map((location) => ({ location })), overwrite: false, memberTimeoutMs: 60_000, log, clock: systemClock,
    open: async (loc) => {
      const d = disks.get(loc);
      if (!d || down.has(loc)) throw new EngineError('ENG_IO', `cannot reach ${loc}`);
      return d;
    },
    ...extra,
  });
  return { disks, down, opts };
}

test('a member that cannot be opened is left out: the set starts, records it away, and keeps a write bitmap for it', async () => {
  const w = world(['a', 'b', 'c']);
  const first = await startShadowSet(w.opts(['a', 'b', 'c']));
  const idC = first.set.members[2]!.id;
  await first.set.write(0, Buffer.alloc(4096, 1), false);
  await first.set.stop();
  const before = Buffer.from(w.disks.get('c')!.bytes);
  w.down.add('c');
  const second = await startShadowSet(w.opts(['a', 'b', 'c']));
  try {
    assert.deepEqual(second.set.members.map((m) => [m.location, m.state]), [['a', 'InSync'], ['b', 'InSync']]);
    const former = second.set.formerMembers();
    assert.deepEqual(former.map((f) => [f.id, f.path, f.state]), [[idC, 'c', 'Removed']]);
    assert.match(former[0]!.reason ?? '', /could not be opened at start: cannot reach c/);
    const bm = [...second.set.tracker.bitmaps.values()];
    assert.deepEqual(bm.map((b) => b.desc.member), [idC], 'a write bitmap records writes for the missing member');
    await second.set.write(MiB, Buffer.alloc(4096, 2), false);
    assert.ok(bm[0]!.map.has(MiB / second.set.chunkSize));
    assert.ok(w.disks.get('c')!.bytes.equals(before), 'nothing was written to the missing member');
    // It comes back with a minicopy once it can be opened.
    w.down.delete('c');
    const back = await second.control.returnMember({ member: idC, minicopy: 'Required' });
    assert.equal(back.state, 'Minicopy');
  } finally {
    await second.set.stop();
  }
});

test('--include: a former member the record lists as current but that cannot be opened is left out with a write bitmap, as if it had been given', async () => {
  // The engine moved to another node after an unclean end: the member that was local to the old node is not
  // given (its member server's node is down), and the path the record names does not exist here.
  const w = world(['a', 'b', 'c']);
  const first = await startShadowSet(w.opts(['a', 'b', 'c']));
  const idC = first.set.members[2]!.id;
  await first.set.write(0, Buffer.alloc(4096, 1), false);
  await first.set.stop();
  w.down.add('c');
  const second = await startShadowSet(w.opts(['a', 'b'], { include: true }));
  try {
    assert.deepEqual(second.set.members.map((m) => m.location), ['a', 'b']);
    const former = second.set.formerMembers();
    assert.deepEqual(former.map((f) => [f.id, f.state]), [[idC, 'Removed']]);
    assert.match(former[0]!.reason ?? '', /could not be opened at start/);
    const bm = [...second.set.tracker.bitmaps.values()];
    assert.deepEqual(bm.map((b) => b.desc.member), [idC], 'a write bitmap records writes for the member left out');
    await second.set.write(MiB, Buffer.alloc(4096, 2), false);
    w.down.delete('c');
    const back = await second.control.returnMember({ member: idC, minicopy: 'Required' });
    assert.equal(back.state, 'Minicopy');
  } finally {
    await second.set.stop();
  }
});

test('a location that no record knows is refused, and a new set needs every member', async () => {
  const w = world(['a', 'b']);
  await assert.rejects(startShadowSet(w.opts(['a', 'nope'])), /cannot reach nope/);
  const s = await startShadowSet(w.opts(['a', 'b']));
  await s.set.stop();
  await assert.rejects(startShadowSet(w.opts(['a', 'b', 'typo'])), /cannot reach typo/);
});

test('the witness: a start whose newest record is older than one already recorded refuses, nothing written', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'witness-'));
  try {
    const stateFile = join(dir, 'state.json');
    const w = world(['a', 'b']);
    const s1 = await startShadowSet(w.opts(['a', 'b'], { stateFile }));
    await s1.set.stop();
    const staleA = Buffer.from(w.disks.get('a')!.bytes); // a's record as it is now
    // b goes on alone (a left), then b's node is down while a is back.
    const s2 = await startShadowSet(w.opts(['b'], { stateFile }));
    await s2.set.write(0, Buffer.alloc(4096, 9), false);
    await s2.set.stop();
    w.disks.get('a')!.bytes.set(staleA);
    w.down.add('b');
    const before = Buffer.from(w.disks.get('a')!.bytes);
    await assert.rejects(startShadowSet(w.opts(['a', 'b'], { stateFile })), (e) => isEngineError(e, 'ENG_STALE_RECORD'));
    assert.ok(w.disks.get('a')!.bytes.equals(before), 'the refused start wrote to a member');
    // The operator's view works the same way without a state file.
    await assert.rejects(startShadowSet(w.opts(['a', 'b'], { minGeneration: 5 })), (e) => isEngineError(e, 'ENG_STALE_RECORD'));
    // With b reachable again the start goes ahead.
    w.down.delete('b');
    const s3 = await startShadowSet(w.opts(['a', 'b'], { stateFile }));
    assert.deepEqual((await s3.set.read(0, 4096))[0], 9);
    await s3.set.stop();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('keepRemoved: a member removed by request (split for backup) stays out at restart and is not written', async () => {
  const w = world(['a', 'b', 'c']);
  const s1 = await startShadowSet(w.opts(['a', 'b', 'c']));
  const idC = s1.set.members[2]!.id;
  await s1.control.removeMember({ member: idC, minicopy: 'Required', force: false });
  await s1.set.write(0, Buffer.alloc(4096, 3), false);
  // A crash (no clean stop), then the same arguments again.
  s1.set.halt();
  const backup = Buffer.from(w.disks.get('c')!.bytes);
  const s2 = await startShadowSet(w.opts(['a', 'b', 'c'], { keepRemoved: true }));
  try {
    assert.deepEqual(s2.set.members.map((m) => m.location), ['a', 'b']);
    assert.deepEqual(s2.set.formerMembers().map((f) => [f.id, f.state]), [[idC, 'Removed']]);
    assert.ok([...s2.set.tracker.bitmaps.values()].some((b) => b.desc.member === idC), 'its bitmap is kept');
    assert.ok(w.disks.get('c')!.bytes.equals(backup), 'the split member was written');
  } finally {
    await s2.set.stop();
  }
});
