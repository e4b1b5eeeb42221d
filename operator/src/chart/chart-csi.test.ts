// The chart's CSI driver (csi.enabled): rendered by a real helm. Off by default; on, the controller Deployment
// (driver and sidecars), the node DaemonSet (the driver registering itself with the kubelet), the CSIDriver, an
// example StorageClass and least-privilege RBAC; a missing member class fails the render naming the value; the
// sidecar images default to the tags the kind toolchain's build gives them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chartDir, helm, template, type KubeObject } from '@shadowset/testkit/cluster/helm';

interface Container { name: string; image: string; command?: string[]; args: string[]; securityContext?: Record<string, unknown>; volumeMounts: { name: string; mountPath: string; mountPropagation?: string }[] }
interface Workload extends KubeObject {
  spec: { template: { spec: { serviceAccountName?: string; automountServiceAccountToken?: boolean; containers: Container[]; volumes: { name: string; hostPath?: { path: string } }[] } } };
}
interface Rule { apiGroups: string[]; resources: string[]; verbs: string[] }

const ON = {
  csi: {
    enabled: true, provisioner: { image: 'example.org/csi-provisioner:v6' },
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

test('csi: on, the controller (driver, provisioner, attacher on a shared socket) and the node plugin (the driver, registering itself)', () => {
  const objs = template(ON);
  const driver = one<KubeObject & { spec: Record<string, unknown> }>(objs, 'CSIDriver', 'csi.shadowset.dev');
  assert.deepEqual(driver.spec, { attachRequired: true, podInfoOnMount: false, volumeLifecycleModes: ['Persistent'], fsGroupPolicy: 'File' });
  const sc = one<KubeObject & { provisioner: string; parameters: Record<string, string>; volumeBindingMode: string }>(objs, 'StorageClass', 'shadowset');
  assert.equal(sc.provisioner, 'csi.shadowset.dev');
  assert.deepEqual(sc.parameters, { memberClass: 'local-block', members: '3', minicopyPolicy: 'Required' });
  assert.equal(sc.volumeBindingMode, 'WaitForFirstConsumer');

  const ctl = one<Workload>(objs, 'Deployment', 'shadowset-csi-controller');
  assert.equal(ctl.spec.template.spec.serviceAccountName, 'shadowset-csi-controller');
  assert.deepEqual(ctl.spec.template.spec.containers.map((c) => c.name), ['csi-provisioner', 'csi-attacher', 'csi-resizer', 'csi-driver'], 'the resizer by default (the driver grows volumes)');
  const noResizer = one<Workload>(template({ csi: { ...ON.csi, resizer: { enabled: false } } }), 'Deployment', 'shadowset-csi-controller');
  assert.deepEqual(noResizer.spec.template.spec.containers.map((c) => c.name), ['csi-provisioner', 'csi-attacher', 'csi-driver'], 'no resizer when turned off');
  const prov = container(ctl, 'csi-provisioner');
  assert.equal(prov.image, 'example.org/csi-provisioner:v6');
  assert.ok(prov.args.includes('--csi-address=/csi/csi.sock') && prov.args.includes('--extra-create-metadata'), prov.args.join(' '));
  // No topology: the driver's NodeGetInfo reports none (a set can be used from any node).
  assert.ok(!prov.args.some((a) => a.includes('Topology')), prov.args.join(' '));
  const att = container(ctl, 'csi-attacher');
  assert.equal(att.image, 'shadowset.local/csi-attacher:v4.13.0');
  assert.deepEqual(att.args, ['--csi-address=/csi/csi.sock', '--leader-election', '--leader-election-namespace=shadowset-system']);
  const ctlDriver = container(ctl, 'csi-driver');
  assert.deepEqual(ctlDriver.command, ['shadowset-csi']);
  assert.deepEqual(ctlDriver.args.slice(0, 3), ['--mode=controller', '--endpoint=unix:///csi/csi.sock', '--namespace=shadowset-system']);
  for (const c of ctl.spec.template.spec.containers) {
    assert.equal(c.securityContext?.readOnlyRootFilesystem, true, `${c.name}: the controller side is unprivileged`);
    assert.deepEqual(c.securityContext?.capabilities, { drop: ['ALL'] }, c.name);
    assert.deepEqual(c.volumeMounts, [{ name: 'socket-dir', mountPath: '/csi' }], `${c.name} shares only the socket's emptyDir`);
  }
  const withResizer = one<Workload>(template({ csi: { ...ON.csi, resizer: { enabled: true } } }), 'Deployment', 'shadowset-csi-controller');
  const rs = container(withResizer, 'csi-resizer');
  assert.equal(rs.image, 'shadowset.local/csi-resizer:v2.3.0');
  assert.ok(rs.args.includes('--csi-address=/csi/csi.sock') && rs.args.includes('--handle-volume-inuse-error=false'), rs.args.join(' '));

  const node = one<Workload>(objs, 'DaemonSet', 'shadowset-csi-node');
  assert.equal(node.spec.template.spec.automountServiceAccountToken, false, 'the node plugin has no API access');
  assert.deepEqual(node.spec.template.spec.containers.map((c) => c.name), ['csi-driver'], 'no node-driver-registrar: the driver registers itself');
  const nodeDriver = container(node, 'csi-driver');
  assert.deepEqual(nodeDriver.args.slice(0, 4), ['--mode=node', '--endpoint=unix:///csi/csi.sock', '--node-id=$(NODE_NAME)', '--kubelet-dir=/var/lib/kubelet']);
  assert.ok(nodeDriver.args.includes('--kubelet-registration-path=/var/lib/kubelet/plugins/csi.shadowset.dev/csi.sock'), nodeDriver.args.join(' '));
  assert.equal(nodeDriver.securityContext?.privileged, true);
  assert.equal(nodeDriver.volumeMounts.find((m) => m.mountPath === '/var/lib/kubelet')?.mountPropagation, 'Bidirectional');
  assert.deepEqual(node.spec.template.spec.volumes.find((v) => v.name === 'plugin-dir')?.hostPath?.path, '/var/lib/kubelet/plugins/csi.shadowset.dev');
  // Another kubelet directory moves every path with it.
  const moved = one<Workload>(template({ csi: { ...ON.csi, kubeletDir: '/data/kubelet' } }), 'DaemonSet', 'shadowset-csi-node');
  assert.ok(container(moved, 'csi-driver').args.includes('--kubelet-registration-path=/data/kubelet/plugins/csi.shadowset.dev/csi.sock'));
  assert.ok(container(moved, 'csi-driver').args.includes('--kubelet-dir=/data/kubelet'));
  assert.equal(container(moved, 'csi-driver').volumeMounts.find((m) => m.mountPath === '/data/kubelet')?.mountPropagation, 'Bidirectional');
});

test('csi: the sidecar images default to the tags the kind toolchain gives the images it builds from their Go modules', () => {
  const build = readFileSync(join(chartDir, '..', '..', 'e2e', 'scripts', 'lib', 'csi-sidecars.mjs'), 'utf8');
  const built = Object.fromEntries([...build.matchAll(/name: '(csi-[a-z]+)', module: '[^']+', version: '(v[0-9.]+)'/g)].map((m) => [m[1], `shadowset.local/${m[1]}:${m[2]}`]));
  assert.deepEqual(Object.keys(built).sort(), ['csi-attacher', 'csi-provisioner', 'csi-resizer']);
  const ctl = one<Workload>(template({ csi: { enabled: true, resizer: { enabled: true }, storageClass: { memberClass: 'local-block' } } }), 'Deployment', 'shadowset-csi-controller');
  for (const [name, ref] of Object.entries(built)) assert.equal(container(ctl, name).image, ref, name);
});

test('csi: the controller\'s RBAC is exactly what the sidecars and the driver use; leases only in the release namespace', () => {
  const objs = template(ON);
  const role = one<KubeObject & { rules: Rule[] }>(template({ csi: { ...ON.csi, resizer: { enabled: false } } }), 'ClusterRole', 'shadowset-csi-controller');
  assert.deepEqual(permissions(role.rules), [
    'core/events:create', 'core/events:list', 'core/events:patch', 'core/events:update', 'core/events:watch',
    'core/nodes:get', 'core/nodes:list', 'core/nodes:watch',
    'core/persistentvolumeclaims:create', 'core/persistentvolumeclaims:delete', 'core/persistentvolumeclaims:get', 'core/persistentvolumeclaims:list',
    'core/persistentvolumeclaims:patch', 'core/persistentvolumeclaims:update', 'core/persistentvolumeclaims:watch',
    'core/persistentvolumes:create', 'core/persistentvolumes:delete', 'core/persistentvolumes:get', 'core/persistentvolumes:list',
    'core/persistentvolumes:patch', 'core/persistentvolumes:watch',
    'shadowset.dev/shadowsets:create', 'shadowset.dev/shadowsets:delete', 'shadowset.dev/shadowsets:get', 'shadowset.dev/shadowsets:patch',
    'storage.k8s.io/csinodes:get', 'storage.k8s.io/csinodes:list', 'storage.k8s.io/csinodes:watch',
    'storage.k8s.io/storageclasses:get', 'storage.k8s.io/storageclasses:list', 'storage.k8s.io/storageclasses:watch',
    'storage.k8s.io/volumeattachments/status:patch',
    'storage.k8s.io/volumeattachments:get', 'storage.k8s.io/volumeattachments:list', 'storage.k8s.io/volumeattachments:patch', 'storage.k8s.io/volumeattachments:watch',
  ]);
  // The resizer's rules come only with it (on by default).
  const resizerRole = one<KubeObject & { rules: Rule[] }>(objs, 'ClusterRole', 'shadowset-csi-controller');
  assert.deepEqual(permissions(resizerRole.rules).filter((p) => !permissions(role.rules).includes(p)), [
    'core/persistentvolumeclaims/status:patch',
    'storage.k8s.io/volumeattributesclasses:get', 'storage.k8s.io/volumeattributesclasses:list', 'storage.k8s.io/volumeattributesclasses:watch',
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

test('csi: lint passes when on; a missing member class fails the render naming the value; the schema refuses bad values', () => {
  const lint = helm(['lint', '--strict', chartDir, '--set', 'csi.enabled=true', '--set', 'csi.resizer.enabled=true', '--set', 'csi.storageClass.memberClass=local']);
  assert.equal(lint.status, 0, lint.stdout + lint.stderr);
  // An empty image is refused by the schema; the sidecar that no longer exists is an unknown key.
  for (const bad of [{ provisioner: { image: '' } }, { attacher: { image: '' } }, { resizer: { image: '' } }, { registrar: { image: 'r:1' } }]) {
    assert.throws(() => template({ csi: { ...ON.csi, ...bad } }), /values don't meet the specifications of the schema/, JSON.stringify(bad));
  }
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
