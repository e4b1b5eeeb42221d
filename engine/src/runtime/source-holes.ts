/**
 * A full copy's knowledge of where its source members hold no data, so that it can leave those runs
 * unread (issue 16: a copy of a half-empty source should cost about half of a full one).
 *
 * Taken once, when the copy starts, from each full member whose backend can say (BlockBackend.dataExtents:
 * SEEK_DATA on a file member). A map is only as good as the moment it was taken, so it is kept true
 * afterwards without trusting timing:
 * - a member's writes are observed from before the question is asked (Member.observeWrites), and every
 *   chunk a write touches stops counting as a hole at the moment the write is issued;
 * - the question is asked only once every operation issued before the observer was installed has settled
 *   (Member.earlierSettled), so no write can be in flight unseen while the file system answers;
 * - a copy run holds the range lock of its chunks, and every write to a member's data area is made under
 *   a range lock too (application writes, merges, repairs), so no write can slip between the check and
 *   the run.
 * A chunk past the set's size when the map was taken (a set grown since) never counts as a hole.
 */
import { ChunkBitmap } from '../core/chunk-bitmap.js';
import { chunkCount, HEADER_BYTES } from '../core/geometry.js';
import type { Member } from './member.js';

/** How long to wait for a member's earlier operations to settle before giving up its map. */
const SETTLE_LIMIT_MS = 5000;

interface MemberMap {
  /** The chunks that were holes when the map was taken. */
  readonly holes: ChunkBitmap;
  /** The chunks a write touched since the observer was installed. */
  readonly written: ChunkBitmap;
}

export class SourceHoles {
  private readonly maps = new Map<Member, MemberMap>();
  private readonly stops: Array<() => void> = [];

  private constructor(private readonly chunkSize: number, private readonly chunks: number) {}

  /**
   * Maps of the given members (the copy's possible sources) that can tell; members that cannot are left
   * out, and a copy from them reads every run. `size` is the unit's size in bytes.
   */
  static async take(members: Member[], size: number, chunkSize: number): Promise<SourceHoles> {
    const chunks = chunkCount(size, chunkSize);
    const s = new SourceHoles(chunkSize, chunks);
    await Promise.all(members.filter((m) => m.backend.dataExtents).map((m) => s.takeOne(m, size)));
    return s;
  }

  private async takeOne(m: Member, size: number): Promise<void> {
    const written = new ChunkBitmap(this.chunks);
    const cs = this.chunkSize;
    const last = this.chunks - 1;
    const stop = m.observeWrites((offset, length) => {
      const start = offset - HEADER_BYTES;
      const end = start + length;
      if (end <= 0 || length <= 0) return;
      const c1 = Math.min(last, Math.floor((end - 1) / cs));
      for (let c = Math.floor(Math.max(0, start) / cs); c <= c1; c++) written.set(c);
    });
    this.stops.push(stop);
    if (!(await m.earlierSettled(SETTLE_LIMIT_MS))) return;
    const extents = await m.backend.dataExtents!().catch(() => null);
    if (!extents) return;
    const holes = new ChunkBitmap(this.chunks);
    holes.setAll();
    for (const [s, e] of extents) {
      const start = s - HEADER_BYTES;
      const end = e - HEADER_BYTES;
      if (end <= 0 || start >= size) continue;
      const c1 = Math.min(last, Math.floor((end - 1) / cs));
      for (let c = Math.floor(Math.max(0, start) / cs); c <= c1; c++) holes.clear(c);
    }
    this.maps.set(m, { holes, written });
  }

  /** Members with a map. */
  get mapped(): number {
    return this.maps.size;
  }

  /** Bytes of the unit that were holes on `m` when its map was taken (0 without a map). */
  holeBytes(m: Member): number {
    return (this.maps.get(m)?.holes.count ?? 0) * this.chunkSize;
  }

  /** True when every chunk of [offset, offset + length) of the unit is a hole on `m` and unwritten since. */
  allHoles(m: Member, offset: number, length: number): boolean {
    const map = this.maps.get(m);
    if (!map || length <= 0) return false;
    const c1 = Math.floor((offset + length - 1) / this.chunkSize);
    if (c1 >= this.chunks) return false;
    for (let c = Math.floor(offset / this.chunkSize); c <= c1; c++) {
      if (!map.holes.has(c) || map.written.has(c)) return false;
    }
    return true;
  }

  /** Stop observing writes (the copy ended). */
  close(): void {
    for (const stop of this.stops.splice(0)) stop();
    this.maps.clear();
  }
}
