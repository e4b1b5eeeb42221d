// The simulator's pure pieces: command mapping, path rewriting, $(VAR) expansion, node selection.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_COMMANDS, PROJECT_IMAGE, isProjectImage, resolveCommand } from './commands.js';
import { rewritePaths } from './volumes.js';
import { expandVars } from './env.js';
import { matchNodeSelector, podFitsNode } from './selectors.js';

test('the project image is recognised with any tag or digest, and only it', () => {
  assert.equal(isProjectImage(PROJECT_IMAGE), true);
  assert.equal(isProjectImage(`${PROJECT_IMAGE}:v0.1.0`), true);
  assert.equal(isProjectImage(`${PROJECT_IMAGE}@sha256:abc`), true);
  assert.equal(isProjectImage(`${PROJECT_IMAGE}-operator:v1`), false);
  assert.equal(isProjectImage('docker.io/library/busybox:1.36'), false);
  assert.equal(isProjectImage(undefined), false);
});

test('container commands map to the local engine script through the table', () => {
  const engine = DEFAULT_COMMANDS['shadow-engine'];
  assert.ok(engine?.endsWith('engine/bin/shadow-engine.js'));
  for (const command of [undefined, ['shadow-engine'], ['/usr/local/bin/shadow-engine'], ['node', '/app/bin/shadow-engine.js']]) {
    const r = resolveCommand(DEFAULT_COMMANDS, command, ['serve', '--port=9000']);
    assert.ok(!('error' in r), JSON.stringify(command));
    assert.equal(r.file, process.execPath);
    assert.deepEqual(r.argv, [engine, 'serve', '--port=9000']);
  }
  const withExtra = resolveCommand(DEFAULT_COMMANDS, ['shadow-engine', 'serve'], ['-v']);
  assert.ok(!('error' in withExtra) && withExtra.argv.slice(1).join(' ') === 'serve -v');
  const unknown = resolveCommand(DEFAULT_COMMANDS, ['sh', '-c', 'true'], []);
  assert.ok('error' in unknown && /no local program/.test(unknown.error));
});

test('device and mount paths are rewritten only where they stand as whole paths', () => {
  const m = [
    { containerPath: '/dev/xvda', localPath: '/sim/p/root/dev/xvda' },
    { containerPath: '/data', localPath: '/sim/p/root/data' },
  ];
  assert.equal(rewritePaths('/dev/xvda', m), '/sim/p/root/dev/xvda');
  assert.equal(rewritePaths('--member=/dev/xvda,/dev/xvdb', m), '--member=/sim/p/root/dev/xvda,/dev/xvdb');
  assert.equal(rewritePaths('/dev/xvda1', m), '/dev/xvda1');
  assert.equal(rewritePaths('/data/meta.json', m), '/sim/p/root/data/meta.json');
  assert.equal(rewritePaths('/database', m), '/database');
  assert.equal(rewritePaths('/other/data', m), '/other/data');
});

test('$(VAR) references expand like Kubernetes: known ones, $$ escapes, unknown ones stay', () => {
  const vars = { POD_IP: '127.11.0.2', PORT: '10809' };
  assert.equal(expandVars('--listen=$(POD_IP):$(PORT)', vars), '--listen=127.11.0.2:10809');
  assert.equal(expandVars('$$(POD_IP) $(NOPE)', vars), '$(POD_IP) $(NOPE)');
});

test('node selection follows nodeSelector, required affinity and PV-style node selectors', () => {
  const labels = { 'kubernetes.io/hostname': 'node-b', zone: 'b', gen: '3' };
  const sel = (operator: string, values?: string[], key = 'zone') =>
    ({ nodeSelectorTerms: [{ matchExpressions: [{ key, operator, ...(values ? { values } : {}) }] }] });
  assert.equal(matchNodeSelector(sel('In', ['a', 'b']), 'node-b', labels), true);
  assert.equal(matchNodeSelector(sel('NotIn', ['b']), 'node-b', labels), false);
  assert.equal(matchNodeSelector(sel('Exists'), 'node-b', labels), true);
  assert.equal(matchNodeSelector(sel('DoesNotExist'), 'node-b', labels), false);
  assert.equal(matchNodeSelector(sel('Gt', ['2'], 'gen'), 'node-b', labels), true);
  assert.equal(matchNodeSelector(sel('Lt', ['2'], 'gen'), 'node-b', labels), false);
  assert.equal(matchNodeSelector({ nodeSelectorTerms: [{ matchFields: [
    { key: 'metadata.name', operator: 'In', values: ['node-b'] }] }] }, 'node-b', labels), true);
  assert.equal(matchNodeSelector(undefined, 'node-b', labels), true);
  assert.equal(podFitsNode({ spec: { containers: [], nodeSelector: { zone: 'a' } } }, 'node-b', labels), false);
  assert.equal(podFitsNode({ spec: { containers: [], nodeSelector: { zone: 'b' } } }, 'node-b', labels), true);
});
