/**
 * Merging: make chunks that may differ between the members (writes in flight at a crash) identical again,
 * from the master (the first full member, or the forced copy source). Used by the merge job, run by run,
 * and by reads of chunks the merge has not reached yet.
 */
import { errorMessage } from '../core/errors.js';
import type { ChunkBitmap } from '../core/chunk-bitmap.js';
import { HEADER_BYTES } from '../core/geometry.js';
import type { BufferPool } from './buffer-pool.js';
import type { ResyncHost, ResyncJob, ResyncSettings } from './resync-job.js';

export class Merger {
  /** Chunks a merge has yet to reconcile (reads of them are merged first). */
  pending: ChunkBitmap | null = null;

  constructor(private readonly host: ResyncHost, private readonly pool: BufferPool, private readonly settings: ResyncSettings) {}

  /**
   * Make the chunks of [off, off+len) still pending identical on every member. The span from the first
   * to the last pending chunk is locked once and read once from each member (in parallel); each pending
   * chunk that differs from the master's is written. One I/O per member per span, not per chunk: a
   * minimerge of a hot region right after a restart (cold code, I/O threads still starting) spent most
   * of its time on the per-chunk round trips.
   */
  async mergeRange(off: number, len: number, job?: ResyncJob): Promise<void> {
    const pending = this.pending;
    if (!pending) return;
    const cs = this.host.chunkSize;
    const first = Math.floor(off / cs);
    const last = Math.floor((off + Math.max(len, 1) - 1) / cs);
    const owed = () => {
      const out: number[] = [];
      for (let c = first; c <= last; c++) if (pending.has(c)) out.push(c);
      return out;
    };
    let chunks = owed();
    if (chunks.length === 0) return;
    const spanOf = (cs0: number[]) => {
      const from = cs0[0]! * cs;
      return { from, length: Math.min((cs0[cs0.length - 1]! + 1) * cs, this.host.size) - from };
    };
    const span = spanOf(chunks);
    const release = await this.host.locks.acquire(span.from, span.length);
    try {
      chunks = owed(); // some may have been merged while we waited
      if (chunks.length === 0) return;
      const now = spanOf(chunks);
      await this.mergeSpan(now.from, now.length, chunks, job);
      for (const c of chunks) pending.clear(c);
    } finally {
      release();
    }
  }

  private async mergeSpan(off: number, len: number, chunks: number[], job?: ResyncJob): Promise<void> {
    const cs = this.host.chunkSize;
    for (;;) {
      const full = this.host.members.filter((m) => m.isFull);
      const master = this.settings.copySource && this.settings.copySource !== 'master'
        ? (full.find((m) => m.id === this.settings.copySource) ?? full[0])
        : full[0];
      if (!master) throw new Error('no full member left to merge from');
      const others = this.host.members.filter((m) => m !== master && m.isWritable);
      const lease = this.pool.lease();
      try {
        const good = lease.take(len);
        const theirs = others.map(() => lease.take(len));
        const failed = (p: Promise<void>): Promise<unknown> => p.then(() => null, (e: unknown) => {
          lease.poisoned = true;
          return e ?? new Error('read failed');
        });
        const masterRead = failed(master.read(good, HEADER_BYTES + off));
        const otherReads = others.map((m, i) => failed(m.read(theirs[i]!, HEADER_BYTES + off)));
        const err = await masterRead;
        if (err) {
          await Promise.all(otherReads);
          await this.host.removeMember(master, 'Faulted', `merge read failed: ${errorMessage(err)}`);
          // The last full member is kept (it cannot be removed): the merge of this span fails instead.
          if (master.isFull) throw err;
          continue;
        }
        if (job) job.lastSource = master.id;
        await Promise.all(others.map(async (m, i) => {
          try {
            const readErr = await otherReads[i];
            if (readErr) throw readErr;
            const mine = theirs[i]!;
            // Pending chunks that differ; adjacent ones go out as one write.
            const writes: Promise<void>[] = [];
            let runFrom = -1;
            let runTo = -1;
            const emit = () => {
              if (runFrom >= 0) writes.push(m.write(good.subarray(runFrom, runTo), HEADER_BYTES + off + runFrom, false));
              runFrom = -1;
            };
            for (const c of chunks) {
              const a = c * cs - off;
              const b = Math.min(a + cs, len);
              if (good.compare(mine, a, b, a, b) === 0) continue;
              if (runFrom >= 0 && a === runTo) runTo = b;
              else {
                emit();
                runFrom = a;
                runTo = b;
              }
            }
            emit();
            await Promise.all(writes);
          } catch (e) {
            lease.poisoned = true;
            await this.host.removeMember(m, 'Faulted', `merge failed: ${errorMessage(e)}`);
          }
        }));
        return;
      } finally {
        lease.end();
      }
    }
  }
}
