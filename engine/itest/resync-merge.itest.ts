/**
 * Merge, with real NBD clients: after kill -9 under load a minimerge covers only the chunks the
 * write-intent log marked and repairs a half-done write; a full merge on demand finds a difference the
 * log does not know, answers reads of not-yet-merged blocks with one answer, and refuses removals that
 * would need a bitmap; a merge interrupted by SIGTERM or kill -9 is finished by the next start.
 */
import assert from 'node:assert/strict';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { NbdClientBackend } from '@shadowset/engine/nbd-client';
import { BLOCK, BlockWorkload } from '@shadowset/testkit/engine/block-workload';
import { qemuIo } from '@shadowset/testkit/engine/clients';
import {
  assertMembersIdentical, fillUnit, member, postOk, postRefused, readScb, stopCleanly, waitStatus, waitSteady,
} from '@shadowset/testkit/engine/control-api';
import { prng } from '@shadowset/testkit/prng';
import { startEngine } from '@shadowset/testkit/engine/engine-process';
import { HEADER_BYTES, memberDataDifference, MiB, readMemberData, sparseFile, testScope } from '@shadowset/testkit/engine/support';

const CHUNK = 64 * 1024;

/** Overwrite `length` bytes of a member's data area behind the engine's back (a half-done write). */
async function scribble(path: string, offset: number, length: number, byte: number): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.write(Buffer.alloc(length, byte), 0, length, HEADER_BYTES + offset);
  } finally {
    await fh.close();
  }
}

test('minimerge after kill -9 under load: only the dirty chunks, a half-done write repaired, no acknowledged write lost', async (t) => {
  const MEMBER_BYTES = 64 * MiB;
  const UNIT_BYTES = MEMBER_BYTES - HEADER_BYTES;
  const { scope, dir } = await testScope(t);
  const members = await Promise.all(['a', 'b', 'c'].map((n) => sparseFile(join(dir, `${n}.img`), MEMBER_BYTES)));
  const [a, b] = members as [string, string, string];
  const first = await startEngine(scope, { dir, name: 'first', members });
  await qemuIo(first.uri, ['write -P 0x61 0 1M', 'write -P 0x62 40M 1M', 'flush']);
  // Those chunks go idle and leave the intent log (cleared lazily, within two seconds).
  await waitStatus(first, 'the intent log to empty', (s) => s.intentLog.dirtyChunks === 0, 10_000, 100);

  // The verifying workload on a 2 MiB region (32 chunks), killed while it runs.
  const seed = Math.floor(Math.random() * 2 ** 31);
  t.diagnostic(`workload seed ${seed}`);
  const region = 16 * MiB;
  const model = new BlockWorkload((2 * MiB) / BLOCK, prng(seed), region);
  let client: NbdClientBackend | null = await NbdClientBackend.open(first.uri);
  scope.defer('close the NBD client', () => client?.close());
  let stopWorkload!: () => void;
  const running = model.run(client, { queueDepth: 8, readFraction: 0.1, fuaEvery: 0, flushEvery: 0, round: 1 }, new Promise<void>((r) => (stopWorkload = r)));
  const busy = await waitStatus(first, 'the workload to mark the intent log', (s) => s.intentLog.dirtyChunks >= 32 && (s.nbd.requests.WRITE ?? 0) > 500);
  // Writes the intent log has forgotten by now (cleared lazily after they went idle) are not dirty.
  assert.ok(busy.intentLog.dirtyChunks <= 40, `dirty chunks ${busy.intentLog.dirtyChunks}: more than the workload's region`);
  model.engineGone = true;
  assert.deepEqual(await first.kill(), { code: null, signal: 'SIGKILL' });
  stopWorkload();
  const ran = await running;
  assert.deepEqual(model.problems, []);
  await client.close();
  client = null;

  // A half-done write: one member got different bytes inside a dirty chunk.
  await scribble(b, region + 512 * 1024, BLOCK, 0xee);
  assert.notEqual(await memberDataDifference(a, b, UNIT_BYTES), null);

  const second = await startEngine(scope, { dir, name: 'second', members });
  const mounted = await second.waitForEvent('ShadowSetMounted');
  assert.equal(mounted.unclean, true);
  const required = await second.waitForEvent('MergeRequired');
  assert.equal(required.full, false, 'the intent log was trusted');
  assert.ok(Number(required.chunks) >= 32 && Number(required.chunks) <= 40, `minimerge of ${required.chunks} chunks`);
  const done = await second.waitForEvent('MergeCompleted');
  assert.equal(done.bytes, Number(required.chunks) * CHUNK);
  const order = second.logs.map((l) => l.event);
  assert.ok(order.indexOf('EngineReady') >= 0 && order.indexOf('EngineReady') < order.indexOf('MergeStarted'), 'the merge starts once the engine serves');
  assert.ok(Number(done.bytes) <= UNIT_BYTES / 20, `the minimerge covered ${done.bytes} of ${UNIT_BYTES} bytes`);
  const st = await waitSteady(second);
  assert.deepEqual(st.members.map((m) => m.state), ['InSync', 'InSync', 'InSync']);

  client = await NbdClientBackend.open(second.uri);
  await model.verifyAll(client, 'after the minimerge');
  assert.deepEqual(model.problems, [], `lost or mixed writes after ${ran.writesAcked} acknowledged`);
  await client.close();
  client = null;
  await qemuIo(second.uri, ['read -P 0x61 0 1M', 'read -P 0x62 40M 1M']);
  await stopCleanly(second);
  await assertMembersIdentical(members, UNIT_BYTES);
  for (const m of members) await model.verifyMember(m);
  assert.deepEqual(model.problems, []);
  t.diagnostic(`${ran.writesAcked} writes acknowledged before the kill, ${ran.writesUnknown} in flight; minimerge of ${done.bytes} bytes in ${done.seconds} s`);
});

