/**
 * ControllerExpandVolume against the fake API server: member claims grow to unit + HEADER_BYTES, then the
 * set's spec.size; it answers Unavailable while a bound claim or the set has not grown yet; a member class
 * without expansion, an attached volume and a hand-made set are refused with nothing changed; a repeat
 * changes nothing; claims whose volumes already hold the new size are not grown.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HEADER_BYTES } from '@shadowset/engine/api';
import type { Obj } from '@shadowset/operator/kube';
import { pino } from 'pino';
import { isCsiError, type CsiCode } from '../errors.js';
import { FakeKube } from '../itest/fake-kube.js';
import { controllerService } from './controller.js';
import { RES } from './kube-port.js';
import { bytesOfQuantity } from './quantity.js';

const MiB = 1024 ** 2;
const MOUNT = { access_type: 'mount', mount: { fs_type: '' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
const BLOCK = { access_type: 'block', block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } };

async function setup(o: { expandable?: boolean } = {}) {
  const kube = new FakeKube();
  kube.put(RES.storageclasses, undefined, { metadata: { name: 'local-block' }, provisioner: 'local.csi.example', volumeBindingMode: 'Immediate', ...(o.expandable === false ? {} : { allowVolumeExpansion: true }) } as Obj);
  for (const n of ['node-0', 'node-1']) kube.put(RES.nodes, undefined, { metadata: { name: n } });
  const svc = controllerService({ kube, namespace: 'shadowset-system', log: pino({ level: 'silent' }), expandWaitMs: 100 });
  const call = (name: string, req: unknown) => (svc[name] as (r: unknown) => Promise<Record<string, unknown>>)(req);
  await call('CreateVolume', {
    name: 'pvc-1', capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [MOUNT],
    parameters: { memberClass: 'local-block', members: '2', 'csi.storage.k8s.io/pvc/namespace': 'db' },
  });
  const claims = async () => (await kube.list(RES.pvcs, 'db')).items as (Obj & { spec: { resources: { requests: { storage: string } } } })[];
  const set = async () => (await kube.get(RES.shadowsets, 'db', 'pvc-1'))!;
  const expand = (bytes: number, cap: object = MOUNT) => call('ControllerExpandVolume', { volume_id: 'db/pvc-1', capacity_range: { required_bytes: String(bytes) }, volume_capability: cap });
  /** What the CO and the operator do meanwhile: claims bound at `claimBytes`, the set at `setBytes`. */
  const world = async (claimBytes: number, setBytes?: number) => {
    for (const c of await claims()) kube.put(RES.pvcs, 'db', { ...c, status: { phase: 'Bound', capacity: { storage: String(claimBytes) } } } as Obj);
    if (setBytes !== undefined) kube.put(RES.shadowsets, 'db', { ...(await set()), status: { size: setBytes } } as Obj);
  };
  return { kube, call, claims, set, expand, world };
}

async function rejects(p: Promise<unknown>, code: CsiCode, pattern: RegExp) {
  await assert.rejects(p, (e) => {
    assert.ok(isCsiError(e, code), `want ${code}, got ${String(e)}`);
    assert.match((e as Error).message, pattern);
    return true;
  });
}

test('the member claims grow to unit + header, then the set; the answer asks for the node\'s filesystem growth', async () => {
  const t = await setup();
  await t.world(64 * MiB + HEADER_BYTES, 64 * MiB);
  // Bound claims still at their old capacity: their requests are raised, the call waits for them.
  await rejects(t.expand(128 * MiB), 'Unavailable', /member claims still growing to 142606336 bytes: pvc-1-m1 \(75497472\), pvc-1-m2 \(75497472\)/);
  for (const c of await t.claims()) assert.equal(bytesOfQuantity(c.spec.resources.requests.storage), 128 * MiB + HEADER_BYTES);
  assert.equal((await t.set()).spec!.size, 64 * MiB, 'the set is not asked to grow before its members have (it was made at the size asked for)');
  // The claims grew; the set is asked to grow, and the call waits for it.
  await t.world(128 * MiB + HEADER_BYTES);
  await rejects(t.expand(128 * MiB), 'Unavailable', /ShadowSet is growing to 134217728 bytes \(now 67108864\)/);
  assert.equal((await t.set()).spec!.size, 128 * MiB);
  await t.world(128 * MiB + HEADER_BYTES, 128 * MiB);
  assert.deepEqual(await t.expand(128 * MiB), { capacity_bytes: String(128 * MiB), node_expansion_required: true });
  // A repeat (or a smaller ask) changes nothing.
  const patches = t.kube.patches.length;
  assert.deepEqual(await t.expand(100 * MiB), { capacity_bytes: String(128 * MiB), node_expansion_required: true });
  assert.deepEqual(await t.expand(128 * MiB, BLOCK), { capacity_bytes: String(128 * MiB), node_expansion_required: false }, 'a block volume needs no node step');
  assert.equal(t.kube.patches.length, patches);
});

