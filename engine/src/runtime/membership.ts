/**
 * The set's membership: its members and former members, the generation, the write-intent log and write
 * bitmaps, the records on the members' SCBs, and every change of a member's state (through the pure state
 * machine in core/member-state.ts). The control API and recovery planning change the membership only
 * through these methods. ShadowSet (shadow-set.ts) adds the I/O path on top.
 *
 * A departure is recorded on the members that stay before any write that depended on it is acknowledged;
 * each record is one snapshot (one generation, one membership) written to full members first.
 *
 * Why one file of ~450 lines: the order of every membership change — the change in memory, the
 * generation, the write bitmaps, the record on the members and the acknowledgements that wait for it —
 * is the argument that no acknowledged write is lost, and it has to be readable in one place. The pure
 * decisions are in core/ (member-state.ts, assemble.ts); the I/O path is in shadow-set.ts.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { ChunkBitmap } from '../core/chunk-bitmap.js';
import { EngineError, errorMessage } from '../core/errors.js';
import { isCopyTarget, step, type MemberEvent } from '../core/member-state.js';
import type { MemberState, Scb } from '../core/scb.js';
import type { Clock } from '../ports/clock.js';
import { rangeList } from './chunk-lists.js';
import { ChunkTracker, type WriteBitmap } from './chunk-tracker.js';
import type { Member } from './member.js';
import { writeScb } from './metadata.js';
import { RangeLocks } from './range-locks.js';
import { Resync } from './resync.js';
import { ResyncJob, type ResyncSettings } from './resync-job.js';
import { writeWitness } from './witness.js';

export interface FormerMember {
  id: string;
  path: string;
  state: MemberState;
  since: number;
  /** Not recorded in the SCB: why it is not attached (status only). */
  reason?: string;
}

export interface ShadowSetOptions {
  setId: string;
  size: number;
  chunkSize: number;
  generation: number;
  members: Member[];
  /** Former members recorded as Removed in the SCB (not attached now); `reason` says why, when known. */
  absent: FormerMember[];
  memberTimeoutMs: number;
  /** Write errors retried on a member before it is removed. */
  writeRetries?: number;
  resync?: Partial<ResyncSettings>;
  /** How often idle intent-log bits are cleared (ms). */
  intentClearMs?: number;
  /** Whether a member that fails gets a write bitmap (Required behaves as Optional here: a fault cannot be refused). */
  faultPolicy?: 'Required' | 'Optional' | 'Never';
  /** Passes of intentClearMs a chunk must stay unwritten before its intent bit is cleared (default 5). */
  intentIdlePasses?: number;
  /** Most bytes of chunks the write-intent log marks at once (0 or unset: no cap). */
  intentLogCapBytes?: number;
  /** The virtual unit's site: reads prefer full members at the same site. */
  site?: string;
  /** Where the last recorded generation is kept (see witness.ts). */
  stateFile?: string;
  log: Logger;
  clock: Clock;
}

/** How long a failed copy waits before the full copy that follows it starts. */
const COPY_RETRY_MS = 500;

export abstract class Membership {
  readonly setId: string;
  /** The virtual unit's size; it only grows (grow()). */
  size: number;
  /** While a growth is being recorded: the size the records name before the unit serves it. */
  private recordingSize: number | null = null;
  readonly chunkSize: number;
  generation: number;
  readonly members: Member[];
  protected absent: FormerMember[];
  readonly locks = new RangeLocks();
  readonly tracker: ChunkTracker;
  readonly resync: Resync;
  faultPolicy: 'Required' | 'Optional' | 'Never';
  readonly log: Logger;
  protected readonly clock: Clock;
  /**
   * The record of a member's departure, while it may not be on disk yet: acknowledgements wait for it,
   * so no write is acknowledged while the on-disk membership still lists a member that lacks it. A
   * record that failed stays here (the next acknowledgement tries again, and fails if that fails too).
   */
  private pendingRecord: Promise<void> | null = null;
  private metaChain: Promise<void> = Promise.resolve();
  private readonly stateFile: string | null;
  /** The newest generation recorded on a full member (`generation` runs ahead while a change is recorded). */
  recordedGeneration = 0;

