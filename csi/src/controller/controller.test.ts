import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HEADER_BYTES } from '@shadowset/engine/api';
import { pino } from 'pino';
import { isCsiError, type CsiCode } from '../errors.js';
import { controllerService } from './controller.js';
import { RES } from './kube-port.js';
import { FakeKube } from '../itest/fake-kube.js';

const readyNode = (name: string) => ({ metadata: { name }, status: { conditions: [{ type: 'Ready', status: 'True' }] } });

function setup(o: { binding?: 'Immediate' | 'WaitForFirstConsumer'; nodes?: number; provisioner?: string } = {}) {
  const kube = new FakeKube();
  kube.put(RES.storageclasses, undefined, { metadata: { name: 'local-block' }, provisioner: o.provisioner ?? 'local.csi.example', volumeBindingMode: o.binding ?? 'Immediate' });
  for (let i = 0; i < (o.nodes ?? 3); i++) kube.put(RES.nodes, undefined, readyNode(`node-${i}`));
  const svc = controllerService({ kube, namespace: 'shadowset-system', log: pino({ level: 'silent' }) });
  const call = (name: string, req: unknown) => (svc[name] as (r: unknown) => Promise<Record<string, unknown>>)(req);
  return { kube, call };
}

const CAP = [{ access_type: 'mount', mount: { fs_type: '' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } }];
const create = (params: Record<string, string>, extra: Record<string, unknown> = {}) => ({
  name: 'pvc-0a1b', capacity_range: { required_bytes: String(64 * 1024 ** 2) }, volume_capabilities: CAP, parameters: params, ...extra,
});

async function rejects(p: Promise<unknown>, code: CsiCode, pattern: RegExp) {
  await assert.rejects(p, (e) => {
    assert.ok(isCsiError(e, code), `want ${code}, got ${String(e)}`);
    assert.match(e.message, pattern);
    return true;
  });
}

test('CreateVolume: a ShadowSet of new block claims of the member class, owned by the set', async () => {
  const { kube, call } = setup();
  const res = await call('CreateVolume', create({ memberClass: 'local-block', members: '3', minicopyPolicy: 'Required', memberTimeoutSeconds: '30', copyBytesPerSecond: '1048576', maxCopies: '2', 'csi.storage.k8s.io/pvc/namespace': 'db' }));
  assert.deepEqual(res.volume, { volume_id: 'db/pvc-0a1b', capacity_bytes: String(64 * 1024 ** 2), volume_context: {}, content_source: null, accessible_topology: [] });
  const set = await kube.get(RES.shadowsets, 'db', 'pvc-0a1b');
  assert.ok(set);
  assert.deepEqual(set.spec, {
    size: 64 * 1024 ** 2,
    members: [{ name: 'm1', claimName: 'pvc-0a1b-m1' }, { name: 'm2', claimName: 'pvc-0a1b-m2' }, { name: 'm3', claimName: 'pvc-0a1b-m3' }],
    minicopyPolicy: 'Required', memberTimeoutSeconds: 30, throttle: { copyBytesPerSecond: 1048576, maxCopies: 2 },
  });
  assert.equal(set.metadata.annotations?.['csi.shadowset.dev/volume-name'], 'pvc-0a1b');
  assert.equal(set.metadata.annotations?.['csi.shadowset.dev/claim'], undefined, 'no claim name given: none recorded');
  for (const m of ['m1', 'm2', 'm3']) {
    const c = await kube.get(RES.pvcs, 'db', `pvc-0a1b-${m}`);
    assert.ok(c, m);
    assert.deepEqual(c.spec, {
      accessModes: ['ReadWriteOnce'], volumeMode: 'Block', storageClassName: 'local-block',
      resources: { requests: { storage: String(64 * 1024 ** 2 + HEADER_BYTES) } },
    });
    assert.deepEqual(c.metadata.ownerReferences, [{ apiVersion: 'shadowset.dev/v1alpha1', kind: 'ShadowSet', name: 'pvc-0a1b', uid: set.metadata.uid, controller: true, blockOwnerDeletion: true }]);
    assert.equal(c.metadata.annotations, undefined, 'an Immediate class places its own volumes');
  }
});

