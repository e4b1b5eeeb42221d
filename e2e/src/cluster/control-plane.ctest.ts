// The local control plane is a real Kubernetes API: it serves its version, CRDs (with schema validation)
// and watches; and it leaves nothing running when stopped.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ApiextensionsV1Api, CoreV1Api, CustomObjectsApi, VersionApi, makeInformer } from '@kubernetes/client-node';
import type { V1ConfigMap } from '@kubernetes/client-node';
import { existsSync } from 'node:fs';
import { startControlPlane } from './control-plane.js';
import type { ControlPlane } from './control-plane.js';
import { waitFor } from '../wait.js';

let cp: ControlPlane;

before(async () => {
  cp = await startControlPlane();
});
after(async () => {
  await cp?.stop();
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('serves /version as the Kubernetes version that was built', async () => {
  const v = await cp.kubeConfig.makeApiClient(VersionApi).getCode();
  assert.equal(v.gitVersion, cp.binaries.kubernetesVersion);
  assert.match(v.gitVersion, /^v1\.34\.\d+$/);
});

test('a CRD is applied, established and served, with its schema enforced', async () => {
  const ext = cp.kubeConfig.makeApiClient(ApiextensionsV1Api);
  const custom = cp.kubeConfig.makeApiClient(CustomObjectsApi);
  const group = 'harness.shadowset.test';
  await ext.createCustomResourceDefinition({
    body: {
      apiVersion: 'apiextensions.k8s.io/v1',
      kind: 'CustomResourceDefinition',
      metadata: { name: `widgets.${group}` },
      spec: {
        group,
        scope: 'Namespaced',
        names: { plural: 'widgets', singular: 'widget', kind: 'Widget' },
        versions: [{
          name: 'v1', served: true, storage: true, subresources: { status: {} },
          schema: { openAPIV3Schema: { type: 'object', properties: {
            spec: { type: 'object', required: ['members'], properties: {
              members: { type: 'integer', minimum: 1, maximum: 6 } } },
            status: { type: 'object', properties: { phase: { type: 'string' } } },
          } } },
        }],
      },
    },
  });
  await waitFor('CRD Established', async () => {
    const crd = await ext.readCustomResourceDefinition({ name: `widgets.${group}` });
    return crd.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True');
  });
  // the new resource is served as soon as it is established (discovery may lag a little)
  const created = await waitFor('widget created', () => custom.createNamespacedCustomObject({
    group, version: 'v1', namespace: 'default', plural: 'widgets',
    body: { apiVersion: `${group}/v1`, kind: 'Widget', metadata: { name: 'w1' }, spec: { members: 3 } },
  }) as Promise<{ metadata: { uid: string } }>);
  assert.ok(created.metadata.uid);
  const got = (await custom.getNamespacedCustomObject({
    group, version: 'v1', namespace: 'default', plural: 'widgets', name: 'w1',
  })) as { spec: { members: number } };
  assert.equal(got.spec.members, 3);
  // the status subresource is separate from the main resource
  await custom.patchNamespacedCustomObjectStatus({
    group, version: 'v1', namespace: 'default', plural: 'widgets', name: 'w1',
    body: [{ op: 'add', path: '/status', value: { phase: 'Steady' } }],
  });
  const withStatus = (await custom.getNamespacedCustomObject({
    group, version: 'v1', namespace: 'default', plural: 'widgets', name: 'w1',
  })) as { status?: { phase?: string } };
  assert.equal(withStatus.status?.phase, 'Steady');
  // a real API server validates against the schema: 7 members is more than the maximum
  await assert.rejects(
    custom.createNamespacedCustomObject({
      group, version: 'v1', namespace: 'default', plural: 'widgets',
      body: { apiVersion: `${group}/v1`, kind: 'Widget', metadata: { name: 'w2' }, spec: { members: 7 } },
    }),
    (err: { code?: number; body?: string }) => err.code === 422 && /members/.test(String(err.body)),
  );
});

test("an informer observes add, update and delete through a watch", async () => {
  const core = cp.kubeConfig.makeApiClient(CoreV1Api);
  const ns = 'informer-test';
  await core.createNamespace({ body: { metadata: { name: ns } } });
  const seen: string[] = [];
  const informer = makeInformer<V1ConfigMap>(cp.kubeConfig, `/api/v1/namespaces/${ns}/configmaps`,
    () => core.listNamespacedConfigMap({ namespace: ns }));
  informer.on('add', (o) => seen.push(`add ${o.metadata?.name} ${o.data?.v}`));
  informer.on('update', (o) => seen.push(`update ${o.metadata?.name} ${o.data?.v}`));
  informer.on('delete', (o) => seen.push(`delete ${o.metadata?.name}`));
  await informer.start();
  try {
    await core.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'c1' }, data: { v: '1' } } });
    await waitFor('add event', () => seen.includes('add c1 1'));
    await core.replaceNamespacedConfigMap({ name: 'c1', namespace: ns, body: { metadata: { name: 'c1' }, data: { v: '2' } } });
    await waitFor('update event', () => seen.includes('update c1 2'));
    await core.deleteNamespacedConfigMap({ name: 'c1', namespace: ns });
    await waitFor('delete event', () => seen.includes('delete c1'));
    assert.deepEqual(seen, ['add c1 1', 'update c1 2', 'delete c1']);
    assert.equal(informer.get('c1', ns), undefined);
  } finally {
    await informer.stop();
  }
});

test('stop() ends etcd and kube-apiserver and removes the work directory', async () => {
  const other = await startControlPlane();
  const { etcd, apiserver } = other.pids;
  assert.ok(alive(etcd) && alive(apiserver));
  const names = await other.kubeConfig.makeApiClient(CoreV1Api).listNamespace();
  assert.ok(names.items.some((n) => n.metadata?.name === 'kube-system'));
  await other.stop();
  assert.equal(alive(etcd), false, 'etcd still running');
  assert.equal(alive(apiserver), false, 'kube-apiserver still running');
  assert.equal(existsSync(other.workDir), false);
});
