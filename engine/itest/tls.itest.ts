// NBD over TLS on the engine's TCP listener: nbdinfo and nbdcopy over nbds://, a plain TCP client refused
// before anything is negotiated, the local unix socket still plain. Then the two authenticated modes a
// non-loopback export needs — a pre-shared key, or x509 with a client certificate from a given CA — with
// libnbd and qemu as clients, and the starts that are refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomFile, run, sparseFile, testScope, until, MiB, HEADER_BYTES, memberDataDifference, type RunResult } from '@shadowset/testkit/engine/support';
import { ENGINE_BIN, startEngine, type EngineProcess } from '@shadowset/testkit/engine/engine-process';
import { makePki, pskFile, starttlsProbe } from '@shadowset/testkit/engine/tls-support';

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
  const r = await run('node', [ENGINE_BIN, 'serve', '--member', a, '--socket', join(dir, 's'),
    '--listen', '127.0.0.1:0', '--tls-cert', join(dir, 'missing.pem'), '--tls-key', join(dir, 'missing.pem')], { allowFail: true });
  void scope;
  assert.equal(r.code, 1);
  assert.match(r.stderr, /TLS certificate or key unusable/);
  const head = await run('od', ['-An', '-c', '-N', '8', a]);
  assert.doesNotMatch(head.stdout, /S\s+H\s+D\s+W/, 'no metadata was written');
});

/** nbdcopy in and back out through `uri`: what went in comes back. */
async function roundTrip(dir: string, uri: string): Promise<void> {
  const src = await randomFile(join(dir, 'rt-src.bin'), 2 * MiB);
  await run('nbdcopy', ['--flush', join(dir, 'rt-src.bin'), uri]);
  await run('nbdcopy', [uri, join(dir, 'rt-back.bin')]);
  const back = await run('cmp', ['-n', String(src.length), join(dir, 'rt-src.bin'), join(dir, 'rt-back.bin')], { allowFail: true });
  assert.equal(back.code, 0, `what went in through ${uri} comes back`);
}

/** qemu-img info over NBD with a TLS credentials object; returns the virtual size. */
async function qemuImgSize(tcp: string, object: string): Promise<number> {
  const [host, port] = tcp.split(':');
  const r = await run('qemu-img', ['info', '--output=json', '--object', object, '--image-opts',
    `driver=nbd,host=${host},port=${port},export=shadow,tls-creds=tls0`]);
  return (JSON.parse(r.stdout) as { 'virtual-size': number })['virtual-size'];
}

function assertRefused(r: RunResult, what: string): void {
  assert.notEqual(r.code, 0, `${what} must be refused`);
}

async function exportEngine(t: Parameters<typeof testScope>[0], extraArgs: (dir: string) => Promise<string[]>): Promise<{ dir: string; engine: EngineProcess; tcp: string; a: string; b: string }> {
  const { scope, dir } = await testScope(t);
  const a = await sparseFile(join(dir, 'a.img'), MEMBER_BYTES);
  const b = await sparseFile(join(dir, 'b.img'), MEMBER_BYTES);
  const engine = await startEngine(scope, { dir, members: [a, b], extraArgs: ['--listen', '127.0.0.1:0', ...await extraArgs(dir)] });
  return { dir, engine, tcp: String(engine.events('EngineReady')[0]?.tcp), a, b };
}

test('export with TLS-PSK: any identity of the file works with libnbd and qemu; plain, a wrong key and an unknown identity are refused', async (t) => {
  let keys = '';
  const node = { identity: 'node-a', keyHex: '' };
  const { dir, engine, tcp } = await exportEngine(t, async (d) => {
    const op = await pskFile(d, 'operator', 'operator');
    const nd = await pskFile(d, 'node', 'node-a');
    node.keyHex = nd.keyHex;
    keys = join(d, 'export.psk');
    await writeFile(keys, `operator:${op.keyHex}\nnode-a:${nd.keyHex}\n`, { mode: 0o600 });
    return ['--export-psk-file', keys];
  });
  assert.equal(engine.events('EngineReady')[0]?.exportTls, 'psk');
  const client = await pskFile(dir, 'client', node.identity, node.keyHex);
  const uri = `nbds://node-a@${tcp}/shadow?tls-psk-file=${client.file}`;
  assert.equal(Number((await run('nbdinfo', ['--size', uri])).stdout.trim()), MEMBER_BYTES - HEADER_BYTES);
  await roundTrip(dir, uri);
  assert.equal(await qemuImgSize(tcp, `tls-creds-psk,id=tls0,endpoint=client,dir=${join(dir, 'psk-client')},username=node-a`), MEMBER_BYTES - HEADER_BYTES);

  const wrong = await pskFile(dir, 'wrong', 'node-a');
  const stranger = await pskFile(dir, 'stranger', 'node-b', node.keyHex);
  assertRefused(await run('nbdinfo', ['--size', `nbd://${tcp}/shadow`], { allowFail: true }), 'plain NBD');
  assertRefused(await run('nbdinfo', ['--size', `nbds://node-a@${tcp}/shadow?tls-psk-file=${wrong.file}`], { allowFail: true }), 'a wrong key');
  assertRefused(await run('nbdinfo', ['--size', `nbds://node-b@${tcp}/shadow?tls-psk-file=${stranger.file}`], { allowFail: true }), 'an unknown identity');
  const q = await run('qemu-img', ['info', '--object', `tls-creds-psk,id=tls0,endpoint=client,dir=${join(dir, 'psk-wrong')},username=node-a`, '--image-opts',
    `driver=nbd,host=127.0.0.1,port=${tcp.split(':')[1]},export=shadow,tls-creds=tls0`], { allowFail: true });
  assertRefused(q, 'qemu-img with a wrong key');
  await until('the refusals in the log', () => (engine.events('NbdTlsRefused').length >= 3 ? true : undefined));
  assert.equal(Number((await run('nbdinfo', ['--size', engine.uri])).stdout.trim()), MEMBER_BYTES - HEADER_BYTES, 'the unix socket stays plain');
});

