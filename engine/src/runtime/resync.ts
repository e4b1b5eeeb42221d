/**
 * One scheduler for full copy, minicopy and merge: chunk runs in order, each under a range lock so an
 * application write is never overwritten by stale copy data, throttled, yielding to application I/O,
 * with progress checkpointed in the SCB so a restart resumes instead of starting over.
 *
 * Copied data reaches the target through its cache; the target is flushed every FLUSH_BYTES (so the
 * device writes back while the copy goes on) and before a checkpoint may record progress or the job may
 * call the member complete. Without that, a power loss right after a copy could leave a member whose
 * metadata says InSync over data that never reached its disk.
 */
import type { Logger } from 'pino';
import { ChunkBitmap } from '../core/chunk-bitmap.js';
import { errorMessage } from '../core/errors.js';
import { chunkCount, HEADER_BYTES } from '../core/geometry.js';
import type { Recovery } from '../api/status.js';
import type { Member } from './member.js';
import type { RangeLocks } from './range-locks.js';
import { Throttle } from './throttle.js';

export type ResyncMode = 'FullCopy' | 'Minicopy' | 'Merge';

export interface ResyncHost {
  readonly size: number;
  readonly chunkSize: number;
  readonly locks: RangeLocks;
  readonly members: Member[];
  log: Logger;
  /** Application requests in flight; resync yields while there are any. */
  appInFlight(): number;
  removeMember(m: Member, state: 'Faulted', why: string): Promise<void>;
  /** Persist membership, checkpoints and bitmap descriptors. */
  checkpoint(): Promise<void>;
  /** A job finished: the host updates states, bitmaps and metadata. */
  finished(job: ResyncJob, ok: boolean, why: string): Promise<void>;
}

export interface ResyncSettings {
  copyBytesPerSecond: number;
  mergeBytesPerSecond: number;
  maxCopies: number;
  /** `null`: alternate between full members; else a member id (or the master, the first full member). */
  copySource: string | null;
}

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

export class ResyncJob {
  bytesDone = 0;
  readonly bytesTotal: number;
  /** performance.now() when the job began to run (its Started event): its Completed event's `seconds`. */
  startedAt = 0;
  running = false;
  cancelled = false;
  lastSource: string | null = null;
  /** First chunks of the runs in flight, and of runs dropped by a cancel: a checkpoint must not pass them. */
  readonly inflightStarts = new Set<number>();
  readonly unfinished = new Set<number>();
  readonly throttle: Throttle;
  /** A restart point whose copied data is on the target's stable storage: what a checkpoint records. */
  durableCursor: number;
  /** Bytes written to the target since its last flush began. */
  unflushed = 0;
  /** The target flush in progress, if any. */
  flushing: Promise<void> | null = null;
  constructor(
    readonly mode: ResyncMode,
    readonly target: Member | null,
    readonly chunks: ChunkList,
    host: ResyncHost,
    rate: number,
    readonly bitmapId: string | null = null,
  ) {
    this.bytesTotal = Math.min(chunks.total * host.chunkSize, host.size);
    this.throttle = new Throttle(rate);
    this.durableCursor = chunks.cursor;
  }

  /** Where a restart may resume: before every run still in flight. */
  safeCursor(): number {
    return Math.min(this.chunks.cursor, ...this.inflightStarts, ...this.unfinished);
  }
}

/**
 * A run is at most RUN_BYTES (or one chunk, if chunks are larger). Runs of about 1 MiB, with buffers
 * reused from a pool, kept the copy's working set in the CPU caches; 16 MiB runs in fresh buffers copied
 * at about half the rate (page faults on every new buffer, and nothing stays cached).
 */
const RUN_BYTES = 1024 * 1024;
const MAX_RUNS_IN_FLIGHT = 16;
const MAX_BYTES_IN_FLIGHT = 16 * 1024 * 1024;
const CHECKPOINT_MS = 2000;
/**
 * Flush a copy target after this many bytes, so its write-back overlaps the rest of the copy; a small job
 * (a minicopy) after a quarter of its bytes, but not for less than MIN_FLUSH_BYTES.
 */
const FLUSH_BYTES = 128 * 1024 * 1024;
const MIN_FLUSH_BYTES = 2 * 1024 * 1024;
/** Spare buffers the pool keeps. */
const POOL_KEEP = 32;

