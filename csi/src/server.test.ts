import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { identityService } from './identity.js';
import { nodeService } from './node/node.js';
import { socketPathOf, startServer } from './server.js';
import { DRIVER_NAME, loadCsi } from './spec.js';

type Client = grpc.Client & Record<string, (req: unknown, cb: (err: grpc.ServiceError | null, res: Record<string, unknown>) => void) => void>;
const call = (c: Client, method: string, req: unknown) =>
  new Promise<Record<string, unknown>>((resolve, reject) => c[method]!(req, (err, res) => (err ? reject(err) : resolve(res))));

test('the driver listens on a Unix socket only, owner and group only, and answers Identity and Node over gRPC with CSI codes', async (t) => {
  assert.throws(() => socketPathOf('tcp://127.0.0.1:10000'), /Unix socket only/);
  assert.throws(() => socketPathOf('unix://relative.sock'), /Unix socket only/);
  const dir = await mkdtemp(join(tmpdir(), 'csi-server-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const csi = loadCsi();
  const kubeletDir = join(dir, 'kubelet');
  const node = nodeService({ nodeId: 'node-a', kubeletDir, unitSocketDir: join(dir, 'units'), stateDir: join(dir, 'state'), exportName: 'shadow', reconnectDelaySeconds: 5, socketWaitSeconds: 0 });
  const server = await startServer({ endpoint: `unix://${join(dir, 'csi.sock')}`, csi, identity: identityService({ controller: false }), node, log: pino({ level: 'silent' }) });
  t.after(() => server.close());
  assert.equal((await stat(server.path)).mode & 0o777, 0o660);
  const identity = new csi.Identity(`unix://${server.path}`, grpc.credentials.createInsecure()) as unknown as Client;
  const nodeClient = new csi.Node(`unix://${server.path}`, grpc.credentials.createInsecure()) as unknown as Client;
  t.after(() => { identity.close(); nodeClient.close(); });
  const info = await call(identity, 'GetPluginInfo', {});
  assert.equal(info.name, DRIVER_NAME);
  assert.deepEqual((await call(identity, 'GetPluginCapabilities', {})).capabilities, [{ type: 'volume_expansion', volume_expansion: { type: 'OFFLINE' } }], 'a node plugin offers no controller service; volumes grow offline');
  assert.deepEqual((await call(identity, 'Probe', {})).ready, { value: true });
  assert.equal((await call(nodeClient, 'NodeGetInfo', {})).node_id, 'node-a');
  // A path outside the kubelet's directory is refused before anything is touched.
  const cap = { block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
  await assert.rejects(call(nodeClient, 'NodeStageVolume', { volume_id: 'ns/vol', staging_target_path: '/etc', volume_capability: cap }),
    (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT && /not under the kubelet's directory/.test(e.details));
  await assert.rejects(call(nodeClient, 'NodeStageVolume', { volume_id: 'ns/vol', staging_target_path: `${kubeletDir}/../etc`, volume_capability: cap }),
    (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT && /without \. or \.\./.test(e.details));
  // The controller is not served by a node-only plugin: its methods are UNIMPLEMENTED.
  const controller = new csi.Controller(`unix://${server.path}`, grpc.credentials.createInsecure()) as unknown as Client;
  t.after(() => controller.close());
  await assert.rejects(call(controller, 'CreateVolume', { name: 'x' }), (e: grpc.ServiceError) => e.code === grpc.status.UNIMPLEMENTED);
});

test('the image ships the CSI spec the build script fetches, at the version it names', async () => {
  const root = join(import.meta.dirname, '..', '..');
  const script = await readFile(join(root, 'csi', 'scripts', 'csi-spec.mjs'), 'utf8');
  // The image is staged on the host (docs/image.md): its build runs the same script and copies csi/proto.
  const imageBuild = await readFile(join(root, 'scripts', 'build-image.mjs'), 'utf8');
  const inScript = /\?\? '(v1\.[0-9]+\.[0-9]+)'/.exec(script)?.[1];
  assert.ok(inScript, 'version in csi/scripts/csi-spec.mjs');
  assert.match(imageBuild, /join\(repoRoot, 'csi', 'scripts', 'csi-spec\.mjs'\)/, 'the image build fetches the spec with the same script');
  assert.match(imageBuild, /cpSync\(join\(repoRoot, 'csi', 'proto'\)/, 'the image build ships csi/proto');
  assert.equal((await readFile(join(root, 'csi', 'proto', 'VERSION'), 'utf8')).trim(), inScript);
});
