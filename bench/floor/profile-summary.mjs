#!/usr/bin/env node
/**
 * Summarizes a V8 CPU profile (`node --cpu-prof`, one .cpuprofile per thread) of the engine or the floor
 * server: the share of sampled time per area of the data path, and the top functions by self time.
 *
 * Only the busiest --window seconds are counted (the window with the least idle time: the measured
 * fio run, not the prefill, the warmup or the idle time while other servers were measured; keep the
 * window at or below the run's length). Time in a function without a script (a builtin or a native binding: a socket write,
 * Atomics.waitAsync, a Buffer copy) is charged to the nearest caller that has one, so "ring" includes
 * the memcpy into the ring and "socket" the writev; GC, idle and (program) stay apart.
 *
 * An I/O thread blocked in Atomics.wait looks busy to the profiler (the wait runs inside its loop), so
 * for I/O threads pass --window-from MAIN.cpuprofile: the main thread's busiest window is used.
 *
 * Usage: node bench/floor/profile-summary.mjs [--window S] [--top N] [--window-from MAIN.cpuprofile] FILE.cpuprofile...
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';

const { values: o, positionals: files } = parseArgs({
  allowPositionals: true,
  options: { window: { type: 'string', default: '5' }, top: { type: 'string', default: '20' }, 'window-from': { type: 'string' } },
});

/** The area of a script URL; null for a frame without one (charged to its caller). */
function area(url) {
  if (!url) return null;
  const rules = [
    [/adapters\/nbd\//, 'NBD connection: parse, admit, account, reply (engine)'],
    [/floor-server\.mjs/, 'NBD parse + reply (floor)'],
    [/runtime\/range-locks/, 'range locks'],
    [/runtime\/chunk-tracker/, 'write-intent log (begin/end)'],
    [/runtime\/shadow-set/, 'shadow set: mirrored()/read() path'],
    [/runtime\/member\.js/, 'member accounting (io wrapper, timeouts)'],
    [/runtime\//, 'other engine runtime'],
    [/adapters\/backend-file\//, 'ring: submit, drain, memcpy (file backend)'],
    [/node:net|node:internal\/stream_base_commons|node:internal\/streams|node:stream/, 'node: socket and streams'],
    [/node:internal\/process\/task_queues|node:internal\/timers|node:timers/, 'node: microtask/timer/immediate queues'],
    [/node:buffer|node:internal\/buffer/, 'node: Buffer'],
    [/node:fs|node:internal\/fs/, 'node: fs (the I/O threads\' pwrite/pread)'],
    [/node:internal\/async_hooks|node:async_hooks/, 'node: async hooks'],
    [/pino|thread-stream|sonic-boom/, 'logging (pino)'],
  ];
  for (const [re, name] of rules) if (re.test(url)) return name;
  return 'other JS';
}

const SPECIAL = { '(garbage collector)': 'GC', '(idle)': 'idle', '(program)': '(program): native, not attributed', '(root)': 'idle' };

/** The end (µs, profile clock) of the busiest window of a profile; all threads of a process share the clock. */
let fixedEnd = null;

async function summarize(file) {
  const p = JSON.parse(await readFile(file, 'utf8'));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const areaOf = new Map();
  const resolve = (id) => {
    if (areaOf.has(id)) return areaOf.get(id);
    const n = byId.get(id);
    const fn = n.callFrame.functionName;
    let a = SPECIAL[fn] ?? area(n.callFrame.url);
    if (a === null) a = parent.has(id) ? resolve(parent.get(id)) : `native: ${fn || '?'}`;
    if (a === 'idle' && fn === '(root)') a = 'other native';
    areaOf.set(id, a);
    return a;
  };
  // Sample times: startTime + running sum of timeDeltas (µs).
  const times = [];
  let t = p.startTime;
  for (const d of p.timeDeltas) times.push((t += d));
  // The busiest --window seconds (least idle): the measured fio run, not the prefill or the idle tail.
  const W = Number(o.window) * 1e6;
  const busy = (i) => (byId.get(p.samples[i]).callFrame.functionName === '(idle)' ? 0 : times[i] - (times[i - 1] ?? times[i]));
  let best = -1, bestBusy = -1, sum = 0, lo = 0;
  for (let hi = 0; hi < times.length; hi++) {
    sum += busy(hi);
    while (times[hi] - times[lo] > W) sum -= busy(lo++);
    if (sum > bestBusy) { bestBusy = sum; best = hi; }
  }
  if (fixedEnd !== null) best = times.findLastIndex((x) => x <= fixedEnd);
  if (best < 0) return { file, total: 0 };
  const lastBusy = best;
  const from = times[best] - W;
  s_end = times[best];
  const areas = new Map();
  const fns = new Map();
  let total = 0;
  for (let i = 1; i <= lastBusy; i++) {
    if (times[i] < from) continue;
    const dt = times[i] - times[i - 1];
    const id = p.samples[i];
    const n = byId.get(id);
    total += dt;
    const a = resolve(id);
    areas.set(a, (areas.get(a) ?? 0) + dt);
    const cf = n.callFrame;
    const key = `${cf.functionName || '(anonymous)'}  ${cf.url ? cf.url.replace(/^.*\/(engine\/dist|bench)\//, '$1/').replace(/^file:\/\//, '') + ':' + (cf.lineNumber + 1) : ''}`;
    fns.set(key, (fns.get(key) ?? 0) + dt);
  }
  return { file, total, areas, fns };
}

let s_end = null;
if (o['window-from']) {
  await summarize(o['window-from']);
  fixedEnd = s_end;
}
for (const f of files) {
  const s = await summarize(f);
  console.log(`\n${f}: ${(s.total / 1e6).toFixed(2)} s sampled`);
  if (!s.total) continue;
  const pct = (x) => `${((100 * x) / s.total).toFixed(1).padStart(5)} %`;
  console.log('  by area (self time; natives charged to their caller):');
  for (const [a, v] of [...s.areas].sort((x, y) => y[1] - x[1])) console.log(`    ${pct(v)}  ${a}`);
  console.log(`  top ${o.top} functions by self time:`);
  for (const [k, v] of [...s.fns].sort((x, y) => y[1] - x[1]).slice(0, Number(o.top))) console.log(`    ${pct(v)}  ${k}`);
}
