/**
 * resync-bench's intent-log phase: fio 4k randwrite QD16 over the whole set, each run against a freshly
 * started engine with the write-intent log (default) or with the hidden --no-intent-log flag, the
 * order alternating from round to round.
 */
import { fmtNum } from '../lib/format.mjs';
import { settle } from '../lib/host.mjs';
import { fioArgs, measuredRun, runFio, summarizeFio, withCpu } from '../lib/measure.mjs';
import { RANDWRITE } from './config.mjs';

/** Fills result.intent; stops the running engine first and leaves none running. */
export async function intentPhase(rig, cfg, result) {
  await rig.engine.stop();
  for (let round = 1; round <= cfg.iopsRounds; round++) {
    for (const intentLog of round % 2 ? [true, false] : [false, true]) result.intent.push(await randwriteRun(rig, cfg, round, intentLog));
  }
  rig.engine = null;
}

async function randwriteRun(rig, cfg, round, intentLog) {
  await settle([rig.A, rig.B]);
  const e = await rig.startEngine({ intentLog });
  const s = await e.status();
  if (s.intentLog.enabled !== intentLog) throw new Error(`engine reports intentLog.enabled=${s.intentLog.enabled}, expected ${intentLog}`);
  const args = fioArgs(e.uri, RANDWRITE, measuredRun(cfg.runtime, cfg.ramp, rig.setBytes));
  const { value: job, cpuPct } = await withCpu(e.pid, () => runFio(args, cfg.runtime + cfg.ramp));
  e.assertAlive();
  const end = await e.status();
  await e.stop();
  const fio = summarizeFio(job, RANDWRITE.rw);
  const r = { round, intentLog, iops: fio.iops, clatP99Us: fio.clatP99Us, serverCpuPct: cpuPct, dirtyChunksAtEnd: end.intentLog.dirtyChunks };
  console.log(`  round ${round} 4k randwrite QD16 ${intentLog ? 'with intent log   ' : 'without intent log'} ${fmtNum(r.iops)} IOPS ` +
    `(p99 ${r.clatP99Us === null ? '-' : (r.clatP99Us / 1000).toFixed(2)} ms, engine CPU ${r.serverCpuPct === null ? '-' : r.serverCpuPct.toFixed(0)} %, ` +
    `${fmtNum(r.dirtyChunksAtEnd)} chunks marked at the end)`);
  return r;
}
