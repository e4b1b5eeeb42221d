/**
 * Fault injection with real servers, no hooks in the engine: a member behind nbdkit's error filter starts
 * answering EIO, another behind nbdkit's pause filter stops answering. In both cases I/O continues on the
 * remaining member, the failing member is Faulted, and every acknowledged write is on the survivor; a
 * restart with both never takes the faulted member as a source.
 */
import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { fio, qemuIo, type FioJob } from '@shadowset/testkit/engine/clients';
import { nbdkitFile, pauseControl } from '@shadowset/testkit/engine/daemons';
import { startEngine, type EngineProcess } from '@shadowset/testkit/engine/engine-process';
import { HEADER_BYTES, memberDataDifference, MiB, pattern, readMemberData, sparseFile, testScope, until } from '@shadowset/testkit/engine/support';

const MEMBER_BYTES = 128 * MiB;
const UNIT_BYTES = MEMBER_BYTES - HEADER_BYTES;

async function stopCleanly(e: EngineProcess): Promise<void> {
  assert.deepEqual(await e.stop(), { code: 0, signal: null }, e.tail());
}

/**
 * Restarted with the faulted member listed first: it is planned as a stale copy target, reads give the
 * survivor's data throughout, and the copy brings it up to date from the survivor (never the reverse).
 */
async function checkRestart(e: EngineProcess, faulted: { uri: string; file: string }, survivor: string, verify: () => Promise<unknown>): Promise<void> {
  const planned = e.assembled().find((m) => m.path === faulted.uri)!;
  assert.equal(planned.state, 'FullCopy', `the faulted member came back as ${planned.state}: ${planned.reason}`);
  assert.match(planned.reason, /stale/);
  await verify();
  await e.copied(planned.id);
  await verify();
  await stopCleanly(e);
  assert.equal(await memberDataDifference(survivor, faulted.file, UNIT_BYTES), null, 'the returned member was not brought up to date');
}

test('a member that starts returning EIO is faulted; writes continue and none acknowledged is lost', async (t) => {
  const { scope, dir } = await testScope(t);
  const good = await sparseFile(join(dir, 'good.img'), MEMBER_BYTES);
  const bad = await sparseFile(join(dir, 'bad.img'), MEMBER_BYTES);
  const trigger = join(dir, 'inject-eio');
  const kit = await nbdkitFile(scope, dir, 'bad', bad, ['error'], ['error=EIO', 'error-rate=100%', `error-file=${trigger}`]);

  const engine = await startEngine(scope, { dir, name: 'first', members: [good, kit.uri] });
  await qemuIo(engine.uri, ['write -P 0x01 0 4M']);

  // A rate-limited fio with verify is running when the member starts failing.
  const job: FioJob = { uri: engine.uri, rw: 'randwrite', offset: '16m', size: '32m', bs: '4k', iodepth: 16, verify: 'crc32c', rate: '12m' };
  const running = fio(dir, 'during-eio', job);
  await until('fio to be writing', async () => ((await engine.status()).nbd.requests.WRITE ?? 0) > 1000 ? true : undefined);
  await writeFile(trigger, '');
  const r = await running;
  assert.ok(r.writeBytes >= 32 * MiB && r.readBytes >= 32 * MiB, 'fio wrote and verified everything');

  const faulted = await engine.waitForEvent('MemberFaulted', (l) => l.path === kit.uri);
  assert.match(String(faulted.reason), /write failed|repair write failed|read/);
  const st = await engine.status();
  assert.deepEqual(st.members.map((m) => m.state), ['InSync', 'Faulted']);
  assert.ok(st.members[1]!.counters.errors > 0);
  assert.ok(st.generation > 1, 'the membership change bumped the generation');

  // Still writable and readable on one member.
  await qemuIo(engine.uri, ['write -P 0x02 60M 1M', 'flush', 'read -P 0x02 60M 1M', 'read -P 0x01 0 4M']);
  await stopCleanly(engine);
  assert.deepEqual(await readMemberData(good, 60 * MiB, MiB), pattern(0x02, MiB), 'the survivor lacks an acknowledged write');
  assert.deepEqual(await readMemberData(good, 0, 4 * MiB), pattern(0x01, 4 * MiB));
  assert.notDeepEqual(await readMemberData(bad, 60 * MiB, MiB), pattern(0x02, MiB), 'the faulted member kept receiving writes');

  // The member works again, but its metadata is stale: it is never a source.
  await rm(trigger);
  const again = await startEngine(scope, { dir, name: 'again', members: [kit.uri, good] });
  let round = 0;
  await checkRestart(again, { uri: kit.uri, file: bad }, good, async () => {
    await qemuIo(again.uri, ['read -P 0x01 0 4M', 'read -P 0x02 60M 1M']);
    await fio(dir, `verify-after-eio-${round++}`, { ...job, uri: again.uri, rate: undefined, extra: ['--verify_only'] });
  });
});

