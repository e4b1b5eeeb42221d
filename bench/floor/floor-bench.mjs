#!/usr/bin/env node
/**
 * The data path's floor, side by side: the engine (2-member mirror) against the least a Node NBD
 * server must do to mirror onto the same two files (floor-server.mjs, over the engine's own I/O thread
 * ring or over the thread pool), qemu-nbd's quorum and nbdkit's file plugin — same files, same byte
 * range, same fio jobs as nbd-bench.mjs, rounds interleaved with the order rotating, medians.
 *
 * Bounded: a few seconds per run (defaults: 3 rounds x 2 jobs x 5 servers x 5 s, about 3.5 min with
 * the 512 MiB prefill). docs/data-path-profile.md has the figures and what they mean.
 *
 * Optional instruments (each perturbs what it measures; use them in runs of their own):
 *   --profile DIR  the engine and the ring floor run under `node --cpu-prof`; their profiles land in DIR
 *                  (summarize them with profile-summary.mjs)
 *   --count        the engine and the ring floor preload count-wakeups.mjs; per-request counts printed
 *   --strace       every run of the Node servers is watched by `strace -c -f`; syscalls per request printed
 *
 * Usage: node bench/floor/floor-bench.mjs [--rounds N] [--runtime S] [--ramp S] [--file-mib N] [--dir DIR]
 *        [--jobs randwrite,randread] [--servers engine,floor-ring,floor-pool,qemu,nbdkit] [--profile DIR] [--count] [--strace]
 * Two more floors on request (--servers …,floor-shared,floor-spin): one I/O thread for both files
 * (shared-ring.mjs), without and with 50 µs of polling before it sleeps.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { LoggedChild } from '../lib/child.mjs';
import { engineEnv, importEngine, loadavg, settle } from '../lib/host.mjs';
import { fioArgs, measuredRun, median, prefill, readClockTicks, runFio, summarizeFio, withCpu } from '../lib/measure.mjs';
import { ENGINE_BIN, exec, installSignalCleanup, killChild, runBench, sleep } from '../lib/run.mjs';
import { makeMemberFiles } from '../nbd/servers.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const JOBS = {
  randwrite: { rw: 'randwrite', bs: '4k', iodepth: 16 },
  randread: { rw: 'randread', bs: '4k', iodepth: 16 },
};
const ALL = ['engine', 'floor-ring', 'floor-pool', 'floor-shared', 'floor-spin', 'qemu', 'nbdkit'];
/** Started unless --servers says otherwise; floor-shared and floor-spin (shared-ring.mjs) only on request. */
const DEFAULT = ['engine', 'floor-ring', 'floor-pool', 'qemu', 'nbdkit'];
const NODE_SERVERS = ['engine', 'engine-base', 'floor-ring', 'floor-pool', 'floor-shared', 'floor-spin'];
/** How long floor-spin's I/O thread polls its ring before it sleeps. */
const SPIN_US = 50;
let TICKS = 100;
const HELP = 'usage: node bench/floor/floor-bench.mjs [--rounds 3] [--runtime 4] [--ramp 1] [--file-mib 512] [--dir DIR] [--base-engine BIN]\n' +
  '  [--jobs randwrite,randread] [--servers engine,floor-ring,floor-pool,qemu,nbdkit (also: floor-shared,floor-spin)]\n' +
  '  [--profile DIR] [--count] [--strace]';

function parseConfig(argv) {
  const { values: v } = parseArgs({
    args: argv,
    options: {
      rounds: { type: 'string', default: '3' }, runtime: { type: 'string', default: '4' }, ramp: { type: 'string', default: '1' },
      'file-mib': { type: 'string', default: '512' }, dir: { type: 'string', default: os.tmpdir() },
      jobs: { type: 'string', default: 'randwrite,randread' }, servers: { type: 'string', default: DEFAULT.join(',') },
      profile: { type: 'string' }, 'base-engine': { type: 'string' }, count: { type: 'boolean' }, strace: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
    },
  });
  if (v.help) return null;
  const n = (k, lo, hi) => {
    const x = Number(v[k]);
    if (!Number.isFinite(x) || x < lo || x > hi) throw new Error(`--${k} must be a number in [${lo}, ${hi}]`);
    return x;
  };
  const pick = (k, known) => {
    const items = v[k].split(',').map((s) => s.trim()).filter(Boolean);
    for (const i of items) if (!known.includes(i)) throw new Error(`--${k}: unknown '${i}' (known: ${known.join(', ')})`);
    return known.filter((x) => items.includes(x));
  };
  const servers = pick('servers', ALL);
  if (v['base-engine']) servers.splice(servers.includes('engine') ? 1 : 0, 0, 'engine-base');
  // Bounded on purpose: this runs beside other work on a 2-core machine.
  return {
    rounds: Math.floor(n('rounds', 1, 9)), runtime: n('runtime', 1, 30), ramp: n('ramp', 0, 5),
    fileMiB: Math.floor(n('file-mib', 64, 4096)), dir: v.dir, jobs: pick('jobs', Object.keys(JOBS)), servers,
    profile: v.profile ? path.resolve(v.profile) : null, count: !!v.count, strace: !!v.strace,
    baseEngine: v['base-engine'] ? path.resolve(v['base-engine']) : null,
  };
}

