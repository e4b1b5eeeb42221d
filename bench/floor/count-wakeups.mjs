/**
 * Preloaded (`node --import`) into the engine or the floor server by floor-bench.mjs --count: counts,
 * per thread, the cross-thread wake-up machinery of the I/O thread ring — Atomics.notify (and how many
 * waiters each woke), Atomics.wait (an I/O thread going to sleep) and Atomics.waitAsync (the main
 * thread arming for completions) — and, with COUNT_PROMISES=1, the promises created on the main thread
 * (a proxy for microtasks; the hook slows the process, so only in a run of its own).
 *
 * Each thread writes its counters to $COUNT_WAKEUPS_DIR/wakeups-<pid>-<threadId>.json at most every
 * 500 ms: the main thread from a timer, an I/O thread (blocked in its ring loop, where no timer runs)
 * from inside the wrapped calls. A measurement tool only; it changes nothing else.
 */
import fs from 'node:fs';
import { createHook } from 'node:async_hooks';
import path from 'node:path';
import { isMainThread, threadId } from 'node:worker_threads';

const dir = process.env.COUNT_WAKEUPS_DIR;
if (dir) {
  const c = { notify: 0, notifyWoke: 0, wait: 0, waitWoken: 0, waitAsync: 0, waitAsyncPending: 0, waitAsyncResolved: 0 };
  const file = path.join(dir, `wakeups-${process.pid}-${threadId}.json`);
  let last = 0;
  const save = () => {
    last = Date.now();
    try { fs.writeFileSync(file, JSON.stringify(c)); } catch { /* the directory is gone at the end */ }
  };
  const maybeSave = () => {
    if (Date.now() - last > 500) save();
  };
  const { notify, wait, waitAsync } = Atomics;
  Atomics.notify = function (ta, i, n) {
    c.notify++;
    const woke = notify(ta, i, n);
    c.notifyWoke += woke;
    if (!isMainThread) maybeSave();
    return woke;
  };
  Atomics.wait = function (ta, i, v, t) {
    c.wait++;
    if (!isMainThread) maybeSave();
    const r = wait(ta, i, v, t);
    if (r === 'ok') c.waitWoken++;
    return r;
  };
  Atomics.waitAsync = function (ta, i, v, t) {
    c.waitAsync++;
    const r = waitAsync(ta, i, v, t);
    if (r.async) {
      c.waitAsyncPending++;
      r.value.then((x) => { if (x === 'ok') c.waitAsyncResolved++; });
    }
    return r;
  };
  if (isMainThread) {
    if (process.env.COUNT_PROMISES === '1') {
      c.promises = 0;
      createHook({ init(_id, type) { if (type === 'PROMISE') c.promises++; } }).enable();
    }
    setInterval(save, 500).unref();
    process.on('exit', save);
  }
}
