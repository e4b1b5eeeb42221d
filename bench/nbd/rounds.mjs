/**
 * nbd-bench's measurements: the warmup, then per round, per job, one fio run against every server,
 * the server order rotating from round to round so that no server always runs first (or right after
 * a particular other one). Before every run the member files are fdatasync'ed, so no server inherits
 * another one's dirty pages.
 */
import { settle } from '../lib/host.mjs';
import { fmtNum } from '../lib/format.mjs';
import { fioArgs, measuredRun, runFio, summarizeFio, withCpu } from '../lib/measure.mjs';
import { withPeakRss } from '../lib/memory.mjs';
import { JOBS, SERVERS } from './config.mjs';

/** A short 4k random read/write run against each server, discarded: warms the page cache and the engine's JIT. */
export async function warmup(cfg, servers, files) {
  if (cfg.warmup <= 0) return;
  process.stdout.write(`warmup:  ${cfg.warmup}s 4k randrw QD16 per server (discarded)... `);
  for (const k of cfg.servers) {
    await runFio(fioArgs(servers[k].uri, { rw: 'randrw', bs: '4k', iodepth: 16 }, ['--time_based', `--runtime=${cfg.warmup}`]), cfg.warmup);
    servers[k].assertAlive();
  }
  await settle(files);
  console.log('done');
}

/** Every (round, job, server) run, in the order they ran, with a progress line each. */
export async function runRounds(cfg, servers, files, dataBytes) {
  const order = cfg.servers;
  const runs = [];
  const total = cfg.rounds * cfg.jobs.length * order.length;
  let n = 0;
  for (let round = 0; round < cfg.rounds; round++) {
    const rotated = order.map((_, i) => order[(i + round) % order.length]);
    for (const jobKey of cfg.jobs) {
      const job = JOBS[jobKey];
      for (const key of rotated) {
        await settle(files);
        n++;
        const r = { round: round + 1, job: jobKey, server: key, ...(await runOne(cfg, servers[key], job, dataBytes)) };
        runs.push(r);
        const primary = job.metric === 'iops' ? `${fmtNum(r.iops)} IOPS` : `${fmtNum(r.mibps, 1)} MiB/s`;
        console.log(`  [${String(n).padStart(String(total).length)}/${total}] round ${round + 1} ${job.title.padEnd(23)} ${SERVERS[key].short.padEnd(11)} ${primary}`);
      }
    }
  }
  return runs;
}

/** One time-based fio run of `job` over the whole export of `srv`, with the server's CPU meanwhile. */
async function runOne(cfg, srv, job, dataBytes) {
  const args = fioArgs(srv.uri, job, measuredRun(cfg.runtime, cfg.ramp, dataBytes));
  const { value: { value: fio, cpuPct }, peakRssMiB } = await withPeakRss(srv.pid, () => withCpu(srv.pid, () => runFio(args, cfg.runtime + cfg.ramp)));
  srv.assertAlive();
  return { ...summarizeFio(fio, job.rw), serverCpuPct: cpuPct, peakRssMiB };
}
