#!/usr/bin/env node
/**
 * NBD server benchmark: the shadow engine (2-member mirror) against qemu-nbd (2-child quorum) and
 * nbdkit's file plugin (one file), all driven by fio through libnbd (--ioengine=nbd).
 *
 * Fairness, in short (bench/README.md has the long version):
 *   - every server serves the same fallocated member files and the same byte range of them
 *     (the engine's data area, i.e. after its metadata header), so the export sizes are identical;
 *   - the files are prefilled once with a sequential write through the engine, so reads return data
 *     from the (warm) page cache rather than zeros from unwritten extents;
 *   - the same fio jobs run against every server, several rounds, the server order rotating each
 *     round, and medians are reported; the member files are fdatasync'ed before every run so no
 *     server inherits another one's dirty pages.
 *
 * Usage: node bench/nbd-bench.mjs [--rounds N] [--runtime S] [--ramp S] [--warmup S] [--file-mib N]
 *                                 [--dir DIR] [--jobs a,b] [--servers a,b] [--json PATH]
 * Every flag also has an environment variable (BENCH_ROUNDS, BENCH_RUNTIME, ...); flags win.
 * Exit status: 0 when the benchmark ran (whether or not the targets were met), 1 on errors,
 * 130/143 when interrupted.
 */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import {
  ENGINE_BIN, MiB, ROOT, UsageError, checkTools, cpuSeconds, exec, fallocateFile, fioArgs, fmtNum, importEngine,
  installSignalCleanup, loadavg, machineInfo, makeTempDir, median, parseFlags, printMachine, readClockTicks,
  runBench, runFio, settle, sleep, spreadPct, table, track, warnIfBusy,
} from './lib.mjs';

// ---------------------------------------------------------------------------------------------
// Configuration

const JOBS = {
  randwrite: { title: '4k randwrite QD16', rw: 'randwrite', bs: '4k', iodepth: 16, metric: 'iops' },
  randread: { title: '4k randread QD16', rw: 'randread', bs: '4k', iodepth: 16, metric: 'iops' },
  seqwrite: { title: '1M sequential write QD4', rw: 'write', bs: '1M', iodepth: 4, metric: 'mibps' },
};

const SERVERS = {
  engine: { label: 'engine (2-member mirror)', short: 'engine' },
  qemu: { label: 'qemu-nbd quorum (2 children)', short: 'qemu-quorum' },
  nbdkit: { label: 'nbdkit file (1 file)', short: 'nbdkit' },
};

/** Engine vs. the others: minimum ratio engine/other on the job's primary metric. */
const TARGETS = {
  randwrite: { qemu: 2, nbdkit: 0.5 },
  randread: { qemu: 2, nbdkit: 0.5 },
  seqwrite: { qemu: 1, nbdkit: 0.5 },
};

const HELP = `usage: node bench/nbd-bench.mjs [options]        (or: npm run bench -- [options])

  --rounds N      rounds per (server, job); medians are reported     [BENCH_ROUNDS, 3]
  --runtime S     measured seconds per fio run                       [BENCH_RUNTIME, 8]
  --ramp S        fio ramp_time per run (run but not measured)       [BENCH_RAMP, 1]
  --warmup S      4k random I/O per server before round 1, discarded [BENCH_WARMUP, 3]
  --file-mib N    size of each member file in MiB                    [BENCH_FILE_MIB, 1024]
  --dir DIR       where the temporary member files go                [BENCH_DIR, os.tmpdir()]
  --jobs LIST     subset of randwrite,randread,seqwrite              [BENCH_JOBS, all]
  --servers LIST  subset of engine,qemu,nbdkit                       [BENCH_SERVERS, all]
                  (the engine is always started: it lays out the files and does the prefill)
  --json PATH     also write all results as JSON to PATH             [BENCH_JSON]
  -h, --help      this text`;

function parseConfig(argv) {
  const values = parseFlags(argv, ['rounds', 'runtime', 'ramp', 'warmup', 'file-mib', 'dir', 'jobs', 'servers', 'json']);
  if (!values) return null;
  const env = process.env;
  const num = (flag, envName, dflt, min) => {
    const raw = values[flag] ?? env[envName] ?? String(dflt);
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min) throw new UsageError(`--${flag} (${envName}) must be a number >= ${min}, got '${raw}'`);
    return n;
  };
  const list = (flag, envName, known) => {
    const raw = values[flag] ?? env[envName];
    if (!raw) return Object.keys(known);
    const items = raw.split(',').map((s) => s.trim()).filter(Boolean);
    for (const i of items) if (!(i in known)) throw new UsageError(`--${flag}: unknown '${i}' (known: ${Object.keys(known).join(', ')})`);
    // Keep the canonical order so tables always read the same way.
    return Object.keys(known).filter((k) => items.includes(k));
  };
  const cfg = {
    rounds: Math.floor(num('rounds', 'BENCH_ROUNDS', 3, 1)),
    runtime: num('runtime', 'BENCH_RUNTIME', 8, 1),
    ramp: num('ramp', 'BENCH_RAMP', 1, 0),
    warmup: num('warmup', 'BENCH_WARMUP', 3, 0),
    fileMiB: Math.floor(num('file-mib', 'BENCH_FILE_MIB', 1024, 64)),
    dir: values.dir ?? env.BENCH_DIR ?? os.tmpdir(),
    jobs: list('jobs', 'BENCH_JOBS', JOBS),
    servers: list('servers', 'BENCH_SERVERS', SERVERS),
    json: values.json ?? env.BENCH_JSON ?? null,
  };
  if (cfg.jobs.length === 0) throw new UsageError('no jobs selected');
  if (cfg.servers.length === 0) throw new UsageError('no servers selected');
  return cfg;
}

