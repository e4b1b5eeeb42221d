/**
 * Shared-memory layout between the main thread and a member's I/O worker. The control block holds
 * ring indexes; each slot owns a fixed data area so small requests cross threads by one memcpy and no
 * message: the main thread publishes a slot index, the worker runs it with a synchronous system call
 * and publishes the index back. One wake-up serves every request that arrived meanwhile.
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

// Control block (Int32 indexes).
export const SUB_HEAD = 0; // written by main
export const COMP_HEAD = 1; // written by worker
export const WORKER_IDLE = 2; // 1 while the worker sleeps on SUB_HEAD
export const STOP = 3;
export const CTL_INTS = 8;

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
  return ring;
}
