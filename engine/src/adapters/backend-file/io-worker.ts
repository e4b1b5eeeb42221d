/**
 * An I/O thread of a group (io-group.ts): runs requests from the rings of the group's members with
 * synchronous system calls, so a request costs no thread-pool round trip. One thread serves every file
 * member of the engine; it sleeps on the group's bell when no ring holds work.
 *
 * Rings come and go by control messages on this thread's own port (read synchronously, only when the
 * group's CONTROL counter says one was posted). Before it runs a ring's requests the thread takes the
 * ring's LOCK, so when the group adds a second thread (this one is stuck in a system call on a hung
 * device) the two never run the same ring at once and the second serves every other ring.
 *
 * A thread that has slept RETIRE_MS with nothing to do leaves the group if another thread remains and
 * no ring is being served at that moment (a thread holding a lock might be the stuck one).
 */
import fs from 'node:fs';
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import {
  BELL, COMP_HEAD, CONTROL, CTL_INTS, DONE_BELL, IDLE, LOCK, nextCount, OP_READ, OP_WRITE, OP_WRITE_FUA, RING_MASK, SLOT_BYTES,
  SLOTS, SUB_HEAD, TAIL, WORKERS, type RingBuffers,
} from './ring-protocol.js';

/** A member's ring and descriptors, as the group hands them to its threads. */
export interface RingAssignment {
  id: number;
  ring: RingBuffers;
  fd: number;
  syncFd: number;
}

export type Control = { add: RingAssignment } | { remove: number };

export interface WorkerInit {
  bell: SharedArrayBuffer;
  control: MessagePort;
  /** This thread's id in the group (never 0: 0 is a free LOCK). */
  me: number;
  retireMs: number;
}

/** What the thread tells the group: it serves a ring (it retires by ending with exit code 0). */
export type WorkerReport = { serving: number };

/** Requests run from one ring before the thread looks at the next (a mirrored write's halves finish close together). */
const PER_PASS = 16;

interface Served {
  id: number;
  ctl: Int32Array;
  desc: Float64Array;
  ops: Int32Array;
  data: Buffer;
  fd: number;
  syncFd: number;
}

const errnoOf = (e: unknown): number => {
  const n = (e as { errno?: number }).errno;
  return typeof n === 'number' && n !== 0 ? Math.abs(n) : 5;
};

function run(r: Served, slot: number): number {
  const op = r.ops[slot * 2]!;
  const off = r.desc[slot * 2]!;
  const len = r.desc[slot * 2 + 1]!;
  const base = slot * SLOT_BYTES;
  try {
    if (op === OP_READ) {
      let done = 0;
      while (done < len) {
        const n = fs.readSync(r.fd, r.data, base + done, len - done, off + done);
        if (n === 0) {
          r.data.fill(0, base + done, base + len);
          break;
        }
        done += n;
      }
    } else if (op === OP_WRITE || op === OP_WRITE_FUA) {
      let done = 0;
      // FUA: through the O_DSYNC descriptor, so only this range is forced to stable storage.
      const target = op === OP_WRITE_FUA ? r.syncFd : r.fd;
      while (done < len) done += fs.writeSync(target, r.data, base + done, len - done, off + done);
    }
    return 0;
  } catch (e) {
    return errnoOf(e);
  }
}

function serveGroup({ bell: bellBuf, control, me, retireMs }: WorkerInit): void {
  const bell = new Int32Array(bellBuf);
  const rings = new Map<number, Served>();
  let controlSeen = 0;

  function readControl(): void {
    for (let m = receiveMessageOnPort(control); m; m = receiveMessageOnPort(control)) {
      const c = m.message as Control;
      if ('add' in c) {
        const { id, ring, fd, syncFd } = c.add;
        rings.set(id, {
          id, fd, syncFd,
          ctl: new Int32Array(ring.ctl),
          desc: new Float64Array(ring.desc),
          ops: new Int32Array(ring.ops),
          data: Buffer.from(ring.data),
        });
        parentPort!.postMessage({ serving: id } satisfies WorkerReport);
      } else {
        rings.delete(c.remove);
      }
    }
  }

  function announce(): void {
    Atomics.add(bell, DONE_BELL, 1);
    Atomics.notify(bell, DONE_BELL);
  }

  /** Runs up to PER_PASS requests of `r` unless another thread holds it; true if it ran any. */
  function serveRing(r: Served): boolean {
    const { ctl } = r;
    if (Atomics.load(ctl, SUB_HEAD) === Atomics.load(ctl, TAIL)) return false;
    if (Atomics.compareExchange(ctl, LOCK, 0, me) !== 0) return false;
    let tail = Atomics.load(ctl, TAIL);
    const head = Atomics.load(ctl, SUB_HEAD);
    let ran = 0;
    let unannounced = 0;
    while (tail !== head && ran < PER_PASS) {
      const slot = ctl[CTL_INTS + (tail & RING_MASK)]!;
      r.ops[slot * 2 + 1] = run(r, slot);
      tail = nextCount(tail);
      Atomics.store(ctl, TAIL, tail);
      const ch = ctl[COMP_HEAD]!;
      ctl[CTL_INTS + SLOTS + (ch & RING_MASK)] = slot;
      Atomics.store(ctl, COMP_HEAD, nextCount(ch));
      ran++;
      unannounced++;
      // A read is announced at once (its reply can go while the next runs); writes once per pass, since
      // a mirrored write waits for its other half anyway.
      if (r.ops[slot * 2] === OP_READ) {
        announce();
        unannounced = 0;
      }
    }
    Atomics.store(ctl, LOCK, 0);
    if (unannounced > 0) announce();
    return ran > 0;
  }

  /** Leaves the group if another thread stays and no ring is being run right now. */
  function mayRetire(): boolean {
    for (const r of rings.values()) if (Atomics.load(r.ctl, LOCK) !== 0) return false;
    const n = Atomics.load(bell, WORKERS);
    return n > 1 && Atomics.compareExchange(bell, WORKERS, n, n - 1) === n;
  }

  Atomics.add(bell, WORKERS, 1);
  readControl(); // the rings the group had when it started this thread
  for (;;) {
    const c = Atomics.load(bell, CONTROL);
    if (c !== controlSeen) {
      controlSeen = c;
      readControl();
    }
    // Read before looking at the rings: a request published after that look rings the bell after it,
    // so the wait below returns at once instead of sleeping on it.
    const seen = Atomics.load(bell, BELL);
    let busy = false;
    for (const r of rings.values()) if (serveRing(r)) busy = true;
    if (busy) continue;
    Atomics.add(bell, IDLE, 1);
    const slept = Atomics.load(bell, BELL) === seen ? Atomics.wait(bell, BELL, seen, retireMs) : 'not-equal';
    Atomics.sub(bell, IDLE, 1);
    if (slept === 'timed-out' && Atomics.load(bell, CONTROL) === controlSeen && mayRetire()) break;
  }
  // The thread ends with exit code 0, which tells the group it retired (a failure or terminate() gives 1).
  control.close();
}

serveGroup(workerData as WorkerInit);