test('full merge on demand: finds what the intent log does not know, one answer for reads, removals refused meanwhile', async (t) => {
  const MEMBER_BYTES = 64 * MiB;
  const UNIT_BYTES = MEMBER_BYTES - HEADER_BYTES;
  const { scope, dir } = await testScope(t);
  const members = await Promise.all(['a', 'b', 'c'].map((n) => sparseFile(join(dir, `${n}.img`), MEMBER_BYTES)));
  const [a, b, c] = members as [string, string, string];
  const first = await startEngine(scope, { dir, name: 'first', members });
  const data = await fillUnit(first, dir, UNIT_BYTES);
  await stopCleanly(first);

  // Silent differences on b, early and late in the unit: a clean restart knows of no merge to do.
  await scribble(b, 1 * MiB, BLOCK, 0xd1);
  await scribble(b, 50 * MiB, BLOCK, 0xd2);
  const second = await startEngine(scope, { dir, name: 'second', members });
  assert.equal(second.events('MergeRequired').length, 0);
  const st0 = await waitSteady(second);
  assert.equal(st0.intentLog.dirtyChunks, 0);
  const [idA, , idC] = [member(st0, a).id, member(st0, b).id, member(st0, c).id];

  await postOk(second, '/v1/settings', { mergeBytesPerSecond: 4 * MiB });
  const demanded = await postOk<{ started: boolean; chunks: number }>(second, '/v1/merge', { full: true });
  assert.deepEqual(demanded, { started: true, chunks: UNIT_BYTES / CHUNK });
  const twice = await postOk<{ started: boolean; chunks: number }>(second, '/v1/merge', { full: true });
  assert.equal(twice.started, false, 'a second demand while merging starts nothing');
  assert.ok(twice.chunks > 0 && twice.chunks <= demanded.chunks, `${twice.chunks} chunks still to merge`);
  const merging = await waitStatus(second, 'the merge to run', (s) => s.recovery.mode === 'Merge' && s.recovery.bytesDone > 0);
  assert.equal(merging.state, 'Transient');
  assert.deepEqual(merging.members.map((m) => m.state), ['Merging', 'Merging', 'Merging']);
  assert.deepEqual([...merging.recovery.targets].sort(), merging.members.map((m) => m.id).sort());
  assert.equal(merging.recovery.source, idA, 'the master (first full member) is the merge source');
  assert.ok(merging.recovery.bytesDone < 50 * MiB);

  // A read of a block the merge has not reached: one answer (the master's), and b repaired before it returns.
  const r = await NbdClientBackend.open(second.uri);
  const got = Buffer.alloc(BLOCK);
  await r.read(got, 50 * MiB);
  await r.close();
  assert.ok(got.equals(data.subarray(50 * MiB, 50 * MiB + BLOCK)), 'a read during the merge returned the minority bytes');
  assert.ok((await readMemberData(b, 50 * MiB, BLOCK)).equals(got), 'the read did not merge the block on b');
  assert.ok((await second.status()).recovery.bytesDone < 50 * MiB, 'the merge itself got there first: the read proved nothing');

  // Removals during a merge: refused, unless forced, and then without a bitmap.
  await postRefused(second, '/v1/members/remove', { member: c, minicopy: 'Optional' }, 409, 'ENG_MERGE_ACTIVE');
  await postRefused(second, '/v1/members/remove', { member: c, minicopy: 'Required', force: true }, 409, 'ENG_BITMAP_REQUIRED');
  assert.equal(member(await second.status(), c).state, 'Merging', 'a refused removal left the member in the set');
  const removed = await postOk<{ id: string; bitmap: string | null }>(second, '/v1/members/remove', { member: c, minicopy: 'Optional', force: true });
  assert.deepEqual(removed, { id: idC, bitmap: null, state: 'Removed' });
  const noBitmap = await second.waitForEvent('BitmapCreated', (l) => l.member === idC);
  assert.equal(noBitmap.bitmap, null);
  assert.match(String(noBitmap.reason), /merge/);
  assert.equal(member(await second.status(), c).state, 'Removed');

  // Unthrottled, the merge finishes: every chunk compared, the early difference fixed too.
  await postOk(second, '/v1/settings', { mergeBytesPerSecond: 0 });
  const done = await second.waitForEvent('MergeCompleted', () => true, 60_000);
  assert.equal(done.bytes, UNIT_BYTES);
  const st = await waitSteady(second);
  assert.deepEqual(st.members.map((m) => m.state), ['InSync', 'InSync', 'Removed']);
  await assertMembersIdentical([a, b], UNIT_BYTES);
  assert.ok((await readMemberData(b, 1 * MiB, BLOCK)).equals(data.subarray(1 * MiB, 1 * MiB + BLOCK)));

  // c left without a bitmap: its return is a full copy.
  const back = await postOk<{ state: string }>(second, '/v1/members/return', { member: idC });
  assert.equal(back.state, 'FullCopy');
  assert.equal((await second.waitForEvent('MemberReturned')).mode, 'FullCopy');
  await second.waitForEvent('CopyCompleted', () => true, 60_000);
  await waitSteady(second);
  await stopCleanly(second);
  await assertMembersIdentical(members, UNIT_BYTES);
  assert.ok((await readMemberData(c, 0, UNIT_BYTES)).equals(data), 'the members do not hold the data written');
});

