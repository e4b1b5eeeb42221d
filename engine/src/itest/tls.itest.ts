// NBD over TLS on the engine's TCP listener: nbdinfo and nbdcopy over nbds://, a plain TCP client refused
// before anything is negotiated, the local unix socket still plain.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { randomFile, run, sparseFile, testScope, MiB, HEADER_BYTES, memberDataDifference } from './support.js';
import { startEngine } from './engine-process.js';

const MEMBER_BYTES = 48 * MiB;

test('TLS: nbds:// works end to end, plain TCP is refused, the unix socket stays plain', async (t) => {
  const { scope, dir } = await testScope(t);
  const a = await sparseFile(join(dir, 'a.img'), MEMBER_BYTES);
  const b = await sparseFile(join(dir, 'b.img'), MEMBER_BYTES);
  const certs = join(dir, 'certs');
  await run('mkdir', ['-p', certs]);
  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-keyout', join(certs, 'key.pem'), '-out', join(certs, 'ca-cert.pem'), '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1']);
  const engine = await startEngine(scope, {
    dir, members: [a, b],
    extraArgs: ['--listen', '127.0.0.1:0', '--tls-cert', join(certs, 'ca-cert.pem'), '--tls-key', join(certs, 'key.pem')],
  });
  const tcp = String(engine.events('EngineReady')[0]?.tcp);
  assert.match(tcp, /^127\.0\.0\.1:\d+$/);
  const secure = `nbds://${tcp}/shadow?tls-certificates=${certs}`;
  const info = await run('nbdinfo', ['--json', secure]);
  assert.equal(JSON.parse(info.stdout).exports[0]['export-size'], MEMBER_BYTES - HEADER_BYTES);
  assert.match(info.stdout, /"TLS": true|"tls": true|TLS/i);

  const src = await randomFile(join(dir, 'src.bin'), 4 * MiB);
  await run('nbdcopy', ['--flush', join(dir, 'src.bin'), secure]);
  await run('nbdcopy', [secure, join(dir, 'back.bin')]);
  const back = await run('cmp', ['-n', String(src.length), join(dir, 'src.bin'), join(dir, 'back.bin')], { allowFail: true });
  assert.equal(back.code, 0, 'what went in over TLS comes back');

  const plain = await run('nbdinfo', ['--size', `nbd://${tcp}/shadow`], { allowFail: true });
  assert.notEqual(plain.code, 0);
  assert.match(plain.stderr, /requires TLS/);
  const local = await run('nbdinfo', ['--size', engine.uri]);
  assert.equal(Number(local.stdout.trim()), MEMBER_BYTES - HEADER_BYTES);
  await engine.stop();
  assert.equal(await memberDataDifference(a, b, MEMBER_BYTES - HEADER_BYTES), null);
});

test('TLS: an unusable certificate is refused before any member is touched', async (t) => {
  const { scope, dir } = await testScope(t);
  const a = await sparseFile(join(dir, 'a.img'), MEMBER_BYTES);
  const r = await run('node', [new URL('../../bin/shadow-engine.js', import.meta.url).pathname, 'serve', '--member', a, '--socket', join(dir, 's'),
    '--listen', '127.0.0.1:0', '--tls-cert', join(dir, 'missing.pem'), '--tls-key', join(dir, 'missing.pem')], { allowFail: true });
  void scope;
  assert.equal(r.code, 1);
  assert.match(r.stderr, /TLS certificate or key unusable/);
  const head = await run('od', ['-An', '-c', '-N', '8', a]);
  assert.doesNotMatch(head.stdout, /S\s+H\s+D\s+W/, 'no metadata was written');
});