test('CreateVolume: the set names the claim it was made for when it lives beside it (its warnings go there too)', async () => {
  const { kube, call } = setup();
  await call('CreateVolume', create({ memberClass: 'local-block', 'csi.storage.k8s.io/pvc/name': 'data', 'csi.storage.k8s.io/pvc/namespace': 'db' }));
  assert.equal((await kube.get(RES.shadowsets, 'db', 'pvc-0a1b'))?.metadata.annotations?.['csi.shadowset.dev/claim'], 'data');
  // Without the claim's namespace the set lives in the driver's: the claim is not beside it.
  const other = setup();
  await other.call('CreateVolume', create({ memberClass: 'local-block', 'csi.storage.k8s.io/pvc/name': 'data' }));
  const set = await other.kube.get(RES.shadowsets, 'shadowset-system', 'pvc-0a1b');
  assert.ok(set);
  assert.equal(set.metadata.annotations?.['csi.shadowset.dev/claim'], undefined);
});

test('CreateVolume: invalid parameters, a missing or unusable member class, a multi-node mode: InvalidArgument and nothing created', async () => {
  const { kube, call } = setup();
  kube.put(RES.storageclasses, undefined, { metadata: { name: 'nfs' }, provisioner: 'nfs.csi.k8s.io' });
  kube.put(RES.storageclasses, undefined, { metadata: { name: 'shadow' }, provisioner: 'csi.shadowset.dev' });
  const before = kube.objects.size;
  await rejects(call('CreateVolume', create({ memberClass: 'local-block', members: '7' })), 'InvalidArgument', /members must be between 1 and 6/);
  await rejects(call('CreateVolume', create({ memberClass: 'local-block', mirror: 'yes' })), 'InvalidArgument', /unknown parameter mirror/);
  await rejects(call('CreateVolume', create({ memberClass: 'local-block', minicopyPolicy: 'Always' })), 'InvalidArgument', /minicopyPolicy/);
  await rejects(call('CreateVolume', create({ memberClass: 'missing' })), 'InvalidArgument', /memberClass: StorageClass missing not found/);
  await rejects(call('CreateVolume', create({ memberClass: 'nfs' })), 'InvalidArgument', /memberClass: .*cannot give Block volumes/);
  await rejects(call('CreateVolume', create({ memberClass: 'shadow' })), 'InvalidArgument', /memberClass: .*shadowset class itself/);
  const rwx = [{ access_type: 'block', block: {}, access_mode: { mode: 'MULTI_NODE_MULTI_WRITER' } }];
  await rejects(call('CreateVolume', create({ memberClass: 'local-block' }, { volume_capabilities: rwx })), 'InvalidArgument', /MULTI_NODE_MULTI_WRITER is not supported/);
  await rejects(call('CreateVolume', create({ memberClass: 'local-block' }, { volume_capabilities: [] })), 'InvalidArgument', /volume_capabilities/);
  await rejects(call('CreateVolume', create({ memberClass: 'local-block' }, { name: '' })), 'InvalidArgument', /name is required/);
  await rejects(call('CreateVolume', create({ memberClass: 'local-block' }, { volume_content_source: { type: 'snapshot' } })), 'InvalidArgument', /volume_content_source/);
  assert.equal(kube.objects.size, before, 'nothing was created');
});

test('CreateVolume: a WaitForFirstConsumer class gets one selected node per member, all different; too few nodes refuses before creating', async () => {
  const { kube, call } = setup({ binding: 'WaitForFirstConsumer', nodes: 3 });
  await call('CreateVolume', create({ memberClass: 'local-block', members: '3' }));
  const nodes = await Promise.all(['m1', 'm2', 'm3'].map(async (m) => (await kube.get(RES.pvcs, 'shadowset-system', `pvc-0a1b-${m}`))?.metadata.annotations?.['volume.kubernetes.io/selected-node']));
  assert.deepEqual([...nodes].sort(), ['node-0', 'node-1', 'node-2']);
  const before = kube.objects.size;
  await rejects(call('CreateVolume', create({ memberClass: 'local-block', members: '4' }, { name: 'pvc-other' })), 'ResourceExhausted', /4 members need 4 different nodes; 3 can hold one/);
  assert.equal(kube.objects.size, before);
});

