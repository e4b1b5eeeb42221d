/**
 * Power-loss torture: the engine and its members die together, and the members lose what they had not
 * made durable.
 *
 * The kill -9 torture (crash.torture.ts) cannot see a write that was acknowledged but never made durable:
 * the members' page cache survives a kill -9. Here every member is served by nbdkit's cache filter in
 * write-back mode (volatile-members.ts), whose cache a SIGKILL throws away. Each round starts the member
 * servers and the engine on them, waits for the minimerge the write-intent log asks for, checks that the
 * members answer byte-identical data areas, reads every block of the unit back through NBD and checks it
 * against the power-loss model (power-model.ts: a block holds its last durable version or a later one,
 * never an older, torn or foreign block, and never two answers while the unit runs), then runs the
 * verifying workload (QD 8, versioned 4 KiB blocks, verifying reads, FUA writes and FLUSHes) and kills the
 * engine and every member server in the same instant, 5–150 ms after the workload's first request. One
 * round in DURING_MERGE_EVERY starts the workload at once with the merge throttled, so the loss often
 * lands during the merge. One round in IDLE_EVERY waits until the intent log is empty — the engine clears
 * bits only after flushing the members — and then checks the member files themselves: identical, and
 * holding what the unit answered. After the last round the set is stopped cleanly and the member files
 * are compared and checked against the model.
 *
 * Env: POWER_KILLS (default 200), POWER_SEED (default random), POWER_MEMBERS (2 or 3, default 3).
 */
import assert from 'node:assert/strict';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { NbdClientBackend } from '@shadowset/engine/nbd-client';
import { BLOCK } from '@shadowset/testkit/engine/block-workload';
import { postOk, waitStatus, waitSteady } from '@shadowset/testkit/engine/control-api';
import { prng } from '@shadowset/testkit/prng';
import { startEngine, type EngineProcess } from '@shadowset/testkit/engine/engine-process';
import { PowerLossWorkload } from './power-model.js';
import { HEADER_BYTES, MiB, readAt, sparseFile, testScope } from '@shadowset/testkit/engine/support';
import { VolatileMembers } from './volatile-members.js';

const KILLS = Number(process.env.POWER_KILLS ?? 200);
const SEED = Number(process.env.POWER_SEED ?? Math.floor(Math.random() * 2 ** 31));
const MEMBERS = Number(process.env.POWER_MEMBERS ?? 3);
const MEMBER_BYTES = 64 * MiB;
const UNIT_BYTES = MEMBER_BYTES - HEADER_BYTES;
const BLOCKS = UNIT_BYTES / BLOCK;
/** Rounds r with r % DURING_MERGE_EVERY === 2 lose power during the merge; r % IDLE_EVERY === 1 wait for an empty log. */
const DURING_MERGE_EVERY = 4;
const IDLE_EVERY = 10;
/** 95 % of the writes go to an 8 MiB hot region that moves at every idle round. */
const HOT_BLOCKS = (8 * MiB) / BLOCK;
/** Intent bits are cleared after 1 s idle (default 5): more clearing, each after a flush, under losses. */
const ENGINE_ARGS = ['--intent-idle-seconds', '1'];

/** How many 4 KiB blocks of the data areas differ between the member files (servers and engine down). */
async function divergentBlocks(files: string[]): Promise<number> {
  const step = 8 * MiB;
  const fhs = await Promise.all(files.map((m) => open(m, 'r')));
  try {
    const bufs = files.map(() => Buffer.alloc(step));
    let n = 0;
    for (let off = 0; off < UNIT_BYTES; off += step) {
      const len = Math.min(step, UNIT_BYTES - off);
      await Promise.all(fhs.map((fh, i) => fh.read(bufs[i]!, 0, len, HEADER_BYTES + off)));
      if (bufs.slice(1).every((b) => b.compare(bufs[0]!, 0, len, 0, len) === 0)) continue;
      for (let i = 0; i < len; i += BLOCK) {
        if (bufs.slice(1).some((b) => b.compare(bufs[0]!, i, i + BLOCK, i, i + BLOCK) !== 0)) n++;
      }
    }
    return n;
  } finally {
    await Promise.all(fhs.map((fh) => fh.close()));
  }
}

