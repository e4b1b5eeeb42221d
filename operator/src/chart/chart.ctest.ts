// The chart against a real kube-apiserver (RBAC authorizer on): helm installs it, CRDs included; the API
// server's own access reviews show the operator's ServiceAccount can do what the operator does and no more,
// for every namespace and for one watched namespace (and what its metrics-reader ClusterRole grants whoever a user
// binds it to); and the examples pass the CRDs' validation.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { repoRoot, startControlPlane, waitFor, type ControlPlane } from '@shadowset/e2e';
import { chartDir, runTool } from '@shadowset/testkit/cluster/helm';
import { ExecHooks } from '../controller/hooks.js';
import { rawRequest } from '../kube/raw.js';

const NS = 'shadowset-system';
const SA = `system:serviceaccount:${NS}:shadowset`;
let cp: ControlPlane;

before(async () => {
  cp = await startControlPlane();
});
after(async () => {
  await cp?.stop();
});

const kubeconfig = () => ['--kubeconfig', cp.kubeconfigPath];

/** What the API server's authorizer says about the operator's ServiceAccount. */
async function can(verb: string, resource: string, namespace = '', group = ''): Promise<boolean> {
  const [res, sub] = resource.split('/');
  const review = await rawRequest<{ status: { allowed: boolean } }>(cp.kubeConfig, {
    method: 'POST', path: '/apis/authorization.k8s.io/v1/subjectaccessreviews',
    body: {
      apiVersion: 'authorization.k8s.io/v1', kind: 'SubjectAccessReview',
      spec: {
        user: SA, groups: SA_GROUPS,
        resourceAttributes: { verb, group, resource: res, ...(sub ? { subresource: sub } : {}), ...(namespace ? { namespace } : {}) },
      },
    },
  });
  return review.status.allowed;
}

/** What the API server's authorizer says about `user` and a non-resource URL such as /metrics. */
async function canURL(user: string, groups: string[], verb: string, path: string): Promise<boolean> {
  const review = await rawRequest<{ status: { allowed: boolean } }>(cp.kubeConfig, {
    method: 'POST', path: '/apis/authorization.k8s.io/v1/subjectaccessreviews',
    body: { apiVersion: 'authorization.k8s.io/v1', kind: 'SubjectAccessReview', spec: { user, groups, nonResourceAttributes: { verb, path } } },
  });
  return review.status.allowed;
}
const SA_GROUPS = ['system:serviceaccounts', `system:serviceaccounts:${NS}`, 'system:authenticated'];

/** Cluster-scoped, create only: the reviews behind the metrics listener's authentication (group, resource). */
const reviews: [string, string][] = [['authentication.k8s.io', 'tokenreviews'], ['authorization.k8s.io', 'subjectaccessreviews']];

/** What the operator may do cluster-wide: read PVs and nodes, create the two reviews, nothing else of these. */
async function assertClusterAccess(): Promise<void> {
  for (const verb of ['get', 'list', 'watch']) {
    assert.ok(await can(verb, 'persistentvolumes'), `${verb} persistentvolumes`);
    assert.ok(await can(verb, 'nodes'), `${verb} nodes`);
  }
  for (const verb of ['create', 'update', 'delete']) assert.equal(await can(verb, 'persistentvolumes'), false, `${verb} persistentvolumes`);
  for (const [group, resource] of reviews) {
    assert.ok(await can('create', resource, '', group), `create ${group}/${resource}`);
    for (const verb of ['get', 'list', 'update', 'delete']) assert.equal(await can(verb, resource, '', group), false, `${verb} ${group}/${resource}`);
  }
  // Reviews in a namespace's name (local) are not granted, nor may the operator read its own metrics.
  assert.equal(await can('create', 'localsubjectaccessreviews', 'default', 'authorization.k8s.io'), false, 'create localsubjectaccessreviews');
  assert.equal(await canURL(SA, SA_GROUPS, 'get', '/metrics'), false, 'the operator itself: get /metrics');
}

