/**
 * Growing the virtual unit (POST /v1/resize): the new size is recorded on every member and survives a
 * restart; a member that is too small, a shrink, a size the chunk size cannot describe and a running
 * resync are refused with nothing changed; the members' bytes in the grown region are made identical
 * (a merge) before they are trusted; a write bitmap made before the growth gives a minicopy that also
 * copies the grown region.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { MemoryBackend } from '../adapters/faulty/memory-backend.js';
import { isEngineError } from '../core/errors.js';
import { HEADER_BYTES, MAX_CHUNKS, MiB } from '../core/geometry.js';
import { systemClock } from '../ports/clock.js';
import { startShadowSet, type StartOptions } from './engine.js';

const OLD = 4 * MiB;
const NEW = 6 * MiB;

/** A logger, and a promise for each time `event` is logged from now on (the engine's log, not a timer). */
function events() {
  const waiting = new Map<string, ((fields: Record<string, unknown>) => void)[]>();
  const log = pino({ level: 'info' }, new Writable({
    write(line: Buffer, _enc, cb) {
      const fields = JSON.parse(line.toString()) as Record<string, unknown>;
      if (typeof fields.event === 'string') for (const f of waiting.get(fields.event)?.splice(0) ?? []) f(fields);
      cb();
    },
  }));
  const next = (event: string) => new Promise<Record<string, unknown>>((r) => waiting.set(event, [...(waiting.get(event) ?? []), r]));
  return { log, next };
}

function world(names: string[]) {
  const ev = events();
  const disks = new Map(names.map((n) => [n, new MemoryBackend(n, HEADER_BYTES + OLD)]));
  const opts = (members: string[], extra: Partial<StartOptions> = {}): StartOptions => ({
    members: members.map((location) => ({ location })), overwrite: false, memberTimeoutMs: 60_000, log: ev.log, clock: systemClock,
    // Opening a device asks its size anew, as opening a file or a block device does.
    open: async (loc) => {
      const d = disks.get(loc)!;
      await d.refreshSize();
      return d;
    },
    ...extra,
  });
  const data = (n: string, from = 0, to = NEW) => disks.get(n)!.bytes.subarray(HEADER_BYTES + from, HEADER_BYTES + to);
  return { disks, opts, data, next: ev.next };
}

test('a set grows once every member is big enough; the new size is recorded, the data kept, and a restart finds it', async () => {
  const w = world(['a', 'b']);
  const s = await startShadowSet(w.opts(['a', 'b']));
  await s.set.write(OLD - 4096, Buffer.alloc(4096, 7), false);
  for (const d of w.disks.values()) d.grow(HEADER_BYTES + NEW);
  const merged = w.next('MergeCompleted');
  const gen = s.set.generation;
  assert.deepEqual(await s.control.resize({ size: NEW }), { from: OLD, size: NEW, grown: true });
  assert.equal(s.set.size, NEW);
  assert.ok(s.set.generation > gen, 'a new generation records the size');
  await merged;
  await s.set.write(NEW - 4096, Buffer.alloc(4096, 8), false);
  assert.deepEqual(await s.set.read(OLD - 4096, 4096), Buffer.alloc(4096, 7));
  assert.deepEqual(await s.set.read(NEW - 4096, 4096), Buffer.alloc(4096, 8));
  await assert.rejects(s.set.read(NEW - 4096, 8192), (e) => isEngineError(e, 'ENG_OUT_OF_RANGE'));
  // Asking for the size it has already is a no-op.
  assert.deepEqual(await s.control.resize({ size: NEW }), { from: NEW, size: NEW, grown: false });
  await s.set.stop();
  const again = await startShadowSet(w.opts(['a', 'b']));
  try {
    assert.equal(again.set.size, NEW, 'the restarted set has the new size');
    assert.deepEqual(again.set.members.map((m) => m.state), ['InSync', 'InSync'], 'a clean stop after growing needs no copy');
    assert.deepEqual(await again.set.read(NEW - 4096, 4096), Buffer.alloc(4096, 8));
  } finally {
    await again.set.stop();
  }
});