test('power-loss members: a kill takes back unflushed writes and keeps flushed and FUA ones', async (t) => {
  const { scope, dir } = await testScope(t);
  const file = await sparseFile(join(dir, 'm.img'), 16 * MiB);
  const servers = new VolatileMembers(scope, dir, [file]);
  const block = (b: number) => Buffer.alloc(BLOCK, b);
  await servers.start();
  const c = await NbdClientBackend.open(servers.uris[0]!);
  await c.write(block(1), 0, false);
  await c.flush();
  await c.write(block(2), 1 * MiB, false);
  await c.write(block(3), 2 * MiB, true);
  await c.write(block(4), 3 * MiB, false);
  const seen = Buffer.alloc(BLOCK);
  await c.read(seen, 1 * MiB);
  assert.ok(seen.equals(block(2)), 'the server answers its cached write before the kill');
  await servers.killAll();
  await c.close();
  await servers.start();
  const after = await NbdClientBackend.open(servers.uris[0]!);
  const read = async (off: number) => {
    const b = Buffer.alloc(BLOCK);
    await after.read(b, off);
    return b;
  };
  assert.ok((await read(0)).equals(block(1)), 'a write acknowledged before an acknowledged FLUSH survives');
  assert.ok((await read(2 * MiB)).equals(block(3)), 'a write acknowledged with FUA survives');
  assert.ok((await read(1 * MiB)).equals(block(0)), 'a write acknowledged after the last FLUSH is lost');
  assert.ok((await read(3 * MiB)).equals(block(0)), 'the last unflushed write is lost');
  await after.close();
  await servers.stopAll();
  assert.ok((await readAt(file, 2 * MiB, BLOCK)).equals(block(3)), 'the FUA write is in the member file');
});

