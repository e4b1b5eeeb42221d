// The chart's CSI driver (csi.enabled): rendered by a real helm. Off by default; on, the controller Deployment,
// the node DaemonSet, the CSIDriver, an example StorageClass and least-privilege RBAC; missing sidecar images or
// member class fail the render with a message that names the value.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chartDir, helm, template, type KubeObject } from '@shadowset/testkit/cluster/helm';

interface Container { name: string; image: string; command?: string[]; args: string[]; securityContext?: Record<string, unknown>; volumeMounts: { name: string; mountPath: string; mountPropagation?: string }[] }
interface Workload extends KubeObject {
  spec: { template: { spec: { serviceAccountName?: string; automountServiceAccountToken?: boolean; containers: Container[]; volumes: { name: string; hostPath?: { path: string } }[] } } };
}
interface Rule { apiGroups: string[]; resources: string[]; verbs: string[] }

const ON = {
  csi: {
    enabled: true, provisioner: { image: 'example.org/csi-provisioner:v6' }, registrar: { image: 'example.org/node-driver-registrar:v2' },
    storageClass: { memberClass: 'local-block', members: 3, minicopyPolicy: 'Required' },
  },
};
const one = <T extends KubeObject>(objs: KubeObject[], kind: string, name: string): T => {
  const found = objs.filter((o) => o.kind === kind && o.metadata.name === name);
  assert.equal(found.length, 1, `exactly one ${kind} ${name}`);
  return found[0] as T;
};
const container = (w: Workload, name: string): Container => {
  const c = w.spec.template.spec.containers.find((x) => x.name === name);
  assert.ok(c, `container ${name}`);
  return c;
};
const permissions = (rules: Rule[]): string[] =>
  [...new Set(rules.flatMap((r) => r.apiGroups.flatMap((g) => r.resources.flatMap((res) => r.verbs.map((v) => `${g || 'core'}/${res}:${v}`)))))].sort();

test('csi: off by default, nothing of the driver renders', () => {
  const objs = template();
  assert.deepEqual(objs.filter((o) => /csi/.test(o.metadata.name) || ['CSIDriver', 'StorageClass', 'DaemonSet'].includes(o.kind)).map((o) => `${o.kind}/${o.metadata.name}`), []);
});

test('csi: on, the controller (driver + external-provisioner on a shared socket) and the node plugin (driver + registrar)', () => {
  const objs = template(ON);
  const driver = one<KubeObject & { spec: Record<string, unknown> }>(objs, 'CSIDriver', 'csi.shadowset.dev');
  assert.deepEqual(driver.spec, { attachRequired: false, podInfoOnMount: false, volumeLifecycleModes: ['Persistent'], fsGroupPolicy: 'File' });
  const sc = one<KubeObject & { provisioner: string; parameters: Record<string, string>; volumeBindingMode: string }>(objs, 'StorageClass', 'shadowset');
  assert.equal(sc.provisioner, 'csi.shadowset.dev');
  assert.deepEqual(sc.parameters, { memberClass: 'local-block', members: '3', minicopyPolicy: 'Required' });
  assert.equal(sc.volumeBindingMode, 'WaitForFirstConsumer');

  const ctl = one<Workload>(objs, 'Deployment', 'shadowset-csi-controller');
  assert.equal(ctl.spec.template.spec.serviceAccountName, 'shadowset-csi-controller');
  const prov = container(ctl, 'csi-provisioner');
  assert.equal(prov.image, 'example.org/csi-provisioner:v6');
  assert.ok(prov.args.includes('--csi-address=/csi/csi.sock') && prov.args.includes('--extra-create-metadata'), prov.args.join(' '));
  const ctlDriver = container(ctl, 'csi-driver');
  assert.deepEqual(ctlDriver.command, ['shadowset-csi']);
  assert.deepEqual(ctlDriver.args.slice(0, 3), ['--mode=controller', '--endpoint=unix:///csi/csi.sock', '--namespace=shadowset-system']);
  assert.equal(ctlDriver.securityContext?.readOnlyRootFilesystem, true, 'the controller side is unprivileged');

  const node = one<Workload>(objs, 'DaemonSet', 'shadowset-csi-node');
  assert.equal(node.spec.template.spec.automountServiceAccountToken, false, 'the node plugin has no API access');
  const nodeDriver = container(node, 'csi-driver');
  assert.deepEqual(nodeDriver.args.slice(0, 4), ['--mode=node', '--endpoint=unix:///csi/csi.sock', '--node-id=$(NODE_NAME)', '--kubelet-dir=/var/lib/kubelet']);
  assert.equal(nodeDriver.securityContext?.privileged, true);
  assert.equal(nodeDriver.volumeMounts.find((m) => m.mountPath === '/var/lib/kubelet')?.mountPropagation, 'Bidirectional');
  const reg = container(node, 'node-driver-registrar');
  assert.ok(reg.args.includes('--kubelet-registration-path=/var/lib/kubelet/plugins/csi.shadowset.dev/csi.sock'), reg.args.join(' '));
  assert.equal(reg.securityContext?.privileged, undefined);
  assert.deepEqual(node.spec.template.spec.volumes.find((v) => v.name === 'plugin-dir')?.hostPath?.path, '/var/lib/kubelet/plugins/csi.shadowset.dev');
  // Another kubelet directory moves every path with it.
  const moved = one<Workload>(template({ csi: { ...ON.csi, kubeletDir: '/data/kubelet' } }), 'DaemonSet', 'shadowset-csi-node');
  assert.ok(container(moved, 'node-driver-registrar').args.includes('--kubelet-registration-path=/data/kubelet/plugins/csi.shadowset.dev/csi.sock'));
  assert.ok(container(moved, 'csi-driver').args.includes('--kubelet-dir=/data/kubelet'));
});