class Server extends LoggedChild {
  constructor(key, cmd, args, socket, env = process.env) {
    super(key);
    Object.assign(this, { key, cmd, args, env, socket, uri: `nbd+unix:///?socket=${socket}` });
  }

  start() {
    return this.spawn(this.cmd, this.args, this.env);
  }

  async waitAccepting(timeoutMs = 60_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.exit) throw new Error(`${this.key} exited: ${this.tail()}`);
      const r = await exec('nbdinfo', ['--size', this.uri], { timeoutMs: 10_000 });
      if (r.ok) return Number(r.stdout.trim());
      if (Date.now() > deadline) throw new Error(`${this.key}: not accepting after ${timeoutMs} ms`);
      await sleep(100);
    }
  }
}

/** Node flags of the instrumented servers (engine, floor-ring) for this run. */
function nodeFlags(cfg, key) {
  const f = [];
  if (cfg.profile && (key === 'engine' || key === 'floor-ring')) f.push('--cpu-prof', `--cpu-prof-dir=${path.join(cfg.profile, key)}`);
  if (cfg.count && (key === 'engine' || key === 'floor-ring')) f.push('--import', pathToFileURL(path.join(HERE, 'count-wakeups.mjs')).href);
  return f;
}

async function startAll(cfg, dir, files, headerBytes) {
  const sock = (k) => path.join(dir, `${k}.sock`);
  const env = { ...(await engineEnv()), COUNT_WAKEUPS_DIR: dir };
  const engine = new Server('engine', process.execPath,
    [...nodeFlags(cfg, 'engine'), ENGINE_BIN, 'serve', '--member', files[0], '--member', files[1], '--socket', sock('engine'), '--log-level', 'warn'],
    sock('engine'), env).start();
  const dataBytes = await engine.waitAccepting();
  const servers = { engine };
  if (cfg.baseEngine) {
    // Another build of the engine (--base-engine: its bin/shadow-engine.js) on the same files, for a change's before and after.
    servers['engine-base'] = new Server('engine-base', process.execPath,
      [cfg.baseEngine, 'serve', '--member', files[0], '--member', files[1], '--socket', sock('engine-base'), '--log-level', 'warn'],
      sock('engine-base'), env);
  }
  const floor = (key, io, extra = []) => new Server(key, process.execPath,
    [...nodeFlags(cfg, key), path.join(HERE, 'floor-server.mjs'), '--socket', sock(key), '--offset', String(headerBytes),
      '--size', String(dataBytes), '--io', io, ...extra, ...files], sock(key), env);
  if (cfg.servers.includes('floor-ring')) servers['floor-ring'] = floor('floor-ring', 'ring');
  if (cfg.servers.includes('floor-pool')) servers['floor-pool'] = floor('floor-pool', 'pool');
  if (cfg.servers.includes('floor-shared')) servers['floor-shared'] = floor('floor-shared', 'shared');
  if (cfg.servers.includes('floor-spin')) servers['floor-spin'] = floor('floor-spin', 'shared', ['--spin-us', String(SPIN_US)]);
  if (cfg.servers.includes('qemu')) {
    const child = (i) => [`children.${i}.driver=raw`, `children.${i}.offset=${headerBytes}`, `children.${i}.size=${dataBytes}`,
      `children.${i}.file.driver=file`, `children.${i}.file.filename=${files[i].replaceAll(',', ',,')}`];
    const opts = ['driver=quorum', 'vote-threshold=1', 'read-pattern=fifo', ...child(0), ...child(1)].join(',');
    servers.qemu = new Server('qemu', 'qemu-nbd', ['--persistent', '--shared=8', '--socket', sock('qemu'), '--cache=writeback', '--aio=threads', '--image-opts', opts], sock('qemu'));
  }
  if (cfg.servers.includes('nbdkit')) {
    servers.nbdkit = new Server('nbdkit', 'nbdkit', ['--foreground', '--exit-with-parent', '--unix', sock('nbdkit'), '--filter=offset', 'file',
      `file=${files[0]}`, `offset=${headerBytes}`, `range=${dataBytes}`], sock('nbdkit'));
  }
  for (const [k, s] of Object.entries(servers)) {
    if (k === 'engine') continue;
    s.start();
    const size = await s.waitAccepting();
    if (size !== dataBytes) throw new Error(`${k} exports ${size} bytes, the engine ${dataBytes}`);
  }
  return { servers, dataBytes };
}

