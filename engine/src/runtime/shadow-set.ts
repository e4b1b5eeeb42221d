/**
 * The virtual unit: mirrors writes to every writable member, reads from the cheapest full member,
 * repairs read errors, and removes members that keep failing (membership.ts records each change on the
 * members that stay before any write that depended on it is acknowledged). Also the set's timers (the
 * member timeout, lazy clearing of the intent log) and its start and stop.
 *
 * Somewhat over 300 lines because a write's fan-out, its intent bit and its wait for recorded departures
 * are one path whose order matters; membership and resync live in their own files.
 */
import { EngineError, errorMessage, isEngineError } from '../core/errors.js';
import { HEADER_BYTES } from '../core/geometry.js';
import type { Member } from './member.js';
import { Membership, type ShadowSetOptions } from './membership.js';
import { settledWithin } from './settle-within.js';

export type { FormerMember, ShadowSetOptions } from './membership.js';

/** How long a stop waits for the members' backends to close. */
const CLOSE_WAIT_MS = 5000;

export class ShadowSet extends Membership {
  private readonly intentClearMs: number;
  private readonly intentIdlePasses: number;
  private intentTimer: NodeJS.Timeout | null = null;
  private clearing = false;
  private memberTimeoutMs: number;
  private readonly writeRetries: number;
  /** Members that stopped answering while they were the last full member (warned once each). */
  private readonly stalled = new Set<Member>();
  readonly site: string;
  private watchdog: NodeJS.Timeout | null = null;
  private stopping = false;
  private inFlight = 0;
  private drained: (() => void) | null = null;
  clean = false;

  constructor(o: ShadowSetOptions) {
    super(o);
    this.memberTimeoutMs = o.memberTimeoutMs;
    this.writeRetries = o.writeRetries ?? 2;
    this.intentClearMs = o.intentClearMs ?? 1000;
    this.intentIdlePasses = o.intentIdlePasses ?? 5;
    this.site = o.site ?? '';
  }

  protected appInFlight(): number {
    return this.inFlight;
  }

  protected override departed(m: Member): void {
    this.stalled.delete(m);
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
      await this.tracker.keepCap();
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