/** Reusable copy buffers of one size. */
class BufferPool {
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
class Lease {
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

export class Resync {
  readonly jobs: ResyncJob[] = [];
  readonly hostRef: ResyncHost;
  /** Chunks a merge has yet to reconcile (reads of them are merged first). */
  mergePending: ChunkBitmap | null = null;
  private zero: Buffer;
  /** Buffers of one run (or one chunk, whichever is larger). */
  private readonly pool: BufferPool;
  private readonly runChunks: number;
  private wake: (() => void) | null = null;
  private loop: Promise<void> | null = null;
  private stopped = false;

  constructor(private readonly host: ResyncHost, readonly settings: ResyncSettings) {
    this.hostRef = host;
    this.runChunks = Math.max(1, Math.floor(RUN_BYTES / host.chunkSize));
    this.pool = new BufferPool(this.runChunks * host.chunkSize);
    this.zero = Buffer.alloc(this.pool.size);
  }

  /**
   * Fault in the buffers the queued jobs' first window of runs will use. A fresh buffer costs a page
   * fault per 4 KiB on its first read (reading 22 MiB from the page cache took 8 ms into new buffers,
   * 1.5 ms into used ones), and a restart's minimerge runs all its runs at once. Done at start, while
   * the members' I/O threads start.
   */
  warmUp(): void {
    let n = 0;
    for (const j of this.jobs) {
      const runs = Math.min(MAX_RUNS_IN_FLIGHT, Math.ceil(j.bytesTotal / this.pool.size));
      n += j.mode === 'Merge' ? runs * this.host.members.filter((m) => m.isWritable).length : runs;
    }
    this.pool.warm(n);
  }

  /** Queue a copy or minicopy. */
  add(job: ResyncJob): void {
    this.jobs.push(job);
    this.kick();
  }

  /**
   * Queue a merge of `chunks`; it runs before any copy. Returns the map of chunks still to merge, which
   * reads consult and which shrinks as the merge goes.
   */
  addMerge(chunks: Iterable<number>): ChunkBitmap {
    const pending = new ChunkBitmap(chunkCount(this.host.size, this.host.chunkSize));
    for (const c of chunks) pending.set(c);
    this.mergePending = pending;
    this.jobs.unshift(new ResyncJob('Merge', null, bitmapList(pending), this.host, this.settings.mergeBytesPerSecond));
    this.kick();
    return pending;
  }

  get merging(): boolean {
    return this.jobs.some((j) => j.mode === 'Merge');
  }

  jobFor(m: Member): ResyncJob | undefined {
    return this.jobs.find((j) => j.target === m);
  }

  cancel(m: Member): void {
    for (const j of this.jobs) if (j.target === m) j.cancelled = true;
  }

  start(): void {
    this.loop ??= this.run();
  }

  private kick(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const j of this.jobs) j.cancelled = true;
    this.kick();
    await this.loop;
  }

  private async run(): Promise<void> {
    const active = new Set<Promise<void>>();
    while (!this.stopped) {
      // A merge runs alone and first; copies run up to maxCopies at once.
      const merge = this.jobs.find((j) => j.mode === 'Merge');
      const runnable = merge ? [merge] : this.jobs.filter((j) => j.mode !== 'Merge').slice(0, this.settings.maxCopies);
      for (const j of runnable) {
        if (j.running) continue;
        j.running = true;
        const p: Promise<void> = this.runJob(j).finally(() => active.delete(p));
        active.add(p);
      }
      await new Promise<void>((r) => {
        this.wake = r;
        for (const p of active) void p.then(() => this.kick());
      });
    }
    await Promise.allSettled([...active]);
  }

