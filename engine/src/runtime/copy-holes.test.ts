/**
 * A full copy leaves unread the runs its source reports as holes (BlockBackend.dataExtents, SEEK_DATA on
 * a file member), and the map it takes for that never costs a write: writes issued after it, and writes
 * still in flight when it is taken, are both copied. Each test compares the target with the source at the
 * end, byte for byte; the last two use a target that held other data, where a run wrongly taken for a
 * hole would be zeroed over the write.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { MemoryBackend } from '../adapters/faulty/memory-backend.js';
import { HEADER_BYTES, MiB } from '../core/geometry.js';
import { systemClock } from '../ports/clock.js';
import { startShadowSet } from './engine.js';

const UNIT = 8 * MiB;
const RAW = HEADER_BYTES + UNIT;
const PAGE = 4096;

/** A memory member that reports where it holds data, as SEEK_DATA would, and counts data-area reads. */
class HoleyMemory extends MemoryBackend {
  dataReads = 0;
  extentCalls = 0;
  /** Writes wait this long before they land (0: at once). */
  writeDelayMs = 0;
  constructor(location: string, size: number, private readonly reportsExtents: boolean) {
    super(location, size);
  }
  override async read(buf: Buffer, offset: number): Promise<void> {
    if (offset >= HEADER_BYTES + MiB) this.dataReads++;
    return super.read(buf, offset);
  }
  /** Bytes written to the data area. */
  dataBytesWritten = 0;
  override async write(buf: Buffer, offset: number): Promise<void> {
    if (offset >= HEADER_BYTES) this.dataBytesWritten += buf.length;
    if (this.writeDelayMs > 0 && offset >= HEADER_BYTES) await new Promise((r) => setTimeout(r, this.writeDelayMs));
    return super.write(buf, offset);
  }
  /** Pages with a non-zero byte, merged into extents: what the file system would say. */
  async dataExtents(): Promise<Array<[number, number]> | null> {
    this.extentCalls++;
    if (!this.reportsExtents) return null;
    const out: Array<[number, number]> = [];
    for (let p = 0; p < this.size; p += PAGE) {
      if (!this.bytes.subarray(p, p + PAGE).some((b) => b !== 0)) continue;
      const last = out[out.length - 1];
      if (last && last[1] === p) last[1] = p + PAGE;
      else out.push([p, p + PAGE]);
    }
    return out;
  }
  async holdsNoData(): Promise<boolean> {
    return !this.bytes.some((b) => b !== 0);
  }
}

/** The events of the engine's log by name, and a promise for the first of a given name. */
function eventLog() {
  const seen: Array<Record<string, unknown>> = [];
  const waiters: Array<{ event: string; resolve: (e: Record<string, unknown>) => void }> = [];
  const log = pino({ level: 'info' }, new Writable({
    write(line: Buffer, _enc, cb) {
      const e = JSON.parse(line.toString()) as Record<string, unknown>;
      seen.push(e);
      for (const w of waiters.filter((x) => x.event === e.event)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(e);
      }
      cb();
    },
  }));
  const next = (event: string) => {
    const had = seen.find((e) => e.event === event);
    return had ? Promise.resolve(had) : new Promise<Record<string, unknown>>((resolve) => waiters.push({ event, resolve }));
  };
  return { log, next };
}

/** A one-member set on `src` with data in the unit's first and third MiB; the rest never written. */
async function setOn(src: HoleyMemory, target: HoleyMemory, copyBytesPerSecond = 0) {
  const { log, next } = eventLog();
  const devs = new Map([['src', src], ['target', target]]);
  const { set, control } = await startShadowSet({
    members: [{ location: 'src' }], overwrite: false, memberTimeoutMs: 60_000, log, clock: systemClock,
    open: async (loc) => devs.get(loc)!, resync: { copyBytesPerSecond },
  });
  await set.write(0, Buffer.alloc(MiB, 0x5a), false);
  await set.write(2 * MiB, Buffer.alloc(MiB, 0xa5), false);
  return { set, control, next };
}

const dataArea = (m: MemoryBackend) => m.bytes.subarray(HEADER_BYTES, HEADER_BYTES + UNIT);

test('a full copy leaves the source\'s holes unread and says how much it left', async () => {
  const src = new HoleyMemory('src', RAW, true);
  const target = new HoleyMemory('target', RAW, true);
  const { set, control, next } = await setOn(src, target);
  try {
    const readsBefore = src.dataReads;
    await control.addMember({ location: 'target', noCopy: false, confirmOverwrite: false });
    const started = await next('CopyStarted');
    const done = await next('CopyCompleted');
    assert.ok(dataArea(target).equals(dataArea(src)), 'the target matches the source');
    // Runs are 1 MiB: MiB 0 and 2 hold data, the other six are holes. The first MiB is not counted.
    assert.equal(src.dataReads - readsBefore, 1, 'only the run with data past the first MiB was read on the source');
    assert.equal(done.unreadBytes, 6 * MiB, 'CopyCompleted counts the bytes left unread');
    assert.deepEqual(started.sourceHoleBytes, { [set.members[0]!.id]: 6 * MiB }, 'CopyStarted says what the map found');
  } finally {
    await set.stop();
  }
});

