// Which VolumeAttachments name a set: through the PV's CSI volume handle, or an inline volume spec; only the
// driver's own (attacher and PV driver alike), with their node, age and deletion state.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { R, pathOf, type Obj, type Resource } from '../kube/client.js';
import { attachedHandle, setAttachments } from './attachments.js';

function fakeKube(objects: { r: Resource; o: Obj }[]) {
  const byPath = new Map(objects.map(({ r, o }) => [pathOf(r, o.metadata.namespace, o.metadata.name), o]));
  return {
    get: async <T extends Obj = Obj>(r: Resource, ns: string | undefined, name: string) => (byPath.get(pathOf(r, ns, name)) as T | undefined) ?? null,
    list: async <T extends Obj = Obj>(r: Resource) => ({ items: objects.filter((x) => x.r === r).map((x) => x.o as T), resourceVersion: '1' }),
  };
}

const pv = (name: string, handle: string, driver = 'csi.shadowset.dev') => ({ r: R.pvs, o: { metadata: { name }, spec: { csi: { driver, volumeHandle: handle } } } });
const va = (name: string, node: string | undefined, source: object, o: { attacher?: string; deleting?: boolean; attached?: boolean; created?: string } = {}) => ({
  r: R.volumeattachments,
  o: {
    metadata: { name, creationTimestamp: o.created ?? '2026-01-01T00:00:00Z', ...(o.deleting ? { deletionTimestamp: '2026-01-01T00:01:00Z' } : {}) },
    spec: { attacher: o.attacher ?? 'csi.shadowset.dev', ...(node ? { nodeName: node } : {}), source },
    status: { attached: o.attached ?? false },
  } as Obj,
});

test('a VolumeAttachment names a set through its PV or an inline spec, only when both are the driver\'s', async () => {
  const kube = fakeKube([pv('pv-1', 'apps/vol'), pv('pv-foreign', 'apps/vol', 'other.example')]);
  assert.equal(await attachedHandle(kube, va('a', 'n1', { persistentVolumeName: 'pv-1' }).o), 'apps/vol');
  assert.equal(await attachedHandle(kube, va('b', 'n1', { inlineVolumeSpec: { csi: { driver: 'csi.shadowset.dev', volumeHandle: 'apps/inline' } } }).o), 'apps/inline');
  for (const o of [
    va('c', 'n1', { persistentVolumeName: 'pv-1' }, { attacher: 'other.example' }).o, // another attacher
    va('d', 'n1', { persistentVolumeName: 'pv-foreign' }).o, // a PV of another driver
    va('e', 'n1', { persistentVolumeName: 'pv-missing' }).o, // no such PV
    va('f', undefined, { persistentVolumeName: 'pv-1' }).o, // no node
    va('g', 'n1', { inlineVolumeSpec: { csi: { driver: 'other.example', volumeHandle: 'apps/vol' } } }).o,
  ]) assert.equal(await attachedHandle(kube, o), null, o.metadata.name);
});

test('a set\'s attachments: only those of its volume, with node, age, deletion and attached state', async () => {
  const kube = fakeKube([
    pv('pv-1', 'apps/vol'), pv('pv-2', 'apps/other'),
    va('va-1', 'n1', { persistentVolumeName: 'pv-1' }, { attached: true, created: '2026-01-01T00:00:05Z' }),
    va('va-2', 'n2', { persistentVolumeName: 'pv-1' }, { deleting: true }),
    va('va-3', 'n3', { persistentVolumeName: 'pv-2' }),
  ]);
  assert.deepEqual(await setAttachments(kube, 'apps', 'vol'), [
    { name: 'va-1', node: 'n1', createdMs: Date.parse('2026-01-01T00:00:05Z'), deleting: false, attached: true },
    { name: 'va-2', node: 'n2', createdMs: Date.parse('2026-01-01T00:00:00Z'), deleting: true, attached: false },
  ]);
  assert.deepEqual(await setAttachments(kube, 'other-ns', 'vol'), []);
});
