/**
 * What the benches measure with: fio through libnbd (arguments, a run, its figures, the prefill that
 * puts data on the members), the CPU time a server spends during a run, and medians and spreads over
 * rounds.
 */
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';

import { settle } from './host.mjs';
import { MiB, exec } from './run.mjs';

/** fio's arguments for one job ({ rw, bs, iodepth }) against an NBD URI, JSON output; `extra` appended. */
export function fioArgs(uri, job, extra) {
  return [
    `--name=${job.rw}-${job.bs}`,
    '--ioengine=nbd',
    `--uri=${uri}`,
    `--rw=${job.rw}`,
    `--bs=${job.bs}`,
    `--iodepth=${job.iodepth}`,
    '--numjobs=1',
    '--norandommap',
    '--randrepeat=1',
    '--output-format=json',
    ...extra,
  ];
}

/** fio's extra arguments for a measured run: time-based, `runtime` s after `ramp` s not counted, over the first `bytes`. */
export const measuredRun = (runtime, ramp, bytes) => ['--time_based', `--runtime=${runtime}`, `--ramp_time=${ramp}`, `--size=${bytes}`];

/** Runs fio and returns its first job's JSON; throws with fio's own words when it failed. */
export async function runFio(args, expectSeconds) {
  const r = await exec('fio', args, { timeoutMs: (expectSeconds + 120) * 1000 });
  const at = r.stdout.indexOf('{');
  let doc = null;
  if (at >= 0) {
    try { doc = JSON.parse(r.stdout.slice(at)); } catch { /* reported below */ }
  }
  const job = doc?.jobs?.[0];
  if (!r.ok || !job || job.error) {
    const why = (r.stderr + r.stdout.slice(0, at < 0 ? undefined : at)).trim() || `exit ${r.code}`;
    throw new Error(`fio ${args.join(' ')} failed: ${job?.error ? `job error ${job.error}: ` : ''}${why}`);
  }
  return job;
}

/** The figures of one fio job's JSON for its direction (`rw` names it: read or write). */
export function summarizeFio(job, rw) {
  const side = rw.includes('read') ? job.read : job.write;
  const pct = side.clat_ns?.percentile ?? {};
  return {
    iops: side.iops,
    mibps: side.bw_bytes / MiB,
    clatP50Us: pct['50.000000'] !== undefined ? pct['50.000000'] / 1000 : null,
    clatP99Us: pct['99.000000'] !== undefined ? pct['99.000000'] / 1000 : null,
    ios: side.total_ios,
    fioCpu: { usr: job.usr_cpu, sys: job.sys_cpu },
  };
}

/** The sequential 1 MiB write job of the prefills (and nbd-bench's sequential-write job). */
export const SEQWRITE = { rw: 'write', bs: '1M', iodepth: 4 };

/**
 * One sequential 1 MiB write pass over the first `bytes` of the export at `uri` (the engine's, which
 * writes every member), then an fdatasync of `files`: the members hold fio's non-zero data everywhere,
 * so reads return real data and a copy really copies. Says so on stdout, with the time it took.
 */
export async function prefill(uri, bytes, files, { what, expectSeconds }) {
  process.stdout.write(`prefill: sequential 1M write of the whole ${what} through the engine... `);
  const t0 = performance.now();
  await runFio(fioArgs(uri, SEQWRITE, [`--size=${bytes}`]), expectSeconds);
  await settle(files);
  console.log(`${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

let clockTicks = 100;

/** Reads the kernel's clock ticks per second (getconf CLK_TCK) for cpuSeconds(); keeps 100 if unknown. */
export async function readClockTicks() {
  const clk = await exec('getconf', ['CLK_TCK']);
  if (clk.ok && Number(clk.stdout) > 0) clockTicks = Number(clk.stdout);
}

/** utime+stime of a process in seconds, or null where /proc is not available. */
export function cpuSeconds(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / clockTicks; // fields 14 and 15 of proc(5)
  } catch {
    return null;
  }
}

/**
 * Runs `fn` and returns its value with the CPU time process `pid` used meanwhile, as % of one core
 * over the wall time (null where /proc is not available).
 */
export async function withCpu(pid, fn) {
  const cpu0 = cpuSeconds(pid);
  const w0 = performance.now();
  const value = await fn();
  const wall = (performance.now() - w0) / 1000;
  const cpu1 = cpuSeconds(pid);
  return { value, cpuPct: cpu0 !== null && cpu1 !== null ? (100 * (cpu1 - cpu0)) / wall : null };
}

/** Median of the finite numbers in xs, or null if there are none. */
export function median(xs) {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

/** max - min as % of the median (0 for fewer than two values). */
export function spreadPct(xs) {
  return xs.length > 1 ? (100 * (Math.max(...xs) - Math.min(...xs))) / median(xs) : 0;
}

/** Above this spread (% of the median) the rounds of a cell disagree enough to call it noisy. */
export const NOISY_PCT = 20;

/** '  (noisy)' after a list of rounds whose spread is above NOISY_PCT, else ''. */
export const noisyMark = (xs) => (spreadPct(xs) > NOISY_PCT ? '  (noisy)' : '');
