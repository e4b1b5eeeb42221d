// ControllerPublishVolume / Unpublish against an in-memory API server: the spec's argument order, one
// writer (a volume another node holds is refused, naming that node), the bounded wait for the engine to
// serve on the node, and idempotence.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CSI_DRIVER, type Obj } from '@shadowset/operator/kube';
import { pino } from 'pino';
import { isCsiError, type CsiCode } from '../errors.js';
import { FakeKube } from '../itest/fake-kube.js';
import { controllerService } from './controller.js';
import { RES } from './kube-port.js';
import { DRIVER_NAME } from '../spec.js';

const BLOCK = { access_type: 'block', block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
const ready = (node: string) => ({
  engineNode: node, placement: { node, source: 'VolumeAttachment' },
  conditions: [{ type: 'Ready', status: 'True', reason: 'EngineRunning', message: 'virtual unit served' }],
});

function setup(status: object = {}, spec: object = {}) {
  const kube = new FakeKube();
  for (const n of ['node-x', 'node-y']) kube.put(RES.nodes, undefined, { metadata: { name: n } });
  kube.put(RES.shadowsets, 'apps', { metadata: { name: 'vol', namespace: 'apps' }, spec: { members: [], ...spec }, status } as Obj);
  kube.put(RES.pvs, undefined, { metadata: { name: 'pv-vol' }, spec: { csi: { driver: 'csi.shadowset.dev', volumeHandle: 'apps/vol' } } });
  kube.put(RES.pvs, undefined, { metadata: { name: 'pv-other' }, spec: { csi: { driver: 'csi.shadowset.dev', volumeHandle: 'apps/other' } } });
  const svc = controllerService({ kube, namespace: 'shadowset-system', log: pino({ level: 'silent' }), publishWaitMs: 300 });
  const call = (name: string, req: unknown) => (svc[name] as (r: unknown) => Promise<Record<string, unknown>>)(req);
  const attach = (name: string, node: string, o: { pv?: string; deleting?: boolean; attached?: boolean; attacher?: string; created?: string } = {}) =>
    kube.put(RES.volumeattachments, undefined, {
      metadata: { name, creationTimestamp: o.created ?? '2026-01-01T00:00:00Z', ...(o.deleting ? { deletionTimestamp: '2026-01-01T00:00:00Z' } : {}) },
      spec: { attacher: o.attacher ?? 'csi.shadowset.dev', nodeName: node, source: { persistentVolumeName: o.pv ?? 'pv-vol' } },
      status: { attached: o.attached ?? true },
    } as Obj);
  return { kube, call, attach };
}

async function rejects(p: Promise<unknown>, code: CsiCode, message?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isCsiError(e, code), `expected ${code}, got ${String(e)}`);
    if (message) assert.match((e as Error).message, message);
    return true;
  });
}

const publish = (node = 'node-x', extra: object = {}) => ({ volume_id: 'apps/vol', node_id: node, volume_capability: BLOCK, ...extra });

test('ControllerGetCapabilities offers PUBLISH_UNPUBLISH_VOLUME', async () => {
  const { call } = setup();
  const caps = (await call('ControllerGetCapabilities', {})) as { capabilities: { rpc: { type: string } }[] };
  assert.ok(caps.capabilities.some((c) => c.rpc.type === 'PUBLISH_UNPUBLISH_VOLUME'));
});

test('publish: missing fields are InvalidArgument before unknown volume or node are NotFound', async () => {
  const { call } = setup(ready('node-x'));
  await rejects(call('ControllerPublishVolume', { node_id: 'node-x', volume_capability: BLOCK }), 'InvalidArgument', /volume_id/);
  await rejects(call('ControllerPublishVolume', { volume_id: 'apps/nope', volume_capability: BLOCK }), 'InvalidArgument', /node_id/);
  await rejects(call('ControllerPublishVolume', { volume_id: 'apps/nope', node_id: 'node-x' }), 'InvalidArgument', /volume_capability/);
  await rejects(call('ControllerPublishVolume', publish('node-x', { volume_capability: { ...BLOCK, access_mode: { mode: 'MULTI_NODE_MULTI_WRITER' } } })), 'InvalidArgument', /one writer on one node/);
  await rejects(call('ControllerPublishVolume', publish('node-x', { volume_id: 'apps/nope' })), 'NotFound', /volume apps\/nope/);
  await rejects(call('ControllerPublishVolume', publish('node-x', { volume_id: 'not an id' })), 'NotFound');
  await rejects(call('ControllerPublishVolume', publish('node-gone')), 'NotFound', /node node-gone/);
});