  private async runJob(job: ResyncJob): Promise<void> {
    const h = this.host;
    const kind = job.mode === 'Merge' ? 'Merge' : job.mode === 'Minicopy' ? 'Minicopy' : 'Copy';
    job.startedAt = performance.now();
    h.log.info({ event: `${kind}Started`, target: job.target?.id ?? null, bytes: job.bytesTotal }, `${job.mode} started`);
    let ok = true;
    let why = 'completed';
    let lastCheckpoint = Date.now();
    const inflight = new Set<Promise<void>>();
    const failure: { e: unknown } = { e: null };
    let bytesInFlight = 0;
    // Woken when a run ends (one waiter, not a Promise.race over every run in flight each time).
    let runEnded: (() => void) | null = null;
    const flushEvery = Math.min(FLUSH_BYTES, Math.max(MIN_FLUSH_BYTES, job.bytesTotal / 4));
    try {
      for (;;) {
        if (job.cancelled) {
          ok = false;
          why = 'cancelled';
          break;
        }
        if (job.target && !job.target.isWritable) {
          ok = false;
          why = `target ${job.target.location} left the set`;
          break;
        }
        // Keep a window of runs in flight: many small ones (a scattered minicopy) or a few large ones.
        let more = true;
        // A throttled job gains nothing from parallel runs: one at a time, about a quarter second of data each.
        const throttled = job.throttle.bytesPerSecond > 0;
        const maxRuns = throttled ? 1 : MAX_RUNS_IN_FLIGHT;
        const runChunks = throttled ? Math.max(1, Math.min(this.runChunks, Math.floor(job.throttle.bytesPerSecond / 4 / h.chunkSize))) : this.runChunks;
        while (more && !failure.e && inflight.size < maxRuns && bytesInFlight < MAX_BYTES_IN_FLIGHT) {
          const r = job.chunks.nextRun(runChunks);
          if (r.length === 0) {
            more = false;
            break;
          }
          if (h.appInFlight() > 0) await this.yieldToApp();
          const first = r[0]!;
          const bytes = r.length * h.chunkSize;
          bytesInFlight += bytes;
          job.inflightStarts.add(first);
          const p: Promise<void> = this.doRun(job, r)
            .catch((e: unknown) => {
              failure.e ??= e;
            })
            .finally(() => {
              inflight.delete(p);
              job.inflightStarts.delete(first);
              bytesInFlight -= bytes;
              const w = runEnded;
              runEnded = null;
              w?.();
            });
          inflight.add(p);
        }
        if (failure.e) throw failure.e;
        if (inflight.size === 0) break;
        await new Promise<void>((r) => (runEnded = r));
        if (failure.e) throw failure.e;
        const due = Date.now() - lastCheckpoint > CHECKPOINT_MS;
        if (job.target && !job.flushing && (job.unflushed >= flushEvery || (due && job.unflushed > 0))) {
          job.flushing = this.flushTarget(job)
            .catch((e: unknown) => {
              failure.e ??= e;
            })
            .finally(() => (job.flushing = null));
        }
        if (due) {
          // Records the cursor of the last completed flush (the data before it is on stable storage).
          lastCheckpoint = Date.now();
          await h.checkpoint().catch(() => undefined);
        }
      }
      if (job.flushing) await job.flushing;
      if (failure.e) throw failure.e;
      // Complete means on stable storage: the host marks the member InSync once this returns.
      if (job.target) await this.flushTarget(job);
    } catch (e) {
      ok = false;
      why = errorMessage(e);
    }
    await Promise.allSettled([...inflight]);
    if (job.flushing) await job.flushing;
    // A job cancelled by stop() stays listed, so the clean-stop SCB records its copy checkpoint.
    const i = this.jobs.indexOf(job);
    const keep = this.stopped && job.cancelled && (!job.target || job.target.isWritable);
    if (i >= 0 && !keep) this.jobs.splice(i, 1);
    if (job.mode === 'Merge' && ok) this.mergePending = null;
    h.log.info(
      { event: ok ? `${kind}Completed` : `${kind}Stopped`, target: job.target?.id ?? null, bytes: job.bytesDone, seconds: (performance.now() - job.startedAt) / 1000, reason: why },
      `${job.mode} ${ok ? 'completed' : `stopped: ${why}`}`,
    );
    await h.finished(job, ok, why);
  }

  /** Flush the job's target; afterwards a checkpoint may record the cursor from before the flush. */
  private async flushTarget(job: ResyncJob): Promise<void> {
    const target = job.target!;
    const cursor = job.safeCursor();
    job.unflushed = 0;
    try {
      await target.flush();
    } catch (e) {
      if (target.isWritable) await this.host.removeMember(target, 'Faulted', `flush of copied data failed: ${errorMessage(e)}`);
      throw e;
    }
    job.durableCursor = cursor;
  }

  /**
   * Every writable member was just flushed (a clean stop): what each copy wrote so far is durable.
   */
  markFlushed(): void {
    for (const j of this.jobs) if (j.target?.isWritable) j.durableCursor = j.safeCursor();
  }

