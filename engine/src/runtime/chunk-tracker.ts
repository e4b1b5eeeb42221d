/**
 * The write-intent log and the write bitmaps, kept in memory and persisted on members before any write
 * that depends on them. A chunk newly marked dirty costs one batched metadata write (with FUA) on every
 * member that stays; writes to chunks already marked cost nothing. Intent bits are cleared lazily, only
 * after the members were flushed with no write to the chunk in flight.
 *
 * The log has a cap (chunks marked at once): a workload spread over the whole unit would otherwise keep
 * every group marked, and the merge after a crash would be a full one. Once new marks take the log past
 * 3/4 of its cap, the least recently written groups with no write in flight are cleared (after one
 * flush of the members) down to half of it, in the background: writes go on meanwhile, and only a write
 * that would take the log over the cap itself waits for that clearing. One flush thus clears a quarter
 * to a half of the cap, and its write-back overlaps the writes that follow. The new mark itself is
 * recorded at once, like any other: the cap is a bound on the next merge, never a reason to issue a
 * write whose chunk is not yet marked on the members.
 *
 * Somewhat over 300 lines: marking, batching, lazy clearing and the cap all decide when a bit may be
 * set or cleared relative to the batches that record it, and that ordering is read best in one place.
 */
import type { Logger } from 'pino';
import { ChunkBitmap, PAGE_BYTES } from '../core/chunk-bitmap.js';
import { EngineError, errorMessage } from '../core/errors.js';
import { bitmapSlotOffset, chunkCount, chunksOf, INTENT_LOG_OFFSET, BITMAP_SLOTS } from '../core/geometry.js';
import type { BitmapDescriptor } from '../core/scb.js';
import type { Clock } from '../ports/clock.js';
import type { Member } from './member.js';

/** The share of the cap past which groups are cleared in the background, and the share they are cleared down to. */
const EVICT_FROM = 3 / 4;
const EVICT_TO = 1 / 2;

export interface WriteBitmap {
  desc: BitmapDescriptor;
  map: ChunkBitmap;
}

export interface TrackerHost {
  /** Members that hold the intent log and bitmaps: every writable member. */
  metadataMembers(): Member[];
  /**
   * Called when a member failed a metadata write: it leaves the writable members at once. Not awaited:
   * its departure is recorded by a membership round (which itself writes pending pages first), and the
   * writes that depend on it wait for that record before they are acknowledged.
   */
  memberFailed(m: Member, why: string): void;
  log: Logger;
  /** For the time spent in metadata writes (monotonic). */
  clock: Clock;
  /** Make every writable member's data durable (before intent bits are cleared to keep the cap). */
  flush(): Promise<void>;
}

export class ChunkTracker {
  /** Not readonly: the unit can grow (grow()). */
  chunks: number;
  wil: ChunkBitmap;
  readonly bitmaps = new Map<string, WriteBitmap>();
  /** Whether writes mark the intent log (off only for the benchmark that measures its cost). */
  intentEnabled = true;
  private readonly inflight = new Map<number, number>();
  private lastWrite: Uint32Array;
  private epoch = 1;
  /** Chunks that must stay marked (a merge has not reached them yet). */
  pinned: ChunkBitmap | null = null;
  private nextBatch: Promise<void> | null = null;
  private current: Promise<void> | null = null;
  /** Most chunks marked at once (0: no cap); see the top of this file. */
  capChunks = 0;
  /** A write counter, and the counter's value at each group's latest write (least recently written first). */
  private writes = 0;
  private groupWrite: Float64Array;
  private evicting: Promise<void> | null = null;
  private capWarned = false;

  /**
   * Chunks marked together in the intent log. A write marks its chunk's whole group, so a workload
   * spread over the unit costs one metadata write per group, not per chunk; a merge after a crash covers
   * whole groups (1 MiB with 64 KiB chunks).
   */
  readonly intentGroup: number;

  constructor(public size: number, readonly chunkSize: number, private readonly host: TrackerHost, intentGroupBytes = 1024 * 1024) {
    this.intentGroup = Math.max(1, Math.floor(intentGroupBytes / chunkSize));
    this.chunks = chunkCount(size, chunkSize);
    this.wil = new ChunkBitmap(this.chunks);
    this.lastWrite = new Uint32Array(this.chunks);
    this.groupWrite = new Float64Array(Math.ceil(this.chunks / this.intentGroup));
  }

  /** The chunks [first, end) of the intent group that holds chunk `c` (the last group may be short). */
  private groupOf(c: number): [number, number] {
    const g0 = c - (c % this.intentGroup);
    return [g0, Math.min(g0 + this.intentGroup, this.chunks)];
  }

