import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseCsiArgs } from './args.js';

test('arguments: a Unix socket endpoint and a mode; the node side needs its node name; paths absolute; bounds', () => {
  const a = parseCsiArgs(['--endpoint', 'unix:///csi/csi.sock', '--mode', 'node'], { NODE_NAME: 'n1', POD_NAMESPACE: 'sys' });
  assert.equal(a.node && !a.controller, true);
  assert.equal(a.nodeId, 'n1');
  assert.equal(a.namespace, 'sys');
  assert.equal(a.reconnectDelaySeconds, 120);
  const all = parseCsiArgs(['--mode', 'all'], { CSI_ENDPOINT: 'unix:///s.sock', NODE_NAME: 'n' });
  assert.ok(all.node && all.controller);
  assert.ok(!parseCsiArgs(['--endpoint', '/csi.sock', '--mode', 'controller'], {}).node, 'the controller needs no node name');
  const refused = (argv: string[], why: RegExp, env: NodeJS.ProcessEnv = { NODE_NAME: 'n' }) => assert.throws(() => parseCsiArgs(argv, env), why);
  refused(['--mode', 'node'], /--endpoint/, {});
  refused(['--endpoint', 'tcp://0.0.0.0:9000', '--mode', 'node'], /Unix socket only/);
  refused(['--endpoint', 'unix:///s', '--mode', 'both'], /--mode/);
  refused(['--endpoint', 'unix:///s', '--mode', 'node'], /--node-id/, {});
  refused(['--endpoint', 'unix:///s', '--mode', 'node', '--kubelet-dir', 'kubelet'], /--kubelet-dir must be an absolute path/);
  refused(['--endpoint', 'unix:///s', '--mode', 'node', '--reconnect-delay', '-1'], /--reconnect-delay/);
  refused(['--endpoint', 'unix:///s', '--mode', 'node', '--socket-wait', '1.5'], /--socket-wait/);
  refused(['--endpoint', 'unix:///s', '--mode', 'node', '--export-name', 'a b'], /--export-name/);
  refused(['--endpoint', 'unix:///s', '--mode', 'node', '--listen', ':1'], /Unknown option/);
});
