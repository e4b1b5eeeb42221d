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
 * This file is the main flow; the parts live in bench/nbd/ (configuration, servers, rounds, report)
 * and bench/lib/ (shared with resync-bench.mjs).
 *
 * Usage: node bench/nbd-bench.mjs [--rounds N] [--runtime S] [--ramp S] [--warmup S] [--file-mib N]
 *                                 [--dir DIR] [--jobs a,b] [--servers a,b] [--json PATH]
 * Every flag also has an environment variable (BENCH_ROUNDS, BENCH_RUNTIME, ...); flags win.
 * Exit status: 0 when the benchmark ran (whether or not the targets were met), 1 on errors,
 * 130/143 when interrupted.
 */
import { checkTools, engineEnvNote, importEngine, machineInfo, printMachine, warnIfBusy } from './lib/host.mjs';
import { prefill, readClockTicks } from './lib/measure.mjs';
import { memoryOf, withPeakRss } from './lib/memory.mjs';
import { installSignalCleanup, runBench, sleep } from './lib/run.mjs';
import { HELP, TOOL_VERSIONS, neededTools, parseConfig } from './nbd/config.mjs';
import { printReport, summarize, writeJson } from './nbd/report.mjs';
import { runRounds, warmup } from './nbd/rounds.mjs';
import { makeMemberFiles, startServers } from './nbd/servers.mjs';

installSignalCleanup('stopping servers and removing temporary files');

async function main(cfg) {
  await checkTools(neededTools(cfg), 'fio qemu-utils nbdkit libnbd-bin util-linux', 'bench');
  await readClockTicks();
  const { HEADER_BYTES } = await importEngine('core/geometry.js');
  const machine = await machineInfo(TOOL_VERSIONS);
  printPlan(cfg, machine);

  const members = await makeMemberFiles(cfg);
  const { servers, dataBytes } = await startServers(cfg, members, HEADER_BYTES);
  // The engine's memory with its 2-member set and nothing to do, then at its peak during the prefill.
  // Idle is read 2.5 s after it answered: its I/O thread serves both members by then (the engine does
  // not announce it, so this waits a bounded time).
  await sleep(2500);
  const idleRssMiB = memoryOf(servers.engine.pid)?.rssMiB ?? null;
  const { peakRssMiB: prefillPeakRssMiB } = await withPeakRss(servers.engine.pid,
    () => prefill(servers.engine.uri, dataBytes, members.files, { what: 'export', expectSeconds: 300 }));
  console.log(`memory:  engine RSS ${idleRssMiB === null ? '-' : idleRssMiB.toFixed(0)} MiB idle, ${prefillPeakRssMiB === null ? '-' : prefillPeakRssMiB.toFixed(0)} MiB peak during the prefill`);
  await warmup(cfg, servers, members.files);
  const runs = await runRounds(cfg, servers, members.files, dataBytes);

  const results = summarize(cfg, runs, { idleRssMiB, prefillPeakRssMiB });
  printReport(cfg, results, machine);
  if (cfg.json) {
    const config = { ...cfg, fileBytes: members.fileBytes, exportBytes: dataBytes, headerBytes: HEADER_BYTES };
    await writeJson(cfg.json, { machine, config, runs, ...results });
  }
  return 0;
}

/** The head of the output: what runs, on what, and for about how long. */
function printPlan(cfg, machine) {
  const estimate = cfg.rounds * cfg.jobs.length * cfg.servers.length * (cfg.runtime + cfg.ramp + 1) + cfg.servers.length * (cfg.warmup + 1) + 15;
  console.log('nbd-bench: shadow engine vs. qemu-nbd quorum vs. nbdkit file, fio through libnbd');
  printMachine(machine, `${machine.fio}, ${machine.qemuNbd}, ${machine.nbdkit}, ${machine.libnbd}`);
  console.log(`plan:    ${cfg.rounds} rounds x ${cfg.jobs.length} jobs x ${cfg.servers.length} servers, ${cfg.runtime}s (+${cfg.ramp}s ramp) per run, ` +
    `${cfg.fileMiB} MiB files; about ${Math.ceil(estimate / 60)} min`);
  console.log(engineEnvNote());
  warnIfBusy(machine);
}

runBench('nbd-bench', HELP, parseConfig, main);
