/**
 * One scheduler for full copy, minicopy and merge: chunk runs in order, each under a range lock so an
 * application write is never overwritten by stale copy data, throttled, yielding to application I/O,
 * with progress checkpointed in the SCB so a restart resumes instead of starting over.
 *
 * Copied data reaches the target through its cache; the target is flushed every FLUSH_BYTES (so the
 * device writes back while the copy goes on) and before a checkpoint may record progress or the job may
 * call the member complete. Without that, a power loss right after a copy could leave a member whose
 * metadata says InSync over data that never reached its disk.
 *
 * Somewhat over 300 lines: the scheduler's loop, its locks and its flush-before-checkpoint rule are
 * kept together; chunk lists, jobs, buffers and the merge's repair are in files of their own.
 */
import { ChunkBitmap } from '../core/chunk-bitmap.js';
import { errorMessage } from '../core/errors.js';
import { chunkCount, HEADER_BYTES } from '../core/geometry.js';
import type { Recovery } from '../api/status.js';
import { BufferPool } from './buffer-pool.js';
import { bitmapList } from './chunk-lists.js';
import type { Member } from './member.js';
import { Merger } from './merge.js';
import { ResyncJob, type ResyncHost, type ResyncSettings } from './resync-job.js';
import { SourceHoles } from './source-holes.js';

/**
 * A run is at most RUN_BYTES (or one chunk, if chunks are larger). Runs of about 1 MiB, with buffers
 * reused from a pool, kept the copy's working set in the CPU caches; 16 MiB runs in fresh buffers copied
 * at about half the rate (page faults on every new buffer, and nothing stays cached).
 */
const RUN_BYTES = 1024 * 1024;
const MAX_RUNS_IN_FLIGHT = 16;
const MAX_BYTES_IN_FLIGHT = 16 * 1024 * 1024;
const CHECKPOINT_MS = 2000;
/** pickSource's exclusions when none were tried (a run passed over among holes asks once per run). */
const NONE_TRIED: ReadonlySet<Member> = new Set();
/**
 * Flush a copy target after this many bytes, so its write-back overlaps the rest of the copy. A job
 * smaller than that has one flush, at its end (and one at each checkpoint): the flushes a quarter of the
 * way through that small minicopies once had each forced a journal commit and a cache flush of the device
 * for a few MiB of scattered chunks, and a 1 % minicopy took 1.5x a bare copy with a single fdatasync.
 */
