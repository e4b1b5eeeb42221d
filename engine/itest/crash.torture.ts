/**
 * Crash torture: kill -9 the real engine at hundreds of random moments under a verifying write workload.
 *
 * Each round restarts the engine on the same file members, waits for the minimerge the write-intent log
 * asks for, checks that the members' data areas are byte-identical again, reads every block of the unit
 * back through NBD and checks it against the model of acknowledged writes (block-workload.ts), then runs
 * the workload (QD 8, versioned 4 KiB blocks, some verifying reads, FUA and FLUSH now and then) and kills
 * the engine 5–150 ms after its first request. One round in DURING_MERGE_EVERY starts the workload as
 * soon as the engine is up, with the merge throttled, so the kill often lands during the merge. One
 * round in IDLE_EVERY lets the engine sit until the intent log is empty (bits are cleared lazily), so
 * the next minimerge covers only what the next round wrote. After the last round the set is stopped
 * cleanly, the members' data areas are compared byte for byte and every member file is checked against
 * the model.
 *
 * Env: TORTURE_KILLS (default 200), TORTURE_SEED (default random), TORTURE_MEMBERS (2 or 3, default 3).
 */
import assert from 'node:assert/strict';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { NbdClientBackend } from '@shadowset/engine/nbd-client';
import { BLOCK, BlockWorkload } from '@shadowset/testkit/engine/block-workload';
import { postOk, waitStatus, waitSteady } from '@shadowset/testkit/engine/control-api';
import { prng } from '@shadowset/testkit/prng';
import { startEngine, type EngineProcess } from '@shadowset/testkit/engine/engine-process';
import { HEADER_BYTES, MiB, readMemberData, sparseFile, testScope } from '@shadowset/testkit/engine/support';

const KILLS = Number(process.env.TORTURE_KILLS ?? 200);
const SEED = Number(process.env.TORTURE_SEED ?? Math.floor(Math.random() * 2 ** 31));
const MEMBERS = Number(process.env.TORTURE_MEMBERS ?? 3);
const MEMBER_BYTES = 64 * MiB;
const UNIT_BYTES = MEMBER_BYTES - HEADER_BYTES;
const BLOCKS = UNIT_BYTES / BLOCK;
/** Rounds r with r % DURING_MERGE_EVERY === 2 kill during the merge; r % IDLE_EVERY === 1 wait for an empty log. */
const DURING_MERGE_EVERY = 4;
const IDLE_EVERY = 10;
/** 95 % of the writes go to an 8 MiB hot region that moves at every idle round. */
const HOT_BLOCKS = (8 * MiB) / BLOCK;

/** Offset of the first 4 KiB block that differs between the members' data areas, or null. */
async function firstDivergence(members: string[]): Promise<number | null> {
  const step = 8 * MiB;
  const fhs = await Promise.all(members.map((m) => open(m, 'r')));
  try {
    const bufs = members.map(() => Buffer.alloc(step));
    for (let off = 0; off < UNIT_BYTES; off += step) {
      const len = Math.min(step, UNIT_BYTES - off);
      await Promise.all(fhs.map((fh, i) => fh.read(bufs[i]!, 0, len, HEADER_BYTES + off)));
      for (const b of bufs.slice(1)) {
        if (b.compare(bufs[0]!, 0, len, 0, len) === 0) continue;
        for (let i = 0; i < len; i += BLOCK) if (b.compare(bufs[0]!, i, i + BLOCK, i, i + BLOCK) !== 0) return off + i;
      }
    }
    return null;
  } finally {
    await Promise.all(fhs.map((fh) => fh.close()));
  }
}

/** How many of these blocks differ between the members (the engine is down). */
async function divergentAmong(members: string[], blocks: number[]): Promise<number> {
  let n = 0;
  for (const b of new Set(blocks)) {
    const bufs = await Promise.all(members.map((m) => readMemberData(m, b * BLOCK, BLOCK)));
    if (bufs.some((x) => !x.equals(bufs[0]!))) n++;
  }
  return n;
}

