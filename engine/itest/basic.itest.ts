/**
 * The engine on two file members, driven by real NBD clients: nbdinfo, nbdcopy, qemu-io, qemu-img.
 * What the clients write is read back by content, the HTTP API reports what happened, SIGTERM stops the
 * set cleanly, and afterwards both members' data areas are byte-identical and hold exactly the unit.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { nbdcopy, nbdinfo, qemuImgSame, qemuIo } from '@shadowset/testkit/engine/clients';
import { startEngine } from '@shadowset/testkit/engine/engine-process';
import { firstDifference, HEADER_BYTES, memberDataDifference, MiB, randomFile, readAt, sparseFile, testScope } from '@shadowset/testkit/engine/support';

const MEMBER_BYTES = 128 * MiB;
const UNIT_BYTES = MEMBER_BYTES - HEADER_BYTES;

test('two file members: clients read back what they wrote, API reports it, SIGTERM leaves identical members', async (t) => {
  const { scope, dir } = await testScope(t);
  const a = await sparseFile(join(dir, 'a.img'), MEMBER_BYTES);
  const b = await sparseFile(join(dir, 'b.img'), MEMBER_BYTES);
  const engine = await startEngine(scope, { dir, members: [a, b], extraArgs: ['--listen', '127.0.0.1:0'] });

  // The export as NBD clients see it, on the unix socket and on TCP.
  const info = await nbdinfo(engine.uri);
  assert.equal(info.size, UNIT_BYTES);
  assert.ok(info.canFlush && info.canFua && !info.readOnly);
  const ready = engine.events('EngineReady')[0]!;
  assert.equal((await nbdinfo(`nbd://${String(ready.tcp)}/shadow`)).size, UNIT_BYTES);

  const st0 = await engine.status();
  assert.equal(st0.size, UNIT_BYTES);
  assert.equal(st0.generation, 1);
  assert.equal(st0.state, 'Steady');
  assert.match(info.description, new RegExp(st0.setId));
  assert.deepEqual(st0.members.map((m) => [m.path, m.state]), [[a, 'InSync'], [b, 'InSync']]);

  // nbdcopy a random image in; qemu-io patterns (aligned, unaligned, zeroes) after it.
  const src = join(dir, 'src.img');
  const data = await randomFile(src, 32 * MiB);
  await nbdcopy(src, engine.uri);
  await qemuIo(engine.uri, [
    'write -P 0x5a 40M 1M',
    'write -P 0xc3 50000001 12345',
    'write -P 0x77 60M 2M',
    'write -z 60M 64k',
    'flush',
  ]);
  await qemuIo(engine.uri, [
    'read -P 0x5a 40M 1M',
    'read -P 0xc3 50000001 12345',
    'read -P 0 50012346 4096',
    'read -P 0 60M 64k',
    'read -P 0x77 61504k 1984k',
  ]);

  // Read the whole unit back with nbdcopy and compare it with qemu-img over NBD as well.
  const back = join(dir, 'back.img');
  await nbdcopy(engine.uri, back);
  assert.equal(await firstDifference(src, 0, back, 0, data.length), null, 'nbdcopy read back differs from what it wrote');
  assert.deepEqual(await readAt(back, 40 * MiB, 4), Buffer.alloc(4, 0x5a));
  assert.ok(await qemuImgSame(back, engine.uri), 'qemu-img compare: the unit differs from its copy');

  const st1 = await engine.status();
  assert.equal(st1.members.every((m) => m.state === 'InSync'), true);
  assert.ok((st1.nbd.requests.WRITE ?? 0) > 0 && (st1.nbd.requests.FLUSH ?? 0) > 0, JSON.stringify(st1.nbd));
  for (const m of st1.members) assert.ok(m.counters.writeBytes >= data.length, `member ${m.path} saw every write`);

  // /healthz and /metrics (Prometheus text exposition).
  const health = await engine.get('/healthz');
  assert.equal(health.status, 200);
  assert.deepEqual(JSON.parse(health.body), { ok: true });
  const metrics = await engine.get('/metrics');
  assert.equal(metrics.status, 200);
  assert.match(metrics.contentType, /^text\/plain; version=0\.0\.4/);
  const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? -?[0-9.e+-]+$/;
  const typed = new Set<string>();
  for (const line of metrics.body.trimEnd().split('\n')) {
    const type = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (type) typed.add(type[1]!);
    else if (!line.startsWith('# HELP ')) {
      const m = sample.exec(line);
      assert.ok(m, `not a Prometheus sample line: ${line}`);
      assert.ok(typed.has(m[1]!), `sample before its # TYPE: ${line}`);
    }
  }
  assert.match(metrics.body, new RegExp(`^shadow_members\\{set="${st1.setId}",state="InSync"\\} 2$`, 'm'));
  assert.match(metrics.body, new RegExp(`^shadow_virtual_unit_bytes\\{set="${st1.setId}"\\} ${UNIT_BYTES}$`, 'm'));
  assert.match(metrics.body, /^shadow_member_written_bytes_total\{[^}]*\} [1-9]\d*$/m);

  // SIGTERM: clean exit, stop recorded.
  const exit = await engine.stop();
  assert.deepEqual(exit, { code: 0, signal: null }, engine.tail());
  assert.equal(engine.events('ShadowSetStopped').length, 1);

  // Both members hold exactly the unit's bytes.
  assert.equal(await memberDataDifference(a, b, UNIT_BYTES), null, 'member data areas differ');
  assert.equal(await firstDifference(back, 0, a, HEADER_BYTES, UNIT_BYTES), null, 'member a differs from the unit as read');
});
