/**
 * A resync's work is what changed, not the set: on a 64 GiB set and on a 1 GiB one the same 16
 * scattered writes cost the same I/O — the minicopy when a member that was away returns, and the
 * minimerge after a crash — counted in requests to the members' data areas, not in time, so the test
 * holds on a loaded machine.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { EngineError } from '../core/errors.js';
import { GiB, HEADER_BYTES, MiB } from '../core/geometry.js';
import type { BlockBackend } from '../ports/block-backend.js';
import { systemClock } from '../ports/clock.js';
import { startShadowSet } from './engine.js';

const PAGE = 4096;

/** A sparse in-memory member: only written 4 KiB pages take memory; it counts requests to its data area. */
class SparseMemory implements BlockBackend {
  readonly pages = new Map<number, Buffer>();
  dataReads = 0;
  dataWrites = 0;
  constructor(readonly location: string, readonly size: number) {}
  private check(offset: number, length: number): void {
    if (offset < 0 || offset + length > this.size || offset % PAGE || length % PAGE) {
      throw new EngineError('ENG_OUT_OF_RANGE', `${this.location}: ${offset}+${length}`);
    }
  }
  async read(buf: Buffer, offset: number): Promise<void> {
    this.check(offset, buf.length);
    if (offset >= HEADER_BYTES) this.dataReads++;
    for (let o = 0; o < buf.length; o += PAGE) {
      const p = this.pages.get((offset + o) / PAGE);
      if (p) p.copy(buf, o);
      else buf.fill(0, o, o + PAGE);
    }
  }
  async write(buf: Buffer, offset: number): Promise<void> {
    this.check(offset, buf.length);
    if (offset >= HEADER_BYTES) this.dataWrites++;
    for (let o = 0; o < buf.length; o += PAGE) this.pages.set((offset + o) / PAGE, Buffer.from(buf.subarray(o, o + PAGE)));
  }
  async writeZeroes(offset: number, length: number): Promise<void> {
    this.check(offset, length);
    if (offset >= HEADER_BYTES) this.dataWrites++;
    for (let o = 0; o < length; o += PAGE) this.pages.delete((offset + o) / PAGE);
  }
  async discard(offset: number, length: number): Promise<void> {
    return this.writeZeroes(offset, length);
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
  /** Where pages were written, as SEEK_DATA would say (a full copy's source map). */
  async dataExtents(): Promise<Array<[number, number]>> {
    const out: Array<[number, number]> = [];
    for (const p of [...this.pages.keys()].sort((x, y) => x - y)) {
      const last = out[out.length - 1];
      if (last && last[1] === p * PAGE) last[1] += PAGE;
      else out.push([p * PAGE, (p + 1) * PAGE]);
    }
    return out;
  }
  async holdsNoData(): Promise<boolean> {
    return this.pages.size === 0;
  }
}

/** A logger, and a promise for the first log line with `event`. */
function logWaitingFor(event: string) {
  let done: () => void = () => undefined;
  const seen = new Promise<void>((r) => (done = r));
  const log = pino({ level: 'info' }, new Writable({
    write(line: Buffer, _enc, cb) {
      if (line.toString().includes(`"event":"${event}"`)) done();
      cb();
    },
  }));
  return { log, seen };
}

/** Data-area requests of a minicopy after `n` scattered 4 KiB writes on a set of `size` bytes. */
async function minicopyWork(size: number, n: number) {
  const { log, seen: completed } = logWaitingFor('MinicopyCompleted');
  const devs = new Map(['a', 'b'].map((l) => [l, new SparseMemory(l, HEADER_BYTES + size)]));
  const { set, control } = await startShadowSet({
    members: [{ location: 'a' }, { location: 'b' }], overwrite: false, memberTimeoutMs: 60_000, log, clock: systemClock,
    open: async (loc) => devs.get(loc)!,
  });
  try {
    const b = set.members.find((m) => m.location === 'b')!;
    const removed = await control.removeMember({ member: b.id, minicopy: 'Required', force: false });
    assert.ok(removed.bitmap, 'a write bitmap was made');
    // Spread over the whole set: chunk i * (chunks / n).
    const stride = Math.floor(size / set.chunkSize / n) * set.chunkSize;
    for (let i = 0; i < n; i++) await set.write(i * stride, Buffer.alloc(PAGE, i + 1), false);
    const [a, bb] = [devs.get('a')!, devs.get('b')!];
    const before = { aReads: a.dataReads, bReads: bb.dataReads, bWrites: bb.dataWrites };
    await control.returnMember({ member: b.id, minicopy: 'Required' });
    await completed;
    const work = {
      chunkSize: set.chunkSize,
      sourceReads: a.dataReads - before.aReads,
      targetReads: bb.dataReads - before.bReads,
      targetWrites: bb.dataWrites - before.bWrites,
    };
    for (let i = 0; i < n; i++) assert.deepEqual(await set.read(i * stride, PAGE), Buffer.alloc(PAGE, i + 1));
    return work;
  } finally {
    await set.stop();
  }
}

test('a minicopy of the same 16 scattered writes does the same I/O on a 64 GiB set as on a 1 GiB one: one read and one write per chunk', async () => {
  const small = await minicopyWork(1 * GiB, 16);
  const large = await minicopyWork(64 * GiB, 16);
  assert.equal(small.chunkSize, large.chunkSize, 'both sets have the same chunk size');
  assert.deepEqual(large, small);
  // The returning member is read only by its probe (the first MiB of its data area: one request).
  assert.deepEqual({ sourceReads: large.sourceReads, targetWrites: large.targetWrites }, { sourceReads: 16, targetWrites: 16 });
});

/** Data-area requests of the minimerge a restart runs after a crash (halt) that followed `n` scattered writes. */
async function minimergeWork(size: number, n: number) {
  const devs = new Map(['a', 'b'].map((l) => [l, new SparseMemory(l, HEADER_BYTES + size)]));
  const opts = { members: [{ location: 'a' }, { location: 'b' }], overwrite: false, memberTimeoutMs: 60_000, clock: systemClock, open: async (loc: string) => devs.get(loc)! };
  const first = await startShadowSet({ ...opts, log: pino({ level: 'silent' }) });
  const stride = Math.floor(size / first.set.chunkSize / n) * first.set.chunkSize;
  for (let i = 0; i < n; i++) await first.set.write(i * stride, Buffer.alloc(PAGE, i + 1), false);
  first.set.halt(); // a crash: the intent log still marks the groups just written
  const before = [...devs.values()].map((d) => ({ reads: d.dataReads, writes: d.dataWrites }));
  const { log, seen: merged } = logWaitingFor('MergeCompleted');
  const { set } = await startShadowSet({ ...opts, log });
  try {
    await merged;
    const [a, b] = [...devs.values()];
    return {
      chunkSize: set.chunkSize,
      reads: a!.dataReads - before[0]!.reads + b!.dataReads - before[1]!.reads,
      writes: a!.dataWrites - before[0]!.writes + b!.dataWrites - before[1]!.writes,
    };
  } finally {
    await set.stop();
  }
}

test('a minimerge after a crash that followed the same 16 scattered writes does the same I/O on a 64 GiB set as on a 1 GiB one', async () => {
  const small = await minimergeWork(1 * GiB, 16);
  const large = await minimergeWork(64 * GiB, 16);
  assert.equal(small.chunkSize, large.chunkSize, 'both sets have the same chunk size');
  assert.deepEqual(large, small);
  // One 1 MiB group per write, read on both members; nothing differs, so nothing is written.
  assert.ok(large.reads > 0 && large.reads <= 2 * 16 + 2, `${large.reads} reads: a run per marked group on each member (and the probes)`);
  assert.equal(large.writes, 0);
});

/** Data-area requests of a full copy onto a new, empty member of a set with `n` scattered 4 KiB writes. */
async function fullCopyWork(size: number, n: number) {
  let started: () => void = () => undefined;
  let completed: () => void = () => undefined;
  const copyStarted = new Promise<void>((r) => (started = r));
  const copied = new Promise<void>((r) => (completed = r));
  const log = pino({ level: 'info' }, new Writable({
    write(line: Buffer, _enc, cb) {
      const l = line.toString();
      if (l.includes('"event":"CopyStarted"')) started();
      if (l.includes('"event":"CopyCompleted"')) completed();
      cb();
    },
  }));
  const devs = new Map(['a', 'c'].map((l) => [l, new SparseMemory(l, HEADER_BYTES + size)]));
  const { set, control } = await startShadowSet({
    members: [{ location: 'a' }], overwrite: false, memberTimeoutMs: 60_000, log, clock: systemClock,
    open: async (loc) => devs.get(loc)!,
  });
  try {
    // Each write in a 1 MiB run of its own, all of them at the end of the set: before them the copy
    // has nothing but holes to pass, with no run of its own in flight to wait for.
    const at = (i: number) => size - (n - i) * MiB;
    for (let i = 0; i < n; i++) await set.write(at(i), Buffer.alloc(PAGE, i + 1), false);
    const [a, c] = [devs.get('a')!, devs.get('c')!];
    const before = a.dataReads;
    await control.addMember({ location: 'c', noCopy: false, confirmOverwrite: false });
    const job = set.resync.jobs.find((j) => j.mode === 'FullCopy')!;
    // An application read made once the copy has begun is answered while the copy still has holes to
    // pass over: the scheduler lets the event loop run between them.
    await copyStarted;
    const unreadWhenAnswered = await set.read(0, PAGE).then(() => job.bytesUnread);
    await copied;
    const work = {
      chunkSize: set.chunkSize, sourceReads: a.dataReads - before, targetReads: c.dataReads, targetWrites: c.dataWrites,
      unreadWhenAnswered, unread: job.bytesUnread,
    };
    for (let i = 0; i < n; i++) {
      const got = Buffer.alloc(PAGE);
      await c.read(got, HEADER_BYTES + at(i));
      assert.deepEqual(got, Buffer.alloc(PAGE, i + 1), `write ${i} is on the new member`);
    }
    return work;
  } finally {
    await set.stop();
  }
}

test('a full copy of a sparse set reads and writes what it holds, the same on 64 GiB as on 1 GiB, and lets application I/O through meanwhile', async () => {
  const small = await fullCopyWork(1 * GiB, 16);
  const large = await fullCopyWork(64 * GiB, 16);
  assert.equal(small.chunkSize, large.chunkSize);
  const io = (w: typeof small) => ({ sourceReads: w.sourceReads, targetReads: w.targetReads, targetWrites: w.targetWrites });
  assert.deepEqual(io(large), io(small));
  // One run read per write (each in a run of its own) and the application's read; one chunk written per
  // write; the new member not read at all (it held no data, so not even its header is probed).
  assert.deepEqual(io(large), { sourceReads: 17, targetReads: 0, targetWrites: 16 });
  assert.equal(large.unread, 64 * GiB - 16 * MiB, 'every run but the sixteen with data was left unread');
  assert.ok(large.unreadWhenAnswered < large.unread, `the read was answered with ${large.unreadWhenAnswered} of ${large.unread} bytes of holes passed`);
});

test('a stop while a full copy passes over holes ends the copy as stopped, never as complete', async () => {
  const seen: string[] = [];
  let started: () => void = () => undefined;
  const copyStarted = new Promise<void>((r) => (started = r));
  const log = pino({ level: 'info' }, new Writable({
    write(line: Buffer, _enc, cb) {
      const event = (JSON.parse(line.toString()) as { event?: string }).event ?? '';
      if (/^Copy/.test(event)) seen.push(event);
      if (event === 'CopyStarted') started();
      cb();
    },
  }));
  const size = 64 * GiB;
  const devs = new Map(['a', 'c'].map((l) => [l, new SparseMemory(l, HEADER_BYTES + size)]));
  const { set, control } = await startShadowSet({
    members: [{ location: 'a' }], overwrite: false, memberTimeoutMs: 60_000, log, clock: systemClock,
    open: async (loc) => devs.get(loc)!,
  });
  // Data only at the end: the copy passes over 64 GiB of holes first.
  for (let i = 0; i < 16; i++) await set.write(size - (16 - i) * MiB, Buffer.alloc(PAGE, i + 1), false);
  await control.addMember({ location: 'c', noCopy: false, confirmOverwrite: false });
  const target = set.members.find((m) => m.location === 'c')!;
  await copyStarted; // runs at the copy's first pause among the holes
  await set.stop();
  assert.deepEqual(seen, ['CopyStarted', 'CopyStopped'], 'the copy stopped; it did not claim to be complete');
  assert.equal(target.state, 'FullCopy', 'the target is still a copy target');
  assert.equal(devs.get('c')!.dataWrites, 0, 'none of the data at the end reached it');
});
