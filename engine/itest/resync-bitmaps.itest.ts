/**
 * Write bitmaps as an operator sees them: listed with their fill, deletable (the member's return then
 * needs a full copy), not deletable while a minicopy uses them, and persisted on the members that stay,
 * so they survive an engine crash and keep recording writes afterwards.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { bitmapStatusSchema } from '@shadowset/engine/api';
import { qemuIo } from '@shadowset/testkit/engine/clients';
import {
  assertMembersIdentical, fillUnit, member, post, postOk, postRefused, readScb, stopCleanly, waitSteady,
} from '@shadowset/testkit/engine/control-api';
import { startEngine, type EngineProcess } from '@shadowset/testkit/engine/engine-process';
import { HEADER_BYTES, MiB, pattern, readMemberData, sparseFile, testScope } from '@shadowset/testkit/engine/support';

const MEMBER_BYTES = 64 * MiB;
const UNIT_BYTES = MEMBER_BYTES - HEADER_BYTES;
const CHUNK = 64 * 1024;

async function listBitmaps(e: EngineProcess) {
  const r = await e.get('/v1/bitmaps');
  assert.equal(r.status, 200, r.body);
  return bitmapStatusSchema.array().parse(JSON.parse(r.body));
}

test('bitmap deletion: listed with its fill, deleted by the operator, the return is then a full copy', async (t) => {
  const { scope, dir } = await testScope(t);
  const a = await sparseFile(join(dir, 'a.img'), MEMBER_BYTES);
  const b = await sparseFile(join(dir, 'b.img'), MEMBER_BYTES);
  const engine = await startEngine(scope, { dir, members: [a, b] });
  const data = await fillUnit(engine, dir, UNIT_BYTES);
  const idB = member(await engine.status(), b).id;

  const { bitmap } = await postOk<{ bitmap: string }>(engine, '/v1/members/remove', { member: idB, minicopy: 'Optional' });
  assert.ok(bitmap);
  await qemuIo(engine.uri, ['write -P 0x51 0 640k', 'write -P 0x52 20M 64k']);
  const [listed] = await listBitmaps(engine);
  assert.ok(listed);
  assert.deepEqual([listed.id, listed.member, listed.dirtyBytes], [bitmap, idB, 11 * CHUNK]);
  assert.equal(listed.percentPopulated, Math.round((10000 * 11) / (UNIT_BYTES / CHUNK)) / 100);
  assert.deepEqual((await engine.status()).bitmaps, [listed], 'status and /v1/bitmaps agree');
  assert.deepEqual((await readScb(a)).bitmaps.map((d) => [d.id, d.member]), [[bitmap, idB]], 'the bitmap is recorded on the member that stays');

  assert.deepEqual(await postOk(engine, '/v1/bitmaps/delete', { id: 'no-such-bitmap' }), { deleted: false });
  assert.equal((await post(engine, '/v1/bitmaps/delete', {})).status, 400);
  assert.deepEqual(await postOk(engine, '/v1/bitmaps/delete', { id: bitmap }), { deleted: true });
  const deleted = await engine.waitForEvent('BitmapDeleted');
  assert.deepEqual([deleted.bitmap, deleted.member], [bitmap, idB]);
  assert.deepEqual(await listBitmaps(engine), []);
  assert.deepEqual((await readScb(a)).bitmaps, [], 'the deletion is recorded on the members');

  // Without its bitmap, b can only come back with a full copy.
  await postRefused(engine, '/v1/members/return', { member: idB, minicopy: 'Required' }, 409, 'ENG_BITMAP_REQUIRED');
  assert.equal((await postOk<{ state: string }>(engine, '/v1/members/return', { member: idB })).state, 'FullCopy');
  assert.equal((await engine.waitForEvent('MemberReturned')).mode, 'FullCopy');
  assert.equal((await engine.waitForEvent('CopyStarted')).bytes, UNIT_BYTES);
  await engine.waitForEvent('CopyCompleted');
  await waitSteady(engine);
  assert.equal(engine.events('MinicopyStarted').length, 0);

  // A bitmap a running minicopy uses cannot be deleted.
  const again = await postOk<{ bitmap: string }>(engine, '/v1/members/remove', { member: idB, minicopy: 'Required' });
  await qemuIo(engine.uri, ['write -P 0x53 30M 1M']);
  await postOk(engine, '/v1/settings', { copyBytesPerSecond: 256 * 1024 });
  assert.equal((await postOk<{ state: string }>(engine, '/v1/members/return', { member: idB, minicopy: 'Required' })).state, 'Minicopy');
  await postRefused(engine, '/v1/bitmaps/delete', { id: again.bitmap }, 409, 'ENG_CONFLICT');
  assert.equal((await listBitmaps(engine)).length, 1);
  await postOk(engine, '/v1/settings', { copyBytesPerSecond: 0 });
  assert.equal((await engine.waitForEvent('MinicopyCompleted')).bytes, 16 * CHUNK);
  await waitSteady(engine);
  assert.deepEqual(await listBitmaps(engine), []);

  await qemuIo(engine.uri, ['read -P 0x51 0 640k', 'read -P 0x52 20M 64k', 'read -P 0x53 30M 1M']);
  await stopCleanly(engine);
  await assertMembersIdentical([a, b], UNIT_BYTES);
  assert.ok((await readMemberData(b, 40 * MiB, MiB)).equals(data.subarray(40 * MiB, 41 * MiB)));
});

test('a write bitmap survives kill -9 of the engine and goes on recording; the member returns with a minicopy', async (t) => {
  const { scope, dir } = await testScope(t);
  const a = await sparseFile(join(dir, 'a.img'), MEMBER_BYTES);
  const b = await sparseFile(join(dir, 'b.img'), MEMBER_BYTES);
  const first = await startEngine(scope, { dir, name: 'first', members: [a, b] });
  await fillUnit(first, dir, UNIT_BYTES);
  const idB = member(await first.status(), b).id;
  const { bitmap } = await postOk<{ bitmap: string }>(first, '/v1/members/remove', { member: idB, minicopy: 'Required' });
  await qemuIo(first.uri, ['write -P 0x61 4M 128k']);
  assert.deepEqual(await first.kill(), { code: null, signal: 'SIGKILL' });

  // Only a: the bitmap comes back from a's metadata, and records the writes made now.
  const second = await startEngine(scope, { dir, name: 'second', members: [a], allowLocations: [`${dir}/`] });
  const [kept] = await listBitmaps(second);
  assert.ok(kept, `the bitmap was lost with the engine\n${second.tail()}`);
  assert.deepEqual([kept.id, kept.member, kept.dirtyBytes], [bitmap, idB, 2 * CHUNK]);
  await qemuIo(second.uri, ['write -P 0x62 12M 64k']);
  assert.equal((await listBitmaps(second))[0]!.dirtyBytes, 3 * CHUNK);

  const back = await post(second, '/v1/members/return', { member: idB, location: b, minicopy: 'Required' });
  assert.equal(back.status, 200, `b cannot be returned after the restart: ${JSON.stringify(back.body)}`);
  assert.equal((back.body as { state: string }).state, 'Minicopy');
  assert.equal((await second.waitForEvent('MinicopyCompleted')).bytes, 3 * CHUNK);
  const st = await waitSteady(second);
  assert.deepEqual(st.members.map((m) => [m.path, m.state]), [[a, 'InSync'], [b, 'InSync']]);
  await qemuIo(second.uri, ['read -P 0x61 4M 128k', 'read -P 0x62 12M 64k']);
  await stopCleanly(second);
  await assertMembersIdentical([a, b], UNIT_BYTES);
  assert.deepEqual(await readMemberData(b, 12 * MiB, CHUNK), pattern(0x62, CHUNK));
});
