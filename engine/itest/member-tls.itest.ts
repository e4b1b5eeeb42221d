/**
 * Member servers serve a raw device read/write, so only their set's engine may reach them: TLS 1.3 with
 * the set's pre-shared key, checked against real peers — libnbd (nbdinfo, nbdcopy) as a client of
 * `serve-device --psk-file`, and nbdkit --tls-psk as a member of the engine. Plain NBD, a wrong key or an
 * unknown identity are refused and see no data.
 */
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { nbdcopy, qemuIo } from '@shadowset/testkit/engine/clients';
import { readScb } from '@shadowset/testkit/engine/control-api';
import { nbdkitTlsPsk } from '@shadowset/testkit/engine/daemons';
import { ENGINE_BIN, startEngine, startEngineExpectingFailure } from '@shadowset/testkit/engine/engine-process';
import { freePort, pskFile, serveDevice } from '@shadowset/testkit/engine/tls-support';
import { HEADER_BYTES, memberDataDifference, MiB, randomFile, run, sha256File, sparseFile, testScope, until } from '@shadowset/testkit/engine/support';

const MEMBER_BYTES = 48 * MiB;
const UNIT_BYTES = MEMBER_BYTES - HEADER_BYTES;

/** Whether a file a refused client wrote to holds any of `data` (it must not exist, or be empty). */
async function leaked(file: string, data: Buffer): Promise<boolean> {
  const s = await stat(file).catch(() => null);
  if (!s || s.size === 0) return false;
  return (await readFile(file)).subarray(0, data.length).equals(data);
}

test('serve-device --psk-file: libnbd with the set key reads it; plain NBD, a wrong key and an unknown identity are refused and see no data', async (t) => {
  const { scope, dir } = await testScope(t);
  const dev = join(dir, 'dev.img');
  const data = await randomFile(dev, 4 * MiB);
  const key = await pskFile(dir, 'set', 'set-a');
  const srv = await serveDevice(scope, dev, ['--psk-file', key.file]);
  const base = `127.0.0.1:${srv.port}/member`;

  const good = `nbds://set-a@${base}?tls-psk-file=${key.file}`;
  assert.equal(Number((await run('nbdinfo', ['--size', good])).stdout.trim()), 4 * MiB);
  await nbdcopy(good, join(dir, 'copy.bin'));
  assert.ok((await readFile(join(dir, 'copy.bin'))).equals(data), 'the right key reads the device');

  const wrong = await pskFile(dir, 'wrong', 'set-a');
  const stranger = await pskFile(dir, 'stranger', 'set-b', key.keyHex);
  const refused: [string, string, RegExp][] = [
    ['plain', `nbd://${base}`, /TLS/],
    ['wrong key', `nbds://set-a@${base}?tls-psk-file=${wrong.file}`, /TLS|handshake|alert/i],
    ['unknown identity', `nbds://set-b@${base}?tls-psk-file=${stranger.file}`, /TLS|handshake|alert/i],
  ];
  for (const [what, uri, why] of refused) {
    const info = await run('nbdinfo', ['--size', uri], { allowFail: true });
    assert.notEqual(info.code, 0, `${what}: nbdinfo must fail`);
    assert.match(info.stderr, why, what);
    const out = join(dir, `leak-${what.replace(/ /g, '-')}.bin`);
    const copy = await run('nbdcopy', [uri, out], { allowFail: true });
    assert.notEqual(copy.code, 0, `${what}: nbdcopy must fail`);
    assert.ok(!(await leaked(out, data.subarray(0, MiB))), `${what}: no device data reached the client`);
  }
  // The server logs a refusal after the client has seen it fail: wait (bounded) for the fourth line.
  const refusals = () => (srv.output().match(/"event":"NbdTlsRefused"/g) ?? []).length;
  await until('four refusals in the member server\'s log', () => (refusals() >= 4 ? true : undefined), 10_000).catch(() => undefined);
  assert.ok(refusals() >= 4, `refusals are logged\n${srv.output()}`);
});