  constructor(o: ShadowSetOptions) {
    this.setId = o.setId;
    this.size = o.size;
    this.chunkSize = o.chunkSize;
    this.generation = o.generation;
    this.members = o.members;
    this.absent = o.absent;
    this.log = o.log;
    this.clock = o.clock;
    this.faultPolicy = o.faultPolicy ?? 'Optional';
    this.stateFile = o.stateFile ?? null;
    this.tracker = new ChunkTracker(o.size, o.chunkSize, {
      metadataMembers: () => this.members.filter((m) => m.isWritable),
      memberFailed: (m, why) => {
        this.markGone(m, 'Faulted', why);
      },
      log: o.log,
      clock: o.clock,
      flush: () => this.flushMembers(),
    });
    this.tracker.setCap(o.intentLogCapBytes ?? 0);
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    this.resync = new Resync(
      {
        // A getter: the unit can grow while the engine runs.
        get size() {
          return self.size;
        },
        chunkSize: o.chunkSize,
        locks: this.locks,
        members: this.members,
        log: o.log,
        clock: o.clock,
        appInFlight: () => this.appInFlight(),
        removeMember: (m, st, why) => this.removeMember(m, st, why),
        checkpoint: () => this.persistMembership(),
        finished: (job, ok, why) => this.jobFinished(job, ok, why),
      },
      {
        copyBytesPerSecond: o.resync?.copyBytesPerSecond ?? 0,
        mergeBytesPerSecond: o.resync?.mergeBytesPerSecond ?? 0,
        maxCopies: o.resync?.maxCopies ?? 4,
        copySource: o.resync?.copySource ?? null,
      },
    );
  }

  /** Make every writable member's data durable (shadow-set.ts). */
  abstract flushMembers(): Promise<void>;

  /** Application requests in flight (resync yields to them). */
  protected abstract appInFlight(): number;

  /** A member left the writable ones (the I/O side forgets what it tracked of it). */
  protected departed(_m: Member): void {}

  /** Apply a state event to `m` (core/member-state.ts). Returns whether its state changed; throws if the event does not apply. */
  transition(m: Member, e: MemberEvent): boolean {
    const r = step(m.state, e);
    if (!r.ok) throw new EngineError('ENG_CONFLICT', `member ${m.location}: ${r.reason}`);
    m.state = r.state;
    return r.changed;
  }

  protected isLastFull(m: Member): boolean {
    return m.isFull && !this.members.some((x) => x !== m && x.isFull);
  }


  /** The SCB as it should be on `m` now. */
  scbFor(m: Member, clean: boolean): Scb {
    return {
      format: 1,
      setId: this.setId,
      memberId: m.id,
      generation: this.generation,
      clean,
      size: this.recordingSize ?? this.size,
      chunkSize: this.chunkSize,
      members: [
        // A merging member is a full member: the merge still owed is recorded by `clean` and the intent log.
        // Writable members first: the record holds six entries at most, and former ones are dropped first.
        ...[...this.members.filter((x) => x.isWritable), ...this.members.filter((x) => !x.isWritable)]
          .map((x) => ({ id: x.id, path: x.location, state: x.state === 'Merging' ? 'InSync' as const : x.state, since: this.generation })),
        // A former member that is back is listed once, as what it is now.
        ...this.absent.filter((a) => !this.members.some((x) => x.id === a.id)).map(({ id, path, state, since }) => ({ id, path, state, since })),
      ].slice(0, 6),
      dataValid: m.isFull,
      intentLogValid: this.tracker.intentEnabled,
      copies: this.resync.jobs
        .filter((j) => j.mode === 'FullCopy' && j.target)
        .map((j) => ({ mode: 'FullCopy' as const, target: j.target!.id, nextChunk: Math.min(j.durableCursor, this.tracker.chunks) })),
      bitmaps: this.tracker.descriptors(),
      updatedAt: this.clock.iso(),
    };
  }

