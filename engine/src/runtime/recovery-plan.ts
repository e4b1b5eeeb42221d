/**
 * What runs after assembly: load the write-intent log and the write bitmaps from the members, then
 * queue a merge (unclean stop), minicopies (returning members with a usable bitmap) and full copies
 * (new or stale members, resuming from their checkpoint).
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { AssemblyPlan } from '../core/assemble.js';
import { chooseReturn } from '../core/member-state.js';
import { ChunkBitmap, PAGE_BYTES } from '../core/chunk-bitmap.js';
import { BITMAP_SLOTS, bitmapSlotOffset, INTENT_LOG_OFFSET } from '../core/geometry.js';
import type { Scb } from '../core/scb.js';
import type { WriteBitmap } from './chunk-tracker.js';
import type { Member } from './member.js';
import { bitmapList, rangeList } from './chunk-lists.js';
import { ResyncJob } from './resync-job.js';
import type { ShadowSet } from './shadow-set.js';

async function readMap(m: Member, offset: number, chunks: number): Promise<ChunkBitmap> {
  const bytes = Math.ceil(Math.ceil(chunks / 8) / PAGE_BYTES) * PAGE_BYTES;
  const buf = Buffer.alloc(Math.max(bytes, PAGE_BYTES));
  await m.backend.read(buf, offset);
  return new ChunkBitmap(chunks, buf);
}

function freeSlot(bitmaps: WriteBitmap[]): number | null {
  for (let s = 0; s < BITMAP_SLOTS; s++) if (!bitmaps.some((b) => b.desc.slot === s)) return s;
  return null;
}

function* everyChunk(n: number): Generator<number> {
  for (let c = 0; c < n; c++) yield c;
}

export interface MemberRecord {
  member: Member;
  /** The SCB found on this member at start (null for blank or foreign members). */
  scb: Scb | null;
}

/**
 * `awayPaths`: members given at start that could not be opened. One that was a full member gets a write
 * bitmap (policy permitting), as a member that faults does, so its return can be a minicopy.
 */
export async function planRecovery(set: ShadowSet, plan: AssemblyPlan, records: MemberRecord[], awayPaths: string[] = []): Promise<void> {
  const chunks = set.tracker.chunks;
  const sources = records.filter((r) => r.member.isFull);
  const ref = plan.reference;

  // Intent log: the union over every current member's log.
  let wil: ChunkBitmap | null = null;
  let trusted = true;
  if (ref) {
    wil = new ChunkBitmap(chunks);
    for (const r of sources) {
      if (!r.scb?.intentLogValid) trusted = false;
      wil.union(await readMap(r.member, INTENT_LOG_OFFSET, chunks));
    }
  }
  // Write bitmaps as the newest record lists them, read from a current member.
  const bitmaps: WriteBitmap[] = [];
  for (const d of ref?.bitmaps ?? []) {
    const bchunks = Math.ceil(d.coveredBytes / d.chunkSize);
    if (d.chunkSize !== set.chunkSize) continue; // another geometry: unusable, a full copy follows
    bitmaps.push({ desc: d, map: await readMap(sources[0]!.member, bitmapSlotOffset(d.slot), bchunks) });
  }
  for (const rec of plan.missing) {
    if (!awayPaths.includes(rec.path) || rec.state !== 'InSync' || set.faultPolicy === 'Never') continue;
    if (bitmaps.some((b) => b.desc.member === rec.id)) continue;
    const slot = freeSlot(bitmaps);
    if (slot === null) continue;
    // Its own record was last written with the newest one (it was a full member in it); if it was not,
    // the generations differ on its return and the bitmap is not used.
    const map = new ChunkBitmap(chunks);
    if (wil) for (const c of wil.list()) map.set(c);
    map.touchAll();
    const id = randomUUID();
    bitmaps.push({
      desc: { id, member: rec.id, slot, chunkSize: set.chunkSize, coveredBytes: set.size, createdAt: new Date().toISOString(), generation: ref!.generation, masterNode: process.env.NODE_NAME ?? hostname() },
      map,
    });
    set.log.info({ event: 'BitmapCreated', bitmap: id, member: rec.id, reason: 'member could not be opened at start', seededChunks: map.count }, 'write bitmap created for a member missing at start');
  }
  set.loadLog(wil, bitmaps);

  const writable = records.filter((r) => r.member.isWritable);
  if (plan.unclean && writable.length > 1) {
    const all = !trusted || !wil;
    for (const r of sources) set.transition(r.member, { type: 'mergeStart' });
    set.log.info(
      { event: 'MergeRequired', full: all, chunks: all ? chunks : wil!.count, reason: all ? 'intent log not trusted' : 'unclean stop' },
      all ? 'unclean stop and no usable write-intent log: full merge' : `unclean stop: minimerge of ${wil!.count} chunks`,
    );
    const merged = all ? [...everyChunk(chunks)] : wil!.list();
    // A chunk the merge may change differs from what an absent member holds, even if it was written
    // before the member left (a power loss can take back writes the staying members never flushed),
    // so it joins every write bitmap: the member's minicopy then covers it.
    for (const bm of bitmaps) for (const c of merged) if (c < bm.map.chunks) bm.map.set(c);
    set.startMerge(merged);
  }
  // Every member gets the whole log and bitmaps as loaded (see rewriteAll) before any I/O is accepted.
  if (ref) await set.rewriteLog();

  for (const r of records) {
    const m = r.member;
    if (m.state !== 'FullCopy') continue;
    const bm = bitmaps.find((b) => b.desc.member === m.id);
    // A minicopy if the member is as it was when it left, or if it was already in a minicopy from this
    // bitmap when the engine stopped (every write since went to it too): core/member-state.ts.
    const choice = chooseReturn({
      setId: set.setId, memberId: m.id, chunkSize: set.chunkSize, record: r.scb, bitmap: bm ? bm.desc : null,
      resumingMinicopy: ref?.members.some((x) => x.id === m.id && x.state === 'Minicopy') ?? false,
    });
    if (bm && choice.mode === 'Minicopy') {
      set.coverWholeUnit(bm); // regions past what the bitmap covered need copying too
      m.reason = `returning with write bitmap ${bm.desc.id}`;
      set.beginCopy(new ResyncJob('Minicopy', m, bitmapList(bm.map), set.resync.hostRef, set.resync.settings.copyBytesPerSecond, bm.desc.id));
      continue;
    }
    if (bm) {
      set.dropBitmap(bm.desc.id);
      set.log.warn({ event: 'BitmapUnusable', bitmap: bm.desc.id, member: m.id, reason: choice.why }, `write bitmap does not match the returning member (${choice.why}); full copy`);
    }
    const cp = ref?.copies.find((c) => c.target === m.id);
    const from = cp ? Math.min(cp.nextChunk, chunks) : 0;
    const redo = plan.unclean && wil ? wil.list() : [];
    set.beginCopy(new ResyncJob('FullCopy', m, rangeList(from, chunks, redo), set.resync.hostRef, set.resync.settings.copyBytesPerSecond));
    if (from > 0) set.log.info({ event: 'CopyResumed', member: m.id, fromChunk: from }, 'full copy resumes from its checkpoint');
  }
}
