/**
 * A full copy from a source that is half zeros, with real files: the source's holes are not read (its
 * map from SEEK_DATA), and onto a fresh sparse file the zero runs are neither read on the target nor
 * written (the new member held no data when it joined), while
 * application writes — data into the source's zero runs and zeros over its data, ahead of the copy —
 * still land; onto a file holding old data every zero run is checked and zeroed. A source served over
 * NBD (the engine's own member server, nbdkit) says where its holes are through base:allocation, and
 * its holes are left unread too. Each ends with the members compared byte for byte.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { NbdClientBackend } from '@shadowset/engine/nbd-client';
import { qemuIo } from '@shadowset/testkit/engine/clients';
import { assertMembersIdentical, member, postOk, stopCleanly } from '@shadowset/testkit/engine/control-api';
import { nbdkitFile } from '@shadowset/testkit/engine/daemons';
import { startEngine } from '@shadowset/testkit/engine/engine-process';
import { serveDevice } from '@shadowset/testkit/engine/tls-support';
import { HEADER_BYTES, MiB, sparseFile, testScope } from '@shadowset/testkit/engine/support';

const MEMBER_BYTES = 64 * MiB;
const UNIT_BYTES = MEMBER_BYTES - HEADER_BYTES;

/**
 * A one-member set on a sparse file whose unit holds random data in every even MiB, zeros elsewhere.
 * `serve`: the member is that file served over NBD, at the URI it returns.
 */
async function halfZeroSet(t: test.TestContext, serve?: (scope: Awaited<ReturnType<typeof testScope>>['scope'], dir: string, file: string) => Promise<string>) {
  const { scope, dir } = await testScope(t);
  const a = await sparseFile(join(dir, 'a.img'), MEMBER_BYTES);
  const first = serve ? await serve(scope, dir, a) : a;
  const engine = await startEngine(scope, { dir, members: [first], allowLocations: [`${dir}/`, 'nbd://127.0.0.1:'] });
  const client = await NbdClientBackend.open(engine.uri);
  try {
    for (let off = 0; off < UNIT_BYTES; off += 2 * MiB) await client.write(randomBytes(MiB), off, false);
    await client.flush();
  } finally {
    await client.close();
  }
  return { scope, dir, a, engine };
}

test('full copy onto a fresh sparse file: the source\'s zero runs are not read on the target nor written, and writes ahead of the copy land', async (t) => {
  const { dir, a, engine } = await halfZeroSet(t);
  const b = await sparseFile(join(dir, 'b.img'), MEMBER_BYTES);
  // Slow enough that the writes below land ahead of the copy.
  await postOk(engine, '/v1/settings', { copyBytesPerSecond: 8 * MiB });
  const added = await postOk<{ id: string }>(engine, '/v1/members/add', { location: b });
  await engine.waitForEvent('CopyStarted');
  // Data into a zero run of the source, zeros over a data run, both far ahead of the copy.
  await qemuIo(engine.uri, ['write -P 0x3c 41M 512k', 'write -z 46M 1M']);
  const done = await engine.copied(added.id, 60_000);
  // The source's odd MiBs are holes (SEEK_DATA): left unread, all 28 but the one written above, which
  // the copy had to read (it was written after the source's map was taken, at CopyStarted).
  assert.equal(done.unreadBytes, 27 * MiB, 'the source\'s holes were left unread, the one written meanwhile was read');
  const st = await engine.status();
  assert.equal(member(st, b).state, 'InSync');
  assert.equal(member(st, b).counters.reads, 0, 'the new member was read although it held no data');
  await stopCleanly(engine);
  await assertMembersIdentical([a, b], UNIT_BYTES);
  // The zero runs stayed holes: about half the unit (plus the writes) is allocated on the new member.
  const allocated = (await stat(b)).blocks * 512;
  assert.ok(allocated < HEADER_BYTES + 0.6 * UNIT_BYTES, `${allocated} bytes allocated on the new member`);
});

test('full copy onto a file holding old data: every zero run of the source is zeroed on it', async (t) => {
  const { dir, a, engine } = await halfZeroSet(t);
  const c = join(dir, 'c.img');
  await writeFile(c, Buffer.alloc(MEMBER_BYTES, 0xee)); // an old file system, say: no metadata, data everywhere
  const added = await postOk<{ id: string }>(engine, '/v1/members/add', { location: c, confirmOverwrite: true });
  const done = await engine.copied(added.id, 60_000);
  assert.equal(done.unreadBytes, 28 * MiB, 'the source\'s holes were left unread');
  const st = await engine.status();
  assert.ok(member(st, c).counters.reads > 0, 'the zero runs were checked on the target');
  await stopCleanly(engine);
  await assertMembersIdentical([a, c], UNIT_BYTES);
});

test('full copy from a member served over NBD: its holes, told by base:allocation, are left unread (the engine\'s member server, nbdkit), and a write into one meanwhile lands', async (t) => {
  const servers: Array<[string, (scope: Awaited<ReturnType<typeof testScope>>['scope'], dir: string, file: string) => Promise<string>]> = [
    ['serve-device', async (scope, _dir, file) => `nbd://127.0.0.1:${(await serveDevice(scope, file, [])).port}/member`],
    ['nbdkit', async (scope, dir, file) => (await nbdkitFile(scope, dir, 'src', file)).uri],
  ];
  for (const [name, serve] of servers) {
    await t.test(name, async (t) => {
      const { dir, a, engine } = await halfZeroSet(t, serve);
      const b = await sparseFile(join(dir, 'b.img'), MEMBER_BYTES);
      await postOk(engine, '/v1/settings', { copyBytesPerSecond: 8 * MiB });
      const added = await postOk<{ id: string }>(engine, '/v1/members/add', { location: b });
      const started = await engine.waitForEvent('CopyStarted');
      assert.deepEqual(Object.values(started.sourceHoleBytes as Record<string, number>), [28 * MiB], `${name}: the source's map, over NBD`);
      await qemuIo(engine.uri, ['write -P 0x3c 41M 512k']);
      const done = await engine.copied(added.id, 60_000);
      assert.equal(done.unreadBytes, 27 * MiB, `${name}: the source's holes were left unread, the one written meanwhile was read`);
      assert.equal(member(await engine.status(), b).state, 'InSync');
      await stopCleanly(engine);
      await assertMembersIdentical([a, b], UNIT_BYTES);
    });
  }
});

test('full copy onto a fresh sparse file served over NBD: the engine\'s member server says it holds no data, so the zero runs are neither read nor written there', async (t) => {
  const { scope, dir, a, engine } = await halfZeroSet(t);
  const b = await sparseFile(join(dir, 'b.img'), MEMBER_BYTES);
  const uri = `nbd://127.0.0.1:${(await serveDevice(scope, b, [])).port}/member`;
  const added = await postOk<{ id: string }>(engine, '/v1/members/add', { location: uri });
  await engine.copied(added.id, 60_000);
  const st = await engine.status();
  assert.equal(member(st, uri).state, 'InSync');
  assert.equal(member(st, uri).counters.reads, 0, 'the new member was read although its server said it held no data');
  await stopCleanly(engine);
  await assertMembersIdentical([a, b], UNIT_BYTES);
  const allocated = (await stat(b)).blocks * 512;
  assert.ok(allocated < HEADER_BYTES + 0.6 * UNIT_BYTES, `${allocated} bytes allocated on the new member`);
});