test('one writer: refused while another node holds a live or still-attached VolumeAttachment, naming that node', async () => {
  const { call, attach } = setup(ready('node-x'));
  attach('va-y', 'node-y');
  await rejects(call('ControllerPublishVolume', publish('node-x')), 'FailedPrecondition', /volume apps\/vol is attached to node node-y \(VolumeAttachment va-y\)/);
  // Being deleted but not yet detached still holds it ...
  attach('va-y', 'node-y', { deleting: true, attached: true });
  await rejects(call('ControllerPublishVolume', publish('node-x')), 'FailedPrecondition', /node-y/);
  // ... a live one not yet attached too (the attacher may be attaching it now).
  attach('va-y', 'node-y', { attached: false });
  await rejects(call('ControllerPublishVolume', publish('node-x', { volume_capability: { ...BLOCK, access_mode: { mode: 'SINGLE_NODE_SINGLE_WRITER' } } })), 'FailedPrecondition', /node-y/);
  // Detached and being deleted: no longer in the way. Other volumes and other drivers never are.
  attach('va-y', 'node-y', { deleting: true, attached: false });
  attach('va-other', 'node-y', { pv: 'pv-other' });
  attach('va-foreign', 'node-y', { attacher: 'other.csi.example' });
  attach('va-x', 'node-x');
  assert.deepEqual(await call('ControllerPublishVolume', publish('node-x')), { publish_context: {} });
});

test('two nodes asking at once: the older attachment wins (as the operator follows it), the younger is refused', async () => {
  const { call, attach } = setup(ready('node-x'));
  attach('va-x', 'node-x', { attached: false, created: '2026-01-01T00:00:01Z' });
  attach('va-y', 'node-y', { attached: false, created: '2026-01-01T00:00:02Z' });
  assert.deepEqual(await call('ControllerPublishVolume', publish('node-x')), { publish_context: {} });
  await rejects(call('ControllerPublishVolume', publish('node-y')), 'FailedPrecondition', /attached to node node-x \(VolumeAttachment va-x\)/);
  // Once attached, the younger one's node holds it whatever its age (a detach has to finish first).
  attach('va-y', 'node-y', { attached: true, created: '2026-01-01T00:00:02Z' });
  await rejects(call('ControllerPublishVolume', publish('node-x')), 'FailedPrecondition', /node-y/);
});

test('publish waits (bounded) for the engine to serve on the node: Unavailable while it runs elsewhere or is not Ready', async () => {
  const { call, kube } = setup(ready('node-y'));
  const t0 = Date.now();
  await rejects(call('ControllerPublishVolume', publish('node-x')), 'Unavailable', /does not serve on node node-x yet \(engine on node-y/);
  assert.ok(Date.now() - t0 >= 250, 'it waited before answering');
  const notReady = { ...ready('node-x'), conditions: [{ type: 'Ready', status: 'False', reason: 'EnginePending', message: 'engine pod created' }] };
  kube.put(RES.shadowsets, 'apps', { metadata: { name: 'vol', namespace: 'apps' }, spec: { members: [] }, status: notReady } as Obj);
  await rejects(call('ControllerPublishVolume', publish('node-x')), 'Unavailable', /engine pod created/);
  // The engine comes up on node-x during the wait: the answer is OK.
  const pending = call('ControllerPublishVolume', publish('node-x'));
  setTimeout(() => kube.put(RES.shadowsets, 'apps', { metadata: { name: 'vol', namespace: 'apps' }, spec: { members: [] }, status: ready('node-x') } as Obj), 50);
  assert.deepEqual(await pending, { publish_context: {} });
});

test('publish is idempotent; a set pinned to another node is refused; unpublish is OK every time', async () => {
  const { call } = setup(ready('node-x'));
  for (let i = 0; i < 3; i++) assert.deepEqual(await call('ControllerPublishVolume', publish('node-x')), { publish_context: {} });
  const pinned = setup(ready('node-y'), { engine: { nodeName: 'node-y' } });
  await rejects(pinned.call('ControllerPublishVolume', publish('node-x')), 'FailedPrecondition', /pins the engine to node node-y/);
  await rejects(call('ControllerUnpublishVolume', { node_id: 'node-x' }), 'InvalidArgument', /volume_id/);
  for (const req of [{ volume_id: 'apps/vol', node_id: 'node-x' }, { volume_id: 'apps/vol', node_id: 'node-x' }, { volume_id: 'apps/gone' }, { volume_id: 'junk' }]) {
    assert.deepEqual(await call('ControllerUnpublishVolume', req), {});
  }
});

test('the driver\'s name is the one the operator\'s reading of VolumeAttachments looks for', () => {
  assert.equal(DRIVER_NAME, CSI_DRIVER);
});
