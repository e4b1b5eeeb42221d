/**
 * A full copy skips the zero runs of its source when the target held no data at all when it was
 * admitted (Member.heldNoDataAtAdmission), and only then: a target with anything on it gets every zero
 * run checked and zeroed. These tests pin both halves — the skip leaves no stale byte behind, and it
 * really skips (no read of the target, no write, for a run that is zero on the source).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { MemoryBackend } from '../adapters/faulty/memory-backend.js';
import { HEADER_BYTES, MiB } from '../core/geometry.js';
import { systemClock } from '../ports/clock.js';
import { startShadowSet } from './engine.js';

const UNIT = 4 * MiB;
const RAW = HEADER_BYTES + UNIT;

/**
 * A memory member that knows whether it holds any data (like a file that is all holes) and counts its
 * I/O in the data area: reads from its second MiB on (the first is read by the probe of a new member).
 */
class CountingMemory extends MemoryBackend {
  reads = 0;
  dataReads = 0;
  dataWrites = 0;
  override async read(buf: Buffer, offset: number): Promise<void> {
    this.reads++;
    if (offset >= HEADER_BYTES + MiB) this.dataReads++;
    return super.read(buf, offset);
  }
  override async write(buf: Buffer, offset: number): Promise<void> {
    if (offset >= HEADER_BYTES) this.dataWrites++;
    return super.write(buf, offset);
  }
  override async writeZeroes(offset: number, length: number): Promise<void> {
    if (offset >= HEADER_BYTES) this.dataWrites++;
    return super.writeZeroes(offset, length);
  }
  holdsNoDataAsked = 0;
  async holdsNoData(): Promise<boolean> {
    this.holdsNoDataAsked++;
    return !this.bytes.some((b) => b !== 0);
  }
}

/**
 * A one-member set on `src` whose unit holds data in its first and third MiB and zeros elsewhere, and a
 * promise for the next CopyCompleted (the engine's log, not a timer).
 */
async function setWithHalfZeroSource() {
  let copied: () => void = () => undefined;
  const done = new Promise<void>((r) => (copied = r));
  const log = pino({ level: 'info' }, new Writable({
    write(line: Buffer, _enc, cb) {
      if (/"event":"CopyCompleted"/.test(line.toString())) copied();
      cb();
    },
  }));
  const src = new CountingMemory('src', RAW);
  const target = new CountingMemory('target', RAW);
  const devs = new Map([['src', src], ['target', target]]);
  const { set, control } = await startShadowSet({
    members: [{ location: 'src' }], overwrite: false, memberTimeoutMs: 60_000, log, clock: systemClock,
    open: async (loc) => devs.get(loc)!,
  });
  await set.write(0, Buffer.alloc(MiB, 0x5a), false);
  await set.write(2 * MiB, Buffer.alloc(MiB, 0xa5), false);
  return { set, control, src, target, done };
}

const dataArea = (m: MemoryBackend) => m.bytes.subarray(HEADER_BYTES, HEADER_BYTES + UNIT);

test('a full copy onto a target that held other data leaves no stale byte: its zero runs are zeroed', async () => {
  const { set, control, src, target, done } = await setWithHalfZeroSource();
  try {
    dataArea(target).fill(0xee); // an old file system, say: not empty, so nothing may be skipped
    await control.addMember({ location: 'target', noCopy: false, confirmOverwrite: true });
    await done;
    assert.equal(set.members.find((m) => m.location === 'target')!.heldNoDataAtAdmission, false);
    assert.ok(dataArea(target).equals(dataArea(src)), 'the target matches the source, zeros included');
    assert.ok(target.dataReads > 0, 'the zero runs were checked on the target');
  } finally {
    await set.stop();
  }
});

test('a full copy onto a target that held no data skips the zero runs of the source: no read, no write', async () => {
  const { set, control, src, target, done } = await setWithHalfZeroSource();
  try {
    await control.addMember({ location: 'target', noCopy: false, confirmOverwrite: false });
    await done;
    assert.equal(set.members.find((m) => m.location === 'target')!.heldNoDataAtAdmission, true);
    assert.ok(dataArea(target).equals(dataArea(src)), 'the target matches the source');
    assert.equal(target.dataReads, 0, 'the target was never read by the copy');
    assert.equal(target.reads, 2, 'by the add only its two record slots: a device that holds no data has nothing more to probe');
    assert.equal(target.dataWrites, 2, 'one write for each of the two 1 MiB runs with data, none for the zero runs');
  } finally {
    await set.stop();
  }
});

test('a member returning with its record is not asked whether it holds no data (for a file, a process spawned)', async () => {
  const { set, control, target, done } = await setWithHalfZeroSource();
  try {
    const added = await control.addMember({ location: 'target', noCopy: false, confirmOverwrite: false });
    await done;
    assert.equal(target.holdsNoDataAsked, 1, 'asked once, when it joined without a record');
    await control.removeMember({ member: added.id, minicopy: 'Required', force: false });
    await control.returnMember({ member: added.id, minicopy: 'Required' });
    assert.equal(target.holdsNoDataAsked, 1, 'not asked again: its record is data');
    assert.equal(set.members.find((m) => m.location === 'target')!.heldNoDataAtAdmission, false);
  } finally {
    await set.stop();
  }
});
