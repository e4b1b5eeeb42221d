/**
 * Full copy, with real NBD clients: a member added to a set in use is copied online while fio and
 * qemu-io write; the copy target serves no reads although it is the cheapest reader; the copy throttle
 * and a forced copy source show in the status and the member counters; a copy interrupted by kill -9 or
 * a clean stop resumes from its checkpoint. Every scenario ends with a data check by content.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { NbdClientBackend } from '@shadowset/engine/nbd-client';
import { fio, nbdcopy, qemuIo } from '@shadowset/testkit/engine/clients';
import { assertMembersIdentical, fillUnit, member, postOk, readScb, stopCleanly, waitStatus, waitSteady } from '@shadowset/testkit/engine/control-api';
import { startEngine } from '@shadowset/testkit/engine/engine-process';
import { firstDifference, HEADER_BYTES, MiB, pattern, readMemberData, sparseFile, testScope, until } from '@shadowset/testkit/engine/support';

const MEMBER_BYTES = 64 * MiB;
const UNIT_BYTES = MEMBER_BYTES - HEADER_BYTES;
const CHUNK = 64 * 1024;

test('full copy under load: the new member gets everything, serves no reads until InSync, and the throttle holds', async (t) => {
  const { scope, dir } = await testScope(t);
  const a = await sparseFile(join(dir, 'a.img'), MEMBER_BYTES);
  const b = await sparseFile(join(dir, 'b.img'), MEMBER_BYTES);
  const engine = await startEngine(scope, { dir, members: [a], allowLocations: [`${dir}/`] });
  // Random bytes everywhere: the copy never finds a zero run, so it never needs to read the target.
  const data = await fillUnit(engine, dir, UNIT_BYTES);

  const rate = 16 * MiB;
  const settings = await postOk(engine, '/v1/settings', { copyBytesPerSecond: rate });
  assert.equal(settings.copyBytesPerSecond, rate);

  // fio writes and verifies [8M, 24M) while the copy runs; qemu-io writes ahead of and behind the copy.
  const abort = new AbortController();
  const load = fio(dir, 'during-copy', { uri: engine.uri, rw: 'randwrite', offset: '8m', size: '16m', bs: '4k', iodepth: 8, verify: 'crc32c', rate: '6m' }, { signal: abort.signal });
  scope.defer('stop fio', async () => {
    abort.abort();
    await load.catch(() => undefined);
  });
  // The new member is the cheapest reader (readCost 0): if a copy target served reads, it would get them.
  const added = await postOk<{ id: string; state: string }>(engine, '/v1/members/add', { location: b, readCost: 0 });
  assert.equal(added.state, 'FullCopy');
  const copyStarted = await engine.waitForEvent('CopyStarted');
  assert.equal(copyStarted.target, added.id);
  assert.equal(copyStarted.bytes, UNIT_BYTES);
  assert.equal((await engine.waitForEvent('MemberAdded')).member, added.id);

  let reader: NbdClientBackend | null = await NbdClientBackend.open(engine.uri);
  scope.defer('close the NBD reader', () => reader?.close());
  const samples: number[] = [];
  const t0 = Date.now();
  let wroteBehind = false;
  for (;;) {
    const st = await engine.status();
    const target = member(st, b);
    if (target.state !== 'FullCopy') break;
    assert.equal(target.counters.reads, 0, 'the copy target served a read');
    assert.equal(st.state, 'Transient');
    assert.equal(st.recovery.mode, 'FullCopy');
    assert.deepEqual(st.recovery.targets, [added.id]);
    if (st.recovery.bytesDone > 0) assert.equal(st.recovery.source, member(st, a).id);
    assert.equal(st.recovery.bytesTotal, UNIT_BYTES);
    assert.ok(target.progress && target.progress.bytesTotal === UNIT_BYTES && target.progress.bytesDone <= UNIT_BYTES);
    if (Date.now() - t0 > 1500 && st.recovery.bytesPerSecond > 0) samples.push(st.recovery.bytesPerSecond);
    if (!wroteBehind && st.recovery.bytesDone > 30 * MiB) {
      // Behind the copy (already copied) and ahead of it (not yet copied), under the range locks.
      await qemuIo(engine.uri, ['write -P 0x1b 1M 256k', 'write -P 0x1c 50M 256k', 'read -P 0x1b 1M 256k', 'read -P 0x1c 50M 256k']);
      wroteBehind = true;
    }
    // Reads during the copy come from the full member: the random bytes, not the blank target's zeros.
    const off = 24 * MiB + Math.floor(Math.random() * 25) * MiB;
    const got = Buffer.alloc(MiB);
    await reader!.read(got, off);
    assert.ok(got.equals(data.subarray(off, off + MiB)), `a read at ${off} during the copy returned other bytes`);
    assert.ok(Date.now() - t0 < 60_000, 'the copy did not finish within 60 s');
    await new Promise((r) => setTimeout(r, 100));
  }
  await reader!.close();
  reader = null;
  const completed = await engine.waitForEvent('CopyCompleted');
  assert.equal(completed.target, added.id);
  assert.equal(completed.bytes, UNIT_BYTES);
  assert.ok(wroteBehind, 'the copy ended before the writes behind and ahead of it');
  // The throttle: never faster than the limit (the bucket allows a one-second burst), and the measured
  // rate close to it.
  const seconds = Number(completed.seconds);
  assert.ok(seconds >= (UNIT_BYTES - rate) / rate * 0.9, `a copy throttled to ${rate} B/s took only ${seconds} s`);
  assert.ok(samples.length >= 3, `too few rate samples: ${JSON.stringify(samples)}`);
  const median = samples.sort((x, y) => x - y)[Math.floor(samples.length / 2)]!;
  assert.ok(median > rate * 0.4 && median < rate * 1.5, `recovery.bytesPerSecond ${median} is far from the limit ${rate}`);
  t.diagnostic(`copy of ${UNIT_BYTES} bytes throttled to ${rate} B/s under load took ${seconds} s; recovery.bytesPerSecond median ${median} (${samples.length} samples)`);

  const r = await load;
  assert.ok(r.writeBytes >= 16 * MiB && r.readBytes >= 16 * MiB, 'fio wrote and verified its region');
  const st = await waitSteady(engine);
  assert.deepEqual(st.members.map((m) => [m.path, m.state]), [[a, 'InSync'], [b, 'InSync']]);
  assert.equal(member(st, b).reason, 'full copy complete');
  assert.ok(st.generation >= 3, 'adding and completing the copy bumped the generation');

  // Now InSync and still the cheapest: reads go to the new member, and they return the unit's bytes.
  const readsBefore = member(st, b).counters.reads;
  const back = join(dir, 'back.img');
  await nbdcopy(engine.uri, back);
  assert.ok(member(await engine.status(), b).counters.reads > readsBefore, 'the new member serves reads once InSync');
  await qemuIo(engine.uri, ['read -P 0x1b 1M 256k', 'read -P 0x1c 50M 256k']);
  await fio(dir, 'verify-after-copy', { uri: engine.uri, rw: 'randwrite', offset: '8m', size: '16m', bs: '4k', verify: 'crc32c', extra: ['--verify_only'] });
  await stopCleanly(engine);

  await assertMembersIdentical([a, b], UNIT_BYTES);
  assert.equal(await firstDifference(back, 0, b, HEADER_BYTES, UNIT_BYTES), null, 'the member differs from the unit as read');
  // Outside what fio and qemu-io wrote, the members hold the original random bytes.
  assert.ok(data.subarray(0, MiB).equals(await readMemberData(b, 0, MiB)));
  assert.ok(data.subarray(24 * MiB, 50 * MiB).equals(await readMemberData(b, 24 * MiB, 26 * MiB)));
  assert.ok(data.subarray(51 * MiB, UNIT_BYTES).equals(await readMemberData(b, 51 * MiB, UNIT_BYTES - 51 * MiB)));
  assert.deepEqual(await readMemberData(b, 50 * MiB, 256 * 1024), pattern(0x1c, 256 * 1024));
});

test('copy source: alternating between full members, or forced to one; settings reach a running copy', async (t) => {
  const { scope, dir } = await testScope(t);
  const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((n) => sparseFile(join(dir, `${n}.img`), MEMBER_BYTES)));
  const engine = await startEngine(scope, { dir, members: [a!, b!], allowLocations: [`${dir}/`] });
  await fillUnit(engine, dir, UNIT_BYTES);
  const st0 = await engine.status();
  const idB = member(st0, b!).id;

  // Forced source: only b is read by the copy.
  await postOk(engine, '/v1/settings', { copySource: idB, copyBytesPerSecond: 32 * MiB });
  const before = await engine.status();
  await postOk(engine, '/v1/members/add', { location: c! });
  const mid = await waitStatus(engine, 'a quarter of the copy', (s) => s.recovery.bytesDone >= UNIT_BYTES / 4);
  assert.equal(mid.recovery.source, idB);
  assert.equal(member(mid, a!).counters.readBytes, member(before, a!).counters.readBytes, 'the copy read from a although b was forced');
  assert.ok(member(mid, b!).counters.readBytes - member(before, b!).counters.readBytes >= UNIT_BYTES / 4);

  // Back to alternating, unthrottled: the rest of the copy reads from both.
  const midA = member(mid, a!).counters.readBytes;
  const midB = member(mid, b!).counters.readBytes;
  const applied = await postOk(engine, '/v1/settings', { copySource: null, copyBytesPerSecond: 0 });
  assert.deepEqual([applied.copySource, applied.copyBytesPerSecond], [null, 0]);
  await engine.waitForEvent('CopyCompleted');
  const end = await waitSteady(engine);
  const fromA = member(end, a!).counters.readBytes - midA;
  const fromB = member(end, b!).counters.readBytes - midB;
  assert.ok(fromA >= 4 * MiB && fromB >= 4 * MiB, `alternating copy read ${fromA} B from a and ${fromB} B from b`);
  assert.ok(fromA + fromB >= UNIT_BYTES / 2, 'the rest of the copy was read from the sources');
  assert.deepEqual(end.members.map((m) => m.state), ['InSync', 'InSync', 'InSync']);
  assert.equal(member(end, c!).counters.reads, 0, 'the copy target was never read (all source runs held data)');

  // An invalid copy source is refused.
  const bad = await fetch(`http://${engine.httpAddress}/v1/settings`, { method: 'POST', body: JSON.stringify({ copySource: 'no-such-member' }) });
  assert.equal(bad.status, 400);
  assert.equal(((await bad.json()) as { code: string }).code, 'ENG_INVALID_ARGUMENT');
  await stopCleanly(engine);
  await assertMembersIdentical([a!, b!, c!], UNIT_BYTES);
});

for (const how of ['kill -9', 'SIGTERM'] as const) {
  test(`a full copy interrupted by ${how} resumes from its checkpoint after the restart`, async (t) => {
    const { scope, dir } = await testScope(t);
    const a = await sparseFile(join(dir, 'a.img'), MEMBER_BYTES);
    const b = await sparseFile(join(dir, 'b.img'), MEMBER_BYTES);
    // Intent bits of idle chunks clear after 1 s here, so the fill is out of the log before the copy starts.
    const first = await startEngine(scope, { dir, name: 'first', members: [a], allowLocations: [`${dir}/`], extraArgs: ['--intent-idle-seconds', '1'] });
    const data = await fillUnit(first, dir, UNIT_BYTES);
    await until('the fill out of the intent log', async () => ((await first.status()).intentLog.dirtyChunks === 0 ? true : undefined), 20_000, 100);
    await postOk(first, '/v1/settings', { copyBytesPerSecond: 8 * MiB });
    const { id } = await postOk<{ id: string }>(first, '/v1/members/add', { location: b });
    await first.waitForEvent('CopyStarted');

    // The checkpoint is written to the SCB every few seconds while the copy runs.
    const checkpoint = await until('a copy checkpoint in the source\'s SCB', async () => {
      const c = (await readScb(a)).copies.find((x) => x.target === id);
      return c && c.nextChunk > 0 ? c.nextChunk : undefined;
    }, 20_000, 100);
    // Writes while the copy runs, behind it: the resumed copy need not redo them, but they must be there.
    await qemuIo(first.uri, ['write -P 0x2e 0 128k']);
    if (how === 'kill -9') {
      assert.deepEqual(await first.kill(), { code: null, signal: 'SIGKILL' });
    } else {
      await stopCleanly(first);
      assert.ok((await readScb(a)).clean, 'the clean stop was recorded');
    }

    // The target listed first: it is no source, and the copy goes on where it stopped.
    const second = await startEngine(scope, { dir, name: 'second', members: [b, a] });
    const st = await second.status();
    assert.equal(member(st, b).id, id);
    assert.notEqual(member(st, b).state, 'InSync');
    const resumed = second.events('CopyResumed')[0];
    assert.ok(resumed, `no CopyResumed after ${how}\n${second.tail()}`);
    assert.equal(resumed.member, id);
    assert.ok(Number(resumed.fromChunk) >= checkpoint, `resumed from chunk ${resumed.fromChunk}, the checkpoint said ${checkpoint}`);
    const started = await second.waitForEvent('CopyStarted');
    assert.ok(Number(started.bytes) <= UNIT_BYTES - Number(resumed.fromChunk) * CHUNK + (how === 'kill -9' ? 4 * MiB : 0),
      `the resumed copy covers ${started.bytes} bytes, from chunk ${resumed.fromChunk}`);
    if (how === 'kill -9') assert.equal(second.events('MergeRequired')[0]?.full, false, 'after kill -9 a minimerge runs first');
    await qemuIo(second.uri, ['read -P 0x2e 0 128k']);
    await second.waitForEvent('CopyCompleted');
    await waitSteady(second);
    assert.equal(member(await second.status(), b).reason, 'full copy complete');
    await stopCleanly(second);
    await assertMembersIdentical([a, b], UNIT_BYTES);
    assert.deepEqual(await readMemberData(b, 0, 128 * 1024), pattern(0x2e, 128 * 1024));
    assert.ok(data.subarray(128 * 1024).equals(await readMemberData(b, 128 * 1024, UNIT_BYTES - 128 * 1024)), 'the target lacks source data');
  });
}
