/**
 * Reconstruct (the manual's mount with /INCLUDE): a set rebuilt from former members. After a clean stop,
 * one member is enough to find the others, and they come back with no copy and no merge. After kill -9,
 * starting from two members that had left (one with a write bitmap, one without) finds the current
 * members from the newest record; the newest members are the sources and merge first, the member with a
 * bitmap gets a minicopy, the stale one a full copy during which it serves no reads, and every
 * acknowledged write is there at the end, on every member.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { NbdClientBackend } from '@shadowset/engine/nbd-client';
import { BLOCK, BlockWorkload } from '@shadowset/testkit/engine/block-workload';
import { qemuIo } from '@shadowset/testkit/engine/clients';
import { assertMembersIdentical, fillUnit, member, postOk, stopCleanly, waitStatus, waitSteady } from '@shadowset/testkit/engine/control-api';
import { prng } from '@shadowset/testkit/prng';
import { startEngine } from '@shadowset/testkit/engine/engine-process';
import { HEADER_BYTES, MiB, sparseFile, testScope } from '@shadowset/testkit/engine/support';

const MEMBER_BYTES = 64 * MiB;
const UNIT_BYTES = MEMBER_BYTES - HEADER_BYTES;
const CHUNK = 64 * 1024;

test('reconstruct after a clean stop: one former member finds the others; no copy, no merge', async (t) => {
  const { scope, dir } = await testScope(t);
  const members = await Promise.all(['a', 'b', 'c'].map((n) => sparseFile(join(dir, `${n}.img`), MEMBER_BYTES)));
  const [a, b, c] = members as [string, string, string];
  const first = await startEngine(scope, { dir, name: 'first', members });
  await qemuIo(first.uri, ['write -P 0x81 0 2M', 'write -P 0x82 33M 1M']);
  const st1 = await first.status();
  await stopCleanly(first);

  const second = await startEngine(scope, { dir, name: 'second', members: [c], allowLocations: [`${dir}/`], extraArgs: ['--include'] });
  const found = second.events('IncludeMemberFound').map((l) => l.path);
  assert.deepEqual(found.sort(), [a, b].sort(), second.tail());
  const mounted = await second.waitForEvent('ShadowSetMounted');
  assert.equal(mounted.unclean, false);
  const st2 = await second.status();
  assert.equal(st2.setId, st1.setId);
  assert.equal(st2.generation, st1.generation + 1);
  assert.equal(st2.state, 'Steady');
  for (const m of st2.members) {
    assert.equal(m.state, 'InSync', `${m.path}: ${m.reason}`);
    assert.equal(m.id, member(st1, m.path).id);
    assert.equal(m.counters.reads + m.counters.writes, 0, `${m.path} was copied or merged: ${JSON.stringify(m.counters)}`);
  }
  assert.equal(second.events('MergeRequired').length + second.events('CopyStarted').length, 0);
  await qemuIo(second.uri, ['read -P 0x81 0 2M', 'read -P 0 2M 31M', 'read -P 0x82 33M 1M']);
  await stopCleanly(second);
  await assertMembersIdentical(members, UNIT_BYTES);
});

test('reconstruct after kill -9 from members that had left: merge first, minicopy, full copy, nothing lost', async (t) => {
  const { scope, dir } = await testScope(t);
  const files = await Promise.all(['a', 'b', 'c', 'd'].map((n) => sparseFile(join(dir, `${n}.img`), MEMBER_BYTES)));
  const [a, b, c, d] = files as [string, string, string, string];
  const first = await startEngine(scope, { dir, name: 'first', members: files });
  await fillUnit(first, dir, UNIT_BYTES);
  const st0 = await first.status();
  const [idB, idC] = [member(st0, b).id, member(st0, c).id];

  // c leaves with a write bitmap, then b without one; writes in between and after.
  const { bitmap } = await postOk<{ bitmap: string }>(first, '/v1/members/remove', { member: c, minicopy: 'Required' });
  assert.ok(bitmap);
  await qemuIo(first.uri, ['write -P 0x91 6M 256k']);
  await postOk(first, '/v1/members/remove', { member: b, minicopy: 'Never' });
  // The workload's region starts as zeros (the model's never-written blocks).
  await qemuIo(first.uri, ['write -P 0x92 44M 64k', 'write -z 20M 4M']);
  // Lazy clearing empties the intent log of all that, so the minimerge after the kill is the workload's.
  await waitStatus(first, 'the intent log to empty', (s) => s.intentLog.dirtyChunks === 0, 10_000, 100);

  // A verifying workload on a 4 MiB region, killed with the engine.
  const seed = Math.floor(Math.random() * 2 ** 31);
  t.diagnostic(`workload seed ${seed}`);
  const region = 20 * MiB;
  const model = new BlockWorkload((4 * MiB) / BLOCK, prng(seed), region);
  let client: NbdClientBackend | null = await NbdClientBackend.open(first.uri);
  scope.defer('close the NBD client', () => client?.close());
  let stopWorkload!: () => void;
  const running = model.run(client, { queueDepth: 8, readFraction: 0.1, fuaEvery: 20, flushEvery: 100, round: 1 }, new Promise<void>((r) => (stopWorkload = r)));
  const busy = await waitStatus(first, 'the workload to be writing', (s) => (s.nbd.requests.WRITE ?? 0) > 800);
  const dirtyAtKill = busy.bitmaps.find((x) => x.id === bitmap)!.dirtyBytes;
  model.engineGone = true;
  assert.deepEqual(await first.kill(), { code: null, signal: 'SIGKILL' });
  stopWorkload();
  const ran = await running;
  assert.deepEqual(model.problems, []);
  await client.close();
  client = null;

  // Start from the two members that had left (the cheapest readers, if they were allowed to read).
  const second = await startEngine(scope, { dir, name: 'second', members: [`${c}#readCost=0`, `${b}#readCost=0`], allowLocations: [`${dir}/`], extraArgs: ['--include'] });
  await postOk(second, '/v1/settings', { copyBytesPerSecond: 8 * MiB });
  assert.deepEqual(second.events('IncludeMemberFound').map((l) => l.path).sort(), [a, d].sort(), second.tail());
  const st1 = await second.status();
  assert.deepEqual(st1.members.map((m) => m.path), [c, b, a, d]);
  assert.match(member(st1, b).reason, /stale|Removed/);
  assert.ok(['FullCopy'].includes(member(st1, b).state), member(st1, b).state);
  assert.ok(['Minicopy', 'InSync'].includes(member(st1, c).state), `${member(st1, c).state}: ${member(st1, c).reason}`);
  const required = await second.waitForEvent('MergeRequired');
  assert.equal(required.full, false, 'after kill -9 a minimerge of the current members');
  assert.ok(Number(required.chunks) >= 64 && Number(required.chunks) <= 80, `minimerge of ${required.chunks} chunks`);
  await second.waitForEvent('MergeCompleted');

  // Reads while the stale member is copied never come from it (it still holds old bytes where the
  // workload wrote): every acknowledged write is there, and b's read counter does not move.
  client = await NbdClientBackend.open(second.uri);
  const before = member(await second.status(), b);
  await model.verifyAll(client, 'during the copies');
  assert.deepEqual(model.problems, []);
  const during = member(await second.status(), b);
  assert.equal(during.state, 'FullCopy', 'the copy ended before the reads: they proved nothing');
  assert.ok(during.progress!.bytesDone < region, `the copy had reached ${during.progress!.bytesDone}: the region read was already copied`);
  assert.equal(during.counters.reads, before.counters.reads, 'the copy target served reads');
  const mini = await second.waitForEvent('MinicopyCompleted');
  assert.equal(mini.target, idC);
  assert.equal(mini.bytes, dirtyAtKill, 'the minicopy copied exactly the chunks the bitmap marked');
  assert.ok(dirtyAtKill <= 6 * MiB, `${dirtyAtKill} bytes marked while c was away`);
  const copy = await second.waitForEvent('CopyCompleted', (l) => l.target === idB, 30_000);
  assert.equal(copy.bytes, UNIT_BYTES);
  const steady = await waitSteady(second);
  assert.deepEqual(steady.members.map((m) => m.state), ['InSync', 'InSync', 'InSync', 'InSync']);
  assert.deepEqual(steady.bitmaps, []);
  // The merge ran before any copy.
  const order = second.logs.map((l) => l.event).filter((e) => e === 'MergeCompleted' || e === 'CopyStarted' || e === 'MinicopyStarted');
  assert.equal(order[0], 'MergeCompleted', JSON.stringify(order));

  // Now the copied members are the cheapest readers: read everything again, from them.
  await model.verifyAll(client, 'after the copies');
  await client.close();
  client = null;
  await qemuIo(second.uri, ['read -P 0x91 6M 256k', 'read -P 0x92 44M 64k']);
  const after = await second.status();
  assert.ok(member(after, b).counters.reads + member(after, c).counters.reads > 0, 'the returned members serve reads now');
  assert.deepEqual(model.problems, []);
  await stopCleanly(second);
  await assertMembersIdentical([a, b, c, d], UNIT_BYTES);
  for (const f of files) await model.verifyMember(f);
  assert.deepEqual(model.problems, []);
  t.diagnostic(`${ran.writesAcked} writes acknowledged before the kill; minicopy ${mini.bytes} bytes, full copy ${copy.bytes} bytes, merge of ${required.chunks} chunks (${Number(required.chunks) * CHUNK} bytes)`);
});