for (const how of ['SIGTERM', 'kill -9'] as const) {
  test(`a merge interrupted by ${how} is finished by the next start, and a crash during that merge loses none of it`, async (t) => {
    const MEMBER_BYTES = 264 * MiB;
    const UNIT_BYTES = MEMBER_BYTES - HEADER_BYTES;
    const CHUNKS = UNIT_BYTES / CHUNK;
    const { scope, dir } = await testScope(t);
    const members = await Promise.all(['a', 'b'].map((n) => sparseFile(join(dir, `${n}.img`), MEMBER_BYTES)));
    const [a, b] = members as [string, string];
    const first = await startEngine(scope, { dir, name: 'first', members });
    await qemuIo(first.uri, ['write -P 0x71 0 1M']);
    await stopCleanly(first);
    // Differences near the end of the unit, which a merge reaches last.
    const late = UNIT_BYTES - BLOCK;
    await scribble(b, late, BLOCK, 0xbb);

    // 1. A demanded full merge, stopped early.
    const second = await startEngine(scope, { dir, name: 'second', members });
    await postOk(second, '/v1/settings', { mergeBytesPerSecond: 8 * MiB });
    await postOk(second, '/v1/merge', { full: true });
    await waitStatus(second, 'the merge to get going', (s) => s.recovery.bytesDone >= 4 * MiB);
    if (how === 'SIGTERM') await stopCleanly(second);
    else assert.deepEqual(await second.kill(), { code: null, signal: 'SIGKILL' });
    const scb = await readScb(a);
    assert.equal(scb.clean, false, 'a stop with a merge owed is not clean');
    assert.ok(scb.members.every((m) => m.state === 'InSync'), `members recorded as ${JSON.stringify(scb.members.map((m) => m.state))}`);

    // 2. The next start mounts and owes the rest of the merge; its unmerged chunks stay in the intent log.
    const third = await startEngine(scope, { dir, name: 'third', members });
    await postOk(third, '/v1/settings', { mergeBytesPerSecond: 2 * MiB });
    assert.equal((await third.waitForEvent('ShadowSetMounted')).unclean, true);
    const required = await third.waitForEvent('MergeRequired');
    assert.equal(required.full, false);
    assert.ok(Number(required.chunks) >= CHUNKS - 200, `the remaining merge covers ${required.chunks} of ${CHUNKS} chunks`);
    // Lazy clearing runs every second; for three seconds every unmerged chunk must stay marked.
    const t0 = Date.now();
    let polls = 0;
    while (Date.now() - t0 < 3000) {
      const s = await third.status();
      assert.equal(s.recovery.mode, 'Merge', 'the throttled merge ended early');
      const owed = Math.ceil((s.recovery.bytesTotal - s.recovery.bytesDone) / CHUNK);
      assert.ok(s.intentLog.dirtyChunks >= owed - 64, `${owed} chunks still to merge but only ${s.intentLog.dirtyChunks} in the intent log`);
      polls++;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(polls >= 10);
    const owedAtKill = (await third.status()).recovery;
    assert.deepEqual(await third.kill(), { code: null, signal: 'SIGKILL' });

    // 3. After the crash during the merge, the next merge still covers what was owed, and b is repaired.
    const fourth = await startEngine(scope, { dir, name: 'fourth', members });
    const again = await fourth.waitForEvent('MergeRequired');
    assert.ok(Number(again.chunks) * CHUNK >= owedAtKill.bytesTotal - owedAtKill.bytesDone - 8 * MiB, `the merge after the crash covers ${again.chunks} chunks`);
    await fourth.waitForEvent('MergeCompleted', () => true, 60_000);
    await waitSteady(fourth);
    await qemuIo(fourth.uri, ['read -P 0x71 0 1M', `read -P 0 ${late} ${BLOCK}`]);
    await stopCleanly(fourth);
    await assertMembersIdentical(members, UNIT_BYTES);
  });
}