test('without a map (a backend that cannot tell) every run is read, as before', async () => {
  const src = new HoleyMemory('src', RAW, false);
  const target = new HoleyMemory('target', RAW, false);
  const { set, control, next } = await setOn(src, target);
  try {
    const readsBefore = src.dataReads;
    await control.addMember({ location: 'target', noCopy: false, confirmOverwrite: false });
    const done = await next('CopyCompleted');
    assert.ok(dataArea(target).equals(dataArea(src)));
    assert.equal(src.dataReads - readsBefore, 7, 'the seven runs past the first MiB were read');
    assert.equal(done.unreadBytes, 0);
  } finally {
    await set.stop();
  }
});

test('a write into a hole after the map was taken is copied, not zeroed (target with other data)', async () => {
  const src = new HoleyMemory('src', RAW, true);
  const target = new HoleyMemory('target', RAW, true);
  dataArea(target).fill(0xee); // not empty: every zero run of the source is checked and zeroed on it
  // Throttled to about 2 s, so the write below lands while the copy is still far from the unit's end.
  const { set, control, next } = await setOn(src, target, 4 * MiB);
  try {
    await control.addMember({ location: 'target', noCopy: false, confirmOverwrite: true });
    await next('CopyStarted');
    const late = Buffer.alloc(64 * 1024, 0x77);
    await set.write(7 * MiB + 128 * 1024, late, false);
    const done = await next('CopyCompleted');
    assert.ok(dataArea(target).equals(dataArea(src)), 'the target matches the source');
    assert.ok(dataArea(target).subarray(7 * MiB + 128 * 1024, 7 * MiB + 192 * 1024).equals(late), 'the write is on the target');
    assert.equal(done.unreadBytes, 5 * MiB, 'the run the write touched was read');
  } finally {
    await set.stop();
  }
});

test('a write still in flight when the copy starts is waited for before the map is taken', async () => {
  const src = new HoleyMemory('src', RAW, true);
  const target = new HoleyMemory('target', RAW, true);
  dataArea(target).fill(0xee);
  const { set, control, next } = await setOn(src, target);
  try {
    src.writeDelayMs = 300; // the write below reaches the source's bytes 300 ms after it is issued
    const slow = Buffer.alloc(64 * 1024, 0x33);
    const w = set.write(5 * MiB, slow, false);
    await control.addMember({ location: 'target', noCopy: false, confirmOverwrite: true });
    await w;
    src.writeDelayMs = 0;
    await next('CopyCompleted');
    assert.ok(dataArea(src).subarray(5 * MiB, 5 * MiB + slow.length).equals(slow), 'the write is on the source');
    assert.ok(dataArea(target).equals(dataArea(src)), 'and the copy brought it to the target');
  } finally {
    await set.stop();
  }
});

test('onto a target that held no data, only the chunks with data are written: a lone chunk costs a chunk', async () => {
  const src = new HoleyMemory('src', RAW, false); // no map: the runs are read, and the zero chunks found in them
  const target = new HoleyMemory('target', RAW, false);
  const { set, control, next } = await setOn(src, target);
  try {
    const lone = Buffer.alloc(64 * 1024, 0x44);
    await set.write(5 * MiB + 192 * 1024, lone, false);
    await set.write(6 * MiB + 128 * 1024, lone, false);
    await set.write(6 * MiB + 192 * 1024, lone, false); // the neighbour of the one before: one write for both
    await control.addMember({ location: 'target', noCopy: false, confirmOverwrite: false });
    await next('CopyCompleted');
    assert.ok(dataArea(target).equals(dataArea(src)), 'the target matches the source');
    assert.equal(target.dataBytesWritten, 2 * MiB + 3 * 64 * 1024, 'two whole runs of data, then three chunks, nothing for zeros');
  } finally {
    await set.stop();
  }
});

test('onto a target that held other data, a run with data is written whole, its zero chunks included', async () => {
  const src = new HoleyMemory('src', RAW, false);
  const target = new HoleyMemory('target', RAW, false);
  dataArea(target).fill(0xee);
  const { set, control, next } = await setOn(src, target);
  try {
    await set.write(5 * MiB + 192 * 1024, Buffer.alloc(64 * 1024, 0x44), false);
    await control.addMember({ location: 'target', noCopy: false, confirmOverwrite: true });
    await next('CopyCompleted');
    assert.ok(dataArea(target).equals(dataArea(src)), 'the target matches the source: no stale 0xee left beside the chunk');
  } finally {
    await set.stop();
  }
});

test('onto a target that held no data, a write in flight when the copy starts still reaches it', async () => {
  const src = new HoleyMemory('src', RAW, true);
  const target = new HoleyMemory('target', RAW, true);
  const { set, control, next } = await setOn(src, target);
  try {
    src.writeDelayMs = 300;
    const slow = Buffer.alloc(64 * 1024, 0x66);
    const w = set.write(6 * MiB + 64 * 1024, slow, false);
    await control.addMember({ location: 'target', noCopy: false, confirmOverwrite: false });
    await w;
    src.writeDelayMs = 0;
    const done = await next('CopyCompleted');
    assert.equal(set.members.find((m) => m.location === 'target')!.heldNoDataAtAdmission, true);
    assert.ok(dataArea(target).equals(dataArea(src)), 'the copy brought the write to the target');
    assert.equal(done.unreadBytes, 5 * MiB, 'the other five empty runs were left unread');
  } finally {
    await set.stop();
  }
});