test('csi: the controller\'s RBAC is exactly what the provisioner and the driver use; leases only in the release namespace', () => {
  const objs = template(ON);
  const role = one<KubeObject & { rules: Rule[] }>(objs, 'ClusterRole', 'shadowset-csi-controller');
  assert.deepEqual(permissions(role.rules), [
    'core/events:create', 'core/events:list', 'core/events:patch', 'core/events:update', 'core/events:watch',
    'core/nodes:get', 'core/nodes:list', 'core/nodes:watch',
    'core/persistentvolumeclaims:create', 'core/persistentvolumeclaims:delete', 'core/persistentvolumeclaims:get', 'core/persistentvolumeclaims:list',
    'core/persistentvolumeclaims:update', 'core/persistentvolumeclaims:watch',
    'core/persistentvolumes:create', 'core/persistentvolumes:delete', 'core/persistentvolumes:get', 'core/persistentvolumes:list', 'core/persistentvolumes:watch',
    'shadowset.dev/shadowsets:create', 'shadowset.dev/shadowsets:delete', 'shadowset.dev/shadowsets:get',
    'storage.k8s.io/csinodes:get', 'storage.k8s.io/csinodes:list', 'storage.k8s.io/csinodes:watch',
    'storage.k8s.io/storageclasses:get', 'storage.k8s.io/storageclasses:list', 'storage.k8s.io/storageclasses:watch',
    'storage.k8s.io/volumeattachments:get', 'storage.k8s.io/volumeattachments:list', 'storage.k8s.io/volumeattachments:watch',
  ]);
  assert.ok(!permissions(role.rules).some((p) => p.includes('secrets') || p.includes('*')), 'no Secrets, no wildcards');
  const leases = one<KubeObject & { rules: Rule[] }>(objs, 'Role', 'shadowset-csi-leases');
  assert.equal(leases.metadata.namespace, 'shadowset-system');
  assert.deepEqual(permissions(leases.rules), ['coordination.k8s.io/leases:create', 'coordination.k8s.io/leases:delete', 'coordination.k8s.io/leases:get',
    'coordination.k8s.io/leases:list', 'coordination.k8s.io/leases:update', 'coordination.k8s.io/leases:watch']);
  const bindings = objs.filter((o) => /Binding$/.test(o.kind) && /csi/.test(o.metadata.name)) as (KubeObject & { subjects: { name: string }[] })[];
  assert.equal(bindings.length, 2);
  for (const b of bindings) assert.deepEqual(b.subjects.map((s) => s.name), ['shadowset-csi-controller']);
});

test('csi: lint passes when on; missing sidecar images or member class fail the render naming the value; the schema refuses bad values', () => {
  const lint = helm(['lint', '--strict', chartDir, '--set', 'csi.enabled=true', '--set', 'csi.provisioner.image=p:1', '--set', 'csi.registrar.image=r:1', '--set', 'csi.storageClass.memberClass=local']);
  assert.equal(lint.status, 0, lint.stdout + lint.stderr);
  assert.throws(() => template({ csi: { ...ON.csi, provisioner: { image: '' } } }), /csi\.provisioner\.image/);
  assert.throws(() => template({ csi: { ...ON.csi, registrar: { image: '' } } }), /csi\.registrar\.image/);
  assert.throws(() => template({ csi: { ...ON.csi, storageClass: { memberClass: '' } } }), /csi\.storageClass\.memberClass/);
  const noClass = template({ csi: { ...ON.csi, storageClass: { create: false } } });
  assert.equal(noClass.filter((o) => o.kind === 'StorageClass').length, 0);
  for (const bad of [{ members: 7 }, { minicopyPolicy: 'Sometimes' }, { volumeBindingMode: 'Later' }]) {
    assert.throws(() => template({ csi: { ...ON.csi, storageClass: { ...ON.csi.storageClass, ...bad } } }), /values don't meet the specifications of the schema/, JSON.stringify(bad));
  }
  assert.throws(() => template({ csi: { ...ON.csi, kubeletDir: 'var/lib/kubelet' } }), /values don't meet the specifications of the schema/);
  assert.throws(() => template({ csi: { ...ON.csi, sidecars: {} } }), /values don't meet the specifications of the schema/);
});

test('csi: on, the operator serves attached sets\' units in the node plugin\'s unit-socket directory', () => {
  const op = one<Workload>(template(ON), 'Deployment', 'shadowset');
  const args = container(op, 'operator').args;
  assert.ok(args.includes('--unit-socket-dir=/run/shadowset/units'), args.join(' '));
  const nodeArgs = container(one<Workload>(template(ON), 'DaemonSet', 'shadowset-csi-node'), 'csi-driver').args;
  assert.ok(nodeArgs.includes('--unit-socket-dir=/run/shadowset/units'), 'the same directory as the node plugin');
});