  /** The cap in bytes of marked chunks (0: none); at least one group. */
  setCap(bytes: number): void {
    this.capChunks = bytes <= 0 ? 0 : Math.max(this.intentGroup, Math.floor(bytes / this.chunkSize));
  }

  /**
   * Note a write to [offset, offset+length) before it is issued. Returns a promise to await before
   * issuing it when some bit it depends on is not yet on the members, else null.
   */
  begin(offset: number, length: number): Promise<void> | null {
    const [first, last] = chunksOf(offset, length, this.chunkSize);
    let fresh = false;
    let marked = false;
    const seq = ++this.writes;
    this.stats.writes++;
    for (let c = first; c <= last; c++) {
      this.inflight.set(c, (this.inflight.get(c) ?? 0) + 1);
      this.lastWrite[c] = this.epoch;
      this.groupWrite[Math.floor(c / this.intentGroup)] = seq;
      if (this.intentEnabled && !this.wil.has(c)) {
        // Mark the chunk's whole group: neighbours written next need no metadata write of their own.
        const [g0, g1] = this.groupOf(c);
        for (let g = g0; g < g1; g++) if (this.wil.set(g)) fresh = marked = true;
      }
      for (const b of this.bitmaps.values()) if (c < b.map.chunks && b.map.set(c)) fresh = true;
    }
    if (!fresh) return this.nextBatch ?? this.current;
    // A bit set in memory is always in a batch already scheduled: a later write to the same chunk finds
    // it set and waits only for the pending batch, so that batch must carry it.
    const batch = this.schedule();
    if (marked && this.capChunks > 0) {
      // Over the cap: this write also waits while older groups are cleared, so writers cannot outrun it.
      if (this.wil.count > this.capChunks) return Promise.all([batch, this.makeRoom()]).then(() => undefined);
      // Nearing it: start clearing now, so the flush runs while writes go on.
      if (this.wil.count > this.capChunks * EVICT_FROM) void this.makeRoom();
    }
    return batch;
  }

  /**
   * Bring the log back under its cap if it went over while every marked group was busy (the set's
   * periodic pass calls this), and record the result.
   */
  async keepCap(): Promise<void> {
    if (this.capChunks === 0 || this.wil.count <= this.capChunks) return;
    await this.makeRoom();
  }

  /** Resolves when no clearing for the cap is running (tests compare the log in memory and on the members). */
  async capSettled(): Promise<void> {
    while (this.evicting) await this.evicting;
  }

  /** One eviction at a time; writes that go over the cap meanwhile wait for the same one. */
  private makeRoom(): Promise<void> {
    // The cap is a bound on the next merge, not a condition of writing: a failed eviction (a flush that
    // failed) clears nothing, and the writes go on.
    this.evicting ??= this.evict()
      .catch((e: unknown) => this.host.log.warn({ event: 'IntentLogCapFailed', err: errorMessage(e) }, 'could not clear groups to keep the write-intent log\'s cap'))
      .finally(() => (this.evicting = null));
    return this.evicting;
  }

  /**
   * Clear the least recently written groups with no write in flight (and not pinned by a merge) until
   * the log is at EVICT_TO of its cap, after a flush made their data durable on every member. If every marked
   * group is busy, the log stays over its cap for now (writes are never held back by it).
   */
  private async evict(): Promise<void> {
    const target = Math.floor(this.capChunks * EVICT_TO);
    const busy = (g0: number) => {
      const [, g1] = this.groupOf(g0);
      for (let c = g0; c < g1; c++) if (this.inflight.has(c) || this.pinned?.has(c)) return true;
      return false;
    };
    const marked = new Set<number>();
    for (const c of this.wil.list()) marked.add(this.groupOf(c)[0]);
    const idle = [...marked].filter((g0) => !busy(g0)).sort((a, b) => this.groupWrite[a / this.intentGroup]! - this.groupWrite[b / this.intentGroup]!);
    const chosen: { g0: number; seq: number }[] = [];
    let after = this.wil.count;
    for (const g0 of idle) {
      if (after <= target) break;
      chosen.push({ g0, seq: this.groupWrite[g0 / this.intentGroup]! });
      const [, g1] = this.groupOf(g0);
      for (let c = g0; c < g1; c++) if (this.wil.has(c)) after--;
    }
    if (chosen.length === 0) {
      if (!this.capWarned && this.wil.count > this.capChunks) this.host.log.warn({ event: 'IntentLogOverCap', marked: this.wil.count, cap: this.capChunks }, 'the write-intent log is over its cap: every marked group has a write in flight');
      this.capWarned = this.wil.count > this.capChunks;
      return;
    }
    await this.host.flush();
    let n = 0;
    for (const { g0, seq } of chosen) {
      // Written again (or being written) since it was chosen: its data may not be on every member yet.
      if (this.groupWrite[g0 / this.intentGroup] !== seq || busy(g0)) continue;
      const [, g1] = this.groupOf(g0);
      for (let c = g0; c < g1; c++) if (this.wil.clear(c)) n++;
    }
    this.stats.evicted += n;
    this.stats.evictions++;
    this.capWarned = false;
    if (n > 0) await this.schedule();
  }

