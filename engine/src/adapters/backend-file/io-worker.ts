/**
 * A member's I/O thread: runs requests from the shared ring with synchronous system calls, so a
 * request costs no thread-pool round trip, and a device that hangs blocks only this thread. It serves
 * one member at a time: each message assigns a ring and the member's descriptors; it answers `serving`,
 * and when the ring is stopped it says `released` and waits for the next assignment (ring-backend.ts
 * keeps it as a spare).
 */
import fs from 'node:fs';
import { parentPort } from 'node:worker_threads';
import {
  COMP_HEAD, CTL_INTS, nextCount, OP_READ, OP_WRITE, OP_WRITE_FUA, RING_MASK, SLOT_BYTES, SLOTS, STOP, SUB_HEAD, WORKER_IDLE,
  type RingBuffers,
} from './ring-protocol.js';

export interface Assignment {
  ring: RingBuffers;
  fd: number;
  syncFd: number;
  /** Where the ring's counters start (allocRing's `start`): given, not read, since requests may already come. */
  start: number;
}

const errnoOf = (e: unknown): number => {
  const n = (e as { errno?: number }).errno;
  return typeof n === 'number' && n !== 0 ? Math.abs(n) : 5;
};

function serve({ ring, fd, syncFd, start }: Assignment): void {
  const ctl = new Int32Array(ring.ctl);
  const desc = new Float64Array(ring.desc);
  const ops = new Int32Array(ring.ops);
  const data = Buffer.from(ring.data);

  function run(slot: number): number {
    const op = ops[slot * 2]!;
    const off = desc[slot * 2]!;
    const len = desc[slot * 2 + 1]!;
    const base = slot * SLOT_BYTES;
    try {
      if (op === OP_READ) {
        let done = 0;
        while (done < len) {
          const n = fs.readSync(fd, data, base + done, len - done, off + done);
          if (n === 0) {
            data.fill(0, base + done, base + len);
            break;
          }
          done += n;
        }
      } else if (op === OP_WRITE || op === OP_WRITE_FUA) {
        let done = 0;
        // FUA: through the O_DSYNC descriptor, so only this range is forced to stable storage.
        const target = op === OP_WRITE_FUA ? syncFd : fd;
        while (done < len) done += fs.writeSync(target, data, base + done, len - done, off + done);
      }
      return 0;
    } catch (e) {
      return errnoOf(e);
    }
  }

  let tail = start | 0;
  for (;;) {
    let head = Atomics.load(ctl, SUB_HEAD);
    if (head === tail) {
      Atomics.store(ctl, WORKER_IDLE, 1);
      head = Atomics.load(ctl, SUB_HEAD);
      if (head === tail) {
        if (Atomics.load(ctl, STOP) === 1) break;
        Atomics.wait(ctl, SUB_HEAD, tail);
      }
      Atomics.store(ctl, WORKER_IDLE, 0);
      continue;
    }
    while (tail !== head) {
      const slot = ctl[CTL_INTS + (tail & RING_MASK)]!;
      ops[slot * 2 + 1] = run(slot);
      const ch = ctl[COMP_HEAD]!;
      ctl[CTL_INTS + SLOTS + (ch & RING_MASK)] = slot;
      Atomics.store(ctl, COMP_HEAD, nextCount(ch));
      Atomics.notify(ctl, COMP_HEAD);
      tail = nextCount(tail);
    }
  }
}

parentPort!.on('message', (a: Assignment) => {
  // Only now is this thread ready to serve (its modules are loaded): until it says so, the member's
  // requests take the thread pool instead of waiting in the ring.
  parentPort!.postMessage('serving');
  serve(a);
  parentPort!.postMessage('released');
});
