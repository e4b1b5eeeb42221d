/**
 * A file or block-device member whose small requests run on a dedicated I/O thread through a shared
 * ring (see ring-protocol.ts). Requests larger than a slot, or arriving when every slot is busy, take
 * the thread-pool path of FileBackend: their size amortizes the round trip. Overlapping writes are
 * ordered above this layer (range locks), so the two paths never race on the same bytes.
 *
 * One idle I/O thread is kept as a spare: a new thread takes tens of milliseconds to start, during
 * which a member that just joined (a returning member about to get its minicopy) would run every
 * request through the thread pool while the starting thread competes with it for the CPU. A closed
 * member's thread becomes the spare when none is kept; a thread with requests stuck on a hung device
 * is never reused.
 *
 * close() keeps the descriptors open until no request may still use them: those on the ring have
 * completed and the thread has left the ring (or ended), and those on the thread pool have settled.
 */
import { Worker } from 'node:worker_threads';
import { EngineError } from '../../core/errors.js';
import type { BlockBackend } from '../../ports/block-backend.js';
import { FileBackend } from './file-backend.js';
import type { DataExtents } from './data-extents.js';
import type { Assignment } from './io-worker.js';
import {
  allocRing, COMP_HEAD, CTL_INTS, nextCount, OP_READ, OP_WRITE, RING_MASK, SLOT_BYTES, SLOTS, STOP, SUB_HEAD,
  WORKER_IDLE,
} from './ring-protocol.js';

let spare: Worker | null = null;
let spareTimer: NodeJS.Timeout | null = null;
/** A spare is started this long after the last one was taken (not while the member taking it starts). */
const SPARE_DELAY_MS = 1000;

/**
 * An I/O thread only moves bytes between the ring and system calls, so it allocates almost nothing:
 * after start its heap holds about 5 MiB (Node's own bootstrap). Without limits each isolate would size
 * its heap like the main thread's; these caps keep every thread about 1 MiB smaller, with three times
 * its need as margin (a thread over them would end like any thread that fails: the requests it held
 * fail, later ones take the thread pool).
 */
const IO_THREAD_LIMITS = { maxYoungGenerationSizeMb: 1, maxOldGenerationSizeMb: 16 };

function newWorker(): Worker {
  const w = new Worker(new URL('./io-worker.js', import.meta.url), { resourceLimits: IO_THREAD_LIMITS });
  w.unref();
  // A spare that fails is dropped (the member using a thread listens for its errors itself).
  w.on('error', () => {
    if (spare === w) spare = null;
  });
  w.on('exit', () => {
    if (spare === w) spare = null;
  });
  return w;
}

function keepSpare(w: Worker): void {
  if (spare) void w.terminate();
  else spare = w;
}

function scheduleSpare(): void {
  if (spare || spareTimer) return;
  spareTimer = setTimeout(() => {
    spareTimer = null;
    if (spare) return;
    const w = newWorker();
    w.once('online', () => keepSpare(w));
  }, SPARE_DELAY_MS);
  spareTimer.unref();
}

interface Waiter {
  resolve: () => void;
  reject: (e: Error) => void;
  readInto: Buffer | null;
}

export class RingBackend implements BlockBackend {
  private readonly ctl: Int32Array;
  private readonly desc: Float64Array;
  private readonly ops: Int32Array;
  private readonly data: Buffer;
  private readonly free: number[] = [];
  private readonly waiters: (Waiter | null)[] = new Array(SLOTS).fill(null);
  private compTail = 0;
  private armed = false;
  private outstanding = 0;
  private closed: EngineError | null = null;
  private closing: Promise<void> | null = null;
  /** Called when the ring has no request left (or the thread failed and what it held was failed). */
  private ringIdle: (() => void) | null = null;
  private online = false;
  private kickQueued = false;
  /**
   * Wakes the worker if it sleeps. Queued as a microtask, so every request submitted in the same turn
   * of the event loop (a batch of NBD requests, a window of copy runs) costs one wake-up, not one each.
   * No wake-up is lost: the worker marks itself idle and then looks at the ring again before it sleeps.
   */
  private readonly kick = (): void => {
    this.kickQueued = false;
    if (Atomics.load(this.ctl, WORKER_IDLE) === 1) Atomics.notify(this.ctl, SUB_HEAD);
  };

  private failed = false;
  private readonly started: Promise<void>;
  private onMessage: (m: unknown) => void = () => undefined;
  private onExit: () => void = () => undefined;
  private readonly onError = (e: Error): void => {
    this.failed = true;
    this.onExit();
    this.failAll(new EngineError('ENG_IO', `I/O thread of ${this.location} failed: ${e.message}`));
  };

