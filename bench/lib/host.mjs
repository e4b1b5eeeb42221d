/**
 * The machine a bench runs on: the tools it needs and the engine's build, preallocated member files
 * and their fdatasync, and the description of the machine (CPUs, load, versions) its report starts with.
 */
import fs from 'node:fs';
import { open, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { ROOT, exec } from './run.mjs';

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

/** The `engine:` line of a bench's head: what the engine's node was started with. */
export function engineEnvNote() {
  return process.env.BENCH_ENGINE_NODE_DEFAULTS === '1'
    ? "engine:  node's own heap defaults (BENCH_ENGINE_NODE_DEFAULTS=1), not the engine's memory flag"
    : "engine:  started with its memory flag (NODE_OPTIONS=--max-semi-space-size=2, as its command does)";
}

/**
 * The environment the benches start the engine in: ours plus the engine's memory flag, as its command
 * passes it (engine/src/api/process-env.ts). BENCH_ENGINE_NODE_DEFAULTS=1 leaves it out, to measure
 * what it saves and what it costs.
 */
export async function engineEnv() {
  if (process.env.BENCH_ENGINE_NODE_DEFAULTS === '1') return process.env;
  const { engineProcessEnv } = await importEngine('api/process-env.js');
  return engineProcessEnv(process.env);
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
