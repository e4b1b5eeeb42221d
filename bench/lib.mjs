/**
 * Helpers shared by the benchmarks (nbd-bench.mjs, resync-bench.mjs): child processes and their
 * cleanup, the temporary directory, fio through libnbd, fdatasync, CPU time, medians, number
 * formatting, plain-text tables, the machine description and the script's entry point.
 *
 * Importing this module installs the cleanup on exit; installSignalCleanup() adds the signals.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const ENGINE_BIN = path.join(ROOT, 'engine', 'bin', 'shadow-engine.js');
export const KiB = 1024;
export const MiB = 1024 * KiB;

export class UsageError extends Error {}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The values of the string flags `names` (strict: unknown flags throw), or null for -h/--help. */
export function parseFlags(argv, names) {
  const options = Object.fromEntries(names.map((n) => [n, { type: 'string' }]));
  options.help = { type: 'boolean', short: 'h' };
  const { values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false });
  return values.help ? null : values;
}

// ---------------------------------------------------------------------------------------------
// Processes, the temporary directory and cleanup

/** Every child we started and have not seen exit. */
const live = new Set();
let tmpDir = null;
let cleaning = null;

/** Remember a child so cleanup() stops it if it is still running. */
export function track(child) {
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}

/** Runs a command to completion (in ROOT); never rejects: `ok` says whether it succeeded. */
export function exec(cmd, args, { timeoutMs = 30_000 } = {}) {
  return new Promise((resolve) => {
    track(execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 64 * MiB, cwd: ROOT }, (err, stdout, stderr) => {
      resolve({ ok: !err, code: err ? (err.code ?? 1) : 0, stdout: String(stdout), stderr: String(stderr), err });
    }));
  });
}

/** Sends `signal`, then SIGKILL if the child is still there after graceMs; resolves once it exited. */
export async function killChild(child, graceMs = 5000, signal = 'SIGTERM') {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(t);
}

/** A fresh directory `parent/prefix*` that cleanup() removes. */
export async function makeTempDir(parent, prefix) {
  tmpDir = await mkdtemp(path.join(parent, prefix));
  return tmpDir;
}

/** Stops every tracked child and removes the temporary directory; once, however often called. */
export function cleanup() {
  cleaning ??= (async () => {
    await Promise.allSettled([...live].map((c) => killChild(c)));
    if (tmpDir) await rm(tmpDir, { recursive: true, force: true }).catch(() => {});
    tmpDir = null;
  })();
  return cleaning;
}

// Last resort (an exit we did not plan for): nothing async is possible any more.
process.on('exit', () => {
  for (const c of live) {
    try { c.kill('SIGKILL'); } catch { /* already gone */ }
  }
  if (tmpDir) {
    try { fs.rmSync(tmpDir, { recursive: true, force: true }); } catch { /* best effort */ }
  }
});

/** On SIGINT/SIGTERM/SIGHUP: say `doing` on stderr, clean up, exit 130/143/129. */
export function installSignalCleanup(doing) {
  for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]]) {
    process.on(sig, () => {
      if (cleaning) return;
      process.stderr.write(`\n${sig}: ${doing}...\n`);
      cleanup().finally(() => process.exit(code));
    });
  }
}

/**
 * The script's entry point: parses the command line (usage error: exit 2, --help: exit 0), runs
 * main(cfg), cleans up and sets the exit status (1 on errors; a signal sets its own).
 */
export function runBench(name, help, parseConfig, main) {
  const run = async () => {
    let cfg;
    try {
      cfg = parseConfig(process.argv.slice(2));
    } catch (e) {
      process.stderr.write(`${name}: ${e.message}\n${help}\n`);
      return 2;
    }
    if (!cfg) {
      process.stdout.write(help + '\n');
      return 0;
    }
    return main(cfg);
  };
  run().then(
    async (code) => {
      await cleanup();
      process.exitCode = code;
    },
    async (err) => {
      if (cleaning) return; // interrupted: the signal handler cleans up and sets the exit status
      process.stderr.write(`${name}: ${err instanceof UsageError ? '' : 'error: '}${err?.message ?? err}\n`);
      await cleanup();
      process.exitCode = 1;
    },
  );
}

// ---------------------------------------------------------------------------------------------
// Tools, files and the engine's build

/**
 * Throws unless every tool in `need` is installed (`packages`: what to install), fio has the nbd
 * ioengine and the engine is built (`npmScript`: the npm script that builds and runs the bench).
 */