test(`power-loss torture: ${KILLS} power losses of the engine and its members lose no durable write`, { timeout: 20 * 60_000 }, async (t) => {
  assert.ok(Number.isInteger(KILLS) && KILLS >= 1, 'POWER_KILLS must be a positive integer');
  assert.ok(MEMBERS === 2 || MEMBERS === 3, 'POWER_MEMBERS must be 2 or 3');
  t.diagnostic(`seed ${SEED} (POWER_SEED=${SEED} repeats the random choices), ${KILLS} power losses, ${MEMBERS} members of ${MEMBER_BYTES / MiB} MiB`);
  const started = Date.now();
  const { scope, dir } = await testScope(t);
  const rand = prng(SEED);
  const files: string[] = [];
  for (let i = 0; i < MEMBERS; i++) files.push(await sparseFile(join(dir, `m${i}.img`), MEMBER_BYTES));
  const servers = new VolatileMembers(scope, dir, files);
  const model = new PowerLossWorkload(BLOCKS, rand);

  let engine: EngineProcess | null = null;
  let client: NbdClientBackend | null = null;
  scope.defer('close the workload client', () => client?.close());
  const f = {
    kills: 0, killsDuringMerge: 0, merges: 0, mergedChunks: 0, awaitedMerges: 0, mergedBytes: 0, maxMergeMs: 0,
    roundsDiverged: 0, divergentBlocks: 0, idleChecks: 0,
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
    await servers.start();
    engine = await startEngine(scope, { dir, name: `r${round}`, members: servers.uris, extraArgs: ENGINE_ARGS });
    const mounted = engine.events('ShadowSetMounted')[0] ?? engine.events('ShadowSetCreated')[0];
    assert.ok(mounted, engine.tail());
    if (round > 0) {
      assert.equal(mounted.unclean, true, `round ${round}: the restart after the power loss must find the set unclean`);
      assert.ok(mounted.members && (mounted.members as { state: string }[]).every((m) => m.state === 'InSync'), `round ${round}: ${JSON.stringify(mounted.members)}`);
      const required = engine.events('MergeRequired')[0];
      assert.ok(required, `round ${round}: no MergeRequired after the power loss\n${engine.tail()}`);
      assert.equal(required.full, false, `round ${round}: the write-intent log was not trusted: ${JSON.stringify(required)}`);
      f.merges++;
      f.mergedChunks += Number(required.chunks);
    }
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
        f.awaitedMerges++;
        lap('merge');
        // Nothing is writing: the members must answer identical data, cached or not.
        const diff = await servers.firstDivergence(UNIT_BYTES);
        assert.equal(diff, null, `round ${round}: members answer different data at unit offset ${diff} after the merge (seed ${SEED})`);
        lap('compare');
      }
      await model.verifyAll(client, `verify after round ${round}`);
      check(`round ${round}: verification after the merge`);
      lap('verify');
      if (idle) {
        await waitStatus(engine, 'the write-intent log to empty', (s) => s.intentLog.dirtyChunks === 0, 15_000, 50);
        // The engine flushed the members before clearing the last bits: their files hold what the unit answered.
        const n = await divergentBlocks(files);
        assert.equal(n, 0, `round ${round}: ${n} blocks differ between the member files once the intent log was empty (seed ${SEED})`);
        for (const m of files) await model.verifyMember(m);
        check(`round ${round}: member files once the intent log was empty`);
        f.idleChecks++;
        lap('idle');
      }
    }
    if (last) break;

    // The workload, and a power loss at a random moment after its first request.
    const delay = 5 + Math.floor(rand() * 146);
    let firstRequest!: () => void;
    const begun = new Promise<void>((r) => (firstRequest = r));
    const e = engine;
    const killed = begun
      .then(() => new Promise((r) => setTimeout(r, delay)))
      .then(async () => {
        model.engineGone = true;
        // The engine first, in the same turn as the members: it must not see a member vanish and act on it.
        const exit = e.kill();
        await servers.killAll();
        return exit;
      });
    const stats = await model.run(client, {
      queueDepth: 8, readFraction: duringMerge ? 0.3 : 0.1, fuaEvery: 50, flushEvery: 100, round,
      hot: { first: hotFirst, blocks: HOT_BLOCKS, share: 0.95 },
      onStart: firstRequest,
    }, killed.then(() => undefined));
    const exit = await killed;
    model.engineGone = false;
    assert.deepEqual(exit, { code: null, signal: 'SIGKILL' }, `round ${round}: the engine died before the power loss\n${engine.tail()}\n${servers.output()}`);
    check(`round ${round}: reads during the workload`);
    assert.ok(stats.writesIssued > 0, `round ${round}: the workload wrote nothing before the power loss`);
    model.powerLoss();
    f.kills++;
    if (duringMerge && engine.events('MergeCompleted').length === 0) f.killsDuringMerge++;
    await client.close();
    client = null;
    const diverged = await divergentBlocks(files);
    if (diverged > 0) f.roundsDiverged++;
    f.divergentBlocks += diverged;
    lap('workload');
    if ((round + 1) % 50 === 0) {
      t.diagnostic(`${round + 1} power losses, ${model.totals.writesAcked} writes acknowledged, ${Math.round((Date.now() - started) / 1000)} s`);
    }
  }

  // A clean stop flushes every member: the files are then identical and hold what the unit answered.
  await client?.close();
  client = null;
  const final = engine!;
  assert.deepEqual(await final.stop(), { code: 0, signal: null }, final.tail());
  assert.equal(final.events('ShadowSetStopped').length, 1);
  await servers.stopAll();
  assert.equal(await divergentBlocks(files), 0, 'member files differ after the clean stop');
  for (const m of files) await model.verifyMember(m);
  check('member files after the clean stop');

  const secs = (Date.now() - started) / 1000;
  const tot = model.totals;
  const pc = model.counts;
  assert.equal(f.kills, KILLS);
  assert.equal(pc.losses, KILLS);
  assert.equal(pc.durableLost, 0);
  assert.ok(tot.writesAcked > 10 * KILLS, `too few acknowledged writes (${tot.writesAcked}) to mean anything`);
  assert.ok(pc.durableChecked > KILLS, `too few durable writes checked after the losses (${pc.durableChecked}) to mean anything`);
  // The harness must really lose data, or this is only the kill -9 torture again.
  assert.ok(pc.unflushedRolledBack > 0, 'no power loss took back an unflushed write');
  const mib = (b: number) => `${(b / MiB).toFixed(1)} MiB`;
  t.diagnostic(`seed ${SEED}: ${f.kills} power losses (${f.killsDuringMerge} during a merge) in ${secs.toFixed(1)} s (${JSON.stringify(ms)} ms)`);
  t.diagnostic(
    `${tot.writesAcked} writes acknowledged, ${pc.durableWrites} of them made durable (FUA or a FLUSH); after the losses ` +
    `${pc.durableChecked} blocks with a durable version read back, ${pc.durableLost} lost; ${pc.unflushedRolledBack} blocks went back ` +
    `behind an acknowledged unflushed write (allowed); ${tot.writesUnknown} writes in flight at a loss; ${tot.readsChecked} reads checked ` +
    `during the workload; ${tot.flushes} flushes; ${model.touched} of ${BLOCKS} blocks written`,
  );
  t.diagnostic(
    `member files diverged after ${f.roundsDiverged} losses (${f.divergentBlocks} blocks in all); members answered identical data after every ` +
    `awaited merge, and their files were identical and held what the unit answered at ${f.idleChecks} empty-log checks and after the clean stop`,
  );
  t.diagnostic(
    `${f.merges} minimerges (none full) over ${f.mergedChunks} dirty 64 KiB chunks; the ${f.awaitedMerges} awaited ones merged ` +
    `${mib(f.mergedBytes)} in all, ${mib(f.mergedBytes / Math.max(1, f.awaitedMerges))} per merge on average; the longest in ${f.maxMergeMs} ms`,
  );
});