  /**
   * Write the current membership to every writable member, serialized with other metadata updates.
   * Every member gets the same record (one generation, one membership), taken when the round starts;
   * a member whose write fails is removed, and that change is recorded by a round of its own.
   */
  persistMembership(clean = false): Promise<void> {
    const run = async () => {
      // A record names write bitmaps by their descriptors: their pages (a faulted member's bitmap starts
      // from the intent log) must be on the members before any record that names them.
      await this.tracker.persist();
      // Full members first, copy targets after: the newest generation then always reaches a member that
      // holds current data before it reaches one that does not. Otherwise a crash between the two could
      // leave the newest record only on copy targets, and the next start would find no member it may
      // read from (a full member with an older generation counts as stale).
      const full = this.members.filter((m) => m.isWritable && m.isFull);
      const rest = this.members.filter((m) => m.isWritable && !m.isFull);
      const records = new Map([...full, ...rest].map((m) => [m, this.scbFor(m, clean)]));
      const write = (m: Member) => m.io(async () => {
        const scb = records.get(m)!;
        await writeScb(m.backend, scb, ++m.scbSeq);
        m.scbGeneration = scb.generation;
      });
      const failed: [Member, unknown][] = [];
      const settle = async (ms: Member[]) => (await Promise.allSettled(ms.map(write))).forEach((r, i) => {
        if (r.status === 'rejected') failed.push([ms[i]!, r.reason]);
      });
      await settle(full);
      const okFull = full.length - failed.length;
      if (okFull > 0 || full.length === 0) await settle(rest);
      for (const [m, err] of failed) {
        this.log.error({ event: 'MetadataWriteFailed', member: m.id, err: errorMessage(err) }, 'SCB write failed');
        this.markGone(m, 'Faulted', `metadata write failed: ${errorMessage(err)}`);
      }
      if (okFull === 0 && full.length > 0) throw new EngineError('ENG_NO_FULL_MEMBER', 'membership could not be recorded on any full member');
      // The witness follows the members: a restart that finds only older records refuses (witness.ts).
      const recorded = okFull > 0 ? records.values().next().value?.generation : undefined;
      if (recorded === undefined) return;
      this.recordedGeneration = Math.max(this.recordedGeneration, recorded);
      if (this.stateFile) {
        await writeWitness(this.stateFile, this.setId, recorded).catch((e: unknown) =>
          this.log.error({ event: 'WitnessWriteFailed', file: this.stateFile, err: errorMessage(e) }, 'could not record the generation in the state file'));
      }
    };
    const p = this.metaChain.then(run, run);
    this.metaChain = p.catch(() => undefined);
    return p;
  }

  /**
   * Take `m` out of the writable members (in memory) and schedule the record of it. Returns false if it
   * was already gone, or if it is the last full member: that one is kept, and the request that failed on
   * it fails (the set would have nothing left to read from).
   */
  protected markGone(m: Member, state: 'Faulted' | 'Removed', why: string): boolean {
    if (!m.isWritable) return false;
    if (this.isLastFull(m)) {
      this.log.error({ event: 'LastMemberKept', member: m.id, path: m.location, reason: why }, `member ${m.location} failed (${why}) but is the last full member; it stays, and the failed request fails`);
      return false;
    }
    if (state === 'Faulted') this.faultBitmap(m);
    const was = m.state;
    this.transition(m, { type: state === 'Faulted' ? 'fault' : 'remove' });
    m.reason = why;
    this.generation++;
    m.abandon(`member ${m.location} left the set: ${why}`);
    this.departed(m);
    this.log.warn(
      { event: state === 'Faulted' ? 'MemberFaulted' : 'MemberRemoved', member: m.id, path: m.location, was, reason: why, generation: this.generation },
      `member ${m.location} removed from the shadow set: ${why}`,
    );
    this.recordDeparture();
    // Its backend goes once what it still runs has settled (a returning member is opened anew).
    m.backend.close().catch(() => undefined);
    return true;
  }