const FLUSH_BYTES = 128 * 1024 * 1024;
export class Resync {
  readonly jobs: ResyncJob[] = [];
  readonly hostRef: ResyncHost;
  private readonly merger: Merger;
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
    this.merger = new Merger(host, this.pool, settings);
  }

  /** Chunks a merge has yet to reconcile (reads of them are merged first). */
  get mergePending(): ChunkBitmap | null {
    return this.merger.pending;
  }

  private set mergePending(p: ChunkBitmap | null) {
    this.merger.pending = p;
  }

  /** Make the pending chunks of [off, off+len) identical on every member (see Merger). */
  mergeRange(off: number, len: number, job?: ResyncJob): Promise<void> {
    return this.merger.mergeRange(off, len, job);
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
    job.startedAt = h.clock.monotonic();
    // A full copy learns where its sources hold no data (file members: SEEK_DATA) and leaves those runs
    // unread. Minicopies copy chunks that were written, and merges compare members: neither gains.
    if (job.mode === 'FullCopy' && job.target && !job.cancelled) {
      job.holes = await SourceHoles.take(h.members.filter((m) => m.isFull), h.size, h.chunkSize);
    }
    const sourceHoles = job.holes
      ? Object.fromEntries(h.members.filter((m) => m.isFull).map((m) => [m.id, job.holes!.holeBytes(m)]))
      : undefined;
    h.log.info({ event: `${kind}Started`, target: job.target?.id ?? null, bytes: job.bytesTotal, sourceHoleBytes: sourceHoles }, `${job.mode} started`);
    let ok = true;
    let why = 'completed';
    let lastCheckpoint = h.clock.monotonic();
    const inflight = new Set<Promise<void>>();
    const failure: { e: unknown } = { e: null };
    let bytesInFlight = 0;
    // Woken when a run ends (one waiter, not a Promise.race over every run in flight each time).
    let runEnded: (() => void) | null = null;
    const flushEvery = FLUSH_BYTES;
    let skipped = 0;
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
          if (this.holeNeedsNothing(job, r)) {
            // Thousands of these can follow each other (a large sparse set): let application I/O run.
            if (++skipped % 256 === 0) await new Promise<void>((res) => setImmediate(res));
            if (job.cancelled) break;
            continue;
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
        // Nothing in flight: done if no run is left; if runs are left (a cancel seen while passing over
        // holes) the loop's first check ends the job as stopped, never as complete.
        if (inflight.size === 0) {
          if (more) continue;
          break;
        }
        await new Promise<void>((r) => (runEnded = r));
        if (failure.e) throw failure.e;
        const due = h.clock.monotonic() - lastCheckpoint > CHECKPOINT_MS;
        if (job.target && !job.flushing && (job.unflushed >= flushEvery || (due && job.unflushed > 0))) {
          job.flushing = this.flushTarget(job)
            .catch((e: unknown) => {
              failure.e ??= e;
            })
            .finally(() => (job.flushing = null));
        }
        if (due) {
          // Records the cursor of the last completed flush (the data before it is on stable storage).
          lastCheckpoint = h.clock.monotonic();
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
    job.holes?.close();
    job.holes = null;
    // A job cancelled by stop() stays listed, so the clean-stop SCB records its copy checkpoint.
    const i = this.jobs.indexOf(job);
    const keep = this.stopped && job.cancelled && (!job.target || job.target.isWritable);
    if (i >= 0 && !keep) this.jobs.splice(i, 1);
    if (job.mode === 'Merge' && ok) this.mergePending = null;
    h.log.info(
      {
        event: ok ? `${kind}Completed` : `${kind}Stopped`, target: job.target?.id ?? null, bytes: job.bytesDone,
        unreadBytes: job.mode === 'FullCopy' ? job.bytesUnread : undefined, seconds: (h.clock.monotonic() - job.startedAt) / 1000, reason: why,
      },
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

  private pickSource(job: ResyncJob, exclude: ReadonlySet<Member>): Member | null {
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
      // Every chunk of the run is a hole on the source (and unwritten since the map): zero, left unread.
      let hole = false;
      for (;;) {
        const src = this.pickSource(job, tried);
        if (!src) throw new Error('no full member left to copy from');
        if (job.holes?.allHoles(src, off, len)) {
          hole = true;
          job.lastSource = src.id;
          job.bytesUnread += len;
          break;
        }
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
      if (hole || buf.equals(this.zero.subarray(0, len))) {
        // Zero on the source: write only if the target is not already zero. A target that held no data
        // when it was admitted is zero wherever the source is (Member.heldNoDataAtAdmission): not read.
        // On a fresh sparse file that read was most of a zero run's cost (the kernel fills a page per 4 KiB).
        if (target.heldNoDataAtAdmission) return;
        const t = lease.take(len);
        await target.read(t, HEADER_BYTES + off);
        if (t.equals(this.zero.subarray(0, len))) return;
        await target.writeZeroes(HEADER_BYTES + off, len, false);
      } else if (target.heldNoDataAtAdmission) {
        // Zero on the target wherever the source is (see above), chunk by chunk too: only the chunks
        // with data are written, so a new member stays as sparse as its source (and a run holding one
        // written chunk costs one chunk's write, not the run's).
        await Promise.all(this.dataSpans(buf, len).map(([a, b]) => target.write(buf.subarray(a, b), HEADER_BYTES + off + a, false)));
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
   * A run of a full copy that needs no I/O at all: every chunk a hole on the source it would read (and
   * unwritten since the map), onto a target that held no data (so zero there too). Nothing is read or
   * written, so no range lock is needed: a write racing it reaches the target itself. Counted as done
   * at once, without the scheduler's per-run work (a 64 GiB sparse set has 65,536 runs).
   */
  private holeNeedsNothing(job: ResyncJob, run: number[]): boolean {
    if (!job.holes || !job.target?.heldNoDataAtAdmission) return false;
    const src = this.pickSource(job, NONE_TRIED);
    const off = run[0]! * this.host.chunkSize;
    const len = Math.min(run.length * this.host.chunkSize, this.host.size - off);
    if (!src || !job.holes.allHoles(src, off, len)) return false;
    job.lastSource = src.id;
    job.bytesUnread += len;
    job.bytesDone += len;
    return true;
  }

  /** The spans [a, b) of buf's first len bytes made of whole chunks that are not all zero, adjacent ones joined. */
  private dataSpans(buf: Buffer, len: number): Array<[number, number]> {
    const cs = this.host.chunkSize;
    const spans: Array<[number, number]> = [];
    for (let a = 0; a < len; a += cs) {
      const b = Math.min(a + cs, len);
      if (buf.subarray(a, b).equals(this.zero.subarray(0, b - a))) continue;
      const last = spans[spans.length - 1];
      if (last && last[1] === a) last[1] = b;
      else spans.push([a, b]);
    }
    return spans;
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