/** CPU seconds of process pid: its main thread's, and all its other threads' (I/O threads, libuv pool, V8's helpers). */
function threadCpu(pid) {
  let main = 0;
  let rest = 0;
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const st = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      const sec = (Number(f[11]) + Number(f[12])) / TICKS;
      if (tid === String(pid)) main += sec;
      else rest += sec;
    }
  } catch {
    return null;
  }
  return { main, rest };
}

/** Runs fn while `strace -c -f` watches pid; returns fn's value and strace's table (calls by syscall). */
async function withStrace(pid, fn) {
  const st = new LoggedChild('strace', { keepBytes: 64 * 1024 }).spawn('strace', ['-c', '-f', '-p', String(pid)]);
  await sleep(300); // strace attaches to every thread
  const value = await fn();
  await killChild(st.child, 5000, 'SIGINT');
  const calls = {};
  for (const line of st.output.split('\n')) {
    const m = /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$/.exec(line);
    if (m && m[2] !== 'total') calls[m[2]] = Number(m[1]);
  }
  return { value, calls };
}

/** The counters the preloaded count-wakeups.mjs wrote for process pid: its main thread's, and its I/O threads' summed. */
async function readCounts(dir, pid) {
  const out = {};
  for (const f of await readdir(dir)) {
    if (!f.startsWith(`wakeups-${pid}-`)) continue;
    const c = JSON.parse(await readFile(path.join(dir, f), 'utf8'));
    // Thread 0 is the main thread; the others are I/O threads (summed).
    const who = f.endsWith('-0.json') ? 'main' : 'io';
    for (const [k, v] of Object.entries(c)) out[`${who}.${k}`] = (out[`${who}.${k}`] ?? 0) + v;
  }
  return out;
}

