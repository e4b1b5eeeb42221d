/**
 * The I/O threads of the engine's file members, shared: one thread serves the rings of every member
 * (io-worker.ts), so a mirrored write wakes one thread, not one per member, and its two completions
 * come back on one wake-up of the main thread. Each further member costs a ring, not a thread.
 *
 * A shared thread has one weakness a thread per member did not: a system call that hangs (a member on a
 * device that stopped answering) would hold up every other member's requests too. The group watches
 * for that: a ring with requests waiting that no thread has taken for two ticks of STALL_MS, while no
 * thread holds it, gets a further thread, which serves every ring the stuck one does not hold (each ring
 * is run by one thread at a time, under its LOCK). A further thread leaves again once it has been idle
 * for RETIRE_MS and no ring is being run. The member on the hung device then waits as before, until
 * the runtime's member timeout removes it; the others go on after at most a few hundred milliseconds.
 *
 * A thread that fails (not one that retires) takes the group down: every request it held fails, every
 * member of the group goes on through the thread pool (FileBackend), and members opened later get a new
 * group.
 */
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { EngineError } from '../../core/errors.js';
import type { Control, RingAssignment, WorkerInit, WorkerReport } from './io-worker.js';
import { BELL, BELL_INTS, CONTROL, DONE_BELL, IDLE, LOCK, SUB_HEAD, TAIL, type RingBuffers } from './ring-protocol.js';

/** What the group needs of a member using it (ring-backend.ts). */
export interface GroupMember {
  /** Takes the completions published on its ring; returns how many. */
  drain(): number;
  /** A thread serves its ring from now on. */
  online(): void;
  /** The group failed: fail what the ring holds; later requests take the thread pool. */
  fail(e: EngineError): void;
}

export interface IoGroupOptions {
  /** How often the group looks for rings no thread takes (ms). */
  stallMs?: number;
  /** How long a further thread stays idle before it leaves (ms). */
  retireMs?: number;
  /** The most threads the group runs (never more than it has members). */
  maxThreads?: number;
}

/**
 * An I/O thread only moves bytes between the rings and system calls, so it allocates almost nothing:
 * after start its heap holds about 5 MiB (Node's own bootstrap). Without limits each isolate would size
 * its heap like the main thread's; these caps keep it about 1 MiB smaller, with three times its need as
 * margin (a thread over them fails, which takes the group down as any failure does).
 */
const IO_THREAD_LIMITS = { maxYoungGenerationSizeMb: 1, maxOldGenerationSizeMb: 16 };
const DEFAULTS: Required<IoGroupOptions> = { stallMs: 100, retireMs: 5000, maxThreads: 8 };

interface Attached {
  assignment: RingAssignment;
  member: GroupMember;
  ctl: Int32Array;
  /** TAIL at the last tick, and whether requests were waiting untaken then. */
  lastTail: number;
  waitingAtLastTick: boolean;
}

export class IoGroup {
  private static current: IoGroup | null = null;

  /** The process's group (a new one if the last one failed). */
  static shared(): IoGroup {
    if (!IoGroup.current || IoGroup.current.failure) IoGroup.current = new IoGroup();
    return IoGroup.current;
  }

  private readonly o: Required<IoGroupOptions>;
  private readonly bell = new Int32Array(new SharedArrayBuffer(4 * BELL_INTS));
  /** Each live thread's control port, and a promise of its end. */
  private readonly threads = new Map<Worker, { port: MessagePort; exit: Promise<void> }>();
  private readonly members = new Map<number, Attached>();
  private nextThreadId = 1;
  private nextRingId = 1;
  private outstanding = 0;
  private armed = false;
  private kickQueued = false;
  /** Rings attached that no thread has reported serving yet. */
  private readonly unserved = new Set<number>();
  /** DONE_BELL as read before the last drain. */
  private doneSeen = 0;
  /** A thread started and not yet running its code. */
  private starting: Worker | null = null;
  private watchdog: NodeJS.Timeout | null = null;
  /** Set when a thread failed: the group serves nothing more. */
  failure: EngineError | null = null;

  constructor(o: IoGroupOptions = {}) {
    this.o = { ...DEFAULTS, ...o };
  }

  /** How many I/O threads the group runs now. */
  get threadCount(): number {
    return this.threads.size;
  }

  /** Adds a member's ring; `member.online()` is called when a thread serves it. Returns the ring's id. */
  attach(ring: RingBuffers, fd: number, syncFd: number, member: GroupMember): number {
    const id = this.nextRingId++;
    if (this.failure) {
      member.fail(this.failure);
      return id;
    }
    const assignment: RingAssignment = { id, ring, fd, syncFd };
    const ctl = new Int32Array(ring.ctl);
    this.members.set(id, { assignment, member, ctl, lastTail: Atomics.load(ctl, TAIL), waitingAtLastTick: false });
    this.unserved.add(id);
    if (this.threads.size === 0) this.startThread();
    else this.control({ add: assignment });
    this.updateRefs();
    this.watch();
    return id;
  }

  /** Takes a member's ring off the threads. Only once nothing of it is outstanding (ring-backend.ts). */
  detach(id: number): void {
    if (!this.members.delete(id) || this.failure) return;
    this.unserved.delete(id);
    this.updateRefs();
    this.control({ remove: id });
    this.watch();
  }

