/**
 * Hostile input to the control API of a real engine (issue 12, item 5): requests without the token or
 * with a wrong one, to every route, change nothing; member locations outside what the engine was given
 * are refused with 403 and never opened — host devices, files, `..` escapes, other NBD servers — and
 * reconstruct (--include) does not open recorded paths outside them either.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { member, postOk, postRefused, readScb, stopCleanly } from '@shadowset/testkit/engine/control-api';
import { startEngine, type EngineProcess } from '@shadowset/testkit/engine/engine-process';
import { MiB, sha256File, sparseFile, testScope, until, type Scope } from '@shadowset/testkit/engine/support';

const MEMBER_BYTES = 32 * MiB;
const TOKEN = 'ctl-'.padEnd(44, 'x7');

/** What a request must not change: the set as status shows it, and every member's recorded generation. */
async function snapshot(e: EngineProcess, files: string[]): Promise<unknown> {
  const s = await e.status();
  return {
    generation: s.generation, state: s.state, settings: s.settings, bitmaps: s.bitmaps,
    members: s.members.map((m) => [m.id, m.path, m.state]), recorded: await Promise.all(files.map(async (f) => (await readScb(f)).generation)),
  };
}

test('control API with a token: no token or a wrong one gets 401 on every route, and nothing changes', async (t) => {
  const { scope, dir } = await testScope(t);
  const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((n) => sparseFile(join(dir, `${n}.img`), MEMBER_BYTES))) as [string, string, string];
  const engine = await startEngine(scope, { dir, members: [a, b], token: TOKEN, allowLocations: [`${dir}/`] });
  const idB = member(await engine.status(), b).id;
  const before = await snapshot(engine, [a, b]);
  const cSum = await sha256File(c);
  const routes: [string, string, unknown][] = [
    ['GET', '/v1/status', null], ['GET', '/metrics', null], ['GET', '/v1/bitmaps', null], ['GET', '/v1/nowhere', null],
    ['POST', '/v1/members/add', { location: c, noCopy: true, readCost: 0, confirmOverwrite: true }],
    ['POST', '/v1/members/remove', { member: idB, minicopy: 'Never' }],
    ['POST', '/v1/members/return', { member: idB, location: c }],
    ['POST', '/v1/bitmaps/delete', { id: 'x' }], ['POST', '/v1/merge', { full: true }],
    ['POST', '/v1/settings', { copyBytesPerSecond: 1, memberTimeoutSeconds: 1 }],
  ];
  const wrong: (string | undefined)[] = [undefined, `Bearer ${TOKEN.slice(0, -1)}y`, `Bearer ${TOKEN}x`, `Bearer ${TOKEN.slice(1)}`, `Basic ${TOKEN}`, TOKEN];
  for (const [method, path, body] of routes) {
    for (const auth of wrong) {
      const res = await fetch(`http://${engine.httpAddress}${path}`, {
        method, headers: { 'content-type': 'application/json', ...(auth ? { authorization: auth } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}),
      });
      const answer = await res.json() as { code: string };
      assert.equal(res.status, 401, `${method} ${path} with ${auth ?? 'no token'}`);
      assert.equal(answer.code, 'ENG_UNAUTHORIZED');
    }
  }
  assert.equal((await fetch(`http://${engine.httpAddress}/healthz`)).status, 200, 'health needs no token');
  assert.deepEqual(await snapshot(engine, [a, b]), before, 'nothing changed');
  assert.equal(await sha256File(c), cSum, 'the named file was not touched');
  for (const ev of ['MemberAdded', 'MemberRemoved', 'MemberReturned', 'MergeDemanded']) assert.equal(engine.events(ev).length, 0, ev);
  await until('the refusals in the log', () => (engine.events('ApiUnauthorized').length >= routes.length * wrong.length ? true : undefined));
  // The operator's token works.
  assert.equal((await postOk(engine, '/v1/settings', { copyBytesPerSecond: 65536 })).copyBytesPerSecond, 65536);
  await stopCleanly(engine);
});

/** A unix-socket and a TCP listener that count who connects: an NBD location pointing there must not be opened. */
async function traps(scope: Scope, dir: string): Promise<{ socket: string; port: number; connections: () => number }> {
  let n = 0;
  const servers = [createServer((c) => (n++, c.destroy())), createServer((c) => (n++, c.destroy()))];
  const socket = join(dir, 'outside', 'trap.sock');
  await new Promise<void>((r) => servers[0]!.listen(socket, () => r()));
  await new Promise<void>((r) => servers[1]!.listen(0, '127.0.0.1', () => r()));
  scope.defer('close the traps', () => Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r())))));
  return { socket, port: (servers[1]!.address() as { port: number }).port, connections: () => n };
}

