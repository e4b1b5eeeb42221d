// The Helm chart, rendered by a real helm binary: lint, the objects and permissions it produces for a few value
// combinations, and values.schema.json refusing bad values.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import yaml from 'js-yaml';
import { repoRoot } from '@shadowset/e2e';
import { chartDir, helm, template, type KubeObject } from '@shadowset/testkit/cluster/helm';

const NS = 'shadowset-system';

interface Rule { apiGroups?: string[]; resources?: string[]; verbs: string[]; nonResourceURLs?: string[]; resourceNames?: string[] }
interface Container {
  name: string; image: string; command?: string[]; args: string[]; ports: { name: string; containerPort: number }[];
  livenessProbe: { httpGet: { path: string; port: string } }; readinessProbe: { httpGet: { path: string; port: string } };
  securityContext: Record<string, unknown>; env: { name: string }[];
}
interface PodSpec { serviceAccountName: string; securityContext: Record<string, unknown>; containers: Container[] }
interface Deployment extends KubeObject {
  spec: { replicas: number; selector: { matchLabels: Record<string, string> }; template: { metadata: { labels: Record<string, string> }; spec: PodSpec } };
}

const one = <T extends KubeObject>(objs: KubeObject[], kind: string, name?: string): T => {
  const found = objs.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  assert.equal(found.length, 1, `exactly one ${kind}${name ? ` ${name}` : ''}, got ${found.length}`);
  return found[0] as T;
};
const operator = (objs: KubeObject[]): Container => one<Deployment>(objs, 'Deployment').spec.template.spec.containers[0]!;
const rules = (o: KubeObject): Rule[] => (o as unknown as { rules: Rule[] }).rules;

/** Permissions as "group/resource:verb" strings, so rule sets compare regardless of how rules are grouped. */
function permissions(rs: Rule[]): string[] {
  const out = new Set<string>();
  for (const r of rs) {
    for (const g of r.apiGroups ?? []) for (const res of r.resources ?? []) for (const v of r.verbs) out.add(`${g || 'core'}/${res}:${v}`);
  }
  return [...out].sort();
}
const grant = (group: string, resources: string[], verbs: string[]): string[] =>
  resources.flatMap((r) => verbs.map((v) => `${group}/${r}:${v}`));

const crud = ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'];
const read = ['get', 'list', 'watch'];
const NAMESPACED = [
  ...grant('shadowset.dev', ['shadowsets', 'writebitmaps'], crud),
  ...grant('shadowset.dev', ['shadowsets/status', 'writebitmaps/status'], ['get', 'update', 'patch']),
  ...grant('shadowset.dev', ['shadowsets/finalizers', 'writebitmaps/finalizers'], ['update']),
  ...grant('core', ['pods'], ['get', 'list', 'watch', 'create', 'delete']),
  // Exec runs over a WebSocket: a GET, which newer API servers also authorize as create.
  ...grant('core', ['pods/exec'], ['get', 'create']),
  // The set's Secrets: made and, by uid, removed; never read (the keys are derived, not fetched).
  ...grant('core', ['secrets'], ['create', 'delete']),
  ...grant('networking.k8s.io', ['networkpolicies'], ['get', 'create', 'patch', 'delete']),
  ...grant('core', ['persistentvolumeclaims'], read),
  ...grant('core', ['services'], crud),
  ...grant('core', ['events'], ['create', 'patch']),
  ...grant('events.k8s.io', ['events'], ['create', 'patch']),
].sort();
const CLUSTER = [
  ...grant('core', ['persistentvolumes', 'nodes'], read),
  // Where a set's consumer is: the CSI driver's VolumeAttachments, read only.
  ...grant('storage.k8s.io', ['volumeattachments'], read),
  // Asking the API server who sent a /metrics request and whether they may get /metrics: create only.
  ...grant('authentication.k8s.io', ['tokenreviews'], ['create']),
  ...grant('authorization.k8s.io', ['subjectaccessreviews'], ['create']),
].sort();
const LEASES = grant('coordination.k8s.io', ['leases'], ['get', 'create', 'update', 'patch']).sort();

