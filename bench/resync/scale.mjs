/**
 * resync-bench's scale phase: does a resync cost what changed, or what the set holds? Sparse members of
 * 1, 8 and 64 GiB (--scale-gib); on each, the same number of scattered chunk-sized writes (--scale-mib,
 * 16 MiB = 256 chunks of 64 KiB at random places) while a member is away with a write bitmap, then the
 * minicopy on its return; and the same writes as a load under which the engine gets kill -9, then the
 * minimerge its restart runs; then a full copy of the merged set onto a fresh sparse file (its cost
 * should follow the data the set holds, not its size: the source's holes are left unread). Sizes interleave round by round, so a burst of load on the shared machine
 * does not land on one size only. Whole-file cmp of 64 GiB would take longer than the run: the written
 * chunks are compared instead (the rest is holes on both members).
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';

import { fmtNum } from '../lib/format.mjs';
import { importEngine, settle } from '../lib/host.mjs';
import { RssSampler, memoryOf } from '../lib/memory.mjs';
import { GiB, MiB, sleep } from '../lib/run.mjs';
import { pickChunks, prng } from './chunks.mjs';
import { timeCopy } from './copy.mjs';
import { Engine } from './engine.mjs';
import { fmtS } from './report.mjs';

/**
 * What one size needs on disk beyond its holes: three headers, the written chunks on each member, slack,
 * and the full copy's target, which gets each 1 MiB run holding a written chunk whole (16 chunks of 64 KiB).
 */
const needBytes = (headerBytes, writeBytes) => 3 * headerBytes + 4 * writeBytes + 32 * writeBytes + 256 * MiB;

/** Fills result.scale ({ sizes, skipped, runs }); leaves no engine running. */
export async function scalePhase(dir, cfg, result, headerBytes) {
  const writeBytes = cfg.scaleMiB * MiB;
  const sets = [];
  result.scale = { when: new Date().toISOString(), sizesGiB: cfg.scaleGiB, writeMiB: cfg.scaleMiB, skipped: [], runs: [], idleRssMiB: [] };
  for (const gib of cfg.scaleGiB) {
    const free = freeBytes(dir);
    const need = needBytes(headerBytes, writeBytes);
    if (free !== null && free < need) {
      const why = `${fmtNum(free / MiB)} MiB free, ${fmtNum(need / MiB)} MiB needed`;
      result.scale.skipped.push({ gib, why });
      console.log(`  scale ${gib} GiB: skipped (${why})`);
      continue;
    }
    const set = await makeSparseSet(dir, gib, headerBytes).catch((e) => ({ error: e.message }));
    if (set.error) {
      result.scale.skipped.push({ gib, why: set.error });
      console.log(`  scale ${gib} GiB: skipped (${set.error})`);
      continue;
    }
    sets.push(set);
  }
  const rand = prng(cfg.seed + 16);
  for (let round = 1; round <= cfg.rounds; round++) {
    const order = sets.map((_, i) => sets[(i + round - 1) % sets.length]);
    for (const set of order) result.scale.runs.push(await oneRound(set, cfg, round, rand, result.scale, result.verify));
  }
  for (const set of sets) await rm(set.dir, { recursive: true, force: true });
}

function freeBytes(dir) {
  try {
    const s = fs.statfsSync(dir);
    return s.bavail * s.bsize;
  } catch {
    return null;
  }
}

/** Two sparse member files of `gib` GiB + header (truncate: no blocks), checked to be sparse. */
async function makeSparseSet(parent, gib, headerBytes) {
  const dir = path.join(parent, `scale-${gib}g`);
  fs.mkdirSync(dir);
  const files = ['a', 'b'].map((n) => path.join(dir, `member-${n}.img`));
  for (const f of files) {
    fs.writeFileSync(f, '');
    fs.truncateSync(f, gib * GiB + headerBytes);
    if (fs.statSync(f).blocks * 512 > 16 * MiB) throw new Error(`${f} is not sparse here`);
  }
  return { gib, dir, A: files[0], B: files[1], C: path.join(dir, 'member-c.img'), sock: path.join(dir, 'engine.sock'), setBytes: gib * GiB, headerBytes };
}