test(`crash torture: ${KILLS} kill -9s under a verifying workload lose no acknowledged write`, { timeout: 20 * 60_000 }, async (t) => {
  assert.ok(Number.isInteger(KILLS) && KILLS >= 1, 'TORTURE_KILLS must be a positive integer');
  assert.ok(MEMBERS === 2 || MEMBERS === 3, 'TORTURE_MEMBERS must be 2 or 3');
  t.diagnostic(`seed ${SEED} (TORTURE_SEED=${SEED} repeats the random choices), ${KILLS} kills, ${MEMBERS} members of ${MEMBER_BYTES / MiB} MiB`);
  const started = Date.now();
  const { scope, dir } = await testScope(t);
  const rand = prng(SEED);
  const members: string[] = [];
  for (let i = 0; i < MEMBERS; i++) members.push(await sparseFile(join(dir, `m${i}.img`), MEMBER_BYTES));
  const model = new BlockWorkload(BLOCKS, rand);

  let engine: EngineProcess | null = null;
  let client: NbdClientBackend | null = null;
  scope.defer('close the workload client', () => client?.close());
  const f = {
    kills: 0, killsDuringMerge: 0, merges: 0, mergedChunks: 0, awaitedMerges: 0, mergedBytes: 0, maxMergeMs: 0,
    smallestMerge: Infinity, largestMerge: 0, roundsDiverged: 0, divergentBlocks: 0, idleWaits: 0,
  };
  const ms: Record<string, number> = { start: 0, merge: 0, compare: 0, verify: 0, workload: 0, idle: 0 };
  let lapAt = Date.now();
  const lap = (k: string) => {
    const now = Date.now();
    ms[k]! += now - lapAt;
    lapAt = now;
  };
  const check = (where: string) => {
    assert.deepEqual(model.problems, [], `${where} (seed ${SEED}):\n${model.problems.slice(0, 20).join('\n')}\n${engine?.tail(10) ?? ''}`);
  };
  let hotFirst = 0;

  for (let round = 0; round <= KILLS; round++) {
    const last = round === KILLS;
    const duringMerge = !last && round % DURING_MERGE_EVERY === 2;
    const idle = !last && round % IDLE_EVERY === 1;
    if (round === 0 || idle) hotFirst = Math.floor(rand() * (BLOCKS - HOT_BLOCKS));
    lapAt = Date.now();
    engine = await startEngine(scope, { dir, name: `r${round}`, members });
    const mounted = engine.events('ShadowSetMounted')[0] ?? engine.events('ShadowSetCreated')[0];
    assert.ok(mounted, engine.tail());
    if (round > 0) {
      assert.equal(mounted.unclean, true, `round ${round}: the restart after kill -9 must find the set unclean`);
      assert.ok(mounted.members && (mounted.members as { state: string }[]).every((m) => m.state === 'InSync'), `round ${round}: ${JSON.stringify(mounted.members)}`);
      const required = engine.events('MergeRequired')[0];
      assert.ok(required, `round ${round}: no MergeRequired after kill -9\n${engine.tail()}`);
      assert.equal(required.full, false, `round ${round}: the write-intent log was not trusted: ${JSON.stringify(required)}`);
      f.merges++;
      f.mergedChunks += Number(required.chunks);
    }
    // Slow the merge down in the rounds meant to crash during it (it started with the engine).
    if (duringMerge) await postOk(engine, '/v1/settings', { mergeBytesPerSecond: 16 * MiB });
    client = await NbdClientBackend.open(engine.uri);
    assert.equal(client.size, UNIT_BYTES);
    lap('start');

    if (!duringMerge) {
      if (round > 0) {
        const t0 = Date.now();
        await waitSteady(engine, 60_000, 10);
        const done = await engine.waitForEvent('MergeCompleted');
        f.maxMergeMs = Math.max(f.maxMergeMs, Date.now() - t0);
        f.mergedBytes += Number(done.bytes);
        f.smallestMerge = Math.min(f.smallestMerge, Number(done.bytes));
        f.largestMerge = Math.max(f.largestMerge, Number(done.bytes));
        f.awaitedMerges++;
        lap('merge');
        // Nothing is writing: after the merge the members must be identical again.
        const diff = await firstDivergence(members);
        assert.equal(diff, null, `round ${round}: members differ at unit offset ${diff} after the merge (seed ${SEED})`);
        lap('compare');
      }
      await model.verifyAll(client, `verify after round ${round}`);
      check(`round ${round}: verification after the merge`);
      lap('verify');
      if (idle) {
        // Intent bits of chunks no longer written are cleared lazily, so the next minimerge is small.
        await waitStatus(engine, 'the write-intent log to empty', (s) => s.intentLog.dirtyChunks === 0, 15_000, 100);
        f.idleWaits++;
        lap('idle');
      }
    }
    if (last) break;

    // The workload, and a kill -9 at a random moment after its first request.
    const delay = 5 + Math.floor(rand() * 146);
    let firstRequest!: () => void;
    const begun = new Promise<void>((r) => (firstRequest = r));
    const e = engine;
    const killed = begun
      .then(() => new Promise((r) => setTimeout(r, delay)))
      .then(() => {
        model.engineGone = true;
        return e.kill();
      });
    const stats = await model.run(client, {
      queueDepth: 8, readFraction: duringMerge ? 0.3 : 0.1, fuaEvery: 50, flushEvery: 200, round,
      hot: { first: hotFirst, blocks: HOT_BLOCKS, share: 0.95 },
      onStart: firstRequest,
    }, killed.then(() => undefined));
    const exit = await killed;
    model.engineGone = false;
    assert.deepEqual(exit, { code: null, signal: 'SIGKILL' }, `round ${round}: the engine died before the kill\n${engine.tail()}`);
    check(`round ${round}: reads during the workload`);
    assert.ok(stats.writesIssued > 0, `round ${round}: the workload wrote nothing before the kill`);
    f.kills++;
    if (duringMerge && engine.events('MergeCompleted').length === 0) f.killsDuringMerge++;
    await client.close();
    client = null;
    const diverged = await divergentAmong(members, model.unknownBlocks);
    if (diverged > 0) f.roundsDiverged++;
    f.divergentBlocks += diverged;
    lap('workload');
    if ((round + 1) % 50 === 0) {
      t.diagnostic(`${round + 1} kills, ${model.totals.writesAcked} writes acknowledged, ${Math.round((Date.now() - started) / 1000)} s`);
    }
  }

  // A clean stop, then the members compared byte for byte and each checked against the model.
  await client?.close();
  client = null;
  const final = engine!;
  assert.deepEqual(await final.stop(), { code: 0, signal: null }, final.tail());
  assert.equal(final.events('ShadowSetStopped').length, 1);
  const diff = await firstDivergence(members);
  assert.equal(diff, null, `members differ at unit offset ${diff} after the clean stop`);
  for (const m of members) await model.verifyMember(m);
  check('member files after the clean stop');

  const secs = (Date.now() - started) / 1000;
  const tot = model.totals;
  assert.equal(f.kills, KILLS);
  assert.ok(tot.writesAcked > 10 * KILLS, `too few acknowledged writes (${tot.writesAcked}) to mean anything`);
  const mib = (b: number) => `${(b / MiB).toFixed(1)} MiB`;
  t.diagnostic(`seed ${SEED}: ${f.kills} kill -9s (${f.killsDuringMerge} during a merge) in ${secs.toFixed(1)} s (${JSON.stringify(ms)} ms)`);
  t.diagnostic(
    `${tot.writesAcked} writes acknowledged and none lost; ${tot.writesUnknown} in flight at a kill; ${tot.readsChecked} reads checked ` +
    `during the workload; ${tot.flushes} flushes; ${model.touched} of ${BLOCKS} blocks written; the whole unit verified after every merge`,
  );
  t.diagnostic(
    `members diverged after ${f.roundsDiverged} kills (${f.divergentBlocks} blocks in all) and were identical after every merge and the clean stop`,
  );
  t.diagnostic(
    `${f.merges} minimerges (none full) over ${f.mergedChunks} dirty 64 KiB chunks; the ${f.awaitedMerges} awaited ones merged ` +
    `${mib(f.mergedBytes)} in all, ${mib(f.mergedBytes / Math.max(1, f.awaitedMerges))} per merge on average ` +
    `(${((100 * f.mergedBytes) / (Math.max(1, f.awaitedMerges) * UNIT_BYTES)).toFixed(1)} % of the ${UNIT_BYTES / MiB} MiB unit; ` +
    `smallest ${mib(f.smallestMerge)}, largest ${mib(f.largestMerge)}), the longest in ${f.maxMergeMs} ms; ${f.idleWaits} waits for an empty intent log`,
  );
});