  end(offset: number, length: number): void {
    const [first, last] = chunksOf(offset, length, this.chunkSize);
    for (let c = first; c <= last; c++) {
      const n = (this.inflight.get(c) ?? 1) - 1;
      if (n <= 0) this.inflight.delete(c);
      else this.inflight.set(c, n);
    }
  }

  /** Persist whatever changed; resolves when every bit set so far is on every metadata member. */
  persist(): Promise<void> {
    return this.schedule();
  }

  /**
   * Queue a batch (one at a time, in order): it writes the pages dirty when it starts to every metadata
   * member. Bits set while a batch waits to start join it; bits set once it runs go to the next one.
   */
  private schedule(): Promise<void> {
    if (this.nextBatch) return this.nextBatch;
    const holder: { p: Promise<void> | null } = { p: null };
    const batch = this.enqueue(async () => {
      this.nextBatch = null; // bits set from here on belong to a later batch
      this.current = holder.p;
      try {
        await this.writeDirty();
      } finally {
        if (this.current === holder.p) this.current = null;
      }
    });
    holder.p = batch;
    this.nextBatch = batch;
    return batch;
  }

  /** Metadata writes of the log and bitmaps run one after another, in the order they were asked for. */
  private tail: Promise<void> = Promise.resolve();
  private enqueue(step: () => Promise<void>): Promise<void> {
    const p = this.tail.then(step, step);
    this.tail = p.catch(() => undefined);
    return p;
  }

  /** The log's and the bitmaps' pages that `pick` returns, with their places in the metadata header. */
  private metadataPages(pick: (map: ChunkBitmap) => { page: number; bytes: Uint8Array }[]): { offset: number; bytes: Uint8Array }[] {
    const out: { offset: number; bytes: Uint8Array }[] = [];
    for (const p of pick(this.wil)) out.push({ offset: INTENT_LOG_OFFSET + p.page * PAGE_BYTES, bytes: p.bytes });
    for (const b of this.bitmaps.values()) {
      const base = bitmapSlotOffset(b.desc.slot);
      for (const p of pick(b.map)) out.push({ offset: base + p.page * PAGE_BYTES, bytes: p.bytes });
    }
    return out;
  }

  /** Metadata writes made for the log and bitmaps, and the time spent in them. */
  readonly stats = { writes: 0, persists: 0, pages: 0, persistMs: 0, cleared: 0, evictions: 0, evicted: 0 };

  private async writeDirty(): Promise<void> {
    const pages = this.metadataPages((m) => m.takeDirtyPages());
    if (pages.length === 0) return;
    const t0 = this.host.clock.monotonic();
    await this.writePages(this.host.metadataMembers(), pages);
    this.stats.persists++;
    this.stats.pages += pages.length;
    this.stats.persistMs += this.host.clock.monotonic() - t0;
  }

  /**
   * Write every page of the log and of the bitmaps to the given members (a member joining the set), in
   * order with the batches: pages are taken when this runs, and bits set later reach the members through
   * later batches once they are among the metadata members.
   */
  writeAllTo(members: Member[]): Promise<void> {
    return this.enqueue(() => this.writePages(members, this.metadataPages((m) => m.allPages())));
  }

  private async writePages(members: Member[], pages: { offset: number; bytes: Uint8Array }[]): Promise<void> {
    const results = await Promise.allSettled(
      members.map((m) =>
        // Each page with FUA: all are on stable storage before the writes that depend on them.
        m.io(() => Promise.all(pages.map((p) => m.backend.write(Buffer.from(p.bytes.buffer, p.bytes.byteOffset, p.bytes.length), p.offset, true)))),
      ),
    );
    let okFull = 0;
    for (let i = 0; i < members.length; i++) {
      const r = results[i]!;
      if (r.status === 'fulfilled') {
        if (members[i]!.isFull) okFull++;
        continue;
      }
      this.host.log.error({ event: 'MetadataWriteFailed', member: members[i]!.id, err: errorMessage(r.reason) }, 'intent log / bitmap write failed');
      this.host.memberFailed(members[i]!, `metadata write failed: ${errorMessage(r.reason)}`);
    }
    if (okFull === 0 && members.some((m) => m.isFull)) {
      throw new EngineError('ENG_NO_FULL_MEMBER', 'the write-intent log could not be recorded on any full member');
    }
  }