async function main(cfg) {
  await readClockTicks();
  const clk = await exec('getconf', ['CLK_TCK']);
  if (clk.ok && Number(clk.stdout) > 0) TICKS = Number(clk.stdout);
  const { HEADER_BYTES } = await importEngine('core/geometry.js');
  console.log(`floor-bench: ${cfg.rounds} rounds x ${cfg.jobs.join(',')} x ${cfg.servers.join(',')}, ${cfg.runtime}s (+${cfg.ramp}s ramp), ${cfg.fileMiB} MiB files; load ${loadavg().join(' ')}`);
  const { dir, files } = await makeMemberFiles(cfg);
  const { servers, dataBytes } = await startAll(cfg, dir, files, HEADER_BYTES);
  await prefill(servers.engine.uri, dataBytes, files, { what: 'export', expectSeconds: 300 });
  for (const k of cfg.servers) await runFio(fioArgs(servers[k].uri, { rw: 'randrw', bs: '4k', iodepth: 16 }, ['--time_based', '--runtime=2', `--size=${dataBytes}`]), 2);
  const runs = [];
  for (let round = 0; round < cfg.rounds; round++) {
    const order = cfg.servers.map((_, i) => cfg.servers[(i + round) % cfg.servers.length]);
    for (const jobKey of cfg.jobs) {
      for (const key of order) {
        await settle(files);
        const srv = servers[key];
        const before = cfg.count ? await readCounts(dir, srv.pid) : null;
        const t0 = threadCpu(srv.pid);
        const w0 = performance.now();
        const fio = () => withCpu(srv.pid, () => runFio(fioArgs(srv.uri, JOBS[jobKey], measuredRun(cfg.runtime, cfg.ramp, dataBytes)), cfg.runtime + cfg.ramp));
        const traced = cfg.strace && NODE_SERVERS.includes(key);
        const { value: { value: job, cpuPct }, calls } = traced ? await withStrace(srv.pid, fio) : { value: await fio(), calls: null };
        const t1 = threadCpu(srv.pid);
        const wall = (performance.now() - w0) / 1000;
        const s = summarizeFio(job, JOBS[jobKey].rw);
        // fio counts the measured I/Os only; the ramp's requests also reach the server.
        const requests = s.ios * (cfg.runtime + cfg.ramp) / cfg.runtime;
        const r = { round: round + 1, job: jobKey, server: key, iops: s.iops, cpuPct, load: loadavg()[0] };
        // CPU time per request (all threads), the figure that decides throughput when the cores are shared with fio.
        r.cpuUsPerReq = cpuPct === null ? null : (cpuPct / 100) * 1e6 / (s.iops || 1);
        if (t0 && t1 && NODE_SERVERS.includes(key)) {
          r.mainPct = (100 * (t1.main - t0.main)) / wall;
          r.otherThreadsPct = (100 * (t1.rest - t0.rest)) / wall;
        }
        if (calls) r.syscallsPerRequest = Object.fromEntries(Object.entries(calls).map(([k, v]) => [k, +(v / requests).toFixed(3)]).sort((a, b) => b[1] - a[1]).slice(0, 12));
        if (before) {
          await sleep(700); // the counters are written every 500 ms
          const after = await readCounts(dir, srv.pid);
          r.perRequest = Object.fromEntries(Object.keys(after).map((k) => [k, +(((after[k] ?? 0) - (before[k] ?? 0)) / requests).toFixed(3)]));
        }
        runs.push(r);
        console.log(`  round ${round + 1} ${jobKey.padEnd(9)} ${key.padEnd(12)} ${Math.round(s.iops).toString().padStart(6)} IOPS  cpu ${cpuPct?.toFixed(0)}%` +
          (r.mainPct !== undefined ? ` (main ${r.mainPct.toFixed(0)}%, other threads ${r.otherThreadsPct.toFixed(0)}%)` : '') +
          `  ${r.cpuUsPerReq?.toFixed(1)} cpu-us/req  load ${r.load}` +
          (r.perRequest ? `\n    per request: ${JSON.stringify(r.perRequest)}` : '') + (r.syscallsPerRequest ? `\n    syscalls per request: ${JSON.stringify(r.syscallsPerRequest)}` : ''));
      }
    }
  }
  console.log(`\nmedians of ${cfg.rounds} (IOPS; ratios of medians: engine / this, this / quorum, this / nbdkit; load at end ${loadavg().join(' ')})`);
  for (const jobKey of cfg.jobs) {
    const med = (k) => median(runs.filter((r) => r.job === jobKey && r.server === k).map((r) => r.iops));
    const eng = med('engine');
    const [quorum, nbdkit] = [med('qemu'), med('nbdkit')];
    for (const k of cfg.servers) {
      const m = med(k);
      const ratios = (eng ? `  engine/this ${(eng / m).toFixed(2)}x` : '') + (quorum ? `  ÷quorum ${(m / quorum).toFixed(2)}x` : '') +
        (nbdkit ? `  ÷nbdkit ${(m / nbdkit).toFixed(2)}x` : '');
      const mine = runs.filter((r) => r.job === jobKey && r.server === k);
      const cpu = median(mine.map((r) => r.cpuPct));
      const us = median(mine.map((r) => r.cpuUsPerReq));
      const mainPct = median(mine.map((r) => r.mainPct));
      console.log(`  ${jobKey.padEnd(9)} ${k.padEnd(12)} ${Math.round(m).toString().padStart(6)}  cpu ${cpu?.toFixed(0)}%` +
        `${mainPct === null ? '' : ` (main ${mainPct.toFixed(0)}%)`}  ${us?.toFixed(1)} cpu-us/req${ratios}  rounds ${runs.filter((r) => r.job === jobKey && r.server === k).map((r) => Math.round(r.iops)).join(' / ')}`);
    }
  }
  // A clean stop writes the CPU profiles and the last counters.
  for (const s of Object.values(servers)) await killChild(s.child, 10_000);
  return 0;
}

installSignalCleanup('stopping servers and removing temporary files');
runBench('floor-bench', HELP, parseConfig, main);