test('helm lint passes (strict) with the defaults and with watchNamespace and replicas set', () => {
  for (const set of [[], ['--set', 'watchNamespace=apps,replicas=2']]) {
    const res = helm(['lint', '--strict', chartDir, ...set]);
    assert.equal(res.status, 0, `helm lint ${set.join(' ')}:\n${res.stdout}${res.stderr}`);
    assert.match(res.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
  }
});

test('Chart.yaml: shadowset 0.1.0, appVersion equal to the operator package version', () => {
  const chart = yaml.load(readFileSync(join(chartDir, 'Chart.yaml'), 'utf8')) as Record<string, string>;
  const pkg = JSON.parse(readFileSync(join(repoRoot, 'operator', 'package.json'), 'utf8')) as { version: string };
  assert.equal(chart.apiVersion, 'v2');
  assert.equal(chart.name, 'shadowset');
  assert.equal(chart.version, '0.1.0');
  assert.equal(chart.appVersion, pkg.version);
});

test('defaults render the operator, its ServiceAccount, RBAC and metrics Service, all in the release namespace', () => {
  const objs = template();
  assert.deepEqual(objs.map((o) => o.kind).sort(),
    ['ClusterRole', 'ClusterRole', 'ClusterRoleBinding', 'Deployment', 'Role', 'RoleBinding', 'Secret', 'Service', 'ServiceAccount']);
  for (const o of objs.filter((x) => !x.kind.startsWith('Cluster'))) assert.equal(o.metadata.namespace, NS, `${o.kind} namespace`);
  for (const o of objs) {
    assert.equal(o.metadata.labels?.['app.kubernetes.io/managed-by'], 'Helm');
    assert.equal(o.metadata.labels?.['app.kubernetes.io/instance'], 'shadowset');
  }
});

test('RBAC with every namespace watched: exactly the permissions the operator uses, no wildcard, no reading secrets', () => {
  const objs = template();
  const cr = one(objs, 'ClusterRole', 'shadowset');
  assert.deepEqual(permissions(rules(cr)), [...NAMESPACED, ...CLUSTER].sort());
  const role = one(objs, 'Role');
  assert.equal(role.metadata.namespace, NS);
  assert.deepEqual(permissions(rules(role)), LEASES);
  for (const r of [...rules(cr), ...rules(role)]) {
    for (const field of [r.apiGroups, r.resources, r.verbs]) assert.ok(!field?.includes('*'), `wildcard in ${JSON.stringify(r)}`);
    assert.equal(r.nonResourceURLs, undefined);
    // Secrets: create and delete only, by name; never get, list or watch (no Secret's content is readable).
    if (r.resources?.some((x) => x.startsWith('secrets'))) {
      assert.deepEqual(r.resources, ['secrets']);
      assert.deepEqual(r.verbs, ['create', 'delete']);
      assert.equal(r.resourceNames, undefined);
    }
  }
  // Every binding names the chart's ServiceAccount and its own role.
  const sa = one(objs, 'ServiceAccount').metadata.name;
  for (const [bindingKind, roleKind, roleName] of [['ClusterRoleBinding', 'ClusterRole', 'shadowset'], ['RoleBinding', 'Role', 'shadowset-leader-election']] as const) {
    const b = one(objs, bindingKind) as unknown as { roleRef: { kind: string; name: string }; subjects: unknown[]; metadata: { namespace?: string } };
    assert.deepEqual(b.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: roleKind, name: one(objs, roleKind, roleName).metadata.name });
    assert.deepEqual(b.subjects, [{ kind: 'ServiceAccount', name: sa, namespace: NS }]);
  }
});

test('the metrics-reader ClusterRole: get /metrics and nothing else, bound by the chart to no one', () => {
  for (const [values, name] of [[{}, 'shadowset-metrics-reader'], [{ fullnameOverride: 'ops', watchNamespace: 'apps' }, 'ops-metrics-reader']] as const) {
    const objs = template(values);
    assert.deepEqual(rules(one(objs, 'ClusterRole', name)), [{ nonResourceURLs: ['/metrics'], verbs: ['get'] }]);
    const bound = objs.filter((o) => o.kind.endsWith('Binding')).map((b) => (b as unknown as { roleRef: { name: string } }).roleRef.name);
    assert.ok(!bound.includes(name), `the chart binds ${name} (${bound.join(', ')})`);
  }
});

