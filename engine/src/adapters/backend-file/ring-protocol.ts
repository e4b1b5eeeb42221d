/**
 * Shared-memory layout between the main thread and the I/O threads. Each member has a ring: a control
 * block with its indexes and a fixed data area per slot, so small requests cross threads by one memcpy
 * and no message. The main thread publishes a slot index and rings the group's bell; an I/O thread runs
 * it with a synchronous system call, publishes the index back and rings the group's completion bell.
 * One wake-up serves every request that arrived meanwhile, on every member of the group.
 *
 * Any I/O thread of the group may serve any of its rings, one at a time: a thread takes a ring's LOCK
 * before it runs requests from it and keeps the consumer index (TAIL) in the ring, so a second thread
 * can go on with the rings a first one cannot serve (it is stuck in a system call on a hung device).
 */
export const SLOTS = 64;
export const SLOT_BYTES = 128 * 1024;
/**
 * The ring counters (SUB_HEAD, COMP_HEAD and each side's copy) are Int32 and run on for the life of the
 * ring: both sides advance them with `(i + 1) | 0`, so they wrap at 2^31 exactly as the Int32Array
 * stores them, and index the rings with `i & RING_MASK` (SLOTS is a power of two, so a negative counter
 * indexes correctly too). A plain `i + 1` on one side would stop matching the other after 2^31 requests
 * (days of a busy member) and the I/O thread would run old slots again.
 */
export const RING_MASK = SLOTS - 1;
export const nextCount = (i: number): number => (i + 1) | 0;

// A ring's control block (Int32 indexes).
export const SUB_HEAD = 0; // written by main
export const COMP_HEAD = 1; // written by the I/O thread holding LOCK
export const TAIL = 2; // next request to run; written by the I/O thread holding LOCK
export const LOCK = 3; // 0, or the id of the I/O thread running this ring's requests
export const CTL_INTS = 8;

// The group's bells (Int32 indexes of one small shared block).
export const BELL = 0; // main adds 1 after publishing requests or posting a control message; threads sleep on it
export const IDLE = 1; // how many I/O threads sleep (or are about to) on BELL
export const DONE_BELL = 2; // threads add 1 after each completion; main waits on it
export const WORKERS = 3; // I/O threads serving the group (each adds itself; one that retires takes itself off)
export const CONTROL = 4; // main adds 1 after posting a control message (threads read their port only then)
export const BELL_INTS = 8;

// Per-slot descriptor (Float64: device offset, length; Int32: opcode, result).
export const OP_READ = 1;
export const OP_WRITE = 2;
// 3 was a flush; flushes take the thread pool (ring-backend.ts says why).
export const OP_WRITE_FUA = 4;

export interface RingBuffers {
  ctl: SharedArrayBuffer; // CTL_INTS Int32 + SLOTS sub ring + SLOTS comp ring
  desc: SharedArrayBuffer; // SLOTS * 2 Float64
  ops: SharedArrayBuffer; // SLOTS * 2 Int32: opcode, result (0 or errno code)
  data: SharedArrayBuffer; // SLOTS * SLOT_BYTES
}

/** A ring whose counters start at `start` (0; tests start them just below the wrap). */
export function allocRing(start = 0): RingBuffers {
  const ring = {
    ctl: new SharedArrayBuffer(4 * (CTL_INTS + 2 * SLOTS)),
    desc: new SharedArrayBuffer(8 * 2 * SLOTS),
    ops: new SharedArrayBuffer(4 * 2 * SLOTS),
    data: new SharedArrayBuffer(SLOTS * SLOT_BYTES),
  };
  const ctl = new Int32Array(ring.ctl);
  ctl[SUB_HEAD] = start | 0;
  ctl[COMP_HEAD] = start | 0;
  ctl[TAIL] = start | 0;
  return ring;
}
