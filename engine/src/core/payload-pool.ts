/**
 * Reusable buffers for large WRITE payloads (engine/README.md, *Memory*).
 *
 * Without it every large write gets a buffer of its own, dropped once the write is answered. Under
 * 1 MiB writes that is a gigabyte a second of short-lived memory outside V8's heap, which the collector
 * frees only tens of megabytes late and the allocator then keeps: most of the engine's peak RSS.
 *
 * Reuse is safe only when nothing can still read a buffer, so a buffer goes back to the pool only when
 * both hold:
 * - the one that took it (the NBD connection) has released it: the request is answered;
 * - every device request given the buffer (`hold`, called where a member's write reaches its backend)
 *   has returned *successfully* from the backend itself. The member timeout fails a request to the
 *   runtime while the device may still be reading the buffer (a hung `pwrite`, data queued on an NBD
 *   member's socket): such a buffer waits until the device returns. A backend that fails a request may
 *   still hold the buffer in a queue of its own, so a failed request poisons the buffer: it is never
 *   handed out again and is left to the collector.
 */

/** One buffer the pool handed out: its whole allocation and who still uses it. */
interface Loan {
  readonly base: Buffer;
  holds: number;
  released: boolean;
  poisoned: boolean;
}

export interface PayloadPoolStats {
  /** Payloads given a pooled buffer. */
  taken: number;
  /** Of them, served by a buffer used before. */
  reused: number;
  /** Buffers never to be reused: a device request on them failed. */
  poisoned: number;
  /** Bytes of idle buffers the pool keeps now. */
  idleBytes: number;
}

export class PayloadPool {
  private readonly free = new Map<number, Buffer[]>();
  private readonly loans = new WeakMap<ArrayBufferLike, Loan>();
  private idle = 0;
  private takenSinceTrim = 0;
  readonly stats: PayloadPoolStats = { taken: 0, reused: 0, poisoned: 0, idleBytes: 0 };

  /**
   * @param minBytes smallest payload worth a pooled buffer (smaller ones come from Node's own slab pool)
   * @param maxBytes largest one (larger payloads get a buffer of their own, as before)
   * @param keepBytes at most this many bytes of idle buffers are kept
   */
  constructor(
    readonly minBytes = 128 * 1024,
    readonly maxBytes = 8 * 1024 * 1024,
    readonly keepBytes = 16 * 1024 * 1024,
  ) {}

  /** Whether a payload of `len` bytes would be served from the pool. */
  fits(len: number): boolean {
    return len >= this.minBytes && len <= this.maxBytes;
  }

  /** A buffer of exactly `len` bytes (a view on a pooled one when `fits(len)`, else a buffer of its own). */
  take(len: number): Buffer {
    if (!this.fits(len)) return Buffer.allocUnsafe(len);
    this.takenSinceTrim++;
    const size = sizeClass(len);
    const list = this.free.get(size);
    let base = list?.pop();
    if (base) {
      this.idle -= size;
      this.stats.reused++;
    } else {
      base = Buffer.allocUnsafeSlow(size);
    }
    this.stats.taken++;
    this.stats.idleBytes = this.idle;
    this.loans.set(base.buffer, { base, holds: 0, released: false, poisoned: false });
    return base.subarray(0, len);
  }

  /** The taker is done with `buf` (from `take`; anything else is ignored). */
  release(buf: Buffer): void {
    const loan = this.loans.get(buf.buffer);
    if (!loan || loan.released) return;
    loan.released = true;
    this.settle(loan);
  }

  /**
   * A device request is about to be given `buf`. Returns null when the buffer is not the pool's, else
   * the function to call once the backend's own promise settles: with true if it succeeded.
   */
  hold(buf: Buffer): ((ok: boolean) => void) | null {
    if (buf.length < this.minBytes) return null;
    const loan = this.loans.get(buf.buffer);
    if (!loan) return null;
    loan.holds++;
    let done = false;
    return (ok: boolean) => {
      if (done) return;
      done = true;
      loan.holds--;
      if (!ok && !loan.poisoned) {
        loan.poisoned = true;
        this.stats.poisoned++;
      }
      this.settle(loan);
    };
  }

  /**
   * Runs `write`, a device request given `buf`, holding `buf` (when it is the pool's) until the request's
   * own promise settles: what every writer of a pooled buffer to a device calls.
   */
  writing(buf: Buffer, write: () => Promise<void>): Promise<void> {
    const done = this.hold(buf);
    if (!done) return write();
    let p: Promise<void>;
    try {
      p = write();
    } catch (e) {
      done(false);
      throw e;
    }
    p.then(() => done(true), () => done(false));
    return p;
  }

  /**
   * Drops the idle buffers if nothing was taken since the last call (the engine calls it every few
   * seconds, so they go back to the system within two periods after large writes stop).
   */
  trim(): void {
    const taken = this.takenSinceTrim;
    this.takenSinceTrim = 0;
    if (this.idle === 0 || taken > 0) return;
    this.free.clear();
    this.idle = 0;
    this.stats.idleBytes = 0;
  }

  private settle(loan: Loan): void {
    if (!loan.released || loan.holds > 0) return;
    this.loans.delete(loan.base.buffer);
    if (loan.poisoned) return;
    const size = loan.base.length;
    if (this.idle + size > this.keepBytes) return;
    let list = this.free.get(size);
    if (!list) this.free.set(size, (list = []));
    list.push(loan.base);
    this.idle += size;
    this.stats.idleBytes = this.idle;
  }
}

/** The power of two at or above `len`. */
function sizeClass(len: number): number {
  let s = 1;
  while (s < len) s *= 2;
  return s;
}

/**
 * The engine's pool: its NBD server takes large WRITE payloads from it, and a member hands its writes'
 * buffers to it (`hold`) on their way to the device. Buffers of anyone else are not the pool's.
 */
export const payloadPool = new PayloadPool();
