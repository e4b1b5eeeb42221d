/**
 * A file or block-device member whose small requests run on the engine's shared I/O thread through a
 * ring in shared memory (see ring-protocol.ts and io-group.ts). Requests larger than a slot, or
 * arriving when every slot is busy, take the thread-pool path of FileBackend: their size amortizes the
 * round trip. Overlapping writes are ordered above this layer (range locks), so the two paths never
 * race on the same bytes.
 *
 * The first member opened starts the thread; until it serves (tens of milliseconds) requests take the
 * thread pool. Members opened later (a returning member about to get its minicopy) join the running
 * thread at once, and the thread stays when the last member closes, ready for the next.
 *
 * close() keeps the descriptors open until no request may still use them: those on the ring have
 * completed (a thread touches a descriptor only to run a request of its ring) and those on the thread
 * pool have settled; if the group failed, until its threads have stopped.
 */
import { EngineError } from '../../core/errors.js';
import type { BlockBackend } from '../../ports/block-backend.js';
import { FileBackend } from './file-backend.js';
import type { DataExtents } from './data-extents.js';
import { IoGroup, type GroupMember } from './io-group.js';
import {
  allocRing, COMP_HEAD, CTL_INTS, nextCount, OP_READ, OP_WRITE, RING_MASK, SLOT_BYTES, SLOTS, SUB_HEAD,
} from './ring-protocol.js';

interface Waiter {
  resolve: () => void;
  reject: (e: Error) => void;
  readInto: Buffer | null;
}

export class RingBackend implements BlockBackend, GroupMember {
  private readonly ctl: Int32Array;
  private readonly desc: Float64Array;
  private readonly ops: Int32Array;
  private readonly data: Buffer;
  private readonly free: number[] = [];
  private readonly waiters: (Waiter | null)[] = new Array(SLOTS).fill(null);
  private readonly id: number;
  private compTail = 0;
  private outstanding = 0;
  private closed: EngineError | null = null;
  private closing: Promise<void> | null = null;
  /** Called when the ring has no request left (or the group failed and what it held was failed). */
  private ringIdle: (() => void) | null = null;
  private isOnline = false;
  private failed = false;
  private readonly started: Promise<void>;
  private markStarted: () => void = () => undefined;

  private constructor(private readonly file: FileBackend, private readonly group: IoGroup, ring: ReturnType<typeof allocRing>) {
    this.ctl = new Int32Array(ring.ctl);
    this.compTail = this.ctl[COMP_HEAD]!;
    this.desc = new Float64Array(ring.desc);
    this.ops = new Int32Array(ring.ops);
    this.data = Buffer.from(ring.data);
    for (let i = SLOTS - 1; i >= 0; i--) this.free.push(i);
    this.started = new Promise<void>((resolve) => (this.markStarted = resolve));
    this.id = group.attach(ring, file.fd, file.syncFd, this);
  }

  /**
   * `ringStart`: where the ring's counters start (tests start them just below the Int32 wrap);
   * `group`: the I/O threads to use (the process's shared group unless a test gives its own).
   */
  static async open(path: string, o: { ringStart?: number; group?: IoGroup } = {}): Promise<RingBackend> {
    const file = await FileBackend.open(path);
    const ring = allocRing((o.ringStart ?? 0) | 0);
    return new RingBackend(file, o.group ?? IoGroup.shared(), ring);
  }

  /** GroupMember: a thread serves this ring from now on. */
  online(): void {
    if (this.failed) return;
    this.isOnline = true;
    this.markStarted();
  }

  /** GroupMember: the group failed; what the ring held fails, later requests take the thread pool. */
  fail(e: EngineError): void {
    if (this.failed) return;
    this.failed = true;
    this.markStarted();
    this.failAll(new EngineError('ENG_IO', `I/O thread of ${this.location} failed: ${e.message}`));
  }

  holdsNoData(): Promise<boolean> {
    return this.file.holdsNoData();
  }

  dataExtents(): Promise<DataExtents | null> {
    return this.file.dataExtents();
  }

  refreshSize(): Promise<number> {
    return this.file.refreshSize();
  }

  /** Resolves when the I/O thread runs (until then requests take the thread pool). */
  ready(): Promise<void> {
    return this.started;
  }

  get location(): string {
    return this.file.location;
  }

  get size(): number {
    return this.file.size;
  }

