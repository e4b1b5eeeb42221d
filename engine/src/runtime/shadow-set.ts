/**
 * The virtual unit: mirrors writes to every writable member, reads from the cheapest full member,
 * repairs read errors, and removes members that keep failing, recording each membership change in
 * the SCB of every member that stays (generation bumped) before any write that depended on it is
 * acknowledged.
 */
import type { Logger } from 'pino';
import { EngineError, errorMessage, isEngineError } from '../core/errors.js';
import { HEADER_BYTES } from '../core/geometry.js';
import type { MemberState, Scb } from '../core/scb.js';
import type { Clock } from '../ports/clock.js';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { ChunkBitmap } from '../core/chunk-bitmap.js';
import { ChunkTracker } from './chunk-tracker.js';
import type { Member } from './member.js';
import { writeScb } from './metadata.js';
import { RangeLocks } from './range-locks.js';
import { Resync } from './resync.js';
import type { ResyncJob, ResyncSettings } from './resync-job.js';
import { writeWitness } from './witness.js';
import { settledWithin } from './settle-within.js';

/** How long a stop waits for the members' backends to close. */
const CLOSE_WAIT_MS = 5000;

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
  /** The virtual unit's site: reads prefer full members at the same site. */
  site?: string;
  /** Where the last recorded generation is kept (see witness.ts). */
  stateFile?: string;
  log: Logger;
  clock: Clock;
}

export class ShadowSet {
  readonly setId: string;
  readonly size: number;
  readonly chunkSize: number;
  generation: number;
  readonly members: Member[];
  private absent: ShadowSetOptions['absent'];
  readonly locks = new RangeLocks();
  readonly tracker: ChunkTracker;
  readonly resync: Resync;
  private readonly intentClearMs: number;
  faultPolicy: 'Required' | 'Optional' | 'Never';
  private readonly intentIdlePasses: number;
  private intentTimer: NodeJS.Timeout | null = null;
  private clearing = false;
  /** Called when a resync job ends (the control layer turns it into member state and bitmap changes). */
  onJobFinished: ((job: ResyncJob, ok: boolean, why: string) => Promise<void>) | null = null;
  readonly log: Logger;
  private readonly clock: Clock;
  private memberTimeoutMs: number;
  private readonly writeRetries: number;
  /**
   * The record of a member's departure, while it may not be on disk yet: acknowledgements wait for it,
   * so no write is acknowledged while the on-disk membership still lists a member that lacks it. A
   * record that failed stays here (the next acknowledgement tries again, and fails if that fails too).
   */
  private pendingRecord: Promise<void> | null = null;
  private metaChain: Promise<void> = Promise.resolve();
  /** Members that stopped answering while they were the last full member (warned once each). */
  private readonly stalled = new Set<Member>();
  readonly site: string;
  private readonly stateFile: string | null;
  /** The newest generation recorded on a full member (`generation` runs ahead while a change is recorded). */
  recordedGeneration = 0;
  private watchdog: NodeJS.Timeout | null = null;
  private stopping = false;
  private inFlight = 0;
  private drained: (() => void) | null = null;
  clean = false;