// ---------------------------------------------------------------------------------------------
// Servers

installSignalCleanup('stopping servers and removing temporary files');

class Server {
  constructor(key, cmd, args, socket) {
    this.key = key;
    this.cmd = cmd;
    this.args = args;
    this.socket = socket;
    this.uri = `nbd+unix:///?socket=${socket}`;
    this.output = '';
    this.child = null;
    this.exit = null;
  }

  start() {
    const child = track(spawn(this.cmd, this.args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] }));
    this.child = child;
    const keep = (chunk) => {
      this.output = (this.output + chunk.toString()).slice(-16 * 1024);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.once('exit', (code, signal) => { this.exit = { code, signal }; });
    child.once('error', (e) => { this.exit = { code: null, signal: null, error: e.message }; });
  }

  get pid() { return this.child?.pid; }

  assertAlive() {
    if (this.exit) {
      throw new Error(`${SERVERS[this.key].short} exited (${JSON.stringify(this.exit)}); last output:\n${this.output.trim()}`);
    }
  }

  /** Polls the socket with nbdinfo until a client can complete the handshake. */
  async waitAccepting(timeoutMs = 30_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      this.assertAlive();
      const r = await exec('nbdinfo', ['--size', this.uri], { timeoutMs: 10_000 });
      if (r.ok) return Number(r.stdout.trim());
      if (Date.now() > deadline) throw new Error(`${SERVERS[this.key].short}: socket not accepting after ${timeoutMs} ms: ${r.stderr.trim()}`);
      await sleep(100);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Measurements

function summarizeFio(job, rw) {
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

// ---------------------------------------------------------------------------------------------
// Output

function fmtLat(us) {
  if (us === null || us === undefined) return '-';
  return us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us.toFixed(0)} us`;
}

/** Versions shown under `tools:` and kept in the JSON. */
const TOOL_VERSIONS = {
  fio: ['fio', ['--version']],
  qemuNbd: ['qemu-nbd', ['--version']],
  nbdkit: ['nbdkit', ['--version']],
  libnbd: ['nbdinfo', ['--version'], (s) => s.split('\n').find((l) => l.startsWith('libnbd')) ?? s.split('\n')[0]],
};

// ---------------------------------------------------------------------------------------------
// Main

function neededTools(cfg) {
  const need = ['fio', 'nbdinfo', 'fallocate'];
  if (cfg.servers.includes('qemu')) need.push('qemu-nbd');
  if (cfg.servers.includes('nbdkit')) need.push('nbdkit');
  return need;
}

/** qemu --image-opts values escape ',' by doubling it. */
const qemuEsc = (s) => s.replaceAll(',', ',,');

async function main(cfg) {
  await checkTools(neededTools(cfg), 'fio qemu-utils nbdkit libnbd-bin util-linux', 'bench');
  await readClockTicks();
  const { HEADER_BYTES } = await importEngine('core/geometry.js');

  const machine = await machineInfo(TOOL_VERSIONS);
  const perRun = cfg.runtime + cfg.ramp;
  const estimate = cfg.rounds * cfg.jobs.length * cfg.servers.length * (perRun + 1) + cfg.servers.length * (cfg.warmup + 1) + 15;
  console.log('nbd-bench: shadow engine vs. qemu-nbd quorum vs. nbdkit file, fio through libnbd');
  printMachine(machine, `${machine.fio}, ${machine.qemuNbd}, ${machine.nbdkit}, ${machine.libnbd}`);
  console.log(`plan:    ${cfg.rounds} rounds x ${cfg.jobs.length} jobs x ${cfg.servers.length} servers, ${cfg.runtime}s (+${cfg.ramp}s ramp) per run, ` +
    `${cfg.fileMiB} MiB files; about ${Math.ceil(estimate / 60)} min`);
  warnIfBusy(machine);

  // Member files: the same two files for every server, fallocated, in a fresh directory.
  const tmpDir = await makeTempDir(cfg.dir, 'nbd-bench-');
  const fileBytes = cfg.fileMiB * MiB;
  const files = [path.join(tmpDir, 'member-a.img'), path.join(tmpDir, 'member-b.img')];
  for (const f of files) await fallocateFile(f, fileBytes);

  // The engine goes first: it creates the set (and writes its metadata header) on the blank files.
  const servers = {};
  const engine = new Server('engine', process.execPath,
    [ENGINE_BIN, 'serve', '--member', files[0], '--member', files[1], '--socket', path.join(tmpDir, 'engine.sock'), '--log-level', 'warn'],
    path.join(tmpDir, 'engine.sock'));
  engine.start();
  // At --log-level warn the engine prints nothing when ready (EngineReady is an info line), so
  // readiness is the same for every server: a client completes the NBD handshake.
  const dataBytes = await engine.waitAccepting(60_000);
  servers.engine = engine;
  if (dataBytes + HEADER_BYTES > fileBytes) throw new Error(`engine export (${dataBytes}) does not fit behind its header in ${fileBytes}`);

  // qemu and nbdkit serve exactly the engine's data area of the same files, so all three exports
  // have the same size and the engine's header stays intact.
  if (cfg.servers.includes('qemu')) {
    const child = (i) => [
      `children.${i}.driver=raw`, `children.${i}.offset=${HEADER_BYTES}`, `children.${i}.size=${dataBytes}`,
      `children.${i}.file.driver=file`, `children.${i}.file.filename=${qemuEsc(files[i])}`,
    ];
    const opts = ['driver=quorum', 'vote-threshold=1', 'read-pattern=fifo', ...child(0), ...child(1)].join(',');
    const sock = path.join(tmpDir, 'qemu.sock');
    servers.qemu = new Server('qemu', 'qemu-nbd',
      ['--persistent', '--shared=8', '--socket', sock, '--cache=writeback', '--aio=threads', '--image-opts', opts], sock);
  }
  if (cfg.servers.includes('nbdkit')) {
    const sock = path.join(tmpDir, 'nbdkit.sock');
    servers.nbdkit = new Server('nbdkit', 'nbdkit',
      ['--foreground', '--exit-with-parent', '--unix', sock, '--filter=offset', 'file', `file=${files[0]}`,
        `offset=${HEADER_BYTES}`, `range=${dataBytes}`], sock);
  }
  for (const key of ['qemu', 'nbdkit']) {
    if (!servers[key]) continue;
    servers[key].start();
    const size = await servers[key].waitAccepting();
    if (size !== dataBytes) throw new Error(`${SERVERS[key].short} exports ${size} bytes, the engine ${dataBytes}`);
  }
  const order = cfg.servers;
  console.log(`exports: ${order.map((k) => SERVERS[k].short).join(', ')}, ${fmtNum(dataBytes / MiB)} MiB each (member bytes ${HEADER_BYTES / MiB} MiB..end)`);

  // Prefill: one sequential pass through the engine writes fio's (non-zero) buffers to both members,
  // so later reads return real data through every server, from the page cache.
  process.stdout.write('prefill: sequential 1M write of the whole export through the engine... ');
  const t0 = Date.now();
  await runFio(fioArgs(engine.uri, JOBS.seqwrite, [`--size=${dataBytes}`]), 300);
  await settle(files);
  console.log(`${((Date.now() - t0) / 1000).toFixed(1)} s`);

  if (cfg.warmup > 0) {
    process.stdout.write(`warmup:  ${cfg.warmup}s 4k randrw QD16 per server (discarded)... `);
    for (const k of order) {
      await runFio(fioArgs(servers[k].uri, { rw: 'randrw', bs: '4k', iodepth: 16 }, ['--time_based', `--runtime=${cfg.warmup}`]), cfg.warmup);
      servers[k].assertAlive();
    }
    await settle(files);
    console.log('done');
  }

  // Rounds: per round, per job, every server once; the server order rotates each round so that no
  // server always runs first (or right after a particular other one).
  const runs = [];
  const total = cfg.rounds * cfg.jobs.length * order.length;
  let n = 0;
  for (let round = 0; round < cfg.rounds; round++) {
    const rotated = order.map((_, i) => order[(i + round) % order.length]);
    for (const jobKey of cfg.jobs) {
      const job = JOBS[jobKey];
      for (const key of rotated) {
        const srv = servers[key];
        await settle(files);
        n++;
        const cpu0 = cpuSeconds(srv.pid);
        const w0 = Date.now();
        const fio = await runFio(fioArgs(srv.uri, job, ['--time_based', `--runtime=${cfg.runtime}`, `--ramp_time=${cfg.ramp}`, `--size=${dataBytes}`]), perRun);
        const wall = (Date.now() - w0) / 1000;
        const cpu1 = cpuSeconds(srv.pid);
        srv.assertAlive();
        const r = { round: round + 1, job: jobKey, server: key, ...summarizeFio(fio, job.rw),
          serverCpuPct: cpu0 !== null && cpu1 !== null ? (100 * (cpu1 - cpu0)) / wall : null };
        runs.push(r);
        const primary = job.metric === 'iops' ? `${fmtNum(r.iops)} IOPS` : `${fmtNum(r.mibps, 1)} MiB/s`;
        console.log(`  [${String(n).padStart(String(total).length)}/${total}] round ${round + 1} ${job.title.padEnd(23)} ${SERVERS[key].short.padEnd(11)} ${primary}`);
      }
    }
  }

  // Report.
  const summary = {};
  const verdicts = [];
  console.log('');
  for (const jobKey of cfg.jobs) {
    const job = JOBS[jobKey];
    const unit = job.metric === 'iops' ? 'IOPS' : 'MiB/s';
    const cell = {};
    for (const key of order) {
      const mine = runs.filter((r) => r.job === jobKey && r.server === key);
      const prim = mine.map((r) => r[job.metric]);
      cell[key] = {
        rounds: mine.length,
        iops: median(mine.map((r) => r.iops)),
        mibps: median(mine.map((r) => r.mibps)),
        clatP99Us: median(mine.map((r) => r.clatP99Us)),
        serverCpuPct: median(mine.map((r) => r.serverCpuPct)),
        perRound: prim,
        spreadPct: spreadPct(prim),
      };
    }
    const ratios = {};
    const lines = [];
    for (const [other, min] of Object.entries(TARGETS[jobKey])) {
      if (!cell.engine || !cell[other]) continue;
      const ratio = cell.engine[job.metric] / cell[other][job.metric];
      const pass = ratio >= min;
      ratios[other] = { ratio, target: min, pass };
      verdicts.push({ job: jobKey, against: other, ratio, target: min, pass });
      lines.push(`  engine/${SERVERS[other].short.padEnd(11)} = ${ratio.toFixed(2)}x   target >= ${min.toFixed(2)}x   ${pass ? 'PASS' : 'FAIL'}`);
    }
    summary[jobKey] = { title: job.title, metric: job.metric, servers: cell, ratios };

    console.log(`${job.title}  (medians of ${cfg.rounds} round${cfg.rounds === 1 ? '' : 's'}; primary metric: ${unit})`);
    const rows = order.map((key) => {
      const c = cell[key];
      return [
        SERVERS[key].label, fmtNum(c.iops), fmtNum(c.mibps, 1), fmtLat(c.clatP99Us),
        c.serverCpuPct === null ? '-' : `${c.serverCpuPct.toFixed(0)}%`,
        c.perRound.map((x) => fmtNum(x, job.metric === 'iops' ? 0 : 1)).join(' / ') + (c.spreadPct > 20 ? '  (noisy)' : ''),
        key === 'engine' ? '1.00x' : cell.engine ? `${(cell.engine[job.metric] / c[job.metric]).toFixed(2)}x` : '-',
      ];
    });
    console.log(table(['server', 'IOPS', 'MiB/s', 'p99 clat', 'srv CPU', `per round (${unit})`, 'engine/this'],
      rows, [false, true, true, true, true, false, true]));
    for (const l of lines) console.log(l);
    console.log('');
  }

  const met = verdicts.filter((v) => v.pass).length;
  machine.loadavgEnd = loadavg();
  console.log(`targets met: ${met}/${verdicts.length}`);
  for (const v of verdicts) {
    console.log(`  ${v.pass ? 'PASS' : 'FAIL'}  ${JOBS[v.job].title.padEnd(23)} engine/${SERVERS[v.against].short.padEnd(11)} ${v.ratio.toFixed(2)}x (>= ${v.target}x)`);
  }
  console.log(`load average at start ${machine.loadavgStart.join(' ')}, at end ${machine.loadavgEnd.join(' ')} (${machine.nproc} CPUs)`);
  const noisy = Object.values(summary).flatMap((s) => Object.entries(s.servers).filter(([, c]) => c.spreadPct > 20).map(([k]) => `${s.title}/${SERVERS[k].short}`));
  if (noisy.length) console.log(`noisy cells (max-min > 20% of median): ${noisy.join(', ')}`);

  if (cfg.json) {
    const doc = {
      when: new Date().toISOString(),
      machine,
      config: { ...cfg, fileBytes, exportBytes: dataBytes, headerBytes: HEADER_BYTES },
      runs,
      summary,
      targets: { met, total: verdicts.length, verdicts },
    };
    await writeFile(path.resolve(cfg.json), JSON.stringify(doc, null, 2) + '\n');
    console.log(`results written to ${cfg.json}`);
  }
  return 0;
}

runBench('nbd-bench', HELP, parseConfig, main);