  private constructor(private readonly file: FileBackend, private readonly worker: Worker, ring: ReturnType<typeof allocRing>) {
    this.ctl = new Int32Array(ring.ctl);
    this.compTail = this.ctl[COMP_HEAD]!;
    this.desc = new Float64Array(ring.desc);
    this.ops = new Int32Array(ring.ops);
    this.data = Buffer.from(ring.data);
    for (let i = SLOTS - 1; i >= 0; i--) this.free.push(i);
    this.started = new Promise<void>((resolve) => {
      this.onMessage = (m: unknown) => {
        if (m !== 'serving') return;
        this.online = true;
        resolve();
      };
      // A thread that fails or ends leaves the member on the thread pool; what it held fails.
      this.onExit = () => {
        resolve();
        if (this.closed || this.failed) return;
        this.failed = true;
        this.failAll(new EngineError('ENG_IO', `I/O thread of ${this.location} ended unexpectedly`));
      };
      worker.on('message', this.onMessage);
      worker.on('exit', this.onExit);
    });
    worker.on('error', this.onError);
  }

  /** `ringStart`: where the ring's counters start (tests start them just below the Int32 wrap). */
  static async open(path: string, o: { ringStart?: number } = {}): Promise<RingBackend> {
    const file = await FileBackend.open(path);
    const start = (o.ringStart ?? 0) | 0;
    const ring = allocRing(start);
    const worker = spare ?? newWorker();
    spare = null;
    // Requests take the thread pool until the thread answers that it serves this ring.
    worker.postMessage({ ring, fd: file.fd, syncFd: file.syncFd, start } satisfies Assignment);
    scheduleSpare();
    return new RingBackend(file, worker, ring);
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
    // Until the thread says it serves this ring (a new one takes tens of milliseconds), requests take
    // the thread pool.
    if (!this.online || this.failed) return null;
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
    if (!this.kickQueued) {
      this.kickQueued = true;
      queueMicrotask(this.kick);
    }
    // A pending Atomics.waitAsync does not keep the event loop alive; the worker handle does.
    if (this.outstanding++ === 0) this.worker.ref();
    this.arm();
    return p;
  }

  private arm(): void {
    if (this.armed || this.outstanding === 0) return;
    this.armed = true;
    const r = Atomics.waitAsync(this.ctl, COMP_HEAD, this.compTail);
    if (r.async) void r.value.then(() => this.drain());
    else queueMicrotask(() => this.drain());
  }

  private drain(): void {
    this.armed = false;
    const head = Atomics.load(this.ctl, COMP_HEAD);
    while (this.compTail !== head) {
      const slot = this.ctl[CTL_INTS + SLOTS + (this.compTail & RING_MASK)]!;
      this.compTail = nextCount(this.compTail);
      const w = this.waiters[slot];
      this.waiters[slot] = null;
      const result = this.ops[slot * 2 + 1]!;
      if (w && result === 0 && w.readInto) this.data.copy(w.readInto, 0, slot * SLOT_BYTES, slot * SLOT_BYTES + w.readInto.length);
      this.free.push(slot);
      this.outstanding--;
      if (!w) continue;
      if (result === 0) w.resolve();
      else w.reject(new EngineError('ENG_IO', `I/O on ${this.location} failed (errno ${result})`));
    }
    if (this.outstanding === 0) {
      this.worker.unref();
      this.ringIdle?.();
    }
    this.arm();
  }

  private failAll(e: Error): void {
    for (let i = 0; i < SLOTS; i++) {
      const w = this.waiters[i];
      this.waiters[i] = null;
      w?.reject(e);
    }
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
   * The BlockBackend contract. In order: requests on the ring complete (the thread runs what it was
   * given); the thread leaves the ring (it becomes the spare) or is terminated, and only once it has
   * stopped touching the descriptors; the file backend then closes them after its own requests settle.
   * A request stuck on a hung device stops this at the first step, leaving thread, ring and descriptors
   * in place for good, on purpose (a closed number would be reused by the next member opened).
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.closed = new EngineError('ENG_IO', `member ${this.location} is closed`);
    if (this.outstanding > 0 && !this.failed) await new Promise<void>((r) => (this.ringIdle = r));
    this.ringIdle = null;
    this.worker.off('error', this.onError);
    this.worker.off('message', this.onMessage);
    this.worker.off('exit', this.onExit);
    Atomics.store(this.ctl, STOP, 1);
    Atomics.notify(this.ctl, SUB_HEAD);
    const w = this.worker;
    if (this.failed) {
      // Its requests were failed when it failed; terminate() resolves once the thread has stopped.
      await w.terminate();
    } else {
      // It leaves this ring and waits for its next member: the spare, unless there is one (or it does
      // not say so within a second), else it is terminated.
      const released = await new Promise<boolean>((r) => {
        const timer = setTimeout(() => {
          w.off('message', onReleased);
          r(false);
        }, 1000);
        const onReleased = (m: unknown) => {
          if (m !== 'released') return;
          clearTimeout(timer);
          w.off('message', onReleased);
          r(true);
        };
        w.on('message', onReleased);
      });
      w.unref();
      if (released && !spare) spare = w;
      else await w.terminate(); // a thread is released when it has stopped
    }
    await this.file.close();
  }
}
