/**
 * Assembly from what the members hold (the manual's mount with /INCLUDE): blank members make a new set,
 * foreign data and other sets' members are refused before anything is written, a clean restart needs no
 * copy and no merge, and the newest generation wins over a stale member.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { qemuIo } from '@shadowset/testkit/engine/clients';
import { startEngine, startEngineExpectingFailure, type EngineProcess } from '@shadowset/testkit/engine/engine-process';
import {
  HEADER_BYTES, memberDataDifference, MiB, pattern, readMemberData, run, sha256File, sparseFile, testScope,
} from '@shadowset/testkit/engine/support';

const MEMBER_BYTES = 64 * MiB;
const UNIT_BYTES = MEMBER_BYTES - HEADER_BYTES;

async function stopCleanly(e: EngineProcess): Promise<void> {
  assert.deepEqual(await e.stop(), { code: 0, signal: null }, e.tail());
}

test('blank members become a new set; a restart after a clean stop needs no copy and no merge', async (t) => {
  const { scope, dir } = await testScope(t);
  const a = await sparseFile(join(dir, 'a.img'), MEMBER_BYTES);
  const b = await sparseFile(join(dir, 'b.img'), MEMBER_BYTES);

  const first = await startEngine(scope, { dir, members: [a, b] });
  const created = first.events('ShadowSetCreated')[0];
  assert.ok(created, first.tail());
  const st1 = await first.status();
  assert.equal(st1.generation, 1);
  assert.deepEqual(st1.members.map((m) => [m.state, m.reason]), [['InSync', 'new set'], ['InSync', 'new set']]);
  await qemuIo(first.uri, ['write -P 0xa1 0 3M', 'write -P 0xb2 20M 1M', 'write -P 0xc3 55M 1M']);
  await stopCleanly(first);

  // Same members, given in the other order.
  const second = await startEngine(scope, { dir, members: [b, a] });
  const mounted = second.events('ShadowSetMounted')[0];
  assert.ok(mounted, `expected ShadowSetMounted\n${second.tail()}`);
  assert.equal(mounted.unclean, false);
  assert.equal(second.events('ShadowSetCreated').length, 0);
  const st2 = await second.status();
  assert.equal(st2.setId, st1.setId);
  assert.equal(st2.generation, st1.generation + 1);
  assert.equal(st2.state, 'Steady');
  assert.equal(st2.recovery.mode, null);
  const ids1 = new Map(st1.members.map((m) => [m.path, m.id]));
  for (const m of st2.members) {
    assert.equal(m.state, 'InSync', `${m.path}: ${m.reason}`);
    assert.equal(m.id, ids1.get(m.path), 'a member keeps its id');
    // No copy and no merge: nothing was read from or written to the data of any member.
    assert.equal(m.counters.reads + m.counters.writes, 0, `${m.path} saw I/O: ${JSON.stringify(m.counters)}`);
  }
  await qemuIo(second.uri, ['read -P 0xa1 0 3M', 'read -P 0 3M 17M', 'read -P 0xb2 20M 1M', 'read -P 0xc3 55M 1M']);
  for (const ev of ['MergeRequired', 'MergeStarted', 'CopyStarted', 'MinicopyStarted']) {
    assert.equal(second.events(ev).length, 0, `${ev} after a clean restart`);
  }
  await stopCleanly(second);
  assert.equal(await memberDataDifference(a, b, UNIT_BYTES), null);
});

test('members holding foreign data are refused before anything is written, unless overwrite is given', async (t) => {
  const { scope, dir } = await testScope(t);
  const blank = await sparseFile(join(dir, 'blank.img'), MEMBER_BYTES);
  // A filesystem where our metadata would go, and data in the data area behind an empty header.
  const fs = await sparseFile(join(dir, 'ext4.img'), MEMBER_BYTES);
  await run('mkfs.ext4', ['-q', '-F', fs]);
  const deep = await sparseFile(join(dir, 'deep.img'), MEMBER_BYTES);
  await run('dd', [`of=${deep}`, 'if=/dev/urandom', 'bs=4096', 'count=1', `seek=${HEADER_BYTES / 4096 + 16}`, 'conv=notrunc', 'status=none']);

  for (const foreign of [fs, deep]) {
    const before = [await sha256File(blank), await sha256File(foreign)];
    const e = await startEngineExpectingFailure(scope, { dir, members: [blank, foreign] });
    assert.equal(e.exit.code, 1, e.tail());
    assert.match(e.stderr, /ENG_FOREIGN_DATA/);
    assert.ok(e.stderr.includes(foreign), `the error names the member: ${e.stderr}`);
    assert.match(e.stderr, /overwrite/);
    assert.equal(e.events('StartFailed')[0]?.code, 'ENG_FOREIGN_DATA');
    assert.deepEqual([await sha256File(blank), await sha256File(foreign)], before, `${foreign}: bytes changed by a refused start`);
  }

  // With the explicit flag the foreign member is taken as a copy target and filled from the set.
  const e = await startEngine(scope, { dir, members: [blank, fs], overwrite: true });
  const [, target] = e.assembled();
  assert.equal(target!.state, 'FullCopy');
  assert.match(target!.reason, /not blank|foreign/);
  await qemuIo(e.uri, ['read -P 0 0 2M']);
  await e.copied(target!.id);
  assert.deepEqual((await e.status()).members.map((m) => m.state), ['InSync', 'InSync']);
  await stopCleanly(e);
  assert.equal(await memberDataDifference(blank, fs, UNIT_BYTES), null, 'the overwritten member was not fully copied');
});

test('a member of another shadow set is refused unless overwrite is given, and nothing is written', async (t) => {
  const { scope, dir } = await testScope(t);
  const a = await sparseFile(join(dir, 'a.img'), MEMBER_BYTES);
  const b = await sparseFile(join(dir, 'b.img'), MEMBER_BYTES);
  const other = await sparseFile(join(dir, 'other.img'), MEMBER_BYTES);

  const setX = await startEngine(scope, { dir, name: 'x', members: [a, b] });
  await qemuIo(setX.uri, ['write -P 0x11 0 1M']);
  const idX = (await setX.status()).setId;
  await stopCleanly(setX);
  const setY = await startEngine(scope, { dir, name: 'y', members: [other] });
  await qemuIo(setY.uri, ['write -P 0x99 0 1M']);
  const idY = (await setY.status()).setId;
  await stopCleanly(setY);
  assert.notEqual(idX, idY);

  const files = [a, b, other];
  const before = await Promise.all(files.map(sha256File));
  const refused = await startEngineExpectingFailure(scope, { dir, name: 'mix', members: files });
  assert.equal(refused.exit.code, 1, refused.tail());
  assert.match(refused.stderr, /ENG_SET_MISMATCH/);
  assert.ok(refused.stderr.includes(idX) && refused.stderr.includes(idY), refused.stderr);
  assert.deepEqual(await Promise.all(files.map(sha256File)), before, 'a refused start changed member bytes');

  // With the flag, the other set's member is taken as a copy target and ends up with this set's data.
  const taken = await startEngine(scope, { dir, name: 'mix2', members: files, overwrite: true });
  assert.equal((await taken.status()).setId, idX);
  const planned = taken.assembled();
  assert.deepEqual(planned.map((m) => m.state), ['InSync', 'InSync', 'FullCopy']);
  assert.match(planned[2]!.reason, new RegExp(idY));
  await qemuIo(taken.uri, ['read -P 0x11 0 1M']);
  await taken.copied(planned[2]!.id);
  await stopCleanly(taken);
  assert.deepEqual(await readMemberData(other, 0, MiB), pattern(0x11, MiB));
  assert.equal(await memberDataDifference(a, other, UNIT_BYTES), null);
});

test('a subset of former members serves the newest generation; a stale member is never a source', async (t) => {
  const { scope, dir } = await testScope(t);
  const a = await sparseFile(join(dir, 'a.img'), MEMBER_BYTES);
  const b = await sparseFile(join(dir, 'b.img'), MEMBER_BYTES);

  const both = await startEngine(scope, { dir, name: 'both', members: [a, b] });
  await qemuIo(both.uri, ['write -P 0x11 0 4M']);
  const ids = new Map((await both.status()).members.map((m) => [m.path, m.id]));
  await stopCleanly(both);

  // Only a: b is recorded as gone, and a moves on to a newer generation with new data.
  const onlyA = await startEngine(scope, { dir, name: 'a', members: [a] });
  assert.deepEqual(onlyA.events('ShadowSetMounted')[0]?.missing, [ids.get(b)]);
  await qemuIo(onlyA.uri, ['write -P 0x22 0 1M']);
  const genA = (await onlyA.status()).generation;
  await stopCleanly(onlyA);
  assert.deepEqual(await readMemberData(b, 0, 1 * MiB), pattern(0x11, 1 * MiB), 'b still holds the old data');

  // b (stale) first: it is planned as a copy target, reads return a's newer data, and the copy goes
  // from a to b (had b been a source, a would now hold b's old bytes).
  const again = await startEngine(scope, { dir, name: 'again', members: [b, a] });
  assert.equal((await again.status()).generation, genA + 1);
  const [pb, pa] = again.assembled();
  assert.deepEqual([pa!.state, pa!.reason], ['InSync', 'current']);
  assert.equal(pb!.state, 'FullCopy', 'the stale member must not be a full member');
  assert.match(pb!.reason, /stale/);
  await qemuIo(again.uri, ['read -P 0x22 0 1M', 'read -P 0x11 1M 3M', 'read -P 0x22 0 1M']);
  await again.copied(pb!.id);
  assert.deepEqual((await again.status()).members.map((m) => m.state), ['InSync', 'InSync']);
  await qemuIo(again.uri, ['read -P 0x22 0 1M', 'read -P 0x11 1M 3M']);
  await stopCleanly(again);
  assert.deepEqual(await readMemberData(a, 0, MiB), pattern(0x22, MiB), 'the newest data was overwritten by stale data');
  assert.equal(await memberDataDifference(a, b, UNIT_BYTES), null, 'the stale member was not brought up to date');
});

test('kill -9: the restart finds the set unclean and every flushed write intact', async (t) => {
  const { scope, dir } = await testScope(t);
  const a = await sparseFile(join(dir, 'a.img'), MEMBER_BYTES);
  const b = await sparseFile(join(dir, 'b.img'), MEMBER_BYTES);
  const first = await startEngine(scope, { dir, name: 'first', members: [a, b] });
  await qemuIo(first.uri, ['write -P 0x3c 0 2M', 'write -P 0x4d 30M 1M', 'flush']);
  const id = (await first.status()).setId;
  assert.deepEqual(await first.kill(), { code: null, signal: 'SIGKILL' });
  assert.equal(first.events('ShadowSetStopped').length, 0);

  const second = await startEngine(scope, { dir, name: 'second', members: [a, b] });
  const mounted = second.events('ShadowSetMounted')[0];
  assert.equal(mounted?.setId, id);
  assert.equal(mounted?.unclean, true, 'the set was not stopped cleanly');
  // An unclean stop means a merge before the set is steady again; reads are right throughout.
  assert.ok(second.events('MergeRequired')[0], `no merge after an unclean stop\n${second.tail()}`);
  await qemuIo(second.uri, ['read -P 0x3c 0 2M', 'read -P 0x4d 30M 1M']);
  await second.waitForEvent('MergeCompleted', () => true, 30_000);
  const st = await second.status();
  assert.equal(st.state, 'Steady');
  assert.deepEqual(st.members.map((m) => m.state), ['InSync', 'InSync']);
  await stopCleanly(second);
  assert.equal(await memberDataDifference(a, b, UNIT_BYTES), null);
});

test('with overwrite, a new set made from a member holding data has no two full members that differ', async (t) => {
  const { scope, dir } = await testScope(t);
  const used = await sparseFile(join(dir, 'used.img'), MEMBER_BYTES);
  await run('dd', [`of=${used}`, 'if=/dev/urandom', 'bs=1M', 'count=12', 'conv=notrunc', 'status=none']);
  const blank = await sparseFile(join(dir, 'blank.img'), MEMBER_BYTES);

  const e = await startEngine(scope, { dir, members: [used, blank], overwrite: true });
  const full = (await e.status()).members.filter((m) => m.state === 'InSync').map((m) => m.path);
  assert.deepEqual(full.slice(0, 1), [used], 'the first member defines the content');
  await stopCleanly(e);
  // Whatever the plan, members reported InSync must be interchangeable as read sources.
  for (const other of full.slice(1)) {
    assert.equal(await memberDataDifference(used, other, UNIT_BYTES), null, `${other} is InSync but holds different data`);
  }
});