  constructor(o: ShadowSetOptions) {
    this.setId = o.setId;
    this.size = o.size;
    this.chunkSize = o.chunkSize;
    this.generation = o.generation;
    this.members = o.members;
    this.absent = o.absent;
    this.memberTimeoutMs = o.memberTimeoutMs;
    this.writeRetries = o.writeRetries ?? 2;
    this.log = o.log;
    this.clock = o.clock;
    this.intentClearMs = o.intentClearMs ?? 1000;
    this.faultPolicy = o.faultPolicy ?? 'Optional';
    this.intentIdlePasses = o.intentIdlePasses ?? 5;
    this.site = o.site ?? '';
    this.stateFile = o.stateFile ?? null;
    this.tracker = new ChunkTracker(o.size, o.chunkSize, {
      metadataMembers: () => this.members.filter((m) => m.isWritable),
      memberFailed: (m, why) => this.removeMember(m, 'Faulted', why),
      log: o.log,
      clock: o.clock,
    });
    this.resync = new Resync(
      {
        size: o.size,
        chunkSize: o.chunkSize,
        locks: this.locks,
        members: this.members,
        log: o.log,
        clock: o.clock,
        appInFlight: () => this.inFlight,
        removeMember: (m, st, why) => this.removeMember(m, st, why),
        checkpoint: () => this.persistMembership(),
        finished: async (job, ok, why) => {
          if (this.onJobFinished) await this.onJobFinished(job, ok, why);
        },
      },
      {
        copyBytesPerSecond: o.resync?.copyBytesPerSecond ?? 0,
        mergeBytesPerSecond: o.resync?.mergeBytesPerSecond ?? 0,
        maxCopies: o.resync?.maxCopies ?? 4,
        copySource: o.resync?.copySource ?? null,
      },
    );
  }

  /** Timers, and (unless `recovery` is false: see startRecovery) the copies and merges. */
  start({ recovery = true }: { recovery?: boolean } = {}): void {
    const tick = Math.max(50, Math.min(1000, Math.floor(this.memberTimeoutMs / 4)));
    this.watchdog = setInterval(() => this.sweep(), tick);
    this.intentTimer = setInterval(() => void this.clearIntents(), this.intentClearMs);
    this.intentTimer.unref();
    if (recovery) this.startRecovery();
  }

  /** Run the queued copies and merges (reads of unmerged regions are merged on demand before that). */
  startRecovery(): void {
    this.resync.start();
  }

  private async clearIntents(): Promise<void> {
    if (this.clearing || this.stopping) return;
    this.clearing = true;
    try {
      await this.tracker.clearIdle(() => this.flushMembers(), this.intentIdlePasses);
    } catch (e) {
      this.log.warn({ event: 'IntentClearFailed', err: errorMessage(e) }, 'could not clear the write-intent log');
    } finally {
      this.clearing = false;
    }
  }

  setMemberTimeout(ms: number): void {
    this.memberTimeoutMs = ms;
  }

  get memberTimeout(): number {
    return this.memberTimeoutMs;
  }

  /**
   * The member timeout (on the monotonic clock): a member with an operation older than the timeout is
   * removed and its operations fail. The last full member is never removed this way: its I/O waits for
   * the device (the set would have nothing left to read from), with a warning.
   */
  private sweep(): void {
    const now = this.clock.monotonic();
    for (const m of this.members) {
      if (!m.isWritable) continue;
      if (m.oldestWait(now) < this.memberTimeoutMs) {
        this.stalled.delete(m);
        continue;
      }
      if (this.isLastFull(m)) {
        if (!this.stalled.has(m)) {
          this.stalled.add(m);
          this.log.warn({ event: 'MemberUnresponsive', member: m.id, path: m.location, waitedMs: Math.round(m.oldestWait(now)) },
            `member ${m.location} has not answered within the member timeout; it is the last full member, so its I/O waits`);
        }
        continue;
      }
      m.expire(now, this.memberTimeoutMs);
      this.removeMember(m, 'Faulted', `no answer within member timeout (${this.memberTimeoutMs} ms)`).catch((e: unknown) =>
        this.log.error({ event: 'MetadataWriteFailed', member: m.id, err: errorMessage(e) }, 'could not record the removal of a timed-out member'));
    }
  }

  private isLastFull(m: Member): boolean {
    return m.isFull && !this.members.some((x) => x !== m && x.isFull);
  }

  // ---------- SCB ----------

