/**
 * Range locks over the virtual unit: overlapping writes (and copy chunks) run one at a time, in the
 * order they asked, so every member applies them in the same order and no copy overwrites newer data.
 */
interface Held {
  start: number;
  end: number;
  released: Promise<void>;
}

export class RangeLocks {
  private held: Held[] = [];

  get size(): number {
    return this.held.length;
  }

  /** Wait until no held range overlaps [start, start+length), then hold it. Returns the release. */
  async acquire(start: number, length: number): Promise<() => void> {
    const end = start + length;
    for (;;) {
      const blocker = this.held.find((h) => h.start < end && start < h.end);
      if (!blocker) break;
      await blocker.released;
    }
    let release!: () => void;
    const entry: Held = { start, end, released: new Promise<void>((r) => (release = r)) };
    this.held.push(entry);
    return () => {
      const i = this.held.indexOf(entry);
      if (i >= 0) this.held.splice(i, 1);
      release();
    };
  }
}