test('the operator Deployment: one replica, the flags, probes, metrics port and a non-root, read-only container', () => {
  const objs = template();
  const d = one<Deployment>(objs, 'Deployment');
  assert.equal(d.spec.replicas, 1);
  const pod = d.spec.template.spec;
  assert.equal(pod.serviceAccountName, one(objs, 'ServiceAccount').metadata.name);
  const c = operator(objs);
  assert.equal(c.image, 'ghcr.io/shadowset/shadowset:0.1.0');
  assert.deepEqual(c.command, ['shadow-operator']);
  assert.deepEqual(c.args, [
    '--engine-image=ghcr.io/shadowset/shadowset:0.1.0',
    '--leader-elect',
    '--metrics-bind-address=:8081',
    '--metrics-auth=kubernetes',
    '--health-bind-address=:8082',
    '--log-level=info',
    '--default-member-timeout=120',
    '--default-max-copies=4',
    '--key-file=/etc/shadowset/key/key',
    '--operator-pod-labels=app.kubernetes.io/component=operator,app.kubernetes.io/instance=shadowset,app.kubernetes.io/name=shadowset',
    // Without the CSI driver no engine serves a unit socket on its node.
    '--unit-socket-dir=',
  ]);
  assert.deepEqual(c.ports.map((p) => [p.name, p.containerPort]), [['metrics', 8081], ['health', 8082]]);
  for (const probe of [c.livenessProbe, c.readinessProbe]) assert.deepEqual(probe.httpGet, { path: '/healthz', port: 'health' });
  assert.deepEqual(c.env.map((e) => e.name), ['POD_NAMESPACE', 'POD_NAME']);
  assert.equal(pod.securityContext.runAsNonRoot, true);
  assert.equal(pod.securityContext.runAsUser, 65532);
  assert.equal(c.securityContext.readOnlyRootFilesystem, true);
  assert.equal(c.securityContext.allowPrivilegeEscalation, false);
  assert.deepEqual(c.securityContext.capabilities, { drop: ['ALL'] });
  assert.equal(c.securityContext.privileged, undefined);
  // The metrics Service selects these pods and targets the named port.
  const svc = one(objs, 'Service') as unknown as { spec: { selector: Record<string, string>; ports: { name: string; port: number; targetPort: string }[] } };
  assert.deepEqual(svc.spec.ports.map((p) => [p.name, p.port, p.targetPort]), [['metrics', 8081, 'metrics']]);
  for (const [k, v] of Object.entries(svc.spec.selector)) assert.equal(d.spec.template.metadata.labels[k], v, `pod label ${k}`);
  assert.deepEqual(d.spec.selector.matchLabels, svc.spec.selector);
});

test('the operator\'s key: a Secret of 64 random characters, kept on uninstall, mounted read-only for --key-file', () => {
  const objs = template();
  const secret = one(objs, 'Secret') as unknown as { metadata: { name: string; namespace: string; annotations: Record<string, string> }; data: { key: string } };
  assert.equal(secret.metadata.name, 'shadowset-key');
  assert.equal(secret.metadata.namespace, NS);
  assert.equal(secret.metadata.annotations['helm.sh/resource-policy'], 'keep');
  const key = Buffer.from(secret.data.key, 'base64').toString();
  assert.match(key, /^[A-Za-z0-9]{64}$/);
  const other = Buffer.from((one(template(), 'Secret') as unknown as { data: { key: string } }).data.key, 'base64').toString();
  assert.notEqual(other, key, 'random at each render without a cluster (helm upgrade keeps the one in the cluster: chart.ctest)');
  const pod = one<Deployment>(objs, 'Deployment').spec.template.spec as unknown as { volumes: { name: string; secret?: { secretName: string; defaultMode: number } }[]; containers: { volumeMounts: { name: string; mountPath: string; readOnly?: boolean }[] }[] };
  assert.deepEqual(pod.volumes.find((v) => v.name === 'key')?.secret, { secretName: 'shadowset-key', defaultMode: 0o400 });
  // A kubelet writes the key as root's (0400): the operator (UID 65532) reads it only through the pod's fsGroup,
  // which makes the files that group's, with group read (found when the chart first ran on a real kubelet).
  const sc = (pod as unknown as { securityContext: { runAsUser: number; runAsGroup: number; fsGroup?: number } }).securityContext;
  assert.equal(sc.fsGroup, sc.runAsGroup, 'the key Secret is readable by the operator\'s group');
  assert.deepEqual(pod.containers[0]!.volumeMounts.find((m) => m.name === 'key'), { name: 'key', mountPath: '/etc/shadowset/key', readOnly: true });
});