  private submit(op: number, offset: number, length: number, payload: Buffer | null, readInto: Buffer | null): Promise<void> | null {
    // Until a thread serves this ring (the first member's thread takes tens of milliseconds to start),
    // and for good once the group failed, requests take the thread pool.
    if (!this.isOnline || this.failed) return null;
    const slot = this.free.pop();
    if (slot === undefined) return null;
    this.desc[slot * 2] = offset;
    this.desc[slot * 2 + 1] = length;
    this.ops[slot * 2] = op;
    if (payload) payload.copy(this.data, slot * SLOT_BYTES);
    const p = new Promise<void>((resolve, reject) => (this.waiters[slot] = { resolve, reject, readInto }));
    const h = this.ctl[SUB_HEAD]!;
    this.ctl[CTL_INTS + (h & RING_MASK)] = slot;
    Atomics.store(this.ctl, SUB_HEAD, nextCount(h));
    this.outstanding++;
    this.group.submitted();
    return p;
  }

  /** GroupMember: settles the requests whose completions the thread has published; returns how many. */
  drain(): number {
    const head = Atomics.load(this.ctl, COMP_HEAD);
    let n = 0;
    while (this.compTail !== head) {
      const slot = this.ctl[CTL_INTS + SLOTS + (this.compTail & RING_MASK)]!;
      this.compTail = nextCount(this.compTail);
      const w = this.waiters[slot];
      this.waiters[slot] = null;
      const result = this.ops[slot * 2 + 1]!;
      if (w && result === 0 && w.readInto) this.data.copy(w.readInto, 0, slot * SLOT_BYTES, slot * SLOT_BYTES + w.readInto.length);
      this.free.push(slot);
      this.outstanding--;
      n++;
      if (!w) continue;
      if (result === 0) w.resolve();
      else w.reject(new EngineError('ENG_IO', `I/O on ${this.location} failed (errno ${result})`));
    }
    if (n > 0 && this.outstanding === 0) this.ringIdle?.();
    return n;
  }

  private failAll(e: Error): void {
    for (let i = 0; i < SLOTS; i++) {
      const w = this.waiters[i];
      this.waiters[i] = null;
      w?.reject(e);
    }
    this.outstanding = 0;
    this.ringIdle?.();
  }

  read(buf: Buffer, offset: number): Promise<void> {
    if (this.closed) return Promise.reject(this.closed);
    if (buf.length <= SLOT_BYTES) {
      const p = this.submit(OP_READ, offset, buf.length, null, buf);
      if (p) return p;
    }
    return this.file.read(buf, offset);
  }

  /**
   * A FUA write goes through the thread pool, as a flush does: forced to media it can take milliseconds,
   * and on the ring it would hold up every request queued behind it (each new mark of the write-intent
   * log is one, so under writes spread over the unit the data writes stalled behind them).
   */
  write(buf: Buffer, offset: number, fua: boolean): Promise<void> {
    if (this.closed) return Promise.reject(this.closed);
    if (buf.length <= SLOT_BYTES && !fua) {
      const p = this.submit(OP_WRITE, offset, buf.length, buf, null);
      if (p) return p;
    }
    return this.file.write(buf, offset, fua);
  }

  /**
   * Through the thread pool, not the ring: an fdatasync can take milliseconds, and on the ring it would
   * hold up every read and write queued behind it (a copy's periodic flush stalled the copy itself).
   * It covers every write completed before it, as NBD asks.
   */
  flush(): Promise<void> {
    if (this.closed) return Promise.reject(this.closed);
    return this.file.flush();
  }

  discard(offset: number, length: number): Promise<void> {
    if (this.closed) return Promise.reject(this.closed);
    return this.file.discard(offset, length);
  }

  writeZeroes(offset: number, length: number, fua: boolean): Promise<void> {
    if (this.closed) return Promise.reject(this.closed);
    return this.file.writeZeroes(offset, length, fua);
  }

  /**
   * The BlockBackend contract. In order: requests on the ring complete (a thread touches this member's
   * descriptors only to run one of them); the ring leaves the group; if the group failed, its threads
   * stop; the file backend then closes the descriptors after its own requests settle. A request stuck
   * on a hung device stops this at the first step, leaving ring and descriptors in place for good, on
   * purpose (a closed number would be reused by the next member opened).
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.closed = new EngineError('ENG_IO', `member ${this.location} is closed`);
    if (this.outstanding > 0 && !this.failed) await new Promise<void>((r) => (this.ringIdle = r));
    this.ringIdle = null;
    this.group.detach(this.id);
    if (this.failed) await this.group.stopped();
    await this.file.close();
  }
}
