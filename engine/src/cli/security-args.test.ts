import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isEngineError } from '../core/errors.js';
import { parseServeArgs } from './args.js';
import { checkListenerClash, isLoopbackHost, readControlToken } from './security-args.js';

const base = ['--member', '/dev/shadow/m0', '--socket', 's'];
const refused = (extra: string[], why: RegExp) =>
  assert.throws(() => parseServeArgs([...base, ...extra]), (e) => isEngineError(e, 'ENG_INVALID_ARGUMENT') && why.test(e.message), extra.join(' '));

test('loopback is 127.0.0.0/8, ::1 and localhost, in any spelling; nothing else', () => {
  for (const h of ['127.0.0.1', '127.3.4.5', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', 'localhost', 'LOCALHOST']) assert.ok(isLoopbackHost(h), h);
  for (const h of ['0.0.0.0', '::', '10.0.0.1', '128.0.0.1', '::2', '::ffff:10.0.0.1', 'example.com', '127.0.0.1.nip.io', '', '127.1']) assert.ok(!isLoopbackHost(h), h);
});

test('a non-loopback --http needs --control-token-file; loopback does not', () => {
  refused(['--http', '0.0.0.0:8080'], /not a loopback address.*--control-token-file/);
  refused(['--http', '10.1.2.3:8080'], /--control-token-file/);
  const a = parseServeArgs([...base, '--http', '0.0.0.0:8080', '--control-token-file', '/etc/shadow-token']);
  assert.equal(a.controlTokenFile, '/etc/shadow-token');
  assert.equal(parseServeArgs([...base, '--http', '127.0.0.1:0']).controlTokenFile, null);
  assert.equal(parseServeArgs([...base, '--http', '8080']).http?.host, '127.0.0.1');
});

test('a non-loopback --listen needs TLS-PSK or x509 with client certificates; --tls-optional only on loopback', () => {
  refused(['--listen', '0.0.0.0:10809'], /--export-psk-file/);
  refused(['--listen', '0.0.0.0:10809', '--tls-cert', 'c', '--tls-key', 'k'], /--tls-ca/);
  refused(['--listen', '0.0.0.0:10809', '--export-psk-file', 'p', '--tls-optional'], /loopback/);
  refused(['--export-psk-file', 'p', '--tls-cert', 'c', '--tls-key', 'k'], /give one/);
  refused(['--tls-ca', 'ca'], /--tls-ca needs --tls-cert/);
  refused(['--tls-cert', 'c'], /go together/);
  refused(['--tls-optional'], /needs a TLS mode/);
  const psk = parseServeArgs([...base, '--listen', '0.0.0.0:10809', '--export-psk-file', 'p']);
  assert.equal(psk.exportPskFile, 'p');
  const x509 = parseServeArgs([...base, '--listen', '[::]:10809', '--tls-cert', 'c', '--tls-key', 'k', '--tls-ca', 'ca']);
  assert.deepEqual(x509.tls, { cert: 'c', key: 'k', ca: 'ca', required: true });
  assert.equal(parseServeArgs([...base, '--listen', '127.0.0.1:0', '--tls-cert', 'c', '--tls-key', 'k', '--tls-optional']).tls?.required, false);
});

test('--listen and --http on one port are refused at parsing', () => {
  refused(['--listen', '127.0.0.1:9000', '--http', '127.0.0.1:9000'], /same port/);
  refused(['--listen', '9000', '--http', '9000'], /same port/);
  refused(['--listen', '0.0.0.0:9000', '--http', '127.0.0.1:9000', '--export-psk-file', 'p'], /same port/);
  assert.doesNotThrow(() => checkListenerClash({ host: '127.0.0.1', port: 9000 }, { host: '127.0.0.2', port: 9000 }));
  assert.doesNotThrow(() => checkListenerClash({ host: '127.0.0.1', port: 0 }, { host: '127.0.0.1', port: 0 }));
});

test('--allow-location takes absolute paths and URI prefixes, normalized', () => {
  const a = parseServeArgs([...base, '--allow-location', '/dev//shadow/', '--allow-location', 'nbds://']);
  assert.deepEqual(a.allowLocations, ['/dev/shadow/', 'nbds://']);
  refused(['--allow-location', 'dev/shadow/'], /absolute path/);
});

const dir = mkdtempSync(join(tmpdir(), 'token-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('control token: trimmed, at least 32 printable characters, an unreadable file refused', () => {
  const file = (name: string, text: string) => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };
  assert.equal(readControlToken(file('ok', `  ${'t'.repeat(32)}\n`)), 't'.repeat(32));
  const bad = (p: string, why: RegExp) => assert.throws(() => readControlToken(p), (e) => isEngineError(e, 'ENG_INVALID_ARGUMENT') && why.test(e.message));
  bad(file('short', `${'t'.repeat(31)}\n`), /31 characters; at least 32/);
  bad(file('spaces', `${'t'.repeat(20)} ${'t'.repeat(20)}`), /printable/);
  bad(join(dir, 'missing'), /cannot be read/);
});
