/**
 * resync-bench's zero phase: does a full copy of a source that is half holes cost about half of one of
 * a source that is data everywhere? Two sets of sparse file members (--set-mib): one written in full,
 * one written every other MiB (the rest never written: holes). A fresh sparse file is added to each as
 * a new member; the time runs from the API call to CopyCompleted plus an fdatasync of the new member.
 * The variants alternate which goes first, round by round, after one untimed copy of each. This measures file members only: an NBD
 * member's holes come from its server's block status instead (base:allocation), not measured here.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';

import { fmtNum } from '../lib/format.mjs';
import { importEngine, settle } from '../lib/host.mjs';
import { RssSampler } from '../lib/memory.mjs';
import { MiB, exec } from '../lib/run.mjs';
import { timeCopy } from './copy.mjs';
import { Engine } from './engine.mjs';
import { fmtS } from './report.mjs';

const VARIANTS = ['full', 'half'];

/** Fills result.zero (the runs); leaves no engine running. */
export async function zeroPhase(parent, cfg, result, headerBytes) {
  const setBytes = cfg.setMiB * MiB;
  result.zero = { when: new Date().toISOString(), setMiB: cfg.setMiB, fileSystem: fileSystemOf(parent), runs: [] };
  const sets = {};
  for (const v of VARIANTS) sets[v] = await makeSet(parent, v, setBytes, headerBytes);
  // One untimed copy of each first: the source's holes had never been read (the first read of a hole
  // costs the kernel a zeroed page per 4 KiB) while its data was in the page cache from being written.
  for (const v of VARIANTS) await copyOnto(sets[v], 0, []);
  for (let round = 1; round <= cfg.rounds; round++) {
    for (const v of round % 2 ? VARIANTS : [...VARIANTS].reverse()) result.zero.runs.push(await copyOnto(sets[v], round, result.verify));
  }
  for (const v of VARIANTS) await rm(sets[v].dir, { recursive: true, force: true });
}

/** Two sparse members, written in full or every other MiB through the engine (which then stops). */
async function makeSet(parent, variant, setBytes, headerBytes) {
  const dir = path.join(parent, `zero-${variant}`);
  fs.mkdirSync(dir);
  const set = {
    variant, dir, setBytes, headerBytes, A: path.join(dir, 'member-a.img'), B: path.join(dir, 'member-b.img'),
    C: path.join(dir, 'new-member.img'), sock: path.join(dir, 'engine.sock'),
  };
  for (const f of [set.A, set.B]) sparseFile(f, setBytes + headerBytes);
  const engine = await new Engine([set.A, set.B], set.sock).start();
  const { NbdClientBackend } = await importEngine('adapters/backend-nbd/nbd-client.js');
  const client = await NbdClientBackend.open(engine.uri);
  const step = variant === 'full' ? MiB : 2 * MiB;
  let next = 0;
  const worker = async () => {
    while (next < setBytes) {
      const off = next;
      next += step;
      await client.write(randomBytes(MiB), off, false);
    }
  };
  await Promise.all(Array.from({ length: 4 }, worker));
  await client.flush();
  await client.close();
  await engine.stop();
  await settle([set.A, set.B]);
  const used = fs.statSync(set.A).blocks * 512;
  console.log(`  zero: ${variant === 'full' ? 'source written in full       ' : 'source written every other MiB'} ` +
    `(${fmtNum(used / MiB)} MiB allocated of ${fmtNum(setBytes / MiB)} MiB)`);
  return set;
}

/** The temp directory's file system, by name where known: on tmpfs the copies measure the engine, not a disk. */
function fileSystemOf(dir) {
  const names = { 0xef53: 'ext4', 0x58465342: 'xfs', 0x9123683e: 'btrfs', 0x01021994: 'tmpfs' };
  try {
    const t = fs.statfsSync(dir).type;
    return names[t] ?? `0x${t.toString(16)}`;
  } catch {
    return null;
  }
}

function sparseFile(f, bytes) {
  fs.writeFileSync(f, '');
  fs.truncateSync(f, bytes);
}

/** A fresh sparse new member added to the set and fully copied; checked against A, then removed. */
async function copyOnto(set, round, checks) {
  const engine = await new Engine([set.A, set.B], set.sock).start();
  try {
    sparseFile(set.C, set.setBytes + set.headerBytes);
    await settle([set.A, set.B]);
    const sampler = new RssSampler(engine.pid);
    const { target, times } = await timeCopy(engine, 'Copy', set.C,
      async () => (await engine.api('POST', '/v1/members/add', { location: set.C })).id);
    const r = { round, variant: set.variant, ...times, peakRssMiB: sampler.stop() };
    const same = await exec('cmp', ['-n', String(set.setBytes), '-i', `${set.headerBytes}:${set.headerBytes}`, set.A, set.C], { timeoutMs: 300_000 });
    if (!same.ok) throw new Error(`zero phase: the new member differs from its source (${same.stdout.trim() || same.stderr.trim()})`);
    checks.push({ what: `full copy of the ${set.variant} source round ${round}`, same: true });
    await engine.api('POST', '/v1/members/remove', { member: target, minicopy: 'Never' });
    console.log(`  ${round ? `round ${round}` : 'warm-up'} full copy, source ${set.variant === 'full' ? 'all data ' : 'half holes'} ${fmtS(r.seconds)} s ` +
      `(copying ${fmtS(r.copySeconds)} s, fdatasync ${fmtS(r.flushSeconds)} s), RSS peak ${fmtNum(r.peakRssMiB ?? 0)} MiB`);
    return r;
  } finally {
    await engine.stop();
  }
}
