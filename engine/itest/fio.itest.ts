/**
 * fio through its nbd engine, with verify, on a shadow set whose members are loop devices; the verify
 * is repeated after a restart, and the members' devices are compared byte for byte.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { fio, type FioJob } from '@shadowset/testkit/engine/clients';
import { attachLoop } from '@shadowset/testkit/engine/daemons';
import { startEngine } from '@shadowset/testkit/engine/engine-process';
import { HEADER_BYTES, memberDataDifference, MiB, sparseFile, testScope } from '@shadowset/testkit/engine/support';

const MEMBER_BYTES = 128 * MiB;
const UNIT_BYTES = MEMBER_BYTES - HEADER_BYTES;

test('fio verify through the nbd engine on members on loop devices, again after a restart', async (t) => {
  const { scope, dir } = await testScope(t);
  const { dev: loopA } = await attachLoop(scope, await sparseFile(join(dir, 'a.img'), MEMBER_BYTES));
  const { dev: loopB } = await attachLoop(scope, await sparseFile(join(dir, 'b.img'), MEMBER_BYTES));

  const engine = await startEngine(scope, { dir, name: 'first', members: [loopA, loopB] });
  const st = await engine.status();
  assert.equal(st.size, UNIT_BYTES, 'size taken from the block devices');
  assert.deepEqual(st.members.map((m) => [m.path, m.state]), [[loopA, 'InSync'], [loopB, 'InSync']]);

  const jobs: FioJob[] = [
    { uri: engine.uri, rw: 'randwrite', size: '48m', bs: '4k', iodepth: 32, verify: 'crc32c' },
    { uri: engine.uri, rw: 'randwrite', offset: '56m', size: '56m', bs: '4k', iodepth: 8, verify: 'md5', extra: ['--bsrange=4k-256k'] },
  ];
  for (const [i, j] of jobs.entries()) {
    const r = await fio(dir, `job${i}`, { ...j, uri: engine.uri });
    assert.ok(r.writeBytes > 0 && r.readBytes >= r.writeBytes, `job${i} wrote and verified: ${r.writeBytes}/${r.readBytes}`);
  }
  assert.deepEqual(await engine.stop(), { code: 0, signal: null }, engine.tail());
  assert.equal(await memberDataDifference(loopA, loopB, UNIT_BYTES), null, 'loop devices differ after the stop');

  // The same members again: fio only verifies what the previous run wrote.
  const again = await startEngine(scope, { dir, name: 'again', members: [loopA, loopB] });
  for (const [i, j] of jobs.entries()) {
    const r = await fio(dir, `verify${i}`, { ...j, uri: again.uri, extra: [...(j.extra ?? []), '--verify_only'] });
    assert.ok(r.readBytes > 0, `verify${i} read something`);
  }
  assert.deepEqual(await again.stop(), { code: 0, signal: null }, again.tail());
});