test('CreateVolume is idempotent by name; the same name with another size or other parameters is AlreadyExists', async () => {
  const { kube, call } = setup();
  const a = await call('CreateVolume', create({ memberClass: 'local-block' }));
  const b = await call('CreateVolume', create({ memberClass: 'local-block' }));
  assert.deepEqual(b, a);
  assert.equal(kube.count(RES.shadowsets), 1);
  assert.equal(kube.count(RES.pvcs), 2);
  await rejects(call('CreateVolume', create({ memberClass: 'local-block' }, { capacity_range: { required_bytes: String(128 * 1024 ** 2) } })), 'AlreadyExists', /outside the capacity range/);
  await rejects(call('CreateVolume', create({ memberClass: 'local-block', members: '3' })), 'AlreadyExists', /other parameters/);
  assert.equal(kube.count(RES.pvcs), 2);
});

test('CreateVolume: a repeat after an interrupted one makes the claims that are missing', async () => {
  const { kube, call } = setup({ binding: 'WaitForFirstConsumer' });
  await call('CreateVolume', create({ memberClass: 'local-block', members: '3' }));
  const kept = await kube.get(RES.pvcs, 'shadowset-system', 'pvc-0a1b-m2');
  await kube.delete(RES.pvcs, 'shadowset-system', 'pvc-0a1b-m1');
  await kube.delete(RES.pvcs, 'shadowset-system', 'pvc-0a1b-m3');
  await call('CreateVolume', create({ memberClass: 'local-block', members: '3' }));
  const nodes = await Promise.all(['m1', 'm2', 'm3'].map(async (m) => (await kube.get(RES.pvcs, 'shadowset-system', `pvc-0a1b-${m}`))?.metadata.annotations?.['volume.kubernetes.io/selected-node']));
  assert.equal(nodes[1], kept?.metadata.annotations?.['volume.kubernetes.io/selected-node']);
  assert.equal(new Set(nodes).size, 3, `still three nodes: ${nodes.join(',')}`);
});

test('CreateVolume never takes over objects it did not make: a hand-made set or a foreign claim of the same name', async () => {
  const { kube, call } = setup();
  kube.put(RES.shadowsets, 'shadowset-system', { metadata: { name: 'pvc-0a1b', uid: 'u-hand' }, spec: { members: [] } });
  await rejects(call('CreateVolume', create({ memberClass: 'local-block' })), 'AlreadyExists', /was not made for volume pvc-0a1b/);
  kube.put(RES.pvcs, 'ns2', { metadata: { name: 'vol-b-m2', labels: {} }, spec: {} });
  const before = kube.objects.size;
  await rejects(call('CreateVolume', create({ memberClass: 'local-block', 'csi.storage.k8s.io/pvc/namespace': 'ns2' }, { name: 'vol-b' })), 'AlreadyExists', /claim ns2\/vol-b-m2 exists/);
  assert.equal(kube.objects.size, before, 'nothing was created');
});

test('CreateVolume never reuses a member claim left from an earlier volume of the same name', async () => {
  const { kube, call } = setup();
  await call('CreateVolume', create({ memberClass: 'local-block' }));
  // The set is gone but one of its claims is not yet (a DeleteVolume that did not finish).
  kube.objects.delete(kube.key(RES.shadowsets, 'shadowset-system', 'pvc-0a1b'));
  await kube.delete(RES.pvcs, 'shadowset-system', 'pvc-0a1b-m1');
  const before = kube.objects.size;
  await rejects(call('CreateVolume', create({ memberClass: 'local-block' })), 'Aborted', /claim shadowset-system\/pvc-0a1b-m2 of an earlier volume/);
  assert.equal(kube.objects.size, before, 'nothing was created');
  await call('DeleteVolume', { volume_id: 'shadowset-system/pvc-0a1b' });
  await call('CreateVolume', create({ memberClass: 'local-block' }));
  assert.equal(kube.count(RES.pvcs), 2);
});

