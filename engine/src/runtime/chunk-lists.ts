/** The chunks a resync job works through: ascending runs of consecutive chunks, from a range or a bitmap. */
import type { ChunkBitmap } from '../core/chunk-bitmap.js';

/** Chunks a job works through, ascending. */
export interface ChunkList {
  total: number;
  /** Take the next run of up to `max` consecutive chunks; empty when done. */
  nextRun(max: number): number[];
  /** The first chunk not yet handed out (a safe restart point for ascending lists). */
  readonly cursor: number;
}

/** A cursor over an ascending list of chunks that hands out runs of consecutive ones. */
class SortedRuns {
  i = 0;
  constructor(readonly list: number[]) {}
  take(max: number): number[] {
    const out: number[] = [];
    while (out.length < max && this.i < this.list.length) {
      const c = this.list[this.i]!;
      if (out.length > 0 && c !== out[out.length - 1]! + 1) break;
      out.push(c);
      this.i++;
    }
    return out;
  }
  get head(): number | undefined {
    return this.list[this.i];
  }
}

/** Chunks [from, to), preceded by `extra` chunks below `from` (chunks to redo after a crash). */
export function rangeList(from: number, to: number, extra: number[] = []): ChunkList {
  const pre = new SortedRuns([...new Set(extra.filter((c) => c < from))].sort((a, b) => a - b));
  let next = from;
  return {
    total: pre.list.length + Math.max(0, to - from),
    nextRun(max) {
      const out = pre.take(max);
      if (out.length > 0) return out;
      while (out.length < max && next < to) out.push(next++);
      return out;
    },
    get cursor() {
      return pre.head ?? next;
    },
  };
}

export function bitmapList(map: ChunkBitmap): ChunkList {
  const runs = new SortedRuns(map.list());
  return {
    total: runs.list.length,
    nextRun: (max) => runs.take(max),
    get cursor() {
      return runs.head ?? Number.MAX_SAFE_INTEGER;
    },
  };
}
