/**
 * Growing a running set (POST /v1/resize) on the real engine: a file member, a file served by our own
 * member server (serve-device) and, in the second test, a file behind nbdkit. Refused while a member is
 * small, naming it; after `truncate` it grows, new NBD connections see the new size, a connection opened
 * before keeps the size it was told, and the data is kept on every member.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { nbdinfo, qemuIo } from '@shadowset/testkit/engine/clients';
import { postOk, postRefused, readScb, waitSteady } from '@shadowset/testkit/engine/control-api';
import { nbdkitFile } from '@shadowset/testkit/engine/daemons';
import { startEngine } from '@shadowset/testkit/engine/engine-process';
import { HEADER_BYTES, memberDataDifference, MiB, sparseFile, terminate, testScope, until } from '@shadowset/testkit/engine/support';
import { serveDevice } from '@shadowset/testkit/engine/tls-support';

const OLD_MEMBER = 64 * MiB;
const NEW_MEMBER = 96 * MiB;
const OLD = OLD_MEMBER - HEADER_BYTES;
const NEW = NEW_MEMBER - HEADER_BYTES;

/** qemu-io fed commands one at a time on stdin: a client that stays connected across the resize. */
function interactiveQemuIo(uri: string) {
  const p = spawn('qemu-io', ['-f', 'raw', uri], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  p.stderr.setEncoding('utf8').on('data', (s: string) => (out += s));
  return {
    /** Run one command and resolve with what it printed (up to the next prompt). */
    async cmd(c: string): Promise<string> {
      const from = out.length;
      p.stdin.write(`${c}\n`);
      return until(`qemu-io to answer ${c}`, () => {
        const tail = out.slice(from);
        return /qemu-io> $/.test(tail) && tail.trim() !== 'qemu-io>' ? tail : undefined;
      });
    },
    stop: () => terminate(p, 3000),
  };
}

test('a running set grows after its members do: refused while one is small, then new connections see the new size', async (t) => {
  const { scope, dir } = await testScope(t);
  const a = await sparseFile(join(dir, 'a.img'), OLD_MEMBER);
  const s = await sparseFile(join(dir, 's.img'), OLD_MEMBER);
  const srv = await serveDevice(scope, s, []);
  const remote = `nbd://127.0.0.1:${srv.port}/member`;
  const engine = await startEngine(scope, { dir, members: [a, remote] });
  await qemuIo(engine.uri, ['write -P 0x31 0 1M', `write -P 0x32 ${OLD - MiB} 1M`, 'flush']);
  const client = interactiveQemuIo(engine.uri);
  t.after(() => client.stop());
  assert.match(await client.cmd('length'), /56 MiB/);

  // Neither member is large enough: both are named, nothing changes.
  const msg = await postRefused(engine, '/v1/resize', { size: NEW }, 409, 'ENG_MEMBER_TOO_SMALL');
  assert.match(msg, new RegExp(`${a} \\(${OLD} usable bytes\\)`));
  assert.match(msg, new RegExp(`${remote.replace(/[/.]/g, '\\$&')} \\(${OLD} usable bytes\\)`));
  const gen = (await engine.status()).generation;
  await postRefused(engine, '/v1/resize', { size: OLD - 4096 }, 400, 'ENG_INVALID_ARGUMENT');
  assert.equal((await engine.status()).generation, gen);

  await truncate(a, NEW_MEMBER);
  await truncate(s, NEW_MEMBER);
  // The member server learns its device's size within its poll: until then the engine says it is small.
  const answer = await until('the resize to be accepted', () => postOk<{ from: number; size: number; grown: boolean }>(engine, '/v1/resize', { size: NEW }), 15_000, 250);
  assert.deepEqual(answer, { from: OLD, size: NEW, grown: true });
  const st = await waitSteady(engine);
  assert.equal(st.size, NEW);
  assert.ok(st.generation > gen);
  assert.equal((await readScb(a)).size, NEW, 'the member records the new size');
  assert.equal((await nbdinfo(engine.uri)).size, NEW, 'a new connection sees the new size');

  // The client connected before keeps the size it was told at its handshake (NBD has no way to tell it).
  assert.match(await client.cmd('length'), /56 MiB/);
  assert.match(await client.cmd(`write -P 0x33 ${OLD} 4k`), /Input\/output error|out of range|beyond|failed/i);
  await client.stop();

  await qemuIo(engine.uri, [`write -P 0x34 ${NEW - MiB} 1M`, 'flush', 'read -P 0x31 0 1M', `read -P 0x32 ${OLD - MiB} 1M`, `read -P 0x34 ${NEW - MiB} 1M`]);
  assert.deepEqual(await engine.stop(), { code: 0, signal: null }, engine.tail());
  assert.equal(await memberDataDifference(a, s, NEW), null, 'the members differ after growing');
});

test('an NBD member whose server holds the open connection to its old size (nbdkit): the growth is refused with a clear error, nothing changed', async (t) => {
  const { scope, dir } = await testScope(t);
  const a = await sparseFile(join(dir, 'a.img'), OLD_MEMBER);
  const k = await sparseFile(join(dir, 'k.img'), OLD_MEMBER);
  const kit = await nbdkitFile(scope, dir, 'k', k);
  const engine = await startEngine(scope, { dir, members: [a, kit.uri] });
  await truncate(a, NEW_MEMBER);
  await truncate(k, NEW_MEMBER);
  const gen = (await engine.status()).generation;
  // nbdkit checks requests against the size it told the connection: the engine finds out by reading the
  // new last block through it, and refuses before anything is recorded.
  const msg = await postRefused(engine, '/v1/resize', { size: NEW }, 502, 'ENG_IO');
  assert.match(msg, new RegExp(`now exports ${NEW_MEMBER} bytes, but its server refuses requests past ${OLD_MEMBER} on the open connection`));
  assert.match(msg, /remove the member and return it/);
  const st = await engine.status();
  assert.equal(st.size, OLD);
  assert.equal(st.generation, gen, 'nothing was recorded');
  assert.deepEqual(st.members.map((m) => m.state), ['InSync', 'InSync'], 'the refusal removed no member');
  assert.deepEqual(await engine.stop(), { code: 0, signal: null }, engine.tail());
});
