// The operator's /metrics as a scraper meets it: the real shadow-operator program, started with the chart's
// flags and running as the chart's ServiceAccount (so its RBAC is what lets it ask for the reviews), against a
// real kube-apiserver. ServiceAccounts get real tokens (TokenRequest): none or a forged one → 401, a token
// whose user is not bound to <release>-metrics-reader → 403, a bound one → the metrics. /healthz stays open.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManagedProcess, repoRoot, startControlPlane, waitFor, type ControlPlane } from '@shadowset/e2e';
import { chartDir, runTool } from '@shadowset/testkit/cluster/helm';
import { rawRequest } from '../kube/raw.js';

const NS = 'shadowset-system';
let cp: ControlPlane;
let dir: string;
const procs: ManagedProcess[] = [];

before(async () => {
  cp = await startControlPlane();
  dir = await mkdtemp(join(tmpdir(), 'shadowset-metrics-'));
  await runTool('helm', ['install', 'shadowset', chartDir, '--namespace', NS, '--create-namespace', '--kubeconfig', cp.kubeconfigPath]);
});
after(async () => {
  for (const p of procs) await p.stop(3000);
  await cp?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const post = <T>(path: string, body: unknown) => rawRequest<T>(cp.kubeConfig, { method: 'POST', path, body });

/** A fresh token for a ServiceAccount, as the kubelet would project one (TokenRequest). */
async function tokenFor(namespace: string, sa: string): Promise<string> {
  const r = await post<{ status: { token: string } }>(`/api/v1/namespaces/${namespace}/serviceaccounts/${sa}/token`, {
    apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { expirationSeconds: 600 },
  });
  return r.status.token;
}

/** Starts shadow-operator with `args`; resolves with the process and its stdout lines so far (pino JSON). */
async function startOperator(args: string[], env: Record<string, string>): Promise<{ proc: ManagedProcess; lines: string[]; stderr: () => string }> {
  const lines: string[] = [];
  let partial = '';
  let err = '';
  const proc = await ManagedProcess.start({
    command: process.execPath, args: [join(repoRoot, 'operator', 'bin', 'shadow-operator.js'), ...args],
    env: { PATH: process.env.PATH ?? '', ...env },
    output: (chunk, stream) => {
      if (stream === 'stderr') {
        err += chunk.toString('utf8');
        return;
      }
      const parts = (partial + chunk.toString('utf8')).split('\n');
      partial = parts.pop()!;
      lines.push(...parts);
    },
  });
  procs.push(proc);
  return { proc, lines, stderr: () => err };
}

test('--metrics-auth=none on every interface: the operator refuses to start and says why', async () => {
  const { proc, stderr } = await startOperator(['--metrics-auth=none', '--metrics-bind-address=:0', '--key-file=/nonexistent'], {});
  const exit = await proc.exited;
  assert.equal(exit.code, 1);
  assert.match(stderr(), /--metrics-auth=none serves \/metrics to anyone who can connect, so it is allowed only on a loopback address/);
});

test('/metrics: no token or a forged one 401, a ServiceAccount not bound to the metrics-reader role 403, a bound one 200', async () => {
  // The operator, as the chart runs it: its own ServiceAccount's token, the chart's flags but on loopback.
  const kubeconfig = join(dir, 'operator.kubeconfig');
  await writeFile(kubeconfig, JSON.stringify({
    apiVersion: 'v1', kind: 'Config', 'current-context': 'op',
    clusters: [{ name: 'local', cluster: { server: cp.server, 'certificate-authority': cp.pki.caCert } }],
    users: [{ name: 'operator', user: { token: await tokenFor(NS, 'shadowset') } }],
    contexts: [{ name: 'op', context: { cluster: 'local', user: 'operator' } }],
  }), { mode: 0o600 });
  const keyFile = join(dir, 'key');
  // Text, as the chart's Secret holds it: raw random bytes may begin or end in whitespace, which the
  // operator trims, and then fall short of the 32 it requires.
  await writeFile(keyFile, randomBytes(32).toString('hex'), { mode: 0o600 });
  const { proc, lines, stderr } = await startOperator([
    '--leader-elect', `--leader-election-namespace=${NS}`, '--metrics-bind-address=127.0.0.1:0', '--metrics-auth=kubernetes',
    '--health-bind-address=127.0.0.1:0', `--key-file=${keyFile}`, '--operator-pod-labels=app.kubernetes.io/name=shadowset',
  ], { KUBECONFIG: kubeconfig, POD_NAMESPACE: NS });
  const listening = (path: string) => waitFor(`the operator listening for ${path}`, () => {
    if (!proc.running) throw new Error(`shadow-operator exited: ${stderr()}`);
    for (const l of lines) {
      let e: { event?: string; paths?: string[]; address?: string; metricsAuth?: string };
      try {
        e = JSON.parse(l) as typeof e;
      } catch {
        continue;
      }
      if (e.event === 'Listening' && e.paths?.includes(path)) return e;
    }
    return undefined;
  }, { timeoutMs: 30_000 });
  const m = await listening('/metrics');
  assert.equal(m.metricsAuth, 'kubernetes');
  const metrics = `http://${m.address}/metrics`;
  const health = `http://${(await listening('/healthz')).address}/healthz`;

  // Two ServiceAccounts of a monitoring namespace; only the scraper is bound to the chart's reader role.
  await post('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'monitoring' } });
  for (const sa of ['scraper', 'stranger']) await post('/api/v1/namespaces/monitoring/serviceaccounts', { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: sa } });
  await post('/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', {
    apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', metadata: { name: 'scraper-reads-shadowset-metrics' },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'shadowset-metrics-reader' },
    subjects: [{ kind: 'ServiceAccount', name: 'scraper', namespace: 'monitoring' }],
  });
  await waitFor('the binding in force', async () => (await post<{ status: { allowed: boolean } }>('/apis/authorization.k8s.io/v1/subjectaccessreviews', {
    apiVersion: 'authorization.k8s.io/v1', kind: 'SubjectAccessReview',
    spec: { user: 'system:serviceaccount:monitoring:scraper', groups: ['system:serviceaccounts'], nonResourceAttributes: { path: '/metrics', verb: 'get' } },
  })).status.allowed);
  const scraper = await tokenFor('monitoring', 'scraper');
  const stranger = await tokenFor('monitoring', 'stranger');
  const scrape = (token?: string) => fetch(metrics, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` } });

  const refused: [string | undefined, number, string][] = [
    [undefined, 401, 'no token'],
    ['not-a-token', 401, 'a token the API server never issued'],
    // The scraper's token with its signature changed: the API server's authenticator rejects it.
    [`${scraper.slice(0, -4)}${scraper.endsWith('AAAA') ? 'BBBB' : 'AAAA'}`, 401, 'a forged signature'],
    [stranger, 403, 'a real token whose ServiceAccount may not get /metrics'],
  ];
  for (const [token, status, what] of refused) {
    const res = await scrape(token);
    assert.equal(res.status, status, what);
    assert.doesNotMatch(await res.text(), /shadowset_operator/, `${what}: no metrics`);
  }
  const res = await scrape(scraper);
  assert.equal(res.status, 200, 'the scraper bound to shadowset-metrics-reader');
  assert.match(await res.text(), /^shadowset_operator_reconciles_total \d+$/m);
  // Probes send no token: /healthz answers anyone, and only that the process runs.
  const h = await fetch(health);
  assert.equal(h.status, 200);
  assert.deepEqual(await h.json(), { ok: true });
  assert.equal(proc.running, true);
});
