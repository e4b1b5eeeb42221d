/**
 * resync-bench's merge phase, round by round: kill -9 of the engine under a 4k random-write load on
 * the first --hot-pct % of the set and the minimerge its restart runs; a full merge of the same set
 * by API; and, for information, the crash again with the load spread over the whole set.
 */
import { performance } from 'node:perf_hooks';

import { LoggedChild } from '../lib/child.mjs';
import { fmtNum } from '../lib/format.mjs';
import { settle } from '../lib/host.mjs';
import { fioArgs } from '../lib/measure.mjs';
import { RssSampler } from '../lib/memory.mjs';
import { MiB, sleep } from '../lib/run.mjs';
import { RANDWRITE } from './config.mjs';
import { fmtS } from './report.mjs';

const now = () => performance.now();
const CAPPED = { intentCapMiB: 256 };

/** Fills result.minimerge, result.fullMerge and result.uniformMinimerge; cmp-checks after every crash. */
export async function mergePhase(rig, cfg, result) {
  const hotBytes = Math.max(1, Math.ceil((rig.chunks * cfg.hotPct) / 100)) * rig.chunkSize;
  for (let round = 1; round <= cfg.rounds; round++) {
    const hot = { round, ...(await crash(rig, cfg, hotBytes)) };
    result.minimerge.push(hot);
    console.log(`  round ${round} minimerge      ${fmtS(hot.seconds)} s  (kill -9 under 4k randwrite on ${fmtNum(hotBytes / MiB, 1)} MiB: ` +
      `${fmtNum(hot.chunks)} chunks${hot.full ? ', FULL merge' : ''}, ${fmtNum(hot.bytes / MiB, 1)} MiB; between the log lines' arrival ` +
      `${fmtS(hot.observedSeconds)} s; restart -> MergeCompleted ${fmtS(hot.restartSeconds)} s)`);
    await rig.verify(`minimerge round ${round}`, rig.A, rig.B);

    result.fullMerge.push(await fullMerge(rig, round));

    // The whole-set crash with the intent log capped (256 MiB; the cap is opt-in for now): the merge
    // should stay within the cap, not cover the set.
    await rig.engine.stop();
    await rig.startEngine(CAPPED);
    const uni = { round, ...(await crash(rig, cfg, rig.setBytes, CAPPED)) };
    result.uniformMinimerge.push(uni);
    console.log(`  round ${round} minimerge (whole-set load) ${fmtS(uni.seconds)} s  (${fmtNum(uni.chunks)} chunks${uni.full ? ', FULL merge' : ''}, ` +
      `${fmtNum(uni.bytes / MiB)} MiB; restart -> MergeCompleted ${fmtS(uni.restartSeconds)} s)`);
    await rig.verify(`minimerge after whole-set load round ${round}`, rig.A, rig.B);
  }
}

/**
 * 4k randwrite QD16 over [0, bytes) through the engine; kill -9 after --crash-after s; a restart, and
 * the merge it runs. The merge's time is the `seconds` the engine reports (its monotonic clock from
 * MergeStarted): at a few milliseconds, when the bench receives two log lines can be off by as much.
 */
async function crash(rig, cfg, bytes, engineOpts = {}) {
  let { engine } = rig;
  const dirtyBefore = await engine.waitIntentIdle();
  await settle([rig.A, rig.B]);
  const fio = new LoggedChild('fio', { keepBytes: 8192 })
    .spawn('fio', fioArgs(engine.uri, RANDWRITE, ['--time_based', '--runtime=600', '--offset=0', `--size=${bytes}`]));
  const fioExit = new Promise((r) => fio.child.once('exit', r));
  const load = new RssSampler(engine.pid);
  await sleep(cfg.crashAfter * 1000);
  const loadPeakRssMiB = load.stop();
  if (fio.child.exitCode !== null) throw new Error(`fio ended before the crash: ${fio.tail()}`);
  const before = await engine.status();
  await engine.kill9();
  // fio fails once its server is gone; that is expected.
  const fioTimer = setTimeout(() => fio.child.kill('SIGKILL'), 30_000);
  await fioExit;
  clearTimeout(fioTimer);
  const restart = now();
  engine = await rig.startEngine(engineOpts);
  const merging = new RssSampler(engine.pid);
  const req = await engine.waitFor((l) => l.event === 'MergeRequired', { what: 'MergeRequired' });
  const { began, done } = await engine.waitRun('Merge');
  const peakRssMiB = merging.stop();
  return {
    dirtyBeforeLoad: dirtyBefore, writesBeforeKill: before.nbd.requests.write ?? before.nbd.requests.WRITE ?? null,
    dirtyAtKill: before.intentLog.dirtyChunks, capChunks: before.intentLog.capChunks ?? 0, full: req.full, chunks: req.chunks,
    seconds: done.seconds, observedSeconds: (done.at - began.at) / 1000, restartSeconds: (done.at - restart) / 1000, bytes: done.bytes,
    loadPeakRssMiB, peakRssMiB,
  };
}

/** `POST /v1/merge {"full":true}` with the intent log empty: MergeStarted -> MergeCompleted. */
async function fullMerge(rig, round) {
  const { engine } = rig;
  await engine.waitIntentIdle();
  await settle([rig.A, rig.B]);
  const from = engine.mark();
  const rss = new RssSampler(engine.pid);
  const ta = now();
  await engine.api('POST', '/v1/merge', { full: true });
  const { began, done } = await engine.waitRun('Merge', { from });
  const full = { round, seconds: done.seconds, observedSeconds: (done.at - began.at) / 1000, apiSeconds: (done.at - ta) / 1000, bytes: done.bytes, peakRssMiB: rss.stop() };
  console.log(`  round ${round} full merge     ${fmtS(full.seconds)} s  (POST -> MergeCompleted ${fmtS(full.apiSeconds)} s, between the log lines' ` +
    `arrival ${fmtS(full.observedSeconds)} s, ${fmtNum(full.bytes / MiB)} MiB)`);
  return full;
}