export async function checkTools(need, packages, npmScript) {
  const missing = [];
  for (const t of need) {
    const r = await exec(t, ['--version'], { timeoutMs: 10_000 });
    if (!r.ok && r.err?.code === 'ENOENT') missing.push(t);
  }
  if (missing.length) throw new Error(`missing tools: ${missing.join(', ')} (Debian/Ubuntu: ${packages})`);
  if (!(await exec('fio', ['--enghelp=nbd'])).ok) throw new Error('this fio has no nbd ioengine (needs fio built with libnbd)');
  if (!fs.existsSync(path.join(ROOT, 'engine', 'dist', 'cli', 'main.js'))) {
    throw new Error(`engine is not built: run \`npx tsc -b\` (or use \`npm run ${npmScript}\`)`);
  }
}

/** Imports a module of the built engine, by its path below engine/dist (e.g. 'core/geometry.js'). */
export function importEngine(rel) {
  return import(pathToFileURL(path.join(ROOT, 'engine', 'dist', ...rel.split('/'))).href);
}

/** Creates `file` with `bytes` preallocated (fallocate), and checks that it is not sparse. */
export async function fallocateFile(file, bytes) {
  const r = await exec('fallocate', ['-l', String(bytes), file]);
  if (!r.ok) throw new Error(`fallocate ${file} failed (the bench needs preallocated files, not sparse ones): ${r.stderr.trim()}`);
  const st = await stat(file);
  if (st.size !== bytes || st.blocks * 512 < bytes) throw new Error(`${file} is not fully preallocated (size ${st.size}, ${st.blocks} blocks)`);
}

/** fdatasync files so no measurement pays for an earlier step's (or another server's) writeback. */
export async function settle(files) {
  for (const f of files) {
    const h = await open(f, 'r+');
    try { await h.datasync(); } finally { await h.close(); }
  }
}

// ---------------------------------------------------------------------------------------------
// Measurements

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

// ---------------------------------------------------------------------------------------------
// Output

/** x with thousands separators and `digits` decimals; '-' for a missing value. */
export function fmtNum(x, digits = 0) {
  if (x === null || x === undefined || !Number.isFinite(x)) return '-';
  return x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** A plain-text table, indented by two spaces; right[i] right-aligns column i. */
export function table(header, rows, right) {
  const all = [header, ...rows];
  const w = header.map((_, i) => Math.max(...all.map((r) => String(r[i]).length)));
  const line = (r) => ('  ' + r.map((c, i) => (right[i] ? String(c).padStart(w[i]) : String(c).padEnd(w[i]))).join('  ')).trimEnd();
  return [line(header), '  ' + w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)].join('\n');
}

async function versionOf(cmd, args, pick = (s) => s.split('\n')[0]) {
  const r = await exec(cmd, args, { timeoutMs: 10_000 });
  return r.ok ? pick((r.stdout || r.stderr).trim()) : null;
}

/**
 * The machine, the repo and the tools' versions. `tools` maps a key to [cmd, args, pick?]; each
 * version (the first line of the output, or pick(output)) lands under that key, in that order.
 */
export async function machineInfo(tools) {
  const git = await exec('git', ['-C', ROOT, 'describe', '--always', '--dirty'], { timeoutMs: 10_000 });
  const info = {
    nproc: typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? null,
    memGiB: +(os.totalmem() / 1024 ** 3).toFixed(1),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    uvThreadpoolSize: process.env.UV_THREADPOOL_SIZE ?? null,
  };
  for (const [key, [cmd, args, pick]] of Object.entries(tools)) info[key] = await versionOf(cmd, args, pick);
  info.repo = git.ok ? git.stdout.trim() : null;
  info.loadavgStart = loadavg();
  return info;
}

/** The load averages, to two decimals. */
export const loadavg = () => os.loadavg().map((x) => +x.toFixed(2));

/** The `machine:`, `tools:` and `repo:` lines of a report's head; `tools`: the versions after node's. */
export function printMachine(machine, tools) {
  console.log(`machine: ${machine.nproc} CPUs (${machine.cpuModel}), ${machine.memGiB} GiB RAM, ${machine.kernel}, load ${machine.loadavgStart.join(' ')}`);
  console.log(`tools:   node ${machine.node}, ${tools}`);
  console.log(`repo:    ${machine.repo ?? '?'}${machine.uvThreadpoolSize ? `, UV_THREADPOOL_SIZE=${machine.uvThreadpoolSize}` : ''}`);
}

/** Warns when the 1-min load is above half the CPUs. */
export function warnIfBusy(machine) {
  if (machine.loadavgStart[0] > machine.nproc * 0.5) {
    console.log(`WARNING: the machine is busy (1-min load ${machine.loadavgStart[0]} on ${machine.nproc} CPUs): expect noisy figures.`);
  }
}
