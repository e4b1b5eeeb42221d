/**
 * Range locks over the virtual unit: overlapping writes (and copy chunks) run one at a time, in the
 * order they asked, so every member applies them in the same order and no copy overwrites newer data.
 *
 * First come, first served among overlapping requests: a request waits for every earlier request that
 * overlaps it, held or still waiting. A lock over the whole unit (a member leaving) is therefore never
 * starved by a stream of small writes that keep taking free ranges in front of it; they queue behind it.
 */
interface Entry {
  start: number;
  end: number;
  released: Promise<void>;
}

export class RangeLocks {
  /** Held and waiting requests, in the order they asked. */
  private entries: Entry[] = [];

  /** Requests held or waiting. */
  get size(): number {
    return this.entries.length;
  }

  /** Wait until every earlier overlapping request released [start, start+length), then hold it. Returns the release. */
  async acquire(start: number, length: number): Promise<() => void> {
    const end = start + length;
    const before = this.entries.filter((h) => h.start < end && start < h.end).map((h) => h.released);
    let release!: () => void;
    const entry: Entry = { start, end, released: new Promise<void>((r) => (release = r)) };
    this.entries.push(entry);
    if (before.length > 0) await Promise.all(before);
    return () => {
      const i = this.entries.indexOf(entry);
      if (i >= 0) this.entries.splice(i, 1);
      release();
    };
  }
}
