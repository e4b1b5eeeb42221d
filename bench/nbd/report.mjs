/**
 * nbd-bench's report: medians per (job, server), the engine's ratio to each other server against its
 * target, one table per job, the verdicts, the noisy cells, and the JSON file.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';

import { fmtNum, plural, table } from '../lib/format.mjs';
import { loadavg } from '../lib/host.mjs';
import { NOISY_PCT, median, noisyMark, spreadPct } from '../lib/measure.mjs';
import { JOBS, MEMORY_TARGET_MIB, SERVERS, TARGETS } from './config.mjs';

/** Per job: the medians of every server and the engine's ratios; and the verdicts, job by job. */
export function summarize(cfg, runs, memory = {}) {
  const summary = {};
  const verdicts = [];
  for (const jobKey of cfg.jobs) {
    const job = JOBS[jobKey];
    const cell = {};
    for (const key of cfg.servers) {
      const mine = runs.filter((r) => r.job === jobKey && r.server === key);
      const prim = mine.map((r) => r[job.metric]);
      cell[key] = {
        rounds: mine.length,
        iops: median(mine.map((r) => r.iops)),
        mibps: median(mine.map((r) => r.mibps)),
        clatP99Us: median(mine.map((r) => r.clatP99Us)),
        serverCpuPct: median(mine.map((r) => r.serverCpuPct)),
        peakRssMiB: mine.some((r) => Number.isFinite(r.peakRssMiB)) ? Math.max(...mine.map((r) => r.peakRssMiB).filter(Number.isFinite)) : null,
        perRound: prim,
        spreadPct: spreadPct(prim),
      };
    }
    const ratios = {};
    for (const [other, min] of Object.entries(TARGETS[jobKey])) {
      if (!cell.engine || !cell[other]) continue;
      const ratio = cell.engine[job.metric] / cell[other][job.metric];
      const pass = ratio >= min;
      ratios[other] = { ratio, target: min, pass };
      verdicts.push({ job: jobKey, against: other, ratio, target: min, pass });
    }
    summary[jobKey] = { title: job.title, metric: job.metric, servers: cell, ratios };
  }
  const peaks = cfg.jobs.map((j) => summary[j].servers.engine?.peakRssMiB).concat(memory.prefillPeakRssMiB).filter(Number.isFinite);
  const mem = { ...memory, peakRssMiB: peaks.length ? Math.max(...peaks) : null };
  if (mem.peakRssMiB !== null) verdicts.push({ memory: true, value: mem.peakRssMiB, target: MEMORY_TARGET_MIB, pass: mem.peakRssMiB <= MEMORY_TARGET_MIB });
  return { summary, verdicts, memory: mem };
}

const fmtMiB = (x) => (x === null || x === undefined ? '-' : `${x.toFixed(0)} MiB`);

function fmtLat(us) {
  if (us === null || us === undefined) return '-';
  return us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us.toFixed(0)} us`;
}

/** One job's table and its ratio lines. */
function printJob(cfg, jobKey, { servers: cell, ratios }) {
  const job = JOBS[jobKey];
  const unit = job.metric === 'iops' ? 'IOPS' : 'MiB/s';
  console.log(`${job.title}  (medians of ${plural(cfg.rounds, 'round')}; primary metric: ${unit})`);
  const rows = cfg.servers.map((key) => {
    const c = cell[key];
    return [
      SERVERS[key].label, fmtNum(c.iops), fmtNum(c.mibps, 1), fmtLat(c.clatP99Us),
      c.serverCpuPct === null ? '-' : `${c.serverCpuPct.toFixed(0)}%`,
      c.peakRssMiB === null ? '-' : `${c.peakRssMiB.toFixed(0)} MiB`,
      c.perRound.map((x) => fmtNum(x, job.metric === 'iops' ? 0 : 1)).join(' / ') + noisyMark(c.perRound),
      key === 'engine' ? '1.00x' : cell.engine ? `${(cell.engine[job.metric] / c[job.metric]).toFixed(2)}x` : '-',
    ];
  });
  console.log(table(['server', 'IOPS', 'MiB/s', 'p99 clat', 'srv CPU', 'peak RSS', `per round (${unit})`, 'engine/this'],
    rows, [false, true, true, true, true, true, false, true]));
  for (const [other, { ratio, target, pass }] of Object.entries(ratios)) {
    console.log(`  engine/${SERVERS[other].short.padEnd(11)} = ${ratio.toFixed(2)}x   target >= ${target.toFixed(2)}x   ${pass ? 'PASS' : 'FAIL'}`);
  }
  console.log('');
}

/** The tables, the verdicts, the load average at start and end (taken now), the noisy cells. */
export function printReport(cfg, { summary, verdicts, memory }, machine) {
  console.log('');
  for (const jobKey of cfg.jobs) printJob(cfg, jobKey, summary[jobKey]);
  machine.loadavgEnd = loadavg();
  if (memory) {
    console.log(`engine memory (VmRSS): ${fmtMiB(memory.idleRssMiB)} idle with its 2-member set, ${fmtMiB(memory.prefillPeakRssMiB)} peak during the ` +
      `sequential prefill, ${fmtMiB(memory.peakRssMiB)} peak under any load (per job: the tables' peak RSS column)\n`);
  }
  console.log(`Every figure beside its target: ${verdicts.filter((v) => v.pass).length} of ${verdicts.length} met`);
  console.log(table(['figure', 'measured', 'target', 'met?'], verdicts.map((v) => (v.memory
    ? ['engine peak RSS under load', fmtMiB(v.value), `<= ${v.target} MiB`, v.pass ? 'met' : 'NOT MET']
    : [`${JOBS[v.job].title}: engine / ${SERVERS[v.against].short}`, `${v.ratio.toFixed(2)}x`, `>= ${v.target}x`, v.pass ? 'met' : 'NOT MET'])),
  [false, true, false, false]));
  console.log(`load average at start ${machine.loadavgStart.join(' ')}, at end ${machine.loadavgEnd.join(' ')} (${machine.nproc} CPUs)`);
  const noisy = Object.values(summary).flatMap((s) => Object.entries(s.servers).filter(([, c]) => c.spreadPct > NOISY_PCT).map(([k]) => `${s.title}/${SERVERS[k].short}`));
  if (noisy.length) console.log(`noisy cells (max-min > ${NOISY_PCT}% of median): ${noisy.join(', ')}`);
}

/** Every run, the medians, the ratios and the machine, as JSON at `file`. */
export async function writeJson(file, { machine, config, runs, summary, verdicts }) {
  const doc = {
    when: new Date().toISOString(),
    machine,
    config,
    runs,
    summary,
    targets: { met: verdicts.filter((v) => v.pass).length, total: verdicts.length, verdicts },
  };
  await writeFile(path.resolve(file), JSON.stringify(doc, null, 2) + '\n');
  console.log(`results written to ${file}`);
}