/** One round on one size: a fresh engine, the minicopy, then the crash and the minimerge. */
async function oneRound(set, cfg, round, rand, out, checks) {
  let engine = await new Engine([set.A, set.B], set.sock).start();
  const st = await engine.status();
  const idle = memoryOf(engine.pid);
  if (round === 1) out.idleRssMiB.push({ gib: set.gib, rssMiB: idle?.rssMiB ?? null });
  const chunkSize = st.chunkSize;
  const k = Math.max(1, Math.round((cfg.scaleMiB * MiB) / chunkSize));
  const chunks = Math.ceil(set.setBytes / chunkSize);
  const r = { round, gib: set.gib, chunkSize, chunksWritten: k, idleRssMiB: idle?.rssMiB ?? null };

  // Minicopy: B away with a write bitmap, k whole chunks written at random, B back.
  await engine.waitIntentIdle();
  const idB = await engine.memberId(set.B);
  const removed = await engine.api('POST', '/v1/members/remove', { member: idB, minicopy: 'Required' });
  const picked = pickChunks(chunks, k, rand);
  await writeChunks(engine.uri, picked, chunkSize, { passes: 1 });
  const bm = (await engine.api('GET', '/v1/bitmaps')).find((b) => b.id === removed.bitmap);
  await engine.waitIntentIdle();
  await settle([set.A, set.B]);
  const sampler = new RssSampler(engine.pid);
  const { times } = await timeCopy(engine, 'Minicopy', set.B, async () => {
    await engine.api('POST', '/v1/members/return', { member: idB, minicopy: 'Required' });
    return idB;
  });
  r.minicopy = { ...times, bitmapChunks: bm ? Math.round(bm.dirtyBytes / chunkSize) : null, peakRssMiB: sampler.stop() };
  checks.push(sameChunks(set, picked, chunkSize, `minicopy ${set.gib} GiB round ${round} (the written chunks)`));

  // Minimerge: the same number of chunks (others) written over and over; kill -9 once a pass is acknowledged.
  const hot = pickChunks(chunks, k, rand);
  await engine.waitIntentIdle();
  await settle([set.A, set.B]);
  const load = new RssSampler(engine.pid);
  const dirtyAtKill = await writeChunks(engine.uri, hot, chunkSize, { passes: Infinity, onPass: async () => {
    const s = await engine.status();
    await engine.kill9();
    return s.intentLog.dirtyChunks;
  } });
  const loadPeak = load.stop();
  const restart = performance.now();
  engine = await new Engine([set.A, set.B], set.sock).start();
  const merging = new RssSampler(engine.pid);
  const req = await engine.waitFor((l) => l.event === 'MergeRequired', { what: 'MergeRequired' });
  const { done } = await engine.waitRun('Merge');
  r.minimerge = {
    seconds: done.seconds, restartSeconds: (done.at - restart) / 1000, full: req.full, chunks: req.chunks, bytes: done.bytes,
    dirtyAtKill, loadPeakRssMiB: loadPeak, peakRssMiB: merging.stop(),
  };
  checks.push(sameChunks(set, hot, chunkSize, `minimerge ${set.gib} GiB round ${round} (the written chunks)`));

  // Full copy: a fresh sparse file added to the merged set, copied from A and B, then removed again.
  await engine.waitIntentIdle();
  fs.writeFileSync(set.C, '');
  fs.truncateSync(set.C, set.setBytes + set.headerBytes);
  await settle([set.A, set.B]);
  const copying = new RssSampler(engine.pid);
  const fc = await timeCopy(engine, 'Copy', set.C, async () => (await engine.api('POST', '/v1/members/add', { location: set.C })).id);
  r.fullCopy = { ...fc.times, peakRssMiB: copying.stop(), allocatedMiB: (fs.statSync(set.C).blocks * 512) / MiB };
  checks.push(sameChunks({ ...set, B: set.C }, [...picked, ...hot], chunkSize, `full copy ${set.gib} GiB round ${round} (the written chunks)`));
  await engine.api('POST', '/v1/members/remove', { member: fc.target, minicopy: 'Never' });
  await engine.stop();
  await rm(set.C, { force: true });
  console.log(`  round ${round} ${String(set.gib).padStart(2)} GiB  minicopy ${fmtS(r.minicopy.seconds)} s (${fmtNum(r.minicopy.bytes / MiB, 1)} MiB copied, ` +
    `setup ${fmtS(r.minicopy.setupSeconds)} s, copying ${fmtS(r.minicopy.copySeconds)} s)  minimerge ${fmtS(r.minimerge.seconds)} s ` +
    `(${fmtNum(r.minimerge.chunks)} chunks${r.minimerge.full ? ', FULL' : ''}; restart -> MergeCompleted ${fmtS(r.minimerge.restartSeconds)} s)  ` +
    `full copy ${fmtS(r.fullCopy.seconds)} s (${fmtNum((r.fullCopy.unreadBytes ?? 0) / GiB, 2)} GiB left unread, ` +
    `${fmtNum(r.fullCopy.allocatedMiB, 1)} MiB allocated on the new member, its metadata included)  ` +
    `RSS idle ${fmtNum(r.idleRssMiB ?? 0)} MiB, peak ${fmtNum(Math.max(r.minicopy.peakRssMiB ?? 0, loadPeak ?? 0, r.minimerge.peakRssMiB ?? 0, r.fullCopy.peakRssMiB ?? 0))} MiB`);
  return r;
}

