/**
 * Members on other NBD servers (the manual's MSCP-served disks): one behind nbdkit, one behind qemu-nbd,
 * next to a plain file. Data written through the unit lands identically on all three.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { fio, nbdcopy, qemuIo } from '@shadowset/testkit/engine/clients';
import { nbdkitFile, qemuNbd } from '@shadowset/testkit/engine/daemons';
import { startEngine } from '@shadowset/testkit/engine/engine-process';
import { firstDifference, HEADER_BYTES, memberDataDifference, MiB, randomFile, sparseFile, testScope } from '@shadowset/testkit/engine/support';

const MEMBER_BYTES = 96 * MiB;
const UNIT_BYTES = MEMBER_BYTES - HEADER_BYTES;

test('members served by nbdkit and qemu-nbd next to a file member hold identical data', async (t) => {
  const { scope, dir } = await testScope(t);
  const f = await sparseFile(join(dir, 'file.img'), MEMBER_BYTES);
  const k = await sparseFile(join(dir, 'nbdkit.img'), MEMBER_BYTES);
  const q = await sparseFile(join(dir, 'qemu.img'), MEMBER_BYTES);
  const kit = await nbdkitFile(scope, dir, 'k', k);
  const qnbd = await qemuNbd(scope, dir, 'q', q);

  const engine = await startEngine(scope, { dir, members: [f, kit.uri, qnbd.uri] });
  const st = await engine.status();
  assert.equal(st.size, UNIT_BYTES);
  assert.deepEqual(st.members.map((m) => [m.path, m.state]), [[f, 'InSync'], [kit.uri, 'InSync'], [qnbd.uri, 'InSync']]);

  const src = join(dir, 'src.img');
  await randomFile(src, 24 * MiB);
  await nbdcopy(src, engine.uri);
  await fio(dir, 'mixed', { uri: engine.uri, rw: 'randwrite', offset: '32m', size: '40m', bs: '16k', iodepth: 16, verify: 'crc32c' });
  await qemuIo(engine.uri, ['write -P 0xe7 80M 1M', 'write -z 81M 1M', 'flush', 'read -P 0xe7 80M 1M', 'read -P 0 81M 1M']);
  // Every kind of member took the writes.
  const after = await engine.status();
  for (const m of after.members) assert.ok(m.counters.writes > 0, `${m.path} got writes`);

  assert.deepEqual(await engine.stop(), { code: 0, signal: null }, engine.tail());
  assert.equal(await firstDifference(src, 0, f, HEADER_BYTES, 24 * MiB), null, 'file member lacks the copied image');
  assert.equal(await memberDataDifference(f, k, UNIT_BYTES), null, 'nbdkit member differs');
  assert.equal(await memberDataDifference(f, q, UNIT_BYTES), null, 'qemu-nbd member differs');
});
