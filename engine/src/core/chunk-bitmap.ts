/**
 * A bitmap with one bit per chunk of the virtual unit, as used by the write-intent log and by write
 * bitmaps. It remembers which 4 KiB pages changed since they were last persisted, so only those are
 * written.
 */
export const PAGE_BYTES = 4096;
const PAGE_BITS = PAGE_BYTES * 8;
/** Set bits in each byte value. */
const BITS_IN = Uint8Array.from({ length: 256 }, (_, v) => {
  let n = 0;
  for (let x = v; x; x >>= 1) n += x & 1;
  return n;
});

export class ChunkBitmap {
  readonly bits: Uint8Array;
  private readonly dirtyPages = new Set<number>();
  private setCount = 0;

  constructor(readonly chunks: number, bytes?: Uint8Array) {
    const len = Math.ceil(Math.ceil(chunks / 8) / PAGE_BYTES) * PAGE_BYTES;
    this.bits = new Uint8Array(Math.max(len, PAGE_BYTES));
    if (bytes) {
      this.bits.set(bytes.subarray(0, Math.min(bytes.length, this.bits.length)));
      // Bits past the last chunk are noise from another geometry: drop them.
      for (let c = chunks; c < this.bits.length * 8; c++) this.bits[c >> 3]! &= ~(1 << (c & 7));
      // Counted a byte at a time (a bit at a time took 50 ms for the largest bitmap, at every start).
      for (let i = 0; i < this.bits.length; i++) this.setCount += BITS_IN[this.bits[i]!]!;
    }
  }

  get pageCount(): number {
    return this.bits.length / PAGE_BYTES;
  }

  has(c: number): boolean {
    return (this.bits[c >> 3]! & (1 << (c & 7))) !== 0;
  }

  /** Set a bit; true if it was clear. */
  set(c: number): boolean {
    if (c < 0 || c >= this.chunks) throw new RangeError(`chunk ${c} outside 0..${this.chunks - 1}`);
    const i = c >> 3;
    const m = 1 << (c & 7);
    if (this.bits[i]! & m) return false;
    this.bits[i] = this.bits[i]! | m;
    this.dirtyPages.add(Math.floor(c / PAGE_BITS));
    this.setCount++;
    return true;
  }

  clear(c: number): boolean {
    const i = c >> 3;
    const m = 1 << (c & 7);
    if (!(this.bits[i]! & m)) return false;
    this.bits[i] = this.bits[i]! & ~m;
    this.dirtyPages.add(Math.floor(c / PAGE_BITS));
    this.setCount--;
    return true;
  }

  setAll(): void {
    for (let c = 0; c < this.chunks; c++) this.set(c);
  }

  get count(): number {
    return this.setCount;
  }

  /** Chunk indexes that are set, ascending. Skips empty words four bytes at a time (bits past the end are always clear). */
  list(): number[] {
    const out: number[] = [];
    const words = new Uint32Array(this.bits.buffer, this.bits.byteOffset, this.bits.length >> 2);
    for (let w = 0; w < words.length; w++) {
      if (words[w] === 0) continue;
      for (let i = w * 4; i < w * 4 + 4; i++) {
        const b = this.bits[i]!;
        if (b === 0) continue;
        for (let k = 0; k < 8; k++) if (b & (1 << k)) out.push(i * 8 + k);
      }
    }
    return out;
  }

  /** Pages changed since the last call, with their bytes (copied). */
  takeDirtyPages(): { page: number; bytes: Uint8Array }[] {
    const out = [...this.dirtyPages].sort((a, b) => a - b).map((page) => ({
      page,
      bytes: this.bits.slice(page * PAGE_BYTES, (page + 1) * PAGE_BYTES),
    }));
    this.dirtyPages.clear();
    return out;
  }

  /** Every page with its bytes (copied), leaving the record of changed pages alone. */
  allPages(): { page: number; bytes: Uint8Array }[] {
    return Array.from({ length: this.pageCount }, (_, page) => ({ page, bytes: this.bits.slice(page * PAGE_BYTES, (page + 1) * PAGE_BYTES) }));
  }

  /** Mark every page for writing (used when a bitmap is first placed in a slot). */
  touchAll(): void {
    for (let p = 0; p < this.pageCount; p++) this.dirtyPages.add(p);
  }

  union(other: ChunkBitmap): void {
    for (const c of other.list()) if (c < this.chunks) this.set(c);
  }
}
