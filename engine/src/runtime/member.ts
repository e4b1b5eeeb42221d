/**
 * One member as the runtime sees it: its backend, state, queue depth and counters, and the member
 * timeout. Every I/O goes through `io`, which counts it and lets the watchdog fail it when the
 * member stops answering (the manual's SHADOW_MBR_TMO).
 */
import { EngineError } from '../core/errors.js';
import { isFull, isWritable } from '../core/member-state.js';
import { payloadPool } from '../core/payload-pool.js';
import type { MemberState } from '../core/scb.js';
import type { BlockBackend } from '../ports/block-backend.js';
import { systemClock, type Clock } from '../ports/clock.js';

export interface MemberCounters {
  reads: number;
  writes: number;
  readBytes: number;
  writeBytes: number;
  flushes: number;
  errors: number;
  repairs: number;
  timeouts: number;
}

interface InFlight {
  started: number;
  reject: (e: Error) => void;
}

export class Member {
  state: MemberState;
  queueDepth = 0;
  readonly counters: MemberCounters = {
    reads: 0, writes: 0, readBytes: 0, writeBytes: 0, flushes: 0, errors: 0, repairs: 0, timeouts: 0,
  };
  /** Sequence of the last SCB written to this member (slots alternate on it). */
  scbSeq = 0;
  /** Generation last recorded in this member's own SCB (null: never written by this engine). */
  scbGeneration: number | null = null;
  /**
   * The device held no data at all when it was admitted (BlockBackend.holdsNoData, asked before the
   * engine wrote its metadata). Every write it has had since also went to the full members, so where a
   * full member's data area reads zero, this one's does too: a full copy skips such runs unread.
   * Only set for a member admitted by add or return; a restart admits it without (the copy resumes
   * onto a device that is no longer empty).
   */
  heldNoDataAtAdmission = false;
  /** Why the member left the set, when it did. */
  reason = '';
  private readonly inflight = new Map<number, InFlight>();
  private nextOp = 0;
  /** Told of every write and write-zeroes issued from now on (raw offset, length): see observeWrites. */
  private readonly writeObservers = new Set<(offset: number, length: number) => void>();

  constructor(
    readonly id: string,
    readonly backend: BlockBackend,
    state: MemberState,
    public readCost: number,
    public site: string,
    private readonly clock: Clock = systemClock,
  ) {
    this.state = state;
  }

  get location(): string {
    return this.backend.location;
  }

  /** Run one operation against the backend, accounted and subject to the watchdog. */
  io<T>(op: () => Promise<T>): Promise<T> {
    const id = this.nextOp++;
    this.queueDepth++;
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const finish = () => {
        settled = true;
        this.queueDepth--;
        this.inflight.delete(id);
      };
      this.inflight.set(id, {
        started: this.clock.monotonic(),
        reject: (e) => {
          if (settled) return;
          finish();
          reject(e);
        },
      });
      op().then(
        (v) => {
          if (settled) return;
          finish();
          resolve(v);
        },
        (e: unknown) => {
          if (settled) return;
          finish();
          this.counters.errors++;
          reject(e);
        },
      );
    });
  }

  /**
   * Call `fn` with the raw range of every write and write-zeroes issued to this member from now on, at
   * the moment it is issued (before the device has it). Returns the function that stops it.
   */
  observeWrites(fn: (offset: number, length: number) => void): () => void {
    this.writeObservers.add(fn);
    return () => this.writeObservers.delete(fn);
  }

  /**
   * Resolves once every operation issued before this call has settled (or been failed by the watchdog),
   * or with false after `limitMs`. Together with observeWrites this lets a reader learn the device's
   * state with no write unaccounted for: the ones before are done, the ones after are observed.
   */
  async earlierSettled(limitMs: number): Promise<boolean> {
    const before = this.nextOp;
    const until = this.clock.monotonic() + limitMs;
    for (;;) {
      // Ids are inserted in increasing order, so the first key is the oldest operation in flight.
      const oldest = this.inflight.keys().next();
      if (oldest.done || oldest.value >= before) return true;
      if (this.clock.monotonic() >= until) return false;
      await new Promise((r) => setTimeout(r, 1));
    }
  }

  /** Milliseconds the oldest operation in flight has waited (0 when idle), on the monotonic clock. */
  oldestWait(now: number): number {
    let oldest = 0;
    for (const op of this.inflight.values()) oldest = Math.max(oldest, now - op.started);
    return oldest;
  }

  /** Fail every operation older than `timeoutMs` (`now` from the monotonic clock). Returns how many were failed. */
  expire(now: number, timeoutMs: number): number {
    let n = 0;
    for (const op of this.inflight.values()) {
      if (now - op.started >= timeoutMs) {
        n++;
        this.counters.timeouts++;
        op.reject(new EngineError('ENG_TIMEOUT', `member ${this.location} did not answer within ${timeoutMs} ms`));
      }
    }
    return n;
  }

  /** Fail everything still queued on this member (it is leaving the set). */
  abandon(why: string): void {
    for (const op of [...this.inflight.values()]) op.reject(new EngineError('ENG_IO', why));
  }

  read(buf: Buffer, offset: number): Promise<void> {
    this.counters.reads++;
    this.counters.readBytes += buf.length;
    return this.io(() => this.backend.read(buf, offset));
  }

  write(buf: Buffer, offset: number, fua: boolean): Promise<void> {
    this.counters.writes++;
    this.counters.writeBytes += buf.length;
    if (this.writeObservers.size > 0) for (const fn of this.writeObservers) fn(offset, buf.length);
    // A pooled buffer is held until the backend itself returns, which may be long after the watchdog
    // failed the request here (core/payload-pool.ts).
    return this.io(() => payloadPool.writing(buf, () => this.backend.write(buf, offset, fua)));
  }

  writeZeroes(offset: number, length: number, fua: boolean): Promise<void> {
    this.counters.writes++;
    this.counters.writeBytes += length;
    if (this.writeObservers.size > 0) for (const fn of this.writeObservers) fn(offset, length);
    return this.io(() => this.backend.writeZeroes(offset, length, fua));
  }

  flush(): Promise<void> {
    this.counters.flushes++;
    return this.io(() => this.backend.flush());
  }

  /** Full members serve reads (during a merge, reads of unmerged chunks are merged first). */
  get isFull(): boolean {
    return isFull(this.state);
  }

  /** Full members and copy targets receive every write. */
  get isWritable(): boolean {
    return isWritable(this.state);
  }
}
