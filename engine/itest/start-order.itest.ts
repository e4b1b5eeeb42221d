/**
 * A start that cannot have its listeners must change nothing and end (issue 12): --listen on the --http
 * port is refused at parsing, and a port another process holds fails the start before any member is
 * opened — the members' recorded generation stays what it was, and the process exits unless
 * --hold-on-failure keeps it answering why.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { readScb, stopCleanly } from '@shadowset/testkit/engine/control-api';
import { spawnEngine, startEngine, startEngineExpectingFailure } from '@shadowset/testkit/engine/engine-process';
import { MiB, sha256File, sparseFile, testScope, type Scope } from '@shadowset/testkit/engine/support';

const MEMBER_BYTES = 32 * MiB;

/** Two members of a set that started once and stopped cleanly: generation and bytes to compare with. */
async function formerSet(scope: Scope, dir: string): Promise<{ members: string[]; generation: number; sums: string[] }> {
  const members = [await sparseFile(join(dir, 'a.img'), MEMBER_BYTES), await sparseFile(join(dir, 'b.img'), MEMBER_BYTES)];
  await stopCleanly(await startEngine(scope, { dir, name: 'once', members }));
  return { members, generation: (await readScb(members[0]!)).generation, sums: await Promise.all(members.map(sha256File)) };
}

async function assertUnchanged(set: { members: string[]; generation: number; sums: string[] }): Promise<void> {
  for (const m of set.members) assert.equal((await readScb(m)).generation, set.generation, `${m}: the generation was bumped`);
  assert.deepEqual(await Promise.all(set.members.map(sha256File)), set.sums, 'a member changed');
}

async function holdPort(scope: Scope): Promise<number> {
  const s: Server = createServer((c) => c.destroy());
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  scope.defer('close the port holder', () => new Promise<void>((r) => s.close(() => r())));
  return (s.address() as { port: number }).port;
}

test('--listen on the --http port is refused at parsing: no member touched, the process exits', async (t) => {
  const { scope, dir } = await testScope(t);
  const set = await formerSet(scope, dir);
  // The engine's own --http 127.0.0.1:0 comes first; a fixed port for both comes after it and wins.
  const e = await startEngineExpectingFailure(scope, { dir, name: 'clash', members: set.members, extraArgs: ['--http', '127.0.0.1:18099', '--listen', '127.0.0.1:18099'] });
  assert.equal(e.exit.code, 2, e.tail());
  assert.match(e.stderr, /same port/);
  await assertUnchanged(set);
});

test('a TCP port held by another process fails the start before any member is opened, and the process exits', async (t) => {
  const { scope, dir } = await testScope(t);
  const set = await formerSet(scope, dir);
  const taken = await holdPort(scope);
  const e = await startEngineExpectingFailure(scope, { dir, name: 'taken', members: set.members, extraArgs: ['--listen', `127.0.0.1:${taken}`] });
  assert.equal(e.exit.code, 1, e.tail());
  assert.match(e.stderr, /cannot listen.*EADDRINUSE/);
  assert.equal(e.events('ShadowSetMounted').length, 0, 'no member was opened');
  await assertUnchanged(set);
});

test('--hold-on-failure keeps answering the refusal (token required) until SIGTERM; members unchanged', async (t) => {
  const { scope, dir } = await testScope(t);
  const set = await formerSet(scope, dir);
  const taken = await holdPort(scope);
  const held = spawnEngine({ dir, name: 'held', members: set.members, token: 'h'.repeat(48), extraArgs: ['--listen', `127.0.0.1:${taken}`, '--hold-on-failure'] });
  scope.defer('kill engine', () => held.kill());
  held.httpAddress = String((await held.waitForEvent('HoldingFailure')).http);
  const anon = await fetch(`http://${held.httpAddress}/v1/status`);
  assert.equal(anon.status, 401, 'the failure listener needs the token too');
  const r = await held.get('/v1/status');
  assert.equal(r.status, 400, r.body);
  assert.match(r.body, /"code":"ENG_INVALID_ARGUMENT".*cannot listen/);
  const health = await fetch(`http://${held.httpAddress}/healthz`);
  assert.equal(health.status, 400, 'health, open to probes, says the engine is not up');
  assert.doesNotMatch(await health.text(), /EADDRINUSE/, 'and not why');
  await assertUnchanged(set);
  assert.deepEqual(await held.stop(), { code: 1, signal: null });
});