test('serve-device refuses a non-loopback --listen without --psk-file, and a bad key file, before opening the device', async (t) => {
  const { scope, dir } = await testScope(t);
  void scope;
  const dev = await sparseFile(join(dir, 'dev.img'), MiB);
  const open = await run('node', [ENGINE_BIN, 'serve-device', '--device', dev, '--listen', '0.0.0.0:0'], { allowFail: true });
  assert.equal(open.code, 1);
  assert.match(open.stderr, /not a loopback address.*--psk-file/);
  const short = await pskFile(dir, 'short', 'set-a', 'ab'.repeat(15));
  const bad = await run('node', [ENGINE_BIN, 'serve-device', '--device', join(dir, 'missing.img'), '--listen', '0.0.0.0:0', '--psk-file', short.file], { allowFail: true });
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /15 bytes/, 'the key file is refused before the (missing) device is opened');
});

test('the engine mirrors onto nbds:// members (its own member server and nbdkit --tls-psk); with a wrong key they are left out unread and unwritten, without a key the start is refused', async (t) => {
  const { scope, dir } = await testScope(t);
  const a = await sparseFile(join(dir, 'a.img'), MEMBER_BYTES);
  const m1 = await sparseFile(join(dir, 'm1.img'), MEMBER_BYTES);
  const m2 = await sparseFile(join(dir, 'm2.img'), MEMBER_BYTES);
  const key = await pskFile(dir, 'set', 'set-a');
  const srv = await serveDevice(scope, m1, ['--psk-file', key.file]);
  const kit = await nbdkitTlsPsk(scope, dir, 'kit', m2, key.file, await freePort());
  const members = [a, `nbds://127.0.0.1:${srv.port}/member`, kit.uri];

  const engine = await startEngine(scope, { dir, members, extraArgs: ['--member-psk-file', key.file] });
  assert.deepEqual((await engine.status()).members.map((m) => m.state), ['InSync', 'InSync', 'InSync']);
  const src = join(dir, 'src.bin');
  await randomFile(src, 8 * MiB);
  await nbdcopy(src, engine.uri);
  await qemuIo(engine.uri, ['write -P 0x5e 20M 1M', 'flush', 'read -P 0x5e 20M 1M']);
  assert.deepEqual(await engine.stop(), { code: 0, signal: null }, engine.tail());
  assert.equal(await memberDataDifference(a, m1, UNIT_BYTES), null, 'the member server\'s device differs');
  assert.equal(await memberDataDifference(a, m2, UNIT_BYTES), null, 'the nbdkit member differs');

  // No key at all is a bad argument: the start is refused and nothing is recorded anywhere.
  const generation = (await readScb(a)).generation;
  const sums = await Promise.all([a, m1, m2].map(sha256File));
  const refused = await startEngineExpectingFailure(scope, { dir, name: 'nokey', members });
  assert.equal(refused.exit.code, 1, refused.tail());
  assert.match(refused.stderr, /needs a pre-shared key/);
  assert.equal((await readScb(a)).generation, generation, 'no new generation was recorded');
  // Another set's key: the member servers cannot be reached (as when an address now belongs to another
  // set's server), so the set starts without them; they are not read or written, and status says why.
  const other = await pskFile(dir, 'other', 'set-a');
  const wrong = await startEngine(scope, { dir, name: 'wrongkey', members, extraArgs: ['--member-psk-file', other.file] });
  const st = await wrong.status();
  assert.deepEqual(st.members.map((m) => m.state), ['InSync', 'Removed', 'Removed']);
  for (const m of st.members.slice(1)) assert.match(m.reason, /could not be opened at start: cannot attach NBD member nbds:.*(TLS handshake failed|closed during the TLS handshake)/);
  assert.deepEqual(await Promise.all([m1, m2].map(sha256File)), sums.slice(1), 'a member behind the wrong key changed');
  assert.deepEqual(await wrong.stop(), { code: 0, signal: null }, wrong.tail());
  assert.deepEqual(await Promise.all([m1, m2].map(sha256File)), sums.slice(1), 'no member server\'s device changed');
});