  /** A request was published on a member's ring. */
  submitted(): void {
    if (this.outstanding++ === 0) this.updateRefs();
    if (!this.kickQueued) {
      this.kickQueued = true;
      queueMicrotask(this.kick);
    }
    this.arm();
  }

  /** Resolves when every thread of a failed group has stopped (none touches a descriptor any more). */
  stopped(): Promise<void> {
    return Promise.all([...this.threads.values()].map((t) => t.exit)).then(() => undefined);
  }

  /**
   * Wakes a sleeping thread. Queued as a microtask, so every request published in the same turn of the
   * event loop (both halves of a mirrored write, a batch of NBD requests) costs one wake-up. None is
   * lost: a thread reads BELL before it looks at the rings and sleeps only if BELL is unchanged.
   */
  private readonly kick = (): void => {
    this.kickQueued = false;
    Atomics.add(this.bell, BELL, 1);
    if (Atomics.load(this.bell, IDLE) > 0) Atomics.notify(this.bell, BELL, 1);
  };

  private control(c: Control): void {
    for (const { port } of this.threads.values()) port.postMessage(c);
    Atomics.add(this.bell, CONTROL, 1);
    Atomics.add(this.bell, BELL, 1);
    Atomics.notify(this.bell, BELL); // every thread reads its port
  }

  private arm(): void {
    if (this.armed || this.outstanding === 0 || this.failure) return;
    this.armed = true;
    // Waits for DONE_BELL to move past the value read before the last drain: completions published
    // since then (not yet taken) make it return at once.
    const r = Atomics.waitAsync(this.bell, DONE_BELL, this.doneSeen);
    if (r.async) void r.value.then(this.drain);
    else queueMicrotask(this.drain);
  }

  private readonly drain = (): void => {
    this.armed = false;
    if (this.failure) return;
    this.doneSeen = Atomics.load(this.bell, DONE_BELL);
    for (const m of this.members.values()) this.outstanding -= m.member.drain();
    if (this.outstanding === 0) this.updateRefs();
    this.arm();
  };

  /**
   * The threads keep the process alive while requests are outstanding (a pending Atomics.waitAsync
   * does not) or a ring waits for a thread to serve it; otherwise they do not.
   */
  private updateRefs(): void {
    const ref = this.outstanding > 0 || this.unserved.size > 0;
    for (const w of this.threads.keys()) {
      if (ref) w.ref();
      else w.unref();
    }
  }

  private startThread(): void {
    const { port1, port2 } = new MessageChannel();
    const init: WorkerInit = { bell: this.bell.buffer as SharedArrayBuffer, control: port2, me: this.nextThreadId++, retireMs: this.o.retireMs };
    const w = new Worker(new URL('./io-worker.js', import.meta.url), { workerData: init, transferList: [port2], resourceLimits: IO_THREAD_LIMITS });
    if (this.outstanding === 0 && this.unserved.size === 0) w.unref();
    for (const m of this.members.values()) port1.postMessage({ add: m.assignment } satisfies Control);
    this.starting = w;
    w.once('online', () => {
      if (this.starting === w) this.starting = null;
    });
    w.on('message', (r: WorkerReport) => {
      if (this.unserved.delete(r.serving)) this.updateRefs();
      this.members.get(r.serving)?.member.online();
    });
    let error: Error | null = null;
    w.on('error', (e) => (error = e));
    const exit = new Promise<void>((resolve) => {
      w.once('exit', (code) => {
        this.ended(w, code === 0 && !error ? null : (error ?? new Error(`exit code ${code}`)));
        resolve();
      });
    });
    this.threads.set(w, { port: port1, exit });
  }

  private ended(w: Worker, error: Error | null): void {
    const t = this.threads.get(w);
    if (!t) return;
    this.threads.delete(w);
    t.port.close();
    if (this.failure) return;
    if (error) {
      this.fail(new EngineError('ENG_IO', `an I/O thread failed: ${error.message}`));
      return;
    }
    if (this.starting === w) this.starting = null;
    // It retired; one always stays (WORKERS), but should none be left, start one for the members.
    if (this.threads.size === 0 && this.members.size > 0) this.startThread();
  }

  private fail(e: EngineError): void {
    this.failure = e;
    this.outstanding = 0;
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = null;
    for (const m of this.members.values()) m.member.fail(e);
    for (const w of this.threads.keys()) void w.terminate();
  }

  /** The stall watch runs while two or more members share the group (with one, a further thread cannot help). */
  private watch(): void {
    const want = this.members.size >= 2 && !this.failure;
    if (want && !this.watchdog) {
      this.watchdog = setInterval(() => this.tick(), this.o.stallMs);
      this.watchdog.unref();
    } else if (!want && this.watchdog) {
      clearInterval(this.watchdog);
      this.watchdog = null;
    }
  }

  private tick(): void {
    let untaken = false;
    for (const m of this.members.values()) {
      const tail = Atomics.load(m.ctl, TAIL);
      // Requests wait, none was taken since the last tick, and no thread holds the ring now.
      const waiting = Atomics.load(m.ctl, SUB_HEAD) !== tail && tail === m.lastTail && Atomics.load(m.ctl, LOCK) === 0;
      if (waiting && m.waitingAtLastTick) untaken = true;
      m.waitingAtLastTick = waiting;
      m.lastTail = tail;
    }
    if (untaken && !this.starting && this.threads.size < Math.min(this.members.size, this.o.maxThreads)) this.startThread();
  }
}