  private async yieldToApp(): Promise<void> {
    // Application I/O first: wait (briefly, bounded) while requests are in flight.
    for (let i = 0; i < 20 && this.host.appInFlight() > 0; i++) await new Promise((r) => setTimeout(r, 1));
  }

  private async doRun(job: ResyncJob, run: number[]): Promise<void> {
    const cs = this.host.chunkSize;
    const off = run[0]! * cs;
    const len = Math.min(run.length * cs, this.host.size - off);
    await job.throttle.take(len, () => job.cancelled);
    if (job.cancelled) {
      job.unfinished.add(run[0]!); // never started: a checkpoint must stay before it
      return;
    }
    if (job.mode === 'Merge') await this.mergeRange(off, len, job);
    else await this.copyRange(job, off, len);
    job.bytesDone += len;
  }

  private pickSource(job: ResyncJob, exclude: Set<Member>): Member | null {
    const full = this.host.members.filter((m) => m.isFull && !exclude.has(m));
    if (full.length === 0) return null;
    const forced = this.settings.copySource;
    if (forced === 'master') return full[0]!;
    if (forced) return full.find((m) => m.id === forced) ?? full[0]!;
    // Alternate between full members, run by run.
    const i = full.findIndex((m) => m.id === job.lastSource);
    return full[(i + 1) % full.length]!;
  }

  private async copyRange(job: ResyncJob, off: number, len: number): Promise<void> {
    const target = job.target!;
    const release = await this.host.locks.acquire(off, len);
    const lease = this.pool.lease();
    try {
      const buf = lease.take(len);
      const tried = new Set<Member>();
      for (;;) {
        const src = this.pickSource(job, tried);
        if (!src) throw new Error('no full member left to copy from');
        try {
          await src.read(buf, HEADER_BYTES + off);
          job.lastSource = src.id;
          break;
        } catch (e) {
          lease.poisoned = true;
          tried.add(src);
          this.host.log.warn({ event: 'CopySourceReadError', member: src.id, err: errorMessage(e) }, 'copy source read failed');
        }
      }
      if (!target.isWritable) return;
      if (buf.equals(this.zero.subarray(0, len))) {
        // Zero on the source: write only if the target is not already zero.
        const t = lease.take(len);
        await target.read(t, HEADER_BYTES + off);
        if (t.equals(this.zero.subarray(0, len))) return;
        await target.writeZeroes(HEADER_BYTES + off, len, false);
      } else {
        await target.write(buf, HEADER_BYTES + off, false);
      }
      job.unflushed += len;
    } catch (e) {
      lease.poisoned = true;
      if (target.isWritable && !/no full member/.test(errorMessage(e))) {
        await this.host.removeMember(target, 'Faulted', `copy write failed: ${errorMessage(e)}`);
      }
      throw e;
    } finally {
      release();
      lease.end();
    }
  }

  /**
   * Make the chunks of [off, off+len) still pending identical on every member. The span from the first
   * to the last pending chunk is locked once and read once from each member (in parallel); each pending
   * chunk that differs from the master's is written. One I/O per member per span, not per chunk: a
   * minimerge of a hot region right after a restart (cold code, I/O threads still starting) spent most
   * of its time on the per-chunk round trips.
   */
  async mergeRange(off: number, len: number, job?: ResyncJob): Promise<void> {
    const pending = this.mergePending;
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

  recovery(): Recovery {
    const j = this.jobs.find((x) => x.running) ?? this.jobs[0];
    if (!j) return { mode: null, source: null, targets: [], bytesTotal: 0, bytesDone: 0, bytesPerSecond: 0, etaSeconds: null };
    const same = this.jobs.filter((x) => x.mode === j.mode);
    const total = same.reduce((a, x) => a + x.bytesTotal, 0);
    const done = same.reduce((a, x) => a + x.bytesDone, 0);
    const rate = same.reduce((a, x) => a + x.throttle.rate(), 0);
    const targets = j.mode === 'Merge'
      ? this.host.members.filter((m) => m.isWritable).map((m) => m.id)
      : same.map((x) => x.target!.id);
    return {
      mode: j.mode, source: j.lastSource, targets, bytesTotal: total, bytesDone: done, bytesPerSecond: rate,
      etaSeconds: rate > 0 ? Math.ceil((total - done) / rate) : null,
    };
  }
}