/** The operator's needs in one namespace (group, resource, verbs). */
const needs: [string, string, string[]][] = [
  ['shadowset.dev', 'shadowsets', ['get', 'list', 'watch', 'patch']],
  ['shadowset.dev', 'shadowsets/status', ['patch']],
  ['shadowset.dev', 'shadowsets/finalizers', ['update']],
  ['shadowset.dev', 'writebitmaps', ['get', 'list', 'watch', 'create', 'patch', 'delete']],
  ['shadowset.dev', 'writebitmaps/status', ['patch']],
  ['', 'pods', ['get', 'list', 'watch', 'create', 'delete']],
  ['', 'pods/exec', ['get', 'create']],
  ['', 'secrets', ['create', 'delete']],
  ['networking.k8s.io', 'networkpolicies', ['get', 'create', 'patch', 'delete']],
  ['', 'persistentvolumeclaims', ['get', 'list', 'watch']],
  ['', 'services', ['get', 'create', 'patch', 'delete']],
  ['', 'events', ['create']],
];
/** Never granted: the operator must not read secrets, change claims or pods in place, or touch RBAC. */
const never: [string, string, string][] = [
  ['', 'secrets', 'get'], ['', 'secrets', 'list'], ['', 'secrets', 'watch'], ['', 'secrets', 'update'], ['', 'secrets', 'patch'], ['', 'persistentvolumeclaims', 'delete'], ['', 'persistentvolumeclaims', 'update'],
  ['', 'pods', 'update'], ['', 'pods', 'patch'], ['', 'configmaps', 'get'], ['rbac.authorization.k8s.io', 'roles', 'create'],
  ['apps', 'deployments', 'create'], ['', 'pods/attach', 'create'],
];

async function assertAccess(namespace: string, expected: boolean): Promise<void> {
  for (const [group, resource, verbs] of needs) {
    for (const verb of verbs) assert.equal(await can(verb, resource, namespace, group), expected, `${verb} ${group}/${resource} in ${namespace}`);
  }
}

test('helm installs the chart and its CRDs; the operator can do what it needs in every namespace, and no more', async () => {
  await runTool('helm', ['install', 'shadowset', chartDir, '--namespace', NS, '--create-namespace', ...kubeconfig()]);
  for (const crd of ['shadowsets.shadowset.dev', 'writebitmaps.shadowset.dev']) {
    await waitFor(`CRD ${crd}`, () => rawRequest(cp.kubeConfig, { method: 'GET', path: `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd}` }));
  }
  const d = await rawRequest<{ spec: { replicas: number } }>(cp.kubeConfig, { method: 'GET', path: `/apis/apps/v1/namespaces/${NS}/deployments/shadowset` });
  assert.equal(d.spec.replicas, 1);
  await assertAccess('default', true);
  await assertAccess('team-a', true);
  await assertClusterAccess();
  for (const [group, resource, verb] of never) assert.equal(await can(verb, resource, 'default', group), false, `${verb} ${group}/${resource}`);
  // The Lease: in the release namespace only.
  for (const verb of ['get', 'create', 'update', 'patch']) assert.ok(await can(verb, 'leases', NS, 'coordination.k8s.io'), `${verb} leases`);
  assert.equal(await can('get', 'leases', 'default', 'coordination.k8s.io'), false);
});

test('the chart\'s <release>-metrics-reader ClusterRole lets whoever it is bound to get /metrics, and nothing more', async () => {
  const user = 'system:serviceaccount:monitoring:prometheus';
  const groups = ['system:serviceaccounts', 'system:serviceaccounts:monitoring', 'system:authenticated'];
  assert.equal(await canURL(user, groups, 'get', '/metrics'), false, 'not before it is bound');
  await rawRequest(cp.kubeConfig, {
    method: 'POST', path: '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings',
    body: {
      apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', metadata: { name: 'prometheus-shadowset-metrics' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'shadowset-metrics-reader' },
      subjects: [{ kind: 'ServiceAccount', name: 'prometheus', namespace: 'monitoring' }],
    },
  });
  await waitFor('the binding in force', () => canURL(user, groups, 'get', '/metrics'));
  for (const [verb, path] of [['post', '/metrics'], ['get', '/metrics/extra'], ['get', '/debug/pprof'], ['get', '/logs']]) {
    assert.equal(await canURL(user, groups, verb!, path!), false, `${verb} ${path}`);
  }
  for (const [group, resource, verb] of [['', 'pods', 'list'], ['', 'secrets', 'get'], ['shadowset.dev', 'shadowsets', 'list']]) {
    const r = await rawRequest<{ status: { allowed: boolean } }>(cp.kubeConfig, {
      method: 'POST', path: '/apis/authorization.k8s.io/v1/subjectaccessreviews',
      body: { apiVersion: 'authorization.k8s.io/v1', kind: 'SubjectAccessReview', spec: { user, groups, resourceAttributes: { verb, group, resource } } },
    });
    assert.equal(r.status.allowed, false, `${verb} ${group}/${resource}`);
  }
});

