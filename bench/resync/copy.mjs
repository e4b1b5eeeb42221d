/**
 * resync-bench's copy phase, round by round: the engine's full copy onto a blank member and dd's
 * copy of the same bytes (alternating which goes first), then the minicopies at each --percents and,
 * for information, the smallest once more with its chunks in one region, each followed by a bare
 * copy of the same chunks.
 */
import { performance } from 'node:perf_hooks';

import { fmtNum } from '../lib/format.mjs';
import { settle } from '../lib/host.mjs';
import { RssSampler } from '../lib/memory.mjs';
import { MiB, exec } from '../lib/run.mjs';
import { bareCopy, pickChunks, pickRegion, prng, writeOneBlockEach } from './chunks.mjs';
import { fmtS } from './report.mjs';

const now = () => performance.now();

/** Fills result.fullCopy, result.dd and result.minicopy; cmp-checks every copy. */
export async function copyPhase(rig, cfg, result) {
  const rand = prng(cfg.seed);
  const idB = await rig.engine.memberId(rig.B);
  // The minicopies of a round: every --percents scattered, then the smallest in one contiguous region.
  const minicopies = [...cfg.percents.map((pct) => ({ pct, clustered: false })), { pct: cfg.percents[0], clustered: true }];
  for (let round = 1; round <= cfg.rounds; round++) {
    for (const which of round % 2 ? ['engine', 'dd'] : ['dd', 'engine']) {
      if (which === 'engine') result.fullCopy.push(await fullCopy(rig, round));
      else result.dd.push(await ddCopy(rig, round));
    }
    for (const { pct, clustered } of minicopies) result.minicopy.push(await minicopy(rig, round, pct, clustered, rand, idB));
    await rig.verify(`minicopies round ${round}`, rig.A, rig.B);
  }
}

/**
 * Times one copy by the engine: `call()` asks for it and returns the target member's id; the time
 * runs until `<kind>Completed` plus an fdatasync of `file` (the copy ends with its data on disk),
 * split into setup (call -> `<kind>Started`) and copying. Waits until the target is InSync.
 */
export async function timeCopy(engine, kind, file, call) {
  const from = engine.mark();
  const rss = new RssSampler(engine.pid);
  const ta = now();
  const target = await call();
  const { began, done } = await engine.waitRun(kind, { from, target });
  const tb = now();
  const peakRssMiB = rss.stop();
  await settle([file]);
  const tc = now();
  await engine.waitState(target, 'InSync');
  return {
    target,
    times: {
      apiSeconds: (tb - ta) / 1000, setupSeconds: (began.at - ta) / 1000, copySeconds: (done.at - began.at) / 1000,
      flushSeconds: (tc - tb) / 1000, seconds: (tc - ta) / 1000, engineSeconds: done.seconds, bytes: done.bytes, unreadBytes: done.unreadBytes ?? null, peakRssMiB,
    },
  };
}

/** A blank member C added, copied, checked against A and removed again. */
async function fullCopy(rig, round) {
  const { engine } = rig;
  await rig.blank(rig.C);
  await settle([rig.A, rig.B]);
  const { target, times } = await timeCopy(engine, 'Copy', rig.C,
    async () => (await engine.api('POST', '/v1/members/add', { location: rig.C })).id);
  const r = { round, ...times };
  console.log(`  round ${round} full copy     ${fmtS(r.seconds)} s  (add -> CopyStarted ${fmtS(r.setupSeconds)} s, copying ${fmtS(r.copySeconds)} s, ` +
    `fdatasync ${fmtS(r.flushSeconds)} s; engine's own ${fmtS(r.engineSeconds)} s), ${fmtNum(r.bytes / MiB)} MiB`);
  await rig.verify(`full copy round ${round}`, rig.A, rig.C);
  await engine.api('POST', '/v1/members/remove', { member: target, minicopy: 'Never' });
  return r;
}

/**
 * This machine's copy of the same bytes: A's data area into a blank target S prepared exactly like the
 * engine's, 1 MiB blocks, with one fdatasync at the end (conv=fdatasync).
 */
async function ddCopy(rig, round) {
  const { headerBytes, setBytes } = rig;
  await rig.blank(rig.S);
  await settle([rig.A, rig.B]);
  const ta = now();
  const dd = await exec('dd', [`if=${rig.A}`, `of=${rig.S}`, 'bs=1M', `skip=${headerBytes}`, `seek=${headerBytes}`, `count=${setBytes}`,
    'iflag=skip_bytes,count_bytes', 'oflag=seek_bytes', 'conv=notrunc,fdatasync'], { timeoutMs: 600_000 });
  const tb = now();
  if (!dd.ok) throw new Error(`dd failed: ${dd.stderr.trim()}`);
  const own = /copied, ([\d.]+) s/.exec(dd.stderr);
  const r = { round, seconds: (tb - ta) / 1000, ddSeconds: own ? Number(own[1]) : null, bytes: setBytes };
  console.log(`  round ${round} dd            ${fmtS(r.seconds)} s  (dd's own ${fmtS(r.ddSeconds)} s)`);
  return r;
}

/**
 * B leaves with a write bitmap, pct % of the chunks are written (one 4 KiB block at a random 4 KiB
 * offset in each of k distinct random chunks, or k consecutive ones when `clustered`), B returns;
 * the time until it is back, then the bare copy of the same chunks from A into S.
 */
async function minicopy(rig, round, pct, clustered, rand, idB) {
  const { engine, chunks, chunkSize } = rig;
  const k = Math.max(1, Math.round((chunks * pct) / 100));
  await engine.waitIntentIdle();
  const removed = await engine.api('POST', '/v1/members/remove', { member: idB, minicopy: 'Required' });
  const picked = clustered ? pickRegion(chunks, k, rand) : pickChunks(chunks, k, rand);
  await writeOneBlockEach(engine.uri, picked, chunkSize, rand);
  const bm = (await engine.api('GET', '/v1/bitmaps')).find((b) => b.id === removed.bitmap);
  if (!bm) throw new Error(`write bitmap ${removed.bitmap} for B is gone`);
  await engine.waitIntentIdle();
  await settle([rig.A, rig.B]);
  const { times } = await timeCopy(engine, 'Minicopy', rig.B, async () => {
    await engine.api('POST', '/v1/members/return', { member: idB, minicopy: 'Required' });
    return idB;
  });
  // The same chunks copied bare, A into dd's target (both cached and on disk, like A and B here).
  await settle([rig.A, rig.S]);
  const bare = bareCopy(rig.A, rig.S, picked, chunkSize, rig.headerBytes);
  const r = {
    round, pct, clustered, chunksWritten: k, bitmapPct: bm.percentPopulated, bitmapChunks: Math.round(bm.dirtyBytes / chunkSize),
    ...times, bareSeconds: bare.seconds, bareSyncSeconds: bare.syncSeconds,
  };
  console.log(`  round ${round} minicopy ${String(pct).padStart(3)} %${clustered ? ' in one region' : ''} ${fmtS(r.seconds)} s  (${fmtNum(k)} chunks written, bitmap ${bm.percentPopulated} %, ` +
    `${fmtNum(r.bytes / MiB, 1)} MiB copied; return -> MinicopyStarted ${fmtS(r.setupSeconds)} s, copying ${fmtS(r.copySeconds)} s; ` +
    `bare copy of the same chunks ${fmtS(r.bareSeconds)} s, of which fdatasync ${fmtS(r.bareSyncSeconds)} s)`);
  return r;
}
