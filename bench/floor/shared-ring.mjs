/**
 * The floor server's `--io shared` variant: ONE I/O thread for both files, through one shared-memory
 * ring like the engine's (ring-protocol.ts), where a write is one slot that the thread writes to both
 * files (one memcpy into the ring, one wake-up, one completion) — issue 16's "one shared I/O thread for
 * healthy members", measured at the floor. `--spin-us N` lets the thread poll the ring for N µs before
 * it sleeps (fewer wake-ups, some CPU burnt when idle). Otherwise it does what the engine's io-worker.ts
 * does — full reads and writes (a short read past the end is zero-filled), one completion published and
 * notified per request — so that against `--io ring` only the number of threads, slots and kicks per
 * write differ. A yardstick only: no error handling beyond failing the request, no fallback for a hung
 * device; requests over SLOT_BYTES are refused.
 *
 * The ring counters are Int32 and wrap: both sides compute them with `| 0` and index with `& MASK`
 * (a plain JS counter on one side and a wrapped Int32 on the other would stop matching after 2^31).
 */
import fs from 'node:fs';
import { Worker, isMainThread, workerData } from 'node:worker_threads';

const SLOTS = 64;
const MASK = SLOTS - 1; // SLOTS is a power of two
const SLOT_BYTES = 64 * 1024;
const SUB = 0; // written by main
const COMP = 1; // written by the thread
const IDLE = 2; // 1 while the thread sleeps
const STOP = 3;
const RINGS = 8; // sub ring at RINGS, comp ring at RINGS + SLOTS
const OP_READ = 1;
const OP_WRITE_BOTH = 2;

if (!isMainThread && workerData?.sharedRing) serve(workerData);

function serve({ ctlBuf, descBuf, opsBuf, dataBuf, files, spinUs }) {
  const ctl = new Int32Array(ctlBuf);
  const desc = new Float64Array(descBuf);
  const ops = new Int32Array(opsBuf);
  const data = Buffer.from(dataBuf);
  const fds = files.map((f) => fs.openSync(f, 'r+'));
  const run = (slot) => {
    const off = desc[slot * 2];
    const len = desc[slot * 2 + 1];
    const base = slot * SLOT_BYTES;
    try {
      if (ops[slot * 3] === OP_READ) {
        const fd = fds[ops[slot * 3 + 1]];
        let done = 0;
        while (done < len) {
          const n = fs.readSync(fd, data, base + done, len - done, off + done);
          if (n === 0) {
            data.fill(0, base + done, base + len);
            break;
          }
          done += n;
        }
      } else {
        for (const fd of fds) {
          let done = 0;
          while (done < len) done += fs.writeSync(fd, data, base + done, len - done, off + done);
        }
      }
      return 0;
    } catch (e) {
      return typeof e?.errno === 'number' && e.errno !== 0 ? Math.abs(e.errno) : 5;
    }
  };
  let tail = 0;
  for (;;) {
    let head = Atomics.load(ctl, SUB);
    if (head === tail && spinUs > 0) {
      const until = performance.now() + spinUs / 1000;
      while (head === tail && performance.now() < until) head = Atomics.load(ctl, SUB);
    }
    if (head === tail) {
      Atomics.store(ctl, IDLE, 1);
      head = Atomics.load(ctl, SUB);
      if (head === tail) {
        if (Atomics.load(ctl, STOP) === 1) break;
        Atomics.wait(ctl, SUB, tail);
      }
      Atomics.store(ctl, IDLE, 0);
      continue;
    }
    while (tail !== head) {
      const slot = ctl[RINGS + (tail & MASK)];
      ops[slot * 3 + 2] = run(slot);
      const c = ctl[COMP];
      ctl[RINGS + SLOTS + (c & MASK)] = slot;
      Atomics.store(ctl, COMP, (c + 1) | 0);
      // Per completion, as io-worker.ts does: the main thread can answer the first requests of a batch
      // while the thread runs the rest (a notify with no waiter armed costs no system call).
      Atomics.notify(ctl, COMP);
      tail = (tail + 1) | 0;
    }
  }
  for (const fd of fds) fs.closeSync(fd);
}