test('CreateVolume: a name that cannot be a set name maps to a stable hashed one', async () => {
  const { call } = setup();
  const name = 'Sanity-Create_Volume 0123456789-0123456789-0123456789-0123456789';
  const a = (await call('CreateVolume', create({ memberClass: 'local-block' }, { name }))).volume as { volume_id: string };
  const b = (await call('CreateVolume', create({ memberClass: 'local-block' }, { name }))).volume as { volume_id: string };
  assert.match(a.volume_id, /^shadowset-system\/csi-[0-9a-f]{24}$/);
  assert.equal(b.volume_id, a.volume_id);
});

test('DeleteVolume dissolves the set, then deletes its claims; repeats and unknown ids are OK; hand-made sets are refused', async () => {
  const { kube, call } = setup();
  await call('CreateVolume', create({ memberClass: 'local-block' }));
  // The operator's finalizer: the set stays until its engine has stopped; the claims must wait for that.
  const set = (await kube.get(RES.shadowsets, 'shadowset-system', 'pvc-0a1b'))!;
  set.metadata.finalizers = ['shadowset.dev/dissolve'];
  kube.put(RES.shadowsets, 'shadowset-system', set);
  await rejects(call('DeleteVolume', { volume_id: 'shadowset-system/pvc-0a1b' }), 'Unavailable', /being dissolved/);
  assert.equal(kube.count(RES.pvcs), 2, 'claims kept while the engine may still use them');
  const dissolving = (await kube.get(RES.shadowsets, 'shadowset-system', 'pvc-0a1b'))!;
  dissolving.metadata.finalizers = [];
  kube.objects.delete(kube.key(RES.shadowsets, 'shadowset-system', 'pvc-0a1b'));
  assert.deepEqual(await call('DeleteVolume', { volume_id: 'shadowset-system/pvc-0a1b' }), {});
  assert.equal(kube.count(RES.pvcs), 0);
  assert.deepEqual(await call('DeleteVolume', { volume_id: 'shadowset-system/pvc-0a1b' }), {});
  assert.deepEqual(await call('DeleteVolume', { volume_id: 'not a volume id' }), {});
  await rejects(call('DeleteVolume', { volume_id: '' }), 'InvalidArgument', /volume_id is required/);
  kube.put(RES.shadowsets, 'db', { metadata: { name: 'hand', uid: 'u' }, spec: {} });
  await rejects(call('DeleteVolume', { volume_id: 'db/hand' }), 'FailedPrecondition', /not made by this driver/);
  assert.ok(await kube.get(RES.shadowsets, 'db', 'hand'));
});

test('ValidateVolumeCapabilities: confirms single-node modes of an existing set (static volumes too), not multi-node ones', async () => {
  const { kube, call } = setup();
  kube.put(RES.shadowsets, 'db', { metadata: { name: 'hand', uid: 'u' }, spec: {} });
  const ok = await call('ValidateVolumeCapabilities', { volume_id: 'db/hand', volume_capabilities: CAP });
  assert.deepEqual((ok.confirmed as { volume_capabilities: unknown }).volume_capabilities, CAP);
  const ro = [{ access_type: 'mount', mount: {}, access_mode: { mode: 'MULTI_NODE_READER_ONLY' } }];
  const no = await call('ValidateVolumeCapabilities', { volume_id: 'db/hand', volume_capabilities: ro });
  assert.equal(no.confirmed, null);
  assert.match(String(no.message), /MULTI_NODE_READER_ONLY/);
  await rejects(call('ValidateVolumeCapabilities', { volume_id: 'db/none', volume_capabilities: CAP }), 'NotFound', /not found/);
  await rejects(call('ValidateVolumeCapabilities', { volume_id: 'db/hand', volume_capabilities: [] }), 'InvalidArgument', /volume_capabilities/);
});