/**
 * Writes each of `chunks` whole (random data) through the export, 32 in flight. With `onPass`, passes
 * repeat and onPass() runs once the first pass is acknowledged (while the next one is in flight): it
 * kills the engine, so the writes still in flight fail, as they should. Returns onPass()'s value.
 */
async function writeChunks(uri, chunks, chunkSize, { passes, onPass }) {
  const { NbdClientBackend } = await importEngine('adapters/backend-nbd/nbd-client.js');
  const client = await NbdClientBackend.open(uri);
  const data = randomBytes(chunkSize);
  let next = 0;
  let acked = 0;
  let stop = false;
  let passDone;
  const firstPass = new Promise((r) => (passDone = r));
  const total = passes === Infinity ? Infinity : passes * chunks.length;
  const worker = async () => {
    while (!stop && next < total) {
      const c = chunks[next++ % chunks.length];
      data[0]++; // not the same bytes every time
      await client.write(data, c * chunkSize, false);
      if (++acked === chunks.length) passDone();
    }
  };
  const workers = Promise.allSettled(Array.from({ length: 32 }, worker));
  let value;
  if (onPass) {
    await firstPass;
    value = await onPass();
    stop = true;
    await workers;
    await Promise.race([client.close().catch(() => undefined), sleep(2000)]);
    return value;
  }
  const res = await workers;
  const bad = res.find((x) => x.status === 'rejected');
  if (bad) throw bad.reason;
  await client.flush();
  await client.close();
  return value;
}

/** Throws unless the members hold the same bytes in each of `chunks` (the rest is holes on both); the check, for the record. */
function sameChunks(set, chunks, chunkSize, what) {
  const a = fs.openSync(set.A, 'r');
  const b = fs.openSync(set.B, 'r');
  const ba = Buffer.alloc(chunkSize);
  const bb = Buffer.alloc(chunkSize);
  try {
    for (const c of chunks) {
      fs.readSync(a, ba, 0, chunkSize, set.headerBytes + c * chunkSize);
      fs.readSync(b, bb, 0, chunkSize, set.headerBytes + c * chunkSize);
      if (!ba.equals(bb)) throw new Error(`${what}: chunk ${c} differs between the members`);
    }
  } finally {
    fs.closeSync(a);
    fs.closeSync(b);
  }
  return { what, same: true };
}