  /**
   * Lazy clearing: drop intent bits of chunks with no write in flight and none in the last `idlePasses`
   * calls, after `flush` made the members' data durable. A chunk cleared and written again costs a
   * metadata write forced to media, so hot chunks are kept. Returns how many bits were cleared.
   */
  async clearIdle(flush: () => Promise<void>, idlePasses = 1): Promise<number> {
    const mark = this.epoch++;
    // Written in one of the last `idlePasses` passes (or in flight): still hot, keep the bit.
    const threshold = mark - idlePasses + 1;
    const idle = (c: number) => !this.inflight.has(c) && this.lastWrite[c]! < threshold && !this.pinned?.has(c);
    // Groups are cleared whole, or a hot neighbour would mark the group again at once.
    const groupIdle = (c: number) => {
      const [g0, g1] = this.groupOf(c);
      for (let g = g0; g < g1; g++) if (this.wil.has(g) && !idle(g)) return false;
      return true;
    };
    const candidates = this.wil.list().filter((c) => idle(c) && groupIdle(c));
    if (candidates.length === 0) return 0;
    await flush();
    let n = 0;
    for (const c of candidates) {
      if (this.inflight.has(c) || this.lastWrite[c]! >= threshold || this.pinned?.has(c)) continue;
      if (this.wil.clear(c)) n++;
    }
    this.stats.cleared += n;
    if (n > 0) await this.schedule();
    return n;
  }

  /**
   * Write the whole log and every bitmap to every metadata member. At start the log is the union of the
   * members' logs and a bitmap is read from one member; a bit found on one member only (its write was in
   * flight at a crash) would otherwise stay only there, since a later write to that chunk sees it set and
   * marks nothing — and if that member then left, no log would remember the chunk.
   */
  rewriteAll(): Promise<void> {
    this.wil.touchAll();
    for (const b of this.bitmaps.values()) b.map.touchAll();
    return this.schedule();
  }

  freeSlot(): number | null {
    const used = new Set([...this.bitmaps.values()].map((b) => b.desc.slot));
    for (let s = 0; s < BITMAP_SLOTS; s++) if (!used.has(s)) return s;
    return null;
  }

  /** Load the log (union over members) and bitmaps read from the members at start. */
  load(wil: ChunkBitmap | null, bitmaps: WriteBitmap[]): void {
    if (wil) for (const c of wil.list()) this.wil.set(c);
    this.wil.takeDirtyPages();
    for (const b of bitmaps) {
      b.map.takeDirtyPages();
      this.bitmaps.set(b.desc.id, b);
    }
  }

  descriptors(): BitmapDescriptor[] {
    return [...this.bitmaps.values()].map((b) => b.desc);
  }

  /**
   * The unit grew to `size` bytes (the chunk size stays). The log gets room for the new chunks, and every
   * write bitmap is extended over them (see coverGrown). All their pages are written by the next persist.
   */
  grow(size: number): void {
    const chunks = chunkCount(size, this.chunkSize);
    this.size = size;
    if (chunks > this.chunks) {
      this.wil = new ChunkBitmap(chunks, this.wil.bits);
      this.wil.touchAll();
      const lastWrite = new Uint32Array(chunks);
      lastWrite.set(this.lastWrite);
      this.lastWrite = lastWrite;
      const groupWrite = new Float64Array(Math.ceil(chunks / this.intentGroup));
      groupWrite.set(this.groupWrite);
      this.groupWrite = groupWrite;
      this.chunks = chunks;
    }
    for (const b of this.bitmaps.values()) this.coverGrown(b);
  }

  /**
   * A write bitmap covers the unit as it was when it was made (`coveredBytes`). When the unit is larger,
   * the bitmap is extended and every chunk from the one holding its last covered byte onwards is marked:
   * the absent member never received anything there (nor, in a partial last chunk, past the old end), so
   * its minicopy must copy it. Afterwards the bitmap covers the whole unit.
   */
  coverGrown(b: WriteBitmap): void {
    if (b.desc.coveredBytes >= this.size) return;
    const map = b.map.chunks >= this.chunks ? b.map : new ChunkBitmap(this.chunks, b.map.bits);
    for (let c = Math.floor(b.desc.coveredBytes / this.chunkSize); c < this.chunks; c++) map.set(c);
    map.touchAll();
    b.map = map;
    b.desc = { ...b.desc, coveredBytes: this.size };
  }
}