  /** Schedule the record of the membership as it is now; acknowledgements wait for it. */
  private recordDeparture(): Promise<void> {
    const p = this.persistMembership();
    this.pendingRecord = p;
    p.then(() => {
      if (this.pendingRecord === p) this.pendingRecord = null;
    }, () => undefined);
    return p;
  }

  /**
   * Resolves once every departure so far is on disk. If the record failed, it is tried again once for
   * this caller, and a second failure rejects: nothing may be acknowledged on a membership that is not
   * recorded.
   */
  protected async departuresRecorded(): Promise<void> {
    for (let retried = false; ;) {
      const p = this.pendingRecord;
      if (!p) return;
      try {
        await p;
      } catch (e) {
        if (this.pendingRecord === p) {
          if (retried) throw e;
          retried = true;
          this.recordDeparture();
        }
        continue;
      }
      if (this.pendingRecord === p) this.pendingRecord = null;
    }
  }

  /**
   * A full member that fails gets a write bitmap too (policy permitting), so that when it comes back a
   * minicopy suffices. It starts from the write-intent log: every write that may not have reached the
   * member was in flight, so its chunk is marked there. Its generation is the last one recorded on the
   * member itself, which is what the member will show when it returns.
   */
  private faultBitmap(m: Member): void {
    if (this.faultPolicy === 'Never' || !m.isFull || this.resync.merging || m.scbGeneration === null) return;
    if (this.bitmapOf(m.id)) return;
    const slot = this.tracker.freeSlot();
    if (slot === null) {
      this.log.warn({ event: 'BitmapNotCreated', member: m.id, reason: 'all write-bitmap slots are in use' }, 'no write bitmap for the faulted member');
      return;
    }
    const id = this.newBitmap(m.id, slot, m.scbGeneration, this.tracker.wil.list());
    const map = this.tracker.bitmaps.get(id)!.map;
    this.log.info({ event: 'BitmapCreated', bitmap: id, member: m.id, reason: 'member faulted', seededChunks: map.count }, 'write bitmap created for the faulted member');
  }

  /**
   * Take a member out of the set and record it on the members that stay. The last full member is kept
   * (see markGone); the caller sees it still writable.
   */
  async removeMember(m: Member, state: 'Faulted' | 'Removed', why: string): Promise<void> {
    this.markGone(m, state, why);
    await this.departuresRecorded();
  }

  /**
   * Put `m` among the writable members (or in place of `replace`, the object of a member that left):
   * from this moment every write reaches it. Bumps the generation; the caller records the membership.
   */
  admit(m: Member, replace?: Member): void {
    const i = replace ? this.members.indexOf(replace) : -1;
    if (i >= 0) this.members[i] = m;
    else this.members.push(m);
    this.generation++;
  }

  /**
   * Merge `chunks` (before any copy). Their intent bits stay set until merged, so a crash during the
   * merge still knows what is owed.
   */
  startMerge(chunks: Iterable<number>): void {
    this.tracker.pinned = this.resync.addMerge(chunks);
  }

  /** Former members recorded in the metadata and not attached now. */
  formerMembers(): readonly FormerMember[] {
    return this.absent.filter((a) => !this.members.some((x) => x.id === a.id));
  }

  /** A former member recorded in the metadata but not attached now (by id or last path). */
  formerMember(ref: string): { id: string; path: string } | undefined {
    return this.absent.find((a) => a.id === ref) ?? this.absent.find((a) => a.path === ref);
  }

  /** Drop a former member from the record (it is attached again). */
  forgetFormer(id: string): void {
    this.absent = this.absent.filter((a) => a.id !== id);
  }

