import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isEngineError } from '../core/errors.js';
import { parseHostPort, parseMember, parseServeArgs, parseServeDeviceArgs } from './args.js';

test('serve arguments parse, with loopback as the default host', () => {
  const a = parseServeArgs(['--member', 'a.img', '--member', 'nbd://h:1234/x', '--socket', 's', '--listen', '10809', '--member-timeout', '2.5']);
  assert.deepEqual(a.members.map((m) => m.location), ['a.img', 'nbd://h:1234/x']);
  assert.deepEqual(a.listen, { host: '127.0.0.1', port: 10809 });
  assert.equal(a.memberTimeoutMs, 2500);
  assert.equal(a.overwrite, false);
  assert.equal(a.intentLog, true);
  assert.equal(parseServeArgs(['--member', 'a.img', '--socket', 's', '--no-intent-log']).intentLog, false);
  assert.deepEqual(a.resync, {});
  const throttled = parseServeArgs(['--member', 'a.img', '--socket', 's', '--copy-bytes-per-second', '1048576', '--merge-bytes-per-second', '0', '--max-copies', '2']);
  assert.deepEqual(throttled.resync, { copyBytesPerSecond: 1048576, mergeBytesPerSecond: 0, maxCopies: 2 });
});

test('missing or bad arguments are refused', () => {
  assert.throws(() => parseServeArgs(['--socket', 's']), (e) => isEngineError(e, 'ENG_INVALID_ARGUMENT'));
  assert.throws(() => parseServeArgs(['--member', 'a']), (e) => isEngineError(e, 'ENG_INVALID_ARGUMENT'));
  assert.throws(() => parseServeArgs(['--member', 'a', '--socket', 's', '--member-timeout', '0']));
  assert.throws(() => parseServeArgs(['--member', 'a', '--socket', 's', '--merge-bytes-per-second', '1.5']), (e) => isEngineError(e, 'ENG_INVALID_ARGUMENT'));
  assert.throws(() => parseServeArgs(['--member', 'a', '--socket', 's', '--max-copies', '0']), (e) => isEngineError(e, 'ENG_INVALID_ARGUMENT'));
  assert.throws(() => parseHostPort('host:99999', '--listen'));
});

test('member options', () => {
  assert.deepEqual(parseMember('/dev/loop3#readCost=5,site=east'), { location: '/dev/loop3', readCost: 5, site: 'east' });
  assert.throws(() => parseMember('/dev/loop3#speed=1'), (e) => isEngineError(e, 'ENG_INVALID_ARGUMENT'));
  assert.deepEqual(parseHostPort('[::1]:80', 'x'), { host: '::1', port: 80 });
});

test('member options: overwrite per member, site a label value, readCost bounded', () => {
  assert.deepEqual(parseMember('/dev/shadow/m1#overwrite'), { location: '/dev/shadow/m1', overwrite: true });
  assert.deepEqual(parseMember('nbds://10.0.0.1:10810/member#readCost=2,overwrite'), { location: 'nbds://10.0.0.1:10810/member', readCost: 2, overwrite: true });
  for (const bad of ['/d#overwrite=1', '/d#site=a b', '/d#site=', '/d#site=-x', '/d#readCost=1001', '/d#readCost=-1', '#readCost=1']) {
    assert.throws(() => parseMember(bad), (e) => isEngineError(e, 'ENG_INVALID_ARGUMENT'), bad);
  }
});

test('settings have sane bounds: member timeout 1 s to a day, throttles 0 or at least 64 KiB/s', () => {
  const base = ['--member', 'a', '--socket', 's'];
  for (const t of ['0.001', '0.5', '86401', 'x']) assert.throws(() => parseServeArgs([...base, '--member-timeout', t]), (e) => isEngineError(e, 'ENG_INVALID_ARGUMENT'), t);
  assert.equal(parseServeArgs([...base, '--member-timeout', '1']).memberTimeoutMs, 1000);
  assert.throws(() => parseServeArgs([...base, '--copy-bytes-per-second', '1']), (e) => isEngineError(e, 'ENG_INVALID_ARGUMENT'));
  assert.equal(parseServeArgs([...base, '--copy-bytes-per-second', '65536']).resync.copyBytesPerSecond, 65536);
  const a = parseServeArgs([...base, '--site', 'zone-a', '--keep-removed', '--state-file', '/run/x', '--min-generation', '7']);
  assert.deepEqual([a.site, a.keepRemoved, a.stateFile, a.minGeneration], ['zone-a', true, '/run/x', 7]);
  assert.throws(() => parseServeArgs([...base, '--site', 'a,b']), (e) => isEngineError(e, 'ENG_INVALID_ARGUMENT'));
});

test('serve-device arguments: a listener off loopback needs a PSK file; nothing is read while parsing', () => {
  assert.deepEqual(parseServeDeviceArgs(['--device', '/d', '--listen', '10810']), { device: '/d', listen: { host: '127.0.0.1', port: 10810 }, exportName: 'member', pskFile: null });
  const remote = parseServeDeviceArgs(['--device', '/d', '--listen', '10.1.2.3:10810', '--psk-file', '/no/such/file']);
  assert.deepEqual([remote.listen, remote.pskFile], [{ host: '10.1.2.3', port: 10810 }, '/no/such/file']);
  for (const bad of [['--device', '/d'], ['--listen', '1'], ['--device', '/d', '--listen', '10.1.2.3:10810'], ['--device', '/d', '--listen', '1', '--psk', 'x']]) {
    assert.throws(() => parseServeDeviceArgs(bad), bad.join(' '));
  }
  assert.throws(() => parseServeDeviceArgs(['--device', '/d', '--listen', '10.1.2.3:10810']), (e) => isEngineError(e, 'ENG_INVALID_ARGUMENT'));
});

test('the write-intent log cap: off (0) by default, whole MiB up to 1 TiB, anything else refused', () => {
  const base = ['--member', 'a.img', '--socket', 's'];
  assert.equal(parseServeArgs(base).intentLogCapBytes, 0);
  assert.equal(parseServeArgs([...base, '--new-set-size', String(48 * 1024 * 1024)]).newSetSize, 48 * 1024 * 1024);
  assert.equal(parseServeArgs(base).newSetSize, undefined);
  for (const bad of ['0', '1000', '-512', '1e9', 'x']) {
    assert.throws(() => parseServeArgs([...base, `--new-set-size=${bad}`]), (e) => isEngineError(e, 'ENG_INVALID_ARGUMENT') && /new-set-size/.test((e as Error).message), bad);
  }
  assert.equal(parseServeArgs([...base, '--intent-log-cap-mib', '256']).intentLogCapBytes, 256 * 1024 * 1024);
  assert.equal(parseServeArgs([...base, '--intent-log-cap-mib', '0']).intentLogCapBytes, 0);
  assert.equal(parseServeArgs([...base, '--intent-log-cap-mib', '1048576']).intentLogCapBytes, 1024 ** 4);
  for (const bad of ['-1', '1.5', '1048577', 'lots', '']) {
    assert.throws(() => parseServeArgs([...base, `--intent-log-cap-mib=${bad}`]), (e) => isEngineError(e, 'ENG_INVALID_ARGUMENT') && /intent-log-cap-mib/.test((e as Error).message), bad);
  }
});