  /** The SCB as it should be on `m` now. */
  scbFor(m: Member, clean: boolean): Scb {
    return {
      format: 1,
      setId: this.setId,
      memberId: m.id,
      generation: this.generation,
      clean,
      size: this.size,
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
  private markGone(m: Member, state: 'Faulted' | 'Removed', why: string): boolean {
    if (!m.isWritable) return false;
    if (this.isLastFull(m)) {
      this.log.error({ event: 'LastMemberKept', member: m.id, path: m.location, reason: why }, `member ${m.location} failed (${why}) but is the last full member; it stays, and the failed request fails`);
      return false;
    }
    if (state === 'Faulted') this.faultBitmap(m);
    const was = m.state;
    m.state = state;
    m.reason = why;
    this.generation++;
    m.abandon(`member ${m.location} left the set: ${why}`);
    this.stalled.delete(m);
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
  private async departuresRecorded(): Promise<void> {
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
    if ([...this.tracker.bitmaps.values()].some((b) => b.desc.member === m.id)) return;
    const slot = this.tracker.freeSlot();
    if (slot === null) {
      this.log.warn({ event: 'BitmapNotCreated', member: m.id, reason: 'all write-bitmap slots are in use' }, 'no write bitmap for the faulted member');
      return;
    }
    const map = new ChunkBitmap(this.tracker.chunks);
    for (const c of this.tracker.wil.list()) map.set(c);
    map.touchAll();
    const id = randomUUID();
    this.tracker.bitmaps.set(id, {
      desc: {
        id, member: m.id, slot, chunkSize: this.chunkSize, coveredBytes: this.size, createdAt: this.clock.iso(),
        generation: m.scbGeneration, masterNode: process.env.NODE_NAME ?? hostname(),
      },
      map,
    });
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

  // ---------- I/O ----------

  private enter(): void {
    if (this.stopping) throw new EngineError('ENG_SHUTTING_DOWN', 'the virtual unit is stopping');
    this.inFlight++;
  }

  private leave(): void {
    this.inFlight--;
    if (this.inFlight === 0 && this.drained) this.drained();
  }

  fullMembers(): Member[] {
    return this.members.filter((m) => m.isFull);
  }

  private checkRange(offset: number, length: number): void {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new EngineError('ENG_OUT_OF_RANGE', `range ${offset}+${length} is outside the virtual unit (${this.size} bytes)`);
    }
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.checkRange(offset, length);
    this.enter();
    try {
      // During a merge, chunks not yet merged are made identical before anyone reads them.
      if (this.resync.mergePending) await this.resync.mergeRange(offset, length);
      const buf = Buffer.allocUnsafe(length);
      const failed = await this.readInto(buf, offset, new Set());
      if (failed.length > 0) await this.repair(offset, length, failed, buf);
      return buf;
    } finally {
      this.leave();
    }
  }

  /** Read from the cheapest full member, falling back to the others. Returns the members that failed. */
  private async readInto(buf: Buffer, offset: number, exclude: Set<Member>): Promise<Member[]> {
    const failed: Member[] = [];
    for (;;) {
      const m = this.pickReader(exclude);
      if (!m) {
        throw new EngineError('ENG_NO_FULL_MEMBER', `no full member could read ${buf.length} bytes at ${offset}`);
      }
      try {
        await m.read(buf, HEADER_BYTES + offset);
        return failed;
      } catch (e) {
        this.log.warn({ event: 'MemberReadError', member: m.id, offset, length: buf.length, err: errorMessage(e) }, 'read failed; trying another member');
        exclude.add(m);
        failed.push(m);
        if (isEngineError(e, 'ENG_TIMEOUT')) await this.removeMember(m, 'Faulted', errorMessage(e));
      }
    }
  }

  /**
   * The full member with the lowest read cost + queue depth, among those at the unit's site when any
   * is (the manual: members at the virtual unit's site are preferred).
   */
  private pickReader(exclude: Set<Member>): Member | null {
    let best: Member | null = null;
    const atSite = this.site !== '' && this.members.some((m) => m.isFull && !exclude.has(m) && m.site === this.site);
    for (const m of this.members) {
      if (!m.isFull || exclude.has(m) || (atSite && m.site !== this.site)) continue;
      if (!best || m.readCost + m.queueDepth < best.readCost + best.queueDepth) best = m;
    }
    return best;
  }

  /** Rewrite good data on members whose read failed; a member whose rewrite fails is removed. */
  private async repair(offset: number, length: number, failed: Member[], good: Buffer): Promise<void> {
    const release = await this.locks.acquire(offset, length);
    try {
      // Re-read under the lock: a write may have landed since the first read.
      await this.readInto(good, offset, new Set(failed));
      for (const m of failed) {
        if (!m.isWritable) continue;
        try {
          await m.write(good, HEADER_BYTES + offset, false);
          m.counters.repairs++;
          this.log.info({ event: 'MemberReadRepaired', member: m.id, offset, length }, 'read error repaired from another member');
        } catch (e) {
          await this.removeMember(m, 'Faulted', `repair write failed: ${errorMessage(e)}`);
        }
      }
    } finally {
      release();
    }
  }

  async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    this.checkRange(offset, data.length);
    await this.mirrored(offset, data.length, (m) => m.write(data, HEADER_BYTES + offset, fua));
  }

  async writeZeroes(offset: number, length: number, fua: boolean): Promise<void> {
    this.checkRange(offset, length);
    await this.mirrored(offset, length, (m) => m.writeZeroes(HEADER_BYTES + offset, length, fua));
  }

  /**
   * TRIM is advisory in NBD. Discarding on members could leave them reading back different bytes,
   * so it is accepted and ignored: members stay identical (FUA still forces a flush).
   */
  async trim(offset: number, length: number, fua: boolean): Promise<void> {
    this.checkRange(offset, length);
    if (fua) await this.flush();
  }

  private async mirrored(offset: number, length: number, op: (m: Member) => Promise<void>): Promise<void> {
    this.enter();
    const release = await this.locks.acquire(offset, length);
    let tracked = false;
    try {
      const marked = this.tracker.begin(offset, length);
      tracked = true;
      if (marked) await marked;
      const targets = this.members.filter((m) => m.isWritable);
      const results = await Promise.allSettled(targets.map(op));
      const landed = await Promise.all(targets.map(async (m, i) => results[i]!.status === 'fulfilled' || this.retryOrRemove(m, results[i]!.reason, op)));
      // Nothing is acknowledged while the on-disk membership could still list a member that lacks it.
      await this.departuresRecorded();
      // Acknowledge only if a full member has the data.
      if (!targets.some((m, i) => landed[i] && m.isFull)) {
        await this.undoOnTargets(offset, length, targets.filter((m, i) => landed[i] && m.isWritable && !m.isFull));
        throw new EngineError('ENG_IO', `the write at ${offset}+${length} failed on every full member`);
      }
    } finally {
      if (tracked) this.tracker.end(offset, length);
      release();
      this.leave();
    }
  }

  /**
   * A write that failed on every full member (the last one is kept, see markGone) but reached copy
   * targets: put the full member's bytes back on them (the range is still locked), so the copy does
   * not end with a target that differs from its source. A target that cannot be repaired leaves.
   */
  private async undoOnTargets(offset: number, length: number, targets: Member[]): Promise<void> {
    if (targets.length === 0) return;
    const buf = Buffer.allocUnsafe(length);
    try {
      await this.readInto(buf, offset, new Set());
    } catch (e) {
      for (const t of targets) this.markGone(t, 'Faulted', `could not undo a write that failed on every full member: ${errorMessage(e)}`);
      return this.departuresRecorded();
    }
    await Promise.all(targets.map((t) => t.write(buf, HEADER_BYTES + offset, false).catch((e: unknown) =>
      this.markGone(t, 'Faulted', `could not undo a write that failed on every full member: ${errorMessage(e)}`))));
    await this.departuresRecorded();
  }

  /** Retry a failed write on `m`; if it keeps failing, remove `m`. Returns whether `m` has the data. */
  private async retryOrRemove(m: Member, err: unknown, op: (m: Member) => Promise<void>): Promise<boolean> {
    if (!m.isWritable) return false;
    let last = err;
    if (!isEngineError(err, 'ENG_TIMEOUT')) {
      for (let i = 0; i < this.writeRetries; i++) {
        try {
          await op(m);
          return true;
        } catch (e) {
          last = e;
          if (!m.isWritable || isEngineError(e, 'ENG_TIMEOUT')) break;
        }
      }
    }
    this.markGone(m, 'Faulted', `write failed: ${errorMessage(last)}`);
    return false;
  }

  async flush(): Promise<void> {
    this.enter();
    try {
      await this.flushMembers();
    } finally {
      this.leave();
    }
  }

  /**
   * Flush every writable member; a member whose flush fails is removed. Rejects if a full member's flush
   * failed and it could not be removed (the last one): the data is then not known to be durable.
   */
  async flushMembers(): Promise<void> {
    const targets = this.members.filter((m) => m.isWritable);
    const results = await Promise.allSettled(targets.map((m) => m.flush()));
    let kept: unknown = null;
    for (let i = 0; i < targets.length; i++) {
      const r = results[i]!;
      if (r.status === 'fulfilled' || !targets[i]!.isWritable) continue;
      if (!this.markGone(targets[i]!, 'Faulted', `flush failed: ${errorMessage(r.reason)}`) && targets[i]!.isWritable) kept = r.reason;
    }
    await this.departuresRecorded();
    if (kept !== null) throw new EngineError('ENG_IO', `flush failed on the last full member: ${errorMessage(kept)}`);
    if (!this.members.some((m) => m.isFull)) throw new EngineError('ENG_NO_FULL_MEMBER', 'no full member left');
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

  /** Stop timers and the resync loop without touching members: what a crash leaves (simulation). */
  halt(): void {
    this.stopping = true;
    if (this.intentTimer) clearInterval(this.intentTimer);
    if (this.watchdog) clearInterval(this.watchdog);
    void this.resync.stop();
  }

  /** Let in-flight I/O finish, flush, and record a clean stop on every member. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.inFlight > 0) await new Promise<void>((r) => (this.drained = r));
    await this.resync.stop();
    if (this.intentTimer) clearInterval(this.intentTimer);
    if (this.watchdog) clearInterval(this.watchdog);
    let flushed = true;
    await this.flushMembers().catch((e: unknown) => {
      flushed = false;
      this.log.error({ event: 'StopFlushFailed', err: errorMessage(e) }, 'the final flush failed: the stop is recorded as unclean');
    });
    if (flushed) {
      this.resync.markFlushed();
      // Nothing is in flight and everything is flushed: the intent log can be emptied (pending merge chunks stay).
      try {
        await this.tracker.clearIdle(async () => undefined, 0);
      } catch {
        // the clean flag below is still correct; stale intent bits only cost a larger merge
      }
    }
    await this.persistMembership(flushed && !this.resync.mergePending).catch((e: unknown) =>
      this.log.error({ event: 'CleanStopFailed', err: errorMessage(e) }, 'could not record a clean stop'),
    );
    this.clean = true;
    // A member's backend closes once its requests settle; one stuck on a hung device never does, and must
    // not hold up the stop (its descriptors stay open until the process ends).
    if (!(await settledWithin(this.members.map((m) => m.backend.close()), CLOSE_WAIT_MS))) {
      this.log.warn({ event: 'MemberCloseSlow', members: this.members.filter((m) => m.queueDepth > 0).map((m) => m.id) }, 'a member did not finish its requests; stopping without it');
    }
    this.log.info({ event: 'ShadowSetStopped', setId: this.setId, generation: this.generation }, 'shadow set stopped cleanly');
  }
}