  // ---------- write bitmaps ----------

  /** The write bitmap kept for a member, if any. */
  bitmapOf(memberId: string): WriteBitmap | undefined {
    return [...this.tracker.bitmaps.values()].find((b) => b.desc.member === memberId);
  }

  /**
   * A new write bitmap for `memberId`, whose data is current as of `generation`, with `seed` chunks
   * marked (it is not recorded until the next metadata write). Returns its id.
   */
  newBitmap(memberId: string, slot: number, generation: number, seed: Iterable<number> = []): string {
    const id = randomUUID();
    const map = new ChunkBitmap(this.tracker.chunks);
    for (const c of seed) map.set(c);
    map.touchAll();
    this.tracker.bitmaps.set(id, {
      desc: {
        id, member: memberId, slot, chunkSize: this.chunkSize, coveredBytes: this.size, createdAt: this.clock.iso(),
        generation, masterNode: process.env.NODE_NAME ?? hostname(),
      },
      map,
    });
    return id;
  }

  /** Forget a write bitmap (in memory; the next record drops its descriptor). */
  dropBitmap(id: string): boolean {
    return this.tracker.bitmaps.delete(id);
  }

  /** Delete a write bitmap by request and record it: that member's return will be a full copy. */
  async deleteBitmap(id: string): Promise<boolean> {
    const b = this.tracker.bitmaps.get(id);
    if (!b) return false;
    if (this.resync.jobs.some((j) => j.bitmapId === id)) {
      throw new EngineError('ENG_CONFLICT', `write bitmap ${id} is in use by a running minicopy`);
    }
    this.tracker.bitmaps.delete(id);
    await this.persistMembership();
    this.log.info({ event: 'BitmapDeleted', bitmap: id, member: b.desc.member }, 'write bitmap deleted: the member will need a full copy');
    return true;
  }

  /** A bitmap covers the unit's size when it was made: chunks past that (the set grew) are marked. */
  coverWholeUnit(b: WriteBitmap): void {
    this.tracker.coverGrown(b);
  }

  /**
   * Grow the unit to `size` bytes (control.ts has checked the members, the chunk limit and that no
   * resync runs). Writes are held while it happens. In order:
   * 1. the log and every write bitmap are extended (a bitmap marks everything past what it covered, so
   *    an absent member's minicopy copies the grown region); with more than one member, the chunks of
   *    the grown region are marked in the log and pinned: the members' bytes there are whatever their
   *    devices held, and must be made identical before anyone reads them;
   * 2. a new generation naming the new size is recorded on every member (the log and bitmaps first);
   * 3. only then does the unit serve the new size, and a merge of the grown region starts (a read of a
   *    chunk not merged yet is merged first, as after a crash; a crash before it ends merges it from the
   *    log). A write past the old end is never acknowledged before the record that makes it part of the
   *    unit: a crash would otherwise bring the set back at the old size without it.
   */
  async grow(size: number): Promise<void> {
    const from = this.size;
    const release = await this.locks.acquire(0, from);
    try {
      this.tracker.grow(size);
      const fresh: number[] = [];
      const writable = this.members.filter((m) => m.isWritable);
      if (writable.length > 1) {
        for (let c = Math.floor(from / this.chunkSize); c < this.tracker.chunks; c++) fresh.push(c);
        const pin = new ChunkBitmap(this.tracker.chunks);
        for (const c of fresh) {
          this.tracker.wil.set(c);
          pin.set(c);
        }
        this.tracker.pinned = pin;
      }
      this.recordingSize = size;
      this.generation++;
      try {
        await this.persistMembership();
      } catch (e) {
        // Not recorded on any full member: the unit keeps its size (the extended log and bitmaps only cost
        // copying a little more). Pinned bits are released for the periodic clearing.
        this.tracker.pinned = null;
        throw e;
      } finally {
        this.recordingSize = null;
      }
      this.size = size;
      if (fresh.length > 0) {
        for (const m of this.members) this.transition(m, { type: 'mergeStart' });
        this.startMerge(fresh);
      }
      this.log.info({ event: 'ShadowSetResized', from, size, generation: this.generation, mergeChunks: fresh.length }, `virtual unit grown from ${from} to ${size} bytes`);
    } finally {
      release();
    }
  }