/** The cluster's kubeconfig, acting as another user (impersonation by the cluster admin). */
function as(user: string): KubeConfig {
  const kc = new KubeConfig();
  const base = cp.kubeConfig;
  kc.loadFromOptions({
    clusters: base.clusters, contexts: base.contexts, currentContext: base.currentContext,
    users: base.users.map((u) => ({ ...u, impersonateUser: user })),
  });
  return kc;
}

test('the hooks\' exec client needs pods/exec get: its WebSocket handshake is a GET, and create alone is refused', async () => {
  // Authorization comes before the pod is looked up: a pod that does not exist tells the two apart.
  const hook = { pod: 'no-such-pod', command: ['true'], timeoutSeconds: 10 };
  await assert.rejects(new ExecHooks(as(SA)).run('default', hook, 'freeze'), /Unexpected server response: 404/, 'the chart\'s grant passes authorization');
  const rbac = (kind: string, body: object) => rawRequest(cp.kubeConfig, { method: 'POST', path: `/apis/rbac.authorization.k8s.io/v1/namespaces/default/${kind}`, body });
  await rbac('roles', { metadata: { name: 'exec-create-only' }, rules: [{ apiGroups: [''], resources: ['pods/exec'], verbs: ['create'] }] });
  await rbac('rolebindings', {
    metadata: { name: 'exec-create-only' }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'exec-create-only' },
    subjects: [{ kind: 'User', name: 'exec-probe' }],
  });
  await waitFor('the binding in force', async () => {
    const r = await rawRequest<{ status: { allowed: boolean } }>(cp.kubeConfig, {
      method: 'POST', path: '/apis/authorization.k8s.io/v1/subjectaccessreviews',
      body: { apiVersion: 'authorization.k8s.io/v1', kind: 'SubjectAccessReview', spec: { user: 'exec-probe', resourceAttributes: { verb: 'create', resource: 'pods', subresource: 'exec', namespace: 'default' } } },
    });
    return r.status.allowed;
  });
  await assert.rejects(new ExecHooks(as('exec-probe')).run('default', hook, 'freeze'), /Unexpected server response: 403/);
});

const operatorKey = async () =>
  (await rawRequest<{ data: { key: string } }>(cp.kubeConfig, { method: 'GET', path: `/api/v1/namespaces/${NS}/secrets/shadowset-key` })).data.key;

test('with watchNamespace, the operator reaches only that namespace (plus reading PVs and nodes and creating reviews); an upgrade keeps the operator\'s key', async () => {
  // The watched namespace must exist: the chart puts a Role in it.
  await rawRequest(cp.kubeConfig, { method: 'POST', path: '/api/v1/namespaces', body: { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'team-a' } } });
  const key = await operatorKey();
  assert.equal(Buffer.from(key, 'base64').length, 64);
  await runTool('helm', ['upgrade', 'shadowset', chartDir, '--namespace', NS, '--set', 'watchNamespace=team-a', ...kubeconfig()]);
  assert.equal(await operatorKey(), key, 'the key made at install is kept (lookup), or every engine would refuse the operator');
  await assertAccess('team-a', true);
  await assertAccess('default', false);
  await assertClusterAccess();
  assert.equal(await can('list', 'shadowsets', '', 'shadowset.dev'), false, 'no cluster-wide list of ShadowSets');
});

test('every example passes the CRDs\' validation (server-side dry run, CEL rules included)', async () => {
  const dir = join(repoRoot, 'examples');
  for (const f of readdirSync(dir).filter((x) => x.endsWith('.yaml')).sort()) {
    const out = await runTool('kubectl', ['apply', '--dry-run=server', '--namespace', 'default', '-f', join(dir, f), ...kubeconfig()]);
    assert.match(out, /shadowset\.shadowset\.dev\/db (created|configured) \(server dry run\)/, `${f}: ${out}`);
  }
});

test('helm uninstall removes the operator but keeps the CRDs (and so every ShadowSet) and the operator\'s key', async () => {
  const key = await operatorKey();
  await runTool('helm', ['uninstall', 'shadowset', '--namespace', NS, ...kubeconfig()]);
  await assert.rejects(rawRequest(cp.kubeConfig, { method: 'GET', path: `/apis/apps/v1/namespaces/${NS}/deployments/shadowset` }), /404/);
  await rawRequest(cp.kubeConfig, { method: 'GET', path: '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/shadowsets.shadowset.dev' });
  assert.equal(await operatorKey(), key);
});