test('watchNamespace: namespaced permissions move to a Role there; the ClusterRole only reads PVs and nodes and creates reviews', () => {
  const objs = template({ watchNamespace: 'apps' });
  assert.deepEqual(permissions(rules(one(objs, 'ClusterRole', 'shadowset'))), CLUSTER);
  const roles = objs.filter((o) => o.kind === 'Role');
  const apps = roles.find((r) => r.metadata.namespace === 'apps');
  assert.ok(apps, 'a Role in the watched namespace');
  assert.deepEqual(permissions(rules(apps)), NAMESPACED);
  assert.deepEqual(permissions(rules(roles.find((r) => r.metadata.namespace === NS)!)), LEASES);
  const binding = objs.find((o) => o.kind === 'RoleBinding' && o.metadata.namespace === 'apps') as unknown as { roleRef: { kind: string; name: string } } | undefined;
  assert.deepEqual(binding?.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: apps.metadata.name });
  assert.ok(operator(objs).args.includes('--watch-namespace=apps'));
});

test('replicas 2 with leader election; images, engine defaults and log level come from values', () => {
  const objs = template({
    replicas: 2, logLevel: 'debug', image: { tag: '1.2.3' },
    engine: { memberTimeoutSeconds: 30, maxCopies: 8 },
  });
  assert.equal(one<Deployment>(objs, 'Deployment').spec.replicas, 2);
  const c = operator(objs);
  assert.equal(c.image, 'ghcr.io/shadowset/shadowset:1.2.3');
  for (const a of ['--leader-elect', '--engine-image=ghcr.io/shadowset/shadowset:1.2.3', '--log-level=debug',
    '--default-member-timeout=30', '--default-max-copies=8']) assert.ok(c.args.includes(a), `${a} in ${c.args.join(' ')}`);
  const own = operator(template({ engine: { image: { repository: 'registry.example/engine', tag: '7' } } }));
  assert.ok(own.args.includes('--engine-image=registry.example/engine:7'));
  assert.equal(own.image, 'ghcr.io/shadowset/shadowset:0.1.0');
  assert.ok(operator(template({ engine: { image: { repository: 'registry.example/engine' } } })).args
    .includes('--engine-image=registry.example/engine:0.1.0'));
});

test('optional objects: no RBAC, an existing ServiceAccount, no metrics Service', () => {
  const objs = template({ rbac: { create: false }, serviceAccount: { create: false, name: 'existing' }, metrics: { service: { enabled: false } } });
  assert.deepEqual(objs.map((o) => o.kind), ['Secret', 'Deployment']);
  assert.equal(one<Deployment>(objs, 'Deployment').spec.template.spec.serviceAccountName, 'existing');
});

test('values.schema.json refuses bad values before anything renders', () => {
  const cases: [object, RegExp][] = [
    [{ replicas: 'two' }, /replicas/],
    [{ logLevel: 'loud' }, /logLevel/],
    [{ replica: 2 }, /replica/],
    [{ engine: { maxCopies: 0 } }, /maxCopies/],
    [{ engine: { memberTimeout: 5 } }, /memberTimeout/],
    [{ watchNamespace: 'Not_A_Namespace' }, /watchNamespace/],
    [{ image: { pullPolicy: 'Sometimes' } }, /pullPolicy/],
  ];
  for (const [values, where] of cases) {
    const res = helm(['template', 'x', chartDir, '--values', '-'], JSON.stringify(values));
    assert.notEqual(res.status, 0, `${JSON.stringify(values)} was accepted`);
    assert.match(res.stderr, /values don't meet the specifications of the schema/);
    assert.match(res.stderr, where);
  }
});
