/** Reusable copy buffers, leased by a run and returned together when it ends. */

/** Spare buffers the pool keeps. */
const POOL_KEEP = 32;

/** Reusable copy buffers of one size. */
export class BufferPool {
  private readonly free: Buffer[] = [];
  constructor(readonly size: number) {}
  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }
  give(buf: Buffer): void {
    if (this.free.length < POOL_KEEP) this.free.push(buf);
  }
  /** Have `n` buffers (at most POOL_KEEP) ready, their pages already faulted in. */
  warm(n: number): void {
    while (this.free.length < Math.min(n, POOL_KEEP)) this.free.push(Buffer.allocUnsafeSlow(this.size).fill(0));
  }
  lease(): Lease {
    return new Lease(this);
  }
}

/**
 * The buffers one run uses, handed back together when it ends — unless a request on them failed: a
 * request that failed (a timeout, say) may still be running on its device and land in its buffer later,
 * so such buffers are never handed out again.
 */
export class Lease {
  private readonly taken: Buffer[] = [];
  poisoned = false;
  constructor(private readonly pool: BufferPool) {}
  /** `len` bytes: from the pool when they fit a pooled buffer, else a buffer of their own. */
  take(len: number): Buffer {
    if (len > this.pool.size) return Buffer.allocUnsafe(len);
    const b = this.pool.take();
    this.taken.push(b);
    return b.subarray(0, len);
  }
  end(): void {
    if (!this.poisoned) for (const b of this.taken) this.pool.give(b);
  }
}