test('a member that hangs is removed after the member timeout; I/O continues and stop does not hang', async (t) => {
  const { scope, dir } = await testScope(t);
  const good = await sparseFile(join(dir, 'good.img'), MEMBER_BYTES);
  const slow = await sparseFile(join(dir, 'hung.img'), MEMBER_BYTES);
  const control = join(dir, 'pause.sock');
  const kit = await nbdkitFile(scope, dir, 'hung', slow, ['pause'], [`pause-control=${control}`]);
  scope.defer('resume the paused member', () => pauseControl(control, 'r'));

  const engine = await startEngine(scope, { dir, name: 'first', members: [good, kit.uri], memberTimeoutSeconds: 2 });
  assert.equal((await engine.status()).memberTimeoutSeconds, 2);
  await qemuIo(engine.uri, ['write -P 0x0a 0 2M', 'flush']);

  await pauseControl(control, 'p');
  const t0 = Date.now();
  await qemuIo(engine.uri, ['write -P 0x0b 8M 1M'], { timeoutMs: 30_000 });
  const waited = Date.now() - t0;
  assert.ok(waited >= 1500 && waited < 10_000, `the write waited ${waited} ms for the member timeout (2 s)`);

  const faulted = await engine.waitForEvent('MemberFaulted', (l) => l.path === kit.uri);
  assert.match(String(faulted.reason), /timeout|did not answer/);
  const st = await engine.status();
  assert.deepEqual(st.members.map((m) => m.state), ['InSync', 'Faulted']);
  assert.ok(st.members[1]!.counters.timeouts > 0);

  // Later I/O does not wait for the hung member any more.
  const t1 = Date.now();
  const r = await fio(dir, 'after-hang', { uri: engine.uri, rw: 'randwrite', offset: '16m', size: '16m', bs: '4k', verify: 'crc32c' });
  assert.ok(r.readBytes >= 16 * MiB);
  await qemuIo(engine.uri, ['read -P 0x0a 0 2M', 'read -P 0x0b 8M 1M']);
  assert.ok(Date.now() - t1 < 10_000, 'I/O after the removal was slow');

  // A clean stop while the member is still hung.
  await stopCleanly(engine);
  assert.deepEqual(await readMemberData(good, 8 * MiB, MiB), pattern(0x0b, MiB), 'the survivor lacks the acknowledged write');

  await pauseControl(control, 'r');
  const again = await startEngine(scope, { dir, name: 'again', members: [kit.uri, good], memberTimeoutSeconds: 2 });
  await checkRestart(again, { uri: kit.uri, file: slow }, good, () => qemuIo(again.uri, ['read -P 0x0a 0 2M', 'read -P 0x0b 8M 1M']));
});

test('read errors on one member are repaired from the other; readers get good data and the member stays', async (t) => {
  const { scope, dir } = await testScope(t);
  const good = await sparseFile(join(dir, 'good.img'), MEMBER_BYTES);
  const flaky = await sparseFile(join(dir, 'flaky.img'), MEMBER_BYTES);
  const trigger = join(dir, 'inject-read-eio');
  const kit = await nbdkitFile(scope, dir, 'flaky', flaky, ['error'], ['error-pread=EIO', 'error-pread-rate=100%', `error-pread-file=${trigger}`]);

  // The good member is the expensive reader, so reads go to the flaky one first.
  const engine = await startEngine(scope, { dir, members: [`${good}#readCost=50`, kit.uri] });
  await qemuIo(engine.uri, ['write -P 0x5e 0 8M', 'flush']);
  await writeFile(trigger, '');
  await qemuIo(engine.uri, ['read -P 0x5e 0 8M', 'read -P 0 8M 1M']);
  await rm(trigger);

  const repaired = await engine.waitForEvent('MemberReadRepaired');
  assert.ok(repaired, engine.tail());
  const st = await engine.status();
  assert.deepEqual(st.members.map((m) => m.state), ['InSync', 'InSync'], 'a repaired member stays in the set');
  assert.ok(st.members[1]!.counters.errors > 0 && st.members[1]!.counters.repairs > 0, JSON.stringify(st.members[1]!.counters));
  assert.ok(st.members[0]!.counters.reads > 0, 'the good member served the failed reads');
  await qemuIo(engine.uri, ['read -P 0x5e 0 8M']);
  await stopCleanly(engine);
});
