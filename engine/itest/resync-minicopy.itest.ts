/**
 * Write bitmaps and minicopy, with real NBD clients: a member removed with a bitmap comes back with a
 * copy of only the chunks written while it was away (status, events and the member's own write counter
 * say so), serving no reads until it is InSync; removals and returns that would lose data or cannot
 * honour a Required minicopy policy are refused and change nothing.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { qemuIo } from '@shadowset/testkit/engine/clients';
import {
  assertMembersIdentical, fillUnit, member, postOk, postRefused, readScb, stopCleanly, waitStatus, waitSteady,
} from '@shadowset/testkit/engine/control-api';
import { startEngine } from '@shadowset/testkit/engine/engine-process';
import { HEADER_BYTES, MiB, pattern, readMemberData, sparseFile, testScope } from '@shadowset/testkit/engine/support';

const MEMBER_BYTES = 64 * MiB;
const UNIT_BYTES = MEMBER_BYTES - HEADER_BYTES;
const CHUNK = 64 * 1024;
const KiB = 1024;

test('minicopy: a returning member gets only the chunks written while it was away', async (t) => {
  const { scope, dir } = await testScope(t);
  const a = await sparseFile(join(dir, 'a.img'), MEMBER_BYTES);
  const b = await sparseFile(join(dir, 'b.img'), MEMBER_BYTES);
  // b is the cheapest reader: while it is a copy target, reads that went to it would return stale bytes.
  const engine = await startEngine(scope, { dir, members: [a, `${b}#readCost=0`] });
  const data = await fillUnit(engine, dir, UNIT_BYTES);
  const st0 = await engine.status();
  const idB = member(st0, b).id;

  const removed = await postOk<{ id: string; bitmap: string | null }>(engine, '/v1/members/remove', { member: b, minicopy: 'Required' });
  assert.equal(removed.id, idB);
  assert.ok(removed.bitmap, 'Required: a bitmap was created');
  const created = await engine.waitForEvent('BitmapCreated');
  assert.deepEqual([created.bitmap, created.member, created.policy], [removed.bitmap, idB, 'Required']);
  assert.equal((await engine.waitForEvent('MemberRemoved')).member, idB);
  const st1 = await engine.status();
  assert.equal(member(st1, b).state, 'Removed');
  assert.equal(st1.bitmaps.length, 1);
  const bm0 = st1.bitmaps[0]!;
  assert.deepEqual([bm0.id, bm0.member, bm0.chunkSize, bm0.coveredBytes, bm0.dirtyBytes, bm0.percentPopulated], [removed.bitmap, idB, CHUNK, UNIT_BYTES, 0, 0]);
  assert.ok(bm0.masterNode.length > 0 && !Number.isNaN(Date.parse(bm0.createdAt)));
  // The member that left records its own departure, at the generation the bitmap was made.
  const own = await readScb(b);
  assert.equal(own.generation, bm0.generation);
  assert.equal(own.members.find((m) => m.id === idB)?.state, 'Removed');

  // Writes while b is away: 4 KiB, an unaligned 100 KiB run across chunk boundaries, and 1 MiB.
  const writes: [number, number, number][] = [[0x31, 5 * MiB, 4 * KiB], [0x32, 30 * MiB + 12345, 100 * KiB], [0x33, 48 * MiB, MiB]];
  await qemuIo(engine.uri, writes.map(([p, off, len]) => `write -P 0x${p.toString(16)} ${off} ${len}`));
  const dirtyChunks = new Set<number>();
  for (const [, off, len] of writes) for (let c = Math.floor(off / CHUNK); c <= Math.floor((off + len - 1) / CHUNK); c++) dirtyChunks.add(c);
  const dirtyBytes = dirtyChunks.size * CHUNK;
  const st2 = await engine.status();
  assert.equal(st2.bitmaps[0]!.dirtyBytes, dirtyBytes);
  assert.equal(st2.bitmaps[0]!.percentPopulated, Math.round((10000 * dirtyChunks.size) / (UNIT_BYTES / CHUNK)) / 100);
  for (const [, off, len] of writes) {
    assert.ok((await readMemberData(b, off, len)).equals(data.subarray(off, off + len)), 'the removed member got writes');
  }

  // Return it, Required: a minicopy of exactly the marked chunks, throttled so it can be watched.
  await postOk(engine, '/v1/settings', { copyBytesPerSecond: 512 * KiB });
  const readsA = member(st2, a).counters.readBytes;
  const back = await postOk<{ id: string; state: string }>(engine, '/v1/members/return', { member: idB, minicopy: 'Required' });
  assert.deepEqual(back, { id: idB, state: 'Minicopy' });
  const returned = await engine.waitForEvent('MemberReturned');
  assert.deepEqual([returned.mode, returned.bytes], ['Minicopy', dirtyBytes]);
  assert.equal((await engine.waitForEvent('MinicopyStarted')).bytes, dirtyBytes);
  const during = await waitStatus(engine, 'the minicopy to be under way', (s) => s.recovery.mode === 'Minicopy' && s.recovery.bytesDone > 0);
  assert.equal(member(during, b).state, 'Minicopy');
  assert.deepEqual([during.recovery.targets, during.recovery.bytesTotal], [[idB], dirtyBytes]);
  assert.deepEqual(member(during, b).progress?.bytesTotal, dirtyBytes);
  // Reads of changed regions get the new bytes although b is cheaper; a write during the minicopy reaches b.
  await qemuIo(engine.uri, [...writes.map(([p, off, len]) => `read -P 0x${p.toString(16)} ${off} ${len}`), 'write -P 0x34 10M 64k']);
  assert.equal(member(await engine.status(), b).state, 'Minicopy', 'the minicopy ended before the reads: they proved nothing');
  assert.equal(member(await engine.status(), b).counters.reads, 0, 'the minicopy target served reads');

  const done = await engine.waitForEvent('MinicopyCompleted', () => true, 30_000);
  assert.equal(done.bytes, dirtyBytes);
  assert.ok(dirtyBytes < UNIT_BYTES / 20, `${dirtyBytes} dirty bytes is not ≪ ${UNIT_BYTES}`);
  const st3 = await waitSteady(engine);
  const mb = member(st3, b);
  assert.deepEqual([mb.state, mb.reason], ['InSync', 'minicopy complete']);
  assert.deepEqual(st3.bitmaps, [], 'a bitmap is used once and deleted');
  // b was written only the dirty chunks and the one write made during the minicopy.
  assert.equal(mb.counters.writeBytes, dirtyBytes + 64 * KiB);
  // a was read for the dirty chunks and for the client's reads during the minicopy (about 1.1 MiB).
  const readFromA = member(st3, a).counters.readBytes - readsA;
  assert.ok(readFromA >= dirtyBytes && readFromA <= dirtyBytes + 2 * MiB, `the minicopy read ${readFromA} bytes from the source`);

  // Now b serves reads (cheapest), and they are right.
  await qemuIo(engine.uri, [...writes.map(([p, off, len]) => `read -P 0x${p.toString(16)} ${off} ${len}`), 'read -P 0x34 10M 64k']);
  assert.ok(member(await engine.status(), b).counters.reads > 0);
  await stopCleanly(engine);
  await assertMembersIdentical([a, b], UNIT_BYTES);
  assert.deepEqual(await readMemberData(b, 48 * MiB, MiB), pattern(0x33, MiB));
  assert.ok((await readMemberData(b, 20 * MiB, MiB)).equals(data.subarray(20 * MiB, 21 * MiB)));
  t.diagnostic(`minicopy of ${dirtyBytes} bytes (${dirtyChunks.size} chunks) for a ${UNIT_BYTES}-byte unit in ${done.seconds} s at 512 KiB/s`);
});

test('refusals: the last full member, Required without a usable bitmap, and copy targets leave nothing changed', async (t) => {
  const { scope, dir } = await testScope(t);
  const a = await sparseFile(join(dir, 'a.img'), MEMBER_BYTES);
  const b = await sparseFile(join(dir, 'b.img'), MEMBER_BYTES);
  const spare = await sparseFile(join(dir, 'spare.img'), MEMBER_BYTES);
  const engine = await startEngine(scope, { dir, members: [a, b], allowLocations: [`${dir}/`] });
  await fillUnit(engine, dir, UNIT_BYTES);
  const st0 = await engine.status();
  const [idA, idB] = [member(st0, a).id, member(st0, b).id];

  await postRefused(engine, '/v1/members/remove', { member: 'no-such-member', minicopy: 'Optional' }, 404, 'ENG_NOT_FOUND');
  await postRefused(engine, '/v1/members/remove', { member: idB, minicopy: 'Sometimes' }, 400, 'ENG_INVALID_ARGUMENT');

  // Never: no bitmap. Then a is the last full member and cannot go.
  assert.deepEqual(await postOk(engine, '/v1/members/remove', { member: idB, minicopy: 'Never' }), { id: idB, bitmap: null, state: 'Removed' });
  const gen = (await engine.status()).generation;
  const msg = await postRefused(engine, '/v1/members/remove', { member: a, minicopy: 'Never' }, 409, 'ENG_LAST_FULL_MEMBER');
  assert.ok(msg.includes(a), msg);
  await postRefused(engine, '/v1/members/remove', { member: idA, minicopy: 'Optional', force: true }, 409, 'ENG_LAST_FULL_MEMBER');
  const st1 = await engine.status();
  assert.deepEqual([member(st1, a).state, st1.generation], ['InSync', gen], 'a refused removal changed the set');

  // Return Required without a bitmap: refused; the member stays out.
  const noBitmap = await postRefused(engine, '/v1/members/return', { member: idB, minicopy: 'Required' }, 409, 'ENG_BITMAP_REQUIRED');
  assert.match(noBitmap, /no write bitmap/);
  assert.equal(member(await engine.status(), b).state, 'Removed');

  // Optional: a full copy. While b is a copy target it is not a full member.
  await postOk(engine, '/v1/settings', { copyBytesPerSecond: 4 * MiB });
  assert.deepEqual(await postOk(engine, '/v1/members/return', { member: idB, minicopy: 'Optional' }), { id: idB, state: 'FullCopy' });
  assert.equal((await engine.waitForEvent('MemberReturned')).mode, 'FullCopy');
  await postRefused(engine, '/v1/members/remove', { member: idA, minicopy: 'Never' }, 409, 'ENG_LAST_FULL_MEMBER');
  const targetMsg = await postRefused(engine, '/v1/members/remove', { member: idB, minicopy: 'Required' }, 409, 'ENG_BITMAP_REQUIRED');
  assert.match(targetMsg, /copy target/);
  assert.equal(member(await engine.status(), b).state, 'FullCopy', 'a refused removal stopped the copy');
  await postOk(engine, '/v1/settings', { copyBytesPerSecond: 0 });
  await engine.waitForEvent('CopyCompleted');
  await waitSteady(engine);

  // A bitmap exists, but the member comes back on another device (blank): the bitmap does not match it.
  const { bitmap } = await postOk<{ bitmap: string | null }>(engine, '/v1/members/remove', { member: idB, minicopy: 'Required' });
  assert.ok(bitmap);
  await qemuIo(engine.uri, ['write -P 0x41 2M 64k']);
  const moved = await postRefused(engine, '/v1/members/return', { member: idB, location: spare, minicopy: 'Required' }, 409, 'ENG_BITMAP_REQUIRED');
  assert.match(moved, /does not match/);
  assert.equal((await engine.status()).bitmaps.length, 1, 'a refused return kept the bitmap');
  // Optional: the unusable bitmap is dropped and the new device gets a full copy.
  assert.equal((await postOk<{ state: string }>(engine, '/v1/members/return', { member: idB, location: spare, minicopy: 'Optional' })).state, 'FullCopy');
  const started = (await waitStatus(engine, 'the copy onto the new device', (s) => s.recovery.mode === 'FullCopy' || s.state === 'Steady'));
  assert.deepEqual(started.bitmaps, []);
  await waitSteady(engine);
  const st2 = await engine.status();
  assert.deepEqual(st2.members.map((m) => [m.path, m.state]), [[a, 'InSync'], [spare, 'InSync']]);
  await stopCleanly(engine);
  await assertMembersIdentical([a, spare], UNIT_BYTES);
  assert.deepEqual(await readMemberData(spare, 2 * MiB, 64 * KiB), pattern(0x41, 64 * KiB));
  // The old device kept what it had when it left.
  assert.notDeepEqual(await readMemberData(b, 2 * MiB, 64 * KiB), pattern(0x41, 64 * KiB));
});