  // ---------- the log and bitmaps as found at start ----------

  /** The intent log (union over the members) and the bitmaps read from the members at start. */
  loadLog(wil: ChunkBitmap | null, bitmaps: WriteBitmap[]): void {
    this.tracker.load(wil, bitmaps);
  }

  /** Write the whole log and every bitmap to every member (see ChunkTracker.rewriteAll). */
  rewriteLog(): Promise<void> {
    return this.tracker.rewriteAll();
  }

  // ---------- merges and copies ----------

  /**
   * Queue the copy a copy target needs (at start, or when it joins): its state says which, Minicopy or
   * FullCopy, whatever the plan assumed before the bitmap was checked.
   */
  beginCopy(job: ResyncJob): void {
    const t = job.target!;
    if (!isCopyTarget(t.state)) throw new EngineError('ENG_CONFLICT', `member ${t.location} is ${t.state}, not a copy target`);
    this.transition(t, { type: 'copyPlanned', mode: job.mode === 'Minicopy' ? 'Minicopy' : 'FullCopy' });
    this.resync.add(job);
  }

  /**
   * Demand a merge: `full` marks every chunk in the intent log first (so a crash during it cannot lose
   * track); full members become Merging; the membership is recorded. Returns the chunks to merge, or
   * null if a merge already runs.
   */
  async demandMerge(full: boolean): Promise<number | null> {
    if (this.resync.merging) return null;
    if (full) {
      this.tracker.wil.setAll();
      await this.tracker.persist();
    }
    for (const m of this.members) this.transition(m, { type: 'mergeStart' });
    // With `full`, every chunk was just marked: the log's list is the whole unit.
    this.startMerge(this.tracker.wil.list());
    await this.persistMembership();
    return this.resync.mergePending?.count ?? 0;
  }

  /** A resync job ended: member states and bitmaps follow, and the membership is recorded. */
  private async jobFinished(job: ResyncJob, ok: boolean, why: string): Promise<void> {
    if (job.mode === 'Merge') {
      if (!ok) return;
      for (const m of this.members) this.transition(m, { type: 'mergeComplete' });
      this.tracker.pinned = null;
      await this.persistMembership().catch(() => undefined);
      return;
    }
    const t = job.target!;
    if (ok && t.isWritable) {
      this.transition(t, { type: 'copyComplete' });
      t.reason = job.mode === 'Minicopy' ? 'minicopy complete' : 'full copy complete';
      if (job.bitmapId) this.tracker.bitmaps.delete(job.bitmapId);
      this.generation++;
      await this.persistMembership().catch(() => undefined);
      return;
    }
    if (job.cancelled || !t.isWritable) return;
    // A minicopy that fails midway becomes a full copy; a full copy resumes where it stopped.
    if (job.mode === 'Minicopy' && job.bitmapId) this.tracker.bitmaps.delete(job.bitmapId);
    const from = job.mode === 'FullCopy' ? job.safeCursor() : 0;
    this.transition(t, { type: 'copyFailed' });
    t.reason = `${job.mode} failed (${why}); full copy`;
    this.log.warn({ event: 'CopyRetry', member: t.id, mode: job.mode, reason: why }, `${job.mode} failed; a full copy follows`);
    await new Promise((r) => setTimeout(r, COPY_RETRY_MS));
    if (t.isWritable) this.resync.add(new ResyncJob('FullCopy', t, rangeList(Math.min(from, this.tracker.chunks), this.tracker.chunks), this.resync.hostRef, this.resync.settings.copyBytesPerSecond));
  }
}
