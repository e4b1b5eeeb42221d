/**
 * Every membership change while a verifying workload writes (issue: a returning member once missed the
 * writes made while its membership was being recorded). The real engine, a real NBD client, and one member
 * behind nbdkit's delay filter, so its metadata writes leave a wide window: remove with a write bitmap,
 * return (minicopy), add a new member (full copy), fault (its server killed), return after the fault,
 * demand a merge. After each, the workload stops, every block is read back through NBD and checked
 * against the acknowledged writes, and the members' data areas are compared byte for byte once steady;
 * at the end the member files themselves are checked against the model.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { NbdClientBackend } from '@shadowset/engine/nbd-client';
import { BLOCK, BlockWorkload } from '@shadowset/testkit/engine/block-workload';
import { assertMembersIdentical, member, postOk, stopCleanly, waitStatus, waitSteady } from '@shadowset/testkit/engine/control-api';
import { prng } from '@shadowset/testkit/prng';
import { nbdkitFile, type Daemon } from '@shadowset/testkit/engine/daemons';
import { startEngine, type EngineProcess } from '@shadowset/testkit/engine/engine-process';
import { exitOf, HEADER_BYTES, MiB, sparseFile, testScope, until } from '@shadowset/testkit/engine/support';

const MEMBER_BYTES = 40 * MiB;
const UNIT_BYTES = MEMBER_BYTES - HEADER_BYTES;
const BLOCKS = UNIT_BYTES / BLOCK;
const SEED = Number(process.env.MEMBERSHIP_SEED ?? Math.floor(Math.random() * 2 ** 31));

test('writes during every membership change: remove, return (minicopy), add, fault, return, merge lose nothing', { timeout: 10 * 60_000 }, async (t) => {
  t.diagnostic(`seed ${SEED} (MEMBERSHIP_SEED repeats the workload's choices)`);
  const { scope, dir } = await testScope(t);
  const a = await sparseFile(join(dir, 'a.img'), MEMBER_BYTES);
  const b = await sparseFile(join(dir, 'b.img'), MEMBER_BYTES);
  const c = await sparseFile(join(dir, 'c.img'), MEMBER_BYTES);
  const d = await sparseFile(join(dir, 'd.img'), MEMBER_BYTES);
  // c is slow: every write to it waits 40 ms, so recording its membership takes a while.
  const slowC = (): Promise<Daemon> => nbdkitFile(scope, dir, 'c', c, ['delay'], ['delay-write=40ms']);
  let kitC = await slowC();
  const cUri = kitC.uri!;
  const engine = await startEngine(scope, { dir, members: [a, b, cUri], allowLocations: [`${dir}/`, cUri], memberTimeoutSeconds: 5 });
  const idC = member(await engine.status(), cUri).id;
  const model = new BlockWorkload(BLOCKS, prng(SEED));
  const client = await NbdClientBackend.open(engine.uri);
  scope.defer('close the NBD client', () => client.close());
  let round = 0;
  const e0 = () => engine;
  const counts: string[] = [];

  /** Run `change` while the workload writes (from before it starts to a while after it returned). */
  async function underLoad<T>(what: string, change: (e: EngineProcess) => Promise<T>, after?: () => Promise<unknown>, hot?: { first: number; blocks: number }): Promise<T> {
    round++;
    let stop!: () => void;
    const stopped = new Promise<void>((r) => (stop = r));
    const running = model.run(client, { queueDepth: 8, readFraction: 0.1, fuaEvery: 20, flushEvery: 100, round, ...(hot ? { hot: { ...hot, share: 1 } } : {}) }, stopped);
    // The totals count finished runs; this run's writes show in the NBD server's counters.
    const writes = async () => (await e0().status()).nbd.requests.WRITE ?? 0;
    const base = await writes();
    await until(`${what}: writes under way`, async () => ((await writes()) > base + 20 ? true : undefined), 30_000);
    let result: T;
    let during = 0;
    try {
      result = await change(engine);
      if (after) await after();
      during = (await writes()) - base;
    } finally {
      // Keep writing a little after the change returned: those writes must reach the member too.
      await new Promise((r) => setTimeout(r, 300));
      stop();
      const ran = await running;
      counts.push(`${what}: ${ran.writesAcked} writes, ${during} of them before it completed`);
    }
    assert.deepEqual(model.problems, [], `${what}: the workload saw wrong data`);
    return result;
  }

  async function checkAll(what: string, members: string[]): Promise<void> {
    await model.verifyAll(client, what);
    assert.deepEqual(model.problems, [], `${what}: a block read back wrong`);
    await waitSteady(engine, 60_000);
    await client.flush();
    await assertMembersIdentical(members, UNIT_BYTES);
  }

  // 1. c leaves with a write bitmap, then writes are made while it is away.
  const removed = await underLoad('remove c', (e) => postOk<{ bitmap: string | null }>(e, '/v1/members/remove', { member: idC, minicopy: 'Required' }));
  assert.ok(removed.bitmap);
  // Writes while it is away stay in the first quarter of the unit ...
  const quarter = BLOCKS / 4;
  await underLoad('writes while c is away', () => new Promise((r) => setTimeout(r, 500)), undefined, { first: 0, blocks: quarter });
  // 2. ... and while c returns (slow metadata writes) they go to chunks its bitmap does not have yet:
  // a minicopy must still see them (it copies what the bitmap marks, or the member received them).
  const back = await underLoad('return c', (e) => postOk<{ state: string }>(e, '/v1/members/return', { member: idC, minicopy: 'Required' }),
    () => waitSteady(engine, 60_000), { first: 2 * quarter, blocks: 2 * quarter });
  assert.ok(['Minicopy', 'InSync'].includes(back.state), back.state);
  await checkAll('after the return', [a, b, c]);

  // 3. A new member is added (full copy) while writes go on.
  await underLoad('add d', (e) => postOk(e, '/v1/members/add', { location: d }), () => waitSteady(engine, 60_000));
  await checkAll('after the add', [a, b, c, d]);

  // 4. c's server dies under load: c is faulted (with a bitmap), writes go on; then it comes back.
  await underLoad('fault c', async (e) => {
    kitC.proc.kill('SIGKILL');
    await waitStatus(e, 'c to be faulted', (s) => member(s, cUri).state === 'Faulted', 30_000);
  });
  await exitOf(kitC.proc);
  // A killed nbdkit leaves its socket and pid file behind; the next one must not be taken for ready early.
  await rm(join(dir, 'c.nbdkit.sock'), { force: true });
  await rm(join(dir, 'c.nbdkit.pid'), { force: true });
  kitC = await slowC();
  await underLoad('return c after its fault', (e) => postOk(e, '/v1/members/return', { member: idC }), () => waitSteady(engine, 60_000));
  await checkAll('after the fault and return', [a, b, c, d]);

  // 5. A full merge demanded while writes go on.
  await underLoad('merge', (e) => postOk(e, '/v1/merge', { full: true }), () => waitSteady(engine, 60_000));
  await checkAll('after the merge', [a, b, c, d]);

  await stopCleanly(engine);
  for (const f of [a, b, c, d]) await model.verifyMember(f);
  assert.deepEqual(model.problems, []);
  assert.ok(model.totals.writesAcked > 500, `only ${model.totals.writesAcked} writes were acknowledged: the test proved little`);
  t.diagnostic(`${model.totals.writesAcked} writes acknowledged, ${model.totals.readsChecked} verifying reads; ${counts.join('; ')}`);
});
