/** A queue of received chunks from which whole messages are taken without copying when possible. */
export class ByteQueue {
  private chunks: Buffer[] = [];
  private head = 0; // offset into chunks[0]
  length = 0;

  push(b: Buffer): void {
    if (b.length === 0) return;
    this.chunks.push(b);
    this.length += b.length;
  }

  /** Take exactly n bytes (caller checks `length >= n`). Zero-copy when they sit in one chunk. */
  take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0]!;
    if (first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.advance(n);
      return out;
    }
    return this.takeInto(Buffer.allocUnsafe(n));
  }

  /** Whether the next n bytes sit in one received chunk (`take(n)` would then copy nothing). */
  contiguous(n: number): boolean {
    const first = this.chunks[0];
    return first !== undefined && first.length - this.head >= n;
  }

  /** Take `out.length` bytes into `out` (caller checks `length >= out.length`); returns `out`. */
  takeInto(out: Buffer): Buffer {
    let filled = 0;
    while (filled < out.length) {
      const c = this.chunks[0]!;
      const m = Math.min(out.length - filled, c.length - this.head);
      c.copy(out, filled, this.head, this.head + m);
      filled += m;
      this.advance(m);
    }
    return out;
  }

  /** The first four bytes as a big-endian unsigned number, left in the queue (caller checks `length >= 4`). */
  peekUInt32BE(): number {
    const first = this.chunks[0]!;
    if (first.length - this.head >= 4) return first.readUInt32BE(this.head);
    let v = 0;
    let c = 0;
    let at = this.head;
    for (let i = 0; i < 4; i++) {
      while (at >= this.chunks[c]!.length) {
        c++;
        at = 0;
      }
      v = v * 256 + this.chunks[c]![at++]!;
    }
    return v;
  }

  /** Drop up to n bytes; returns how many were dropped. */
  skip(n: number): number {
    let left = n;
    while (left > 0 && this.chunks.length > 0) {
      const c = this.chunks[0]!;
      const m = Math.min(left, c.length - this.head);
      this.advance(m);
      left -= m;
    }
    return n - left;
  }

  private advance(n: number): void {
    this.head += n;
    this.length -= n;
    if (this.head === this.chunks[0]!.length) {
      this.chunks.shift();
      this.head = 0;
    }
  }
}