test('member locations: host paths, escapes from the allowed prefix and other NBD servers get 403 and are never opened', async (t) => {
  const { scope, dir } = await testScope(t);
  const m = join(dir, 'm');
  await mkdir(m);
  await mkdir(join(dir, 'outside'));
  const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((n) => sparseFile(join(m, `${n}.img`), MEMBER_BYTES))) as [string, string, string];
  const decoy = await sparseFile(join(dir, 'outside', 'decoy.img'), MEMBER_BYTES);
  const trap = await traps(scope, dir);
  const engine = await startEngine(scope, { dir, members: [a, b], allowLocations: [`${m}/`, '/dev/shadow/'] });
  const before = await snapshot(engine, [a, b]);
  const decoySum = await sha256File(decoy);
  // Host paths are sent without confirmOverwrite: even a broken check could not write them.
  const hostile: [string, boolean][] = [
    ['/dev/sda', false], ['/etc/passwd', false], ['/dev/shadow/../sda', false], ['/dev/shadow/../../etc/shadow', false],
    [`${m}/../outside/decoy.img`, true], [`${m}//../outside/decoy.img`, true], [decoy, true], ['outside/decoy.img', true], [`${m}`, true],
    ['nbd+unix:///x?socket=/run/shadow-itest-none.sock', true], [`nbd+unix:///x?socket=${trap.socket}`, true], [`nbd+unix:///?socket=${m}/../outside/trap.sock`, true],
    [`nbd://127.0.0.1:${trap.port}/x`, true], [`nbds://127.0.0.1:${trap.port}/x`, true], [`file://${decoy}`, true],
  ];
  for (const [location, confirmOverwrite] of hostile) {
    const msg = await postRefused(engine, '/v1/members/add', { location, noCopy: true, readCost: 0, confirmOverwrite }, 403, 'ENG_LOCATION_NOT_ALLOWED');
    assert.match(msg, /not allowed/);
  }
  // A removed member may not come back from somewhere else either.
  const idB = member(await engine.status(), b).id;
  await postOk(engine, '/v1/members/remove', { member: idB, minicopy: 'Optional' });
  const removed = await snapshot(engine, [a, b]);
  for (const [location] of hostile) await postRefused(engine, '/v1/members/return', { member: idB, location }, 403, 'ENG_LOCATION_NOT_ALLOWED');
  assert.deepEqual(await snapshot(engine, [a, b]), removed, 'refused returns changed nothing');
  assert.equal(trap.connections(), 0, 'no NBD location outside the allowed ones was connected to');
  assert.equal(await sha256File(decoy), decoySum, 'the decoy outside the prefix was not touched');

  // What is allowed still works: b returns from its own path (spelled differently), c is added under the prefix.
  assert.equal((await postOk<{ state: string }>(engine, '/v1/members/return', { member: idB, location: `${m}//./b.img` })).state, 'Minicopy');
  assert.equal((await postOk<{ state: string }>(engine, '/v1/members/add', { location: c })).state, 'FullCopy');
  const after = await until('c in the set', async () => {
    const s = await engine.status();
    return s.members.length === 3 ? s : undefined;
  });
  assert.deepEqual(after.members.map((x) => x.path), [a, `${m}/b.img`, c]);
  assert.ok(after.generation > (before as { generation: number }).generation);
  await stopCleanly(engine);
});

test('reconstruct (--include) opens recorded paths only where the engine may', async (t) => {
  const { scope, dir } = await testScope(t);
  const files = await Promise.all(['a', 'b', 'c'].map((n) => sparseFile(join(dir, `${n}.img`), MEMBER_BYTES))) as [string, string, string];
  await stopCleanly(await startEngine(scope, { dir, name: 'first', members: files }));
  const sums = await Promise.all(files.slice(1).map(sha256File));
  // Only a is given and no prefix: b and c are recorded on a, but may not be opened.
  const second = await startEngine(scope, { dir, name: 'second', members: [files[0]], extraArgs: ['--include'] });
  const missing = second.events('IncludeMemberMissing');
  assert.deepEqual(missing.map((l) => l.path).sort(), files.slice(1).sort(), second.tail());
  for (const l of missing) assert.match(String(l.err), /not allowed/);
  assert.equal(second.events('IncludeMemberFound').length, 0);
  assert.deepEqual(await Promise.all(files.slice(1).map(sha256File)), sums, 'b and c were not touched');
  await stopCleanly(second);
});