test('export with x509 and --tls-ca: a client certificate from that CA works with libnbd and qemu; none, or one from another CA, is refused', async (t) => {
  let pki: Awaited<ReturnType<typeof makePki>> | null = null;
  const { dir, engine, tcp, a, b } = await exportEngine(t, async (d) => {
    pki = await makePki(d);
    return ['--tls-cert', pki.server.cert, '--tls-key', pki.server.key, '--tls-ca', pki.ca];
  });
  const p = pki!;
  assert.equal(engine.events('EngineReady')[0]?.exportTls, 'x509-client-cert');
  const uri = (clientDir: string) => `nbds://${tcp}/shadow?tls-certificates=${clientDir}`;
  assert.equal(Number((await run('nbdinfo', ['--size', uri(p.trusted)])).stdout.trim()), MEMBER_BYTES - HEADER_BYTES);
  await roundTrip(dir, uri(p.trusted));
  assert.equal(await qemuImgSize(tcp, `tls-creds-x509,id=tls0,endpoint=client,dir=${p.trusted}`), MEMBER_BYTES - HEADER_BYTES);

  for (const [what, clientDir] of [['no client certificate', p.none], ['a certificate from another CA', p.rogue]] as const) {
    const info = await run('nbdinfo', ['--size', uri(clientDir)], { allowFail: true });
    assertRefused(info, `nbdinfo with ${what}`);
    const q = await run('qemu-img', ['info', '--object', `tls-creds-x509,id=tls0,endpoint=client,dir=${clientDir}`, '--image-opts',
      `driver=nbd,host=127.0.0.1,port=${tcp.split(':')[1]},export=shadow,tls-creds=tls0`], { allowFail: true });
    assertRefused(q, `qemu-img with ${what}`);
  }
  assertRefused(await run('nbdinfo', ['--size', `nbd://${tcp}/shadow`], { allowFail: true }), 'plain NBD');
  // libnbd does not send a certificate the server's CA list does not name, and qemu refuses to load one:
  // a client of our own presents it, and gets no answer to its option after the handshake.
  const port = Number(tcp.split(':')[1]);
  const pem = (f: string) => readFile(join(p.rogue, f));
  const rogue = await starttlsProbe(port, { ca: await pem('ca-cert.pem'), cert: await pem('client-cert.pem'), key: await pem('client-key.pem') });
  assert.equal(rogue.bytesAfterHandshake, 0, 'a certificate from another CA is refused');
  const trusted = await starttlsProbe(port, { ca: await pem('ca-cert.pem'), cert: await readFile(join(p.trusted, 'client-cert.pem')), key: await readFile(join(p.trusted, 'client-key.pem')) });
  assert.ok(trusted.bytesAfterHandshake > 0, 'the probe itself works: with a trusted certificate it gets the export list');
  await until('the refusals in the log', () => (engine.events('NbdTlsRefused').length >= 4 ? true : undefined));
  assert.deepEqual(await engine.stop(), { code: 0, signal: null });
  assert.equal(await memberDataDifference(a, b, MEMBER_BYTES - HEADER_BYTES), null);
});

test('a listener on a non-loopback address without authentication, or an unusable key file, is refused before any member is touched', async (t) => {
  const { dir } = await testScope(t);
  const a = await sparseFile(join(dir, 'a.img'), MEMBER_BYTES);
  const short = await pskFile(dir, 'short', 'x', 'ab'.repeat(8));
  const start = (extra: string[]) => run('node', [ENGINE_BIN, 'serve', '--member', a, '--socket', join(dir, 's'), ...extra], { allowFail: true });
  const cases: [string[], number, RegExp][] = [
    [['--listen', '0.0.0.0:0'], 2, /--export-psk-file/],
    [['--listen', '0.0.0.0:0', '--tls-cert', 'c.pem', '--tls-key', 'k.pem'], 2, /--tls-ca/],
    [['--http', '0.0.0.0:0'], 2, /--control-token-file/],
    [['--listen', '0.0.0.0:0', '--export-psk-file', short.file, '--tls-optional'], 2, /loopback/],
    [['--listen', '127.0.0.1:0', '--export-psk-file', join(dir, 'missing.psk')], 1, /cannot be read/],
    [['--listen', '127.0.0.1:0', '--member-psk-file', short.file], 1, /line 1: the key has 8 bytes/],
  ];
  for (const [extra, code, why] of cases) {
    const r = await start(extra);
    assert.equal(r.code, code, `${extra.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, why);
  }
  const head = await run('od', ['-An', '-c', '-N', '8', a]);
  assert.doesNotMatch(head.stdout, /S\s+H\s+D\s+W/, 'no metadata was written');
});
