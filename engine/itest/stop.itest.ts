/**
 * Stopping: SIGTERM while a client keeps the unit busy must stop within seconds (in-flight requests
 * finish, the stop is recorded), not when the client decides to go away.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { fio } from '@shadowset/testkit/engine/clients';
import { startEngine } from '@shadowset/testkit/engine/engine-process';
import { HEADER_BYTES, memberDataDifference, MiB, sparseFile, testScope, until } from '@shadowset/testkit/engine/support';

const MEMBER_BYTES = 96 * MiB;
const UNIT_BYTES = MEMBER_BYTES - HEADER_BYTES;

test('SIGTERM under a busy client stops the set within seconds, cleanly', async (t) => {
  const { scope, dir } = await testScope(t);
  const a = await sparseFile(join(dir, 'a.img'), MEMBER_BYTES);
  const b = await sparseFile(join(dir, 'b.img'), MEMBER_BYTES);
  const engine = await startEngine(scope, { dir, members: [a, b] });

  const abort = new AbortController();
  scope.defer('stop fio', () => abort.abort());
  const busy = fio(dir, 'busy', {
    uri: engine.uri, rw: 'randwrite', size: '64m', bs: '4k', iodepth: 16, extra: ['--time_based', '--runtime=10'],
  }, { allowFail: true, signal: abort.signal });
  await until('fio to be writing', async () => ((await engine.status()).nbd.requests.WRITE ?? 0) > 2000 ? true : undefined);

  const t0 = Date.now();
  const exit = await Promise.race([
    engine.stop(),
    new Promise<null>((r) => setTimeout(() => r(null), 5000)),
  ]);
  const took = Date.now() - t0;
  abort.abort();
  await busy;
  assert.notEqual(exit, null, `the engine was still running ${took} ms after SIGTERM (the client kept it busy)\n${engine.tail(5)}`);
  assert.deepEqual(exit, { code: 0, signal: null }, engine.tail());
  assert.equal(engine.events('ShadowSetStopped').length, 1);
  assert.equal(await memberDataDifference(a, b, UNIT_BYTES), null, 'members differ after a clean stop under load');
});