test('member claims not bound yet cannot grow (Kubernetes allows it only once bound): Unavailable, nothing changed', async () => {
  const t = await setup();
  await rejects(t.expand(96 * MiB, BLOCK), 'Unavailable', /member claims not bound yet \(pvc-1-m1, pvc-1-m2\)/);
  assert.equal(t.kube.patches.length, 0);
  assert.equal((await t.set()).spec!.size, 64 * MiB);
  // Once bound, a set that never ran (no status.size) is done when its claims have grown.
  await t.world(64 * MiB + HEADER_BYTES);
  await rejects(t.expand(96 * MiB, BLOCK), 'Unavailable', /still growing/);
  await t.world(96 * MiB + HEADER_BYTES);
  assert.deepEqual(await t.expand(96 * MiB, BLOCK), { capacity_bytes: String(96 * MiB), node_expansion_required: false });
  assert.equal((await t.set()).spec!.size, 96 * MiB);
  assert.equal((await t.set()).metadata.annotations!['csi.shadowset.dev/capacity-bytes'], String(96 * MiB));
});

test('refused with nothing changed: a member class without expansion (named), an attached volume (offline), a hand-made set, a missing range', async () => {
  const t = await setup({ expandable: false });
  await rejects(t.expand(128 * MiB), 'FailedPrecondition', /member StorageClass local-block does not allow volume expansion/);
  assert.equal(t.kube.patches.length, 0);

  const u = await setup();
  u.kube.put(RES.pvs, undefined, { metadata: { name: 'pv-1' }, spec: { csi: { driver: 'csi.shadowset.dev', volumeHandle: 'db/pvc-1' } } } as Obj);
  u.kube.put(RES.volumeattachments, undefined, { metadata: { name: 'va-1' }, spec: { attacher: 'csi.shadowset.dev', nodeName: 'node-1', source: { persistentVolumeName: 'pv-1' } }, status: { attached: true } } as Obj);
  await rejects(u.expand(128 * MiB), 'FailedPrecondition', /attached to node node-1 \(VolumeAttachment va-1\); it grows offline only/);
  assert.equal(u.kube.patches.length, 0);

  u.kube.put(RES.shadowsets, 'db', { metadata: { name: 'mine', namespace: 'db' }, spec: { members: [] } } as Obj);
  await rejects(u.call('ControllerExpandVolume', { volume_id: 'db/mine', capacity_range: { required_bytes: String(128 * MiB) } }), 'FailedPrecondition', /not made by this driver/);
  await rejects(u.call('ControllerExpandVolume', { volume_id: 'db/pvc-1' }), 'InvalidArgument', /capacity_range is required/);
  await rejects(u.call('ControllerExpandVolume', { volume_id: 'db/nope', capacity_range: { required_bytes: '1' } }), 'NotFound', /not found/);
  assert.equal(u.kube.patches.length, 0);
});

test('member claims whose volumes already hold the new size (static PVs bigger than asked) are left alone, even in a class without expansion; a smaller one is still refused', async () => {
  const t = await setup({ expandable: false });
  await t.world(256 * MiB, 64 * MiB);
  await rejects(t.expand(128 * MiB), 'Unavailable', /ShadowSet is growing to 134217728 bytes \(now 67108864\)/);
  for (const c of await t.claims()) assert.equal(bytesOfQuantity(c.spec.resources.requests.storage), 64 * MiB + HEADER_BYTES, 'no claim request touched');
  assert.equal((await t.set()).spec!.size, 128 * MiB);
  await t.world(256 * MiB, 128 * MiB);
  assert.deepEqual(await t.expand(128 * MiB), { capacity_bytes: String(128 * MiB), node_expansion_required: true });

  // Past what the volumes hold, the class decides again: refused, nothing changed.
  const patches = t.kube.patches.length;
  await rejects(t.expand(256 * MiB), 'FailedPrecondition', /member StorageClass local-block does not allow volume expansion/);
  assert.equal(t.kube.patches.length, patches);
  assert.equal((await t.set()).spec!.size, 128 * MiB);
});

test('a set already bigger than asked (made at its members\' size) is not asked for less than it has: done with no spec.size change', async () => {
  const t = await setup({ expandable: false });
  await t.world(256 * MiB, 248 * MiB);
  const before = (await t.set()).spec!.size;
  assert.deepEqual(await t.expand(128 * MiB), { capacity_bytes: String(128 * MiB), node_expansion_required: true });
  assert.equal((await t.set()).spec!.size, before, 'spec.size not set below the set\'s size');
  assert.equal((await t.set()).metadata.annotations!['csi.shadowset.dev/capacity-bytes'], String(128 * MiB));
});
