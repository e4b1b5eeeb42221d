/**
 * resync-bench's intent-log phase: fio 4k randwrite QD16 over the whole set, each run against a freshly
 * started engine with the write-intent log capped at 256 MiB, with the log uncapped
 * (--intent-log-cap-mib 0, the default for now), or with the hidden --no-intent-log flag, the order rotating from round to
 * round.
 */
import { fmtNum } from '../lib/format.mjs';
import { settle } from '../lib/host.mjs';
import { fioArgs, measuredRun, runFio, summarizeFio, withCpu } from '../lib/measure.mjs';
import { withPeakRss } from '../lib/memory.mjs';
import { RANDWRITE } from './config.mjs';

/** Fills result.intent; stops the running engine first and leaves none running. */
export async function intentPhase(rig, cfg, result) {
  await rig.engine.stop();
  const variants = ['capped', 'uncapped', 'none'];
  for (let round = 1; round <= cfg.iopsRounds; round++) {
    const order = variants.map((_, i) => variants[(i + round - 1) % variants.length]);
    for (const variant of order) result.intent.push(await randwriteRun(rig, cfg, round, variant));
  }
  rig.engine = null;
}

const LABEL = { capped: 'intent log (capped)  ', uncapped: 'intent log, no cap   ', none: 'without intent log   ' };

async function randwriteRun(rig, cfg, round, variant) {
  await settle([rig.A, rig.B]);
  const intentLog = variant !== 'none';
  const e = await rig.startEngine({ intentLog, ...(variant === 'capped' ? { intentCapMiB: 256 } : variant === 'uncapped' ? { intentCapMiB: 0 } : {}) });
  const s = await e.status();
  if (s.intentLog.enabled !== intentLog) throw new Error(`engine reports intentLog.enabled=${s.intentLog.enabled}, expected ${intentLog}`);
  const args = fioArgs(e.uri, RANDWRITE, measuredRun(cfg.runtime, cfg.ramp, rig.setBytes));
  const { value: { value: job, cpuPct }, peakRssMiB } = await withPeakRss(e.pid, () => withCpu(e.pid, () => runFio(args, cfg.runtime + cfg.ramp)));
  e.assertAlive();
  const end = await e.status();
  await e.stop();
  const fio = summarizeFio(job, RANDWRITE.rw);
  const r = {
    round, intentLog, variant, iops: fio.iops, clatP99Us: fio.clatP99Us, serverCpuPct: cpuPct, dirtyChunksAtEnd: end.intentLog.dirtyChunks,
    capChunks: end.intentLog.capChunks ?? 0, evictions: end.intentLog.evictions ?? 0, peakRssMiB,
    // Per 1,000 writes the log saw (ramp included): metadata writes (marks and clears) and member flushes made to keep the cap.
    writesSeen: end.intentLog.writes ?? 0, persists: end.intentLog.persists ?? 0,
  };
  const per1k = (n) => (r.writesSeen > 0 ? ((n * 1000) / r.writesSeen).toFixed(1) : '-');
  console.log(`  round ${round} 4k randwrite QD16 ${LABEL[variant]} ${fmtNum(r.iops)} IOPS ` +
    `(p99 ${r.clatP99Us === null ? '-' : (r.clatP99Us / 1000).toFixed(2)} ms, engine CPU ${r.serverCpuPct === null ? '-' : r.serverCpuPct.toFixed(0)} %, ` +
    `${fmtNum(r.dirtyChunksAtEnd)} chunks marked at the end${r.capChunks ? ` of a cap of ${fmtNum(r.capChunks)}, ${fmtNum(r.evictions)} evictions` : ''}` +
    `${intentLog ? `; per 1,000 writes: ${per1k(r.persists)} metadata writes, ${per1k(r.evictions)} flushes to keep the cap` : ''})`);
  return r;
}