test('refused, with nothing changed: a member too small (each one named), a shrink, a size the chunk size cannot describe', async () => {
  const w = world(['a', 'b', 'c']);
  const s = await startShadowSet(w.opts(['a', 'b', 'c']));
  try {
    w.disks.get('a')!.grow(HEADER_BYTES + NEW);
    const before = [...w.disks.values()].map((d) => Buffer.from(d.bytes.subarray(0, HEADER_BYTES)));
    const gen = s.set.generation;
    await assert.rejects(s.control.resize({ size: NEW }), (e: Error) => {
      assert.ok(isEngineError(e, 'ENG_MEMBER_TOO_SMALL'), e.message);
      assert.match(e.message, /b \(4194304 usable bytes\)/);
      assert.match(e.message, /c \(4194304 usable bytes\)/);
      assert.doesNotMatch(e.message, /\ba \(/);
      return true;
    });
    await assert.rejects(s.control.resize({ size: OLD - 4096 }), (e: Error) => isEngineError(e, 'ENG_INVALID_ARGUMENT') && /shrinking is refused/.test(e.message));
    const limit = s.set.chunkSize * MAX_CHUNKS;
    await assert.rejects(s.control.resize({ size: limit + 4096 }), (e: Error) => isEngineError(e, 'ENG_INVALID_ARGUMENT') && /room for 8388608 chunks/.test(e.message));
    assert.equal(s.set.size, OLD);
    assert.equal(s.set.generation, gen);
    [...w.disks.values()].forEach((d, i) => assert.ok(d.bytes.subarray(0, HEADER_BYTES).equals(before[i]!), `metadata of ${d.location} changed`));
  } finally {
    await s.set.stop();
  }
});

test('the grown region is made identical on every member before it is read (the devices held different bytes there)', async () => {
  const w = world(['a', 'b']);
  const s = await startShadowSet(w.opts(['a', 'b']));
  try {
    w.disks.get('a')!.grow(HEADER_BYTES + NEW, 0);
    w.disks.get('b')!.grow(HEADER_BYTES + NEW, 0xab);
    const merged = w.next('MergeCompleted');
    await s.control.resize({ size: NEW });
    // Read at once (merged on demand), and again after the merge: one answer.
    const first = await s.set.read(OLD, NEW - OLD);
    await merged;
    assert.ok(first.equals(await s.set.read(OLD, NEW - OLD)));
    assert.ok(w.data('a', OLD).equals(w.data('b', OLD)), 'the members differ in the grown region');
  } finally {
    await s.set.stop();
  }
});

test('a resync running refuses the growth (a copy covers a fixed chunk list)', async () => {
  const w = world(['a', 'b']);
  w.disks.set('c', new MemoryBackend('c', HEADER_BYTES + NEW));
  const s = await startShadowSet(w.opts(['a', 'b'], { resync: { copyBytesPerSecond: 65536 } }));
  try {
    await s.control.addMember({ location: 'c', noCopy: false, confirmOverwrite: false });
    for (const d of w.disks.values()) d.grow(HEADER_BYTES + NEW);
    await assert.rejects(s.control.resize({ size: NEW }), (e: Error) => isEngineError(e, 'ENG_CONFLICT') && /FullCopy of c/.test(e.message));
    assert.equal(s.set.size, OLD);
  } finally {
    await s.set.stop();
  }
});

test('a member away with a bitmap made before the growth gets a minicopy that copies the grown region too', async () => {
  const w = world(['a', 'b', 'c']);
  const s = await startShadowSet(w.opts(['a', 'b', 'c']));
  let stopAgain: () => Promise<void> = async () => undefined;
  try {
    const c = s.set.members.find((m) => m.location === 'c')!;
    const removed = await s.control.removeMember({ member: c.id, minicopy: 'Required', force: false });
    assert.ok(removed.bitmap);
    await s.set.write(0, Buffer.alloc(4096, 1), false);
    w.disks.get('a')!.grow(HEADER_BYTES + NEW);
    w.disks.get('b')!.grow(HEADER_BYTES + NEW);
    const merged = w.next('MergeCompleted');
    await s.control.resize({ size: NEW });
    await merged;
    const bm = s.control.bitmaps()[0]!;
    assert.equal(bm.coveredBytes, NEW, 'the bitmap covers the grown unit');
    // Written while c is away, in the grown region.
    await s.set.write(OLD + MiB, Buffer.alloc(8192, 2), false);
    // c's device grew too, with stale bytes where the grown region is.
    w.disks.get('c')!.grow(HEADER_BYTES + NEW, 0xee);
    await s.set.stop();

    // Its return after a restart (the bitmap and the new size come from the members' metadata).
    const again = await startShadowSet(w.opts(['a', 'b']));
    stopAgain = () => again.set.stop();
    const done = w.next('MinicopyCompleted');
    const back = await again.control.returnMember({ member: c.id, location: 'c', minicopy: 'Required' });
    assert.equal(back.state, 'Minicopy', 'a minicopy, not a full copy');
    // Writes while the minicopy runs reach c as well.
    const during = Promise.all([again.set.write(OLD + MiB + 512 * 1024, Buffer.alloc(4096, 3), false), again.set.write(8192, Buffer.alloc(4096, 4), false)]);
    const [, completed] = await Promise.all([during, done]);
    const copied = completed.bytes as number;
    assert.ok(copied >= NEW - OLD && copied < NEW, `the minicopy copied ${copied} bytes of ${NEW}: the grown region, not everything`);
    assert.deepEqual(again.set.members.map((m) => [m.location, m.state]), [['a', 'InSync'], ['b', 'InSync'], ['c', 'InSync']]);
    assert.ok(w.data('c').equals(w.data('a')), 'c differs from a after its minicopy');
    assert.deepEqual(w.data('c', OLD + MiB, OLD + MiB + 8192), Buffer.alloc(8192, 2));
    assert.deepEqual(w.data('c', OLD + MiB + 512 * 1024, OLD + MiB + 512 * 1024 + 4096), Buffer.alloc(4096, 3));
  } finally {
    await s.set.stop();
    await stopAgain();
  }
});