/** Main-thread side: read(buf, off, fileIndex) and writeBoth(buf, off), each a promise; close(). */
export class SharedRing {
  constructor(files, spinUs = 0) {
    const ctlBuf = new SharedArrayBuffer(4 * (RINGS + 2 * SLOTS));
    const descBuf = new SharedArrayBuffer(8 * 2 * SLOTS);
    const opsBuf = new SharedArrayBuffer(4 * 3 * SLOTS);
    const dataBuf = new SharedArrayBuffer(SLOTS * SLOT_BYTES);
    this.ctl = new Int32Array(ctlBuf);
    this.desc = new Float64Array(descBuf);
    this.ops = new Int32Array(opsBuf);
    this.data = Buffer.from(dataBuf);
    this.free = Array.from({ length: SLOTS }, (_, i) => SLOTS - 1 - i);
    this.waiting = []; // requests for which no slot was free
    this.waiters = new Array(SLOTS).fill(null);
    this.compTail = 0;
    this.armed = false;
    this.outstanding = 0;
    this.kickQueued = false;
    this.kick = () => {
      this.kickQueued = false;
      if (Atomics.load(this.ctl, IDLE) === 1) Atomics.notify(this.ctl, SUB);
    };
    this.worker = new Worker(new URL(import.meta.url), { workerData: { sharedRing: true, ctlBuf, descBuf, opsBuf, dataBuf, files, spinUs } });
    this.worker.unref();
  }

  read(buf, offset, file) {
    return this.submit(OP_READ, file, offset, buf.length, null, buf);
  }

  writeBoth(buf, offset) {
    return this.submit(OP_WRITE_BOTH, 0, offset, buf.length, buf, null);
  }

  submit(op, file, offset, length, payload, readInto) {
    if (length > SLOT_BYTES) return Promise.reject(new Error(`request of ${length} bytes: the shared ring takes up to ${SLOT_BYTES}`));
    const slot = this.free.pop();
    if (slot === undefined) return new Promise((r) => this.waiting.push(r)).then(() => this.submit(op, file, offset, length, payload, readInto));
    this.desc[slot * 2] = offset;
    this.desc[slot * 2 + 1] = length;
    this.ops[slot * 3] = op;
    this.ops[slot * 3 + 1] = file;
    if (payload) payload.copy(this.data, slot * SLOT_BYTES);
    const p = new Promise((resolve, reject) => (this.waiters[slot] = { resolve, reject, readInto }));
    const h = this.ctl[SUB];
    this.ctl[RINGS + (h & MASK)] = slot;
    Atomics.store(this.ctl, SUB, (h + 1) | 0);
    if (!this.kickQueued) {
      this.kickQueued = true;
      queueMicrotask(this.kick);
    }
    if (this.outstanding++ === 0) this.worker.ref();
    this.arm();
    return p;
  }

  arm() {
    if (this.armed || this.outstanding === 0) return;
    this.armed = true;
    const r = Atomics.waitAsync(this.ctl, COMP, this.compTail);
    if (r.async) r.value.then(() => this.drain());
    else queueMicrotask(() => this.drain());
  }

  drain() {
    this.armed = false;
    const head = Atomics.load(this.ctl, COMP);
    while (this.compTail !== head) {
      const slot = this.ctl[RINGS + SLOTS + (this.compTail & MASK)];
      this.compTail = (this.compTail + 1) | 0;
      const w = this.waiters[slot];
      this.waiters[slot] = null;
      const result = this.ops[slot * 3 + 2];
      if (result === 0 && w.readInto) this.data.copy(w.readInto, 0, slot * SLOT_BYTES, slot * SLOT_BYTES + w.readInto.length);
      this.free.push(slot);
      this.outstanding--;
      if (result === 0) w.resolve();
      else w.reject(new Error(`I/O failed (errno ${result})`));
      this.waiting.shift()?.();
    }
    if (this.outstanding === 0) this.worker.unref();
    this.arm();
  }

  /**
   * For a server that has stopped taking requests. A STOP set just after the thread looked at it is not
   * seen until its next wake-up, so the thread is terminated rather than awaited (terminate() interrupts
   * an Atomics.wait).
   */
  async close() {
    Atomics.store(this.ctl, STOP, 1);
    Atomics.notify(this.ctl, SUB);
    await this.worker.terminate();
  }
}
