#!/usr/bin/env node
/**
 * Resync benchmark: how long the engine takes to bring members back in step, on a 1 GiB set.
 *
 *   1. Full copy vs. minicopy — our version of table 7-1 of the OpenVMS shadowing manual: a full copy onto
 *      a new blank member, then minicopies after 1, 2, 5, 10, 25, 50 and 100 % of the chunks were written
 *      while a member was away (one 4 KiB block in each of that many distinct, randomly chosen 64 KiB chunks).
 *   2. The full copy against this machine's own copy rate for the same bytes (dd, with a final fdatasync),
 *      and each minicopy against a bare copy of the same chunks (no engine: pread/pwrite, one fdatasync).
 *   3. Minimerge after kill -9 under a 4k random-write load against a full merge of the same set.
 *   4. 4k randwrite IOPS through the engine with and without the write-intent log (--no-intent-log).
 *   5. On sparse sets of 1, 8 and 64 GiB: a minicopy and a minimerge of the same 16 MiB of scattered writes
 *      (the cost should not grow with the set); a full copy of a half-holes source vs. a full one.
 *   6. The engine's RSS, idle and at its peak under each of these loads.
 *
 * Targets: minicopy at 1 % <= 2 % of the full-copy time; minimerge <= 2 % of the full merge; the intent
 * log costs <= 10 % of 4k randwrite IOPS; the full copy >= 80 % of this machine's copy rate; and issue
 * 16's: each row of table 7-1 at or below the manual, 64 GiB / 1 GiB ~ 1, half-empty copy ~ 0.5 of a full
 * one, RSS <= 128 MiB. The report prints every figure beside its target.
 * bench/README.md ("Resync benchmark") explains every choice; docs/resync-bench.md holds a run.
 *
 * This file is the main flow; the parts live in bench/resync/ (configuration, the engine, the set-up,
 * one module per phase, summary, report, markdown, chart) and bench/lib/ (shared with nbd-bench.mjs).
 *
 * Usage: node bench/resync-bench.mjs [--rounds N] [--set-mib N] [--percents LIST] [--crash-after S]
 *          [--hot-pct P] [--iops-rounds N] [--runtime S] [--ramp S] [--seed N] [--dir DIR]
 *          [--phases copy,merge,intent] [--json PATH] [--docs DIR]
 * Every flag also has an environment variable (RESYNC_BENCH_ROUNDS, ...); flags win.
 * Exit status: 0 when the benchmark ran (whether or not the targets were met), 1 on errors (including a
 * member that does not match its source after a copy or merge), 2 on usage errors, 130/143 when interrupted.
 */
import fs from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';

import { checkTools, engineEnvNote, importEngine, loadavg, machineInfo, printMachine, warnIfBusy } from './lib/host.mjs';
import { readClockTicks } from './lib/measure.mjs';
import { MiB, installSignalCleanup, makeTempDir, runBench } from './lib/run.mjs';
import { HELP, RIG_PHASES, TOOL_VERSIONS, parseConfig } from './resync/config.mjs';
import { copyPhase } from './resync/copy.mjs';
import { intentPhase } from './resync/intent.mjs';
import { writeDocs } from './resync/markdown.mjs';
import { mergePhase } from './resync/merge.mjs';
import { report } from './resync/report.mjs';
import { Rig } from './resync/rig.mjs';
import { scalePhase } from './resync/scale.mjs';
import { summarize } from './resync/summary.mjs';
import { zeroPhase } from './resync/zero.mjs';

installSignalCleanup('stopping the engine and fio, removing temporary files');

async function main(cfg) {
  if (cfg.render) return render(cfg);
  const started = Date.now();
  await checkTools(['fio', 'fallocate', 'dd', 'cmp'], 'fio coreutils diffutils util-linux', 'bench:resync');
  await readClockTicks();
  const { HEADER_BYTES } = await importEngine('core/geometry.js');
  const machine = await machineInfo(TOOL_VERSIONS);
  printPlan(cfg, machine, HEADER_BYTES);

  const dir = await makeTempDir(cfg.dir, 'resync-bench-');
  // The scale and zero phases make sets of their own: the 1 GiB prefilled set only when a phase uses it.
  const rig = cfg.phases.some((p) => RIG_PHASES.includes(p)) ? await Rig.create(cfg, HEADER_BYTES, dir) : null;
  const rigConfig = rig ? { setBytes: rig.setBytes, memberBytes: rig.memberBytes, chunkSize: rig.chunkSize, chunks: rig.chunks } : {};
  const result = {
    when: new Date().toISOString(),
    args: process.argv.slice(2),
    machine,
    config: { ...cfg, ...rigConfig, headerBytes: HEADER_BYTES },
    fullCopy: [], dd: [], minicopy: [], minimerge: [], fullMerge: [], uniformMinimerge: [], intent: [],
    verify: rig ? rig.checks : [],
  };
  if (rig) result.idleRssMiB = rig.idleRssMiB;
  if (cfg.phases.includes('copy')) await copyPhase(rig, cfg, result);
  if (cfg.phases.includes('merge')) await mergePhase(rig, cfg, result);
  if (cfg.phases.includes('intent')) await intentPhase(rig, cfg, result);
  if (rig?.engine) await rig.engine.stop();
  if (cfg.phases.includes('scale')) await scalePhase(dir, cfg, result, HEADER_BYTES);
  if (cfg.phases.includes('zero')) await zeroPhase(dir, cfg, result, HEADER_BYTES);

  machine.loadavgEnd = loadavg();
  result.durationSeconds = Math.round((Date.now() - started) / 1000);
  result.summary = summarize(result, cfg);
  console.log('\n' + report(result, cfg));
  if (cfg.json) {
    await writeFile(path.resolve(cfg.json), JSON.stringify(result, null, 2) + '\n');
    console.log(`results written to ${cfg.json}`);
  }
  await writeDocs(result, cfg, cfg.docs);
  return 0;
}

/** --render: the report (and --docs) from a JSON file an earlier run wrote, measuring nothing. */
async function render(cfg) {
  const saved = JSON.parse(fs.readFileSync(path.resolve(cfg.render), 'utf8'));
  saved.summary = summarize(saved, saved.config);
  console.log(report(saved, saved.config));
  await writeDocs(saved, saved.config, cfg.docs);
  return 0;
}

/** The head of the output: what runs, on what. */
function printPlan(cfg, machine, headerBytes) {
  console.log('resync-bench: full copy vs. minicopy, minimerge vs. full merge, cost of the write-intent log');
  printMachine(machine, `${machine.fio}, ${machine.dd}`);
  console.log(`plan:    ${cfg.setMiB} MiB set (members ${cfg.setMiB + headerBytes / MiB} MiB, fallocated); phases ${cfg.phases.join(', ')}; ` +
    `${cfg.rounds} rounds of copies/merges, ${cfg.iopsRounds} rounds of 4k randwrite with/without the intent log`);
  console.log(engineEnvNote());
  warnIfBusy(machine);
}

runBench('resync-bench', HELP, parseConfig, main);
