/**
 * The README's first command: the embedded default. A local control plane (built from Go modules on
 * first use), the CRDs, a simulated node, two file-backed members as local block PVs, the operator, and
 * an example two-member ShadowSet. Prints what to try; Ctrl-C tears everything down.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startControlPlane, NodeSimulator, createBackingDevice, waitFor, PROJECT_IMAGE, type BackingDevice } from '@shadowset/e2e';
import { API_VERSION } from '../api/group.js';
import { buildCrds } from '../api/crd.js';
import { ensureTools } from '../chart/tools.js';
import { Kube, R } from '../kube/client.js';
import { rawRequest } from '../kube/raw.js';
import { Operator } from '../operator.js';

const NS = 'demo';
const say = (s: string) => process.stdout.write(`demo: ${s}\n`);

export async function runDemo(o: { memberMiB: number }): Promise<void> {
  say('starting the local control plane (etcd + kube-apiserver; built from Go modules on first use, which takes a few minutes)…');
  const cp = await startControlPlane();
  // The operator's key, as the chart's Secret holds it: every set's token and PSKs derive from it.
  const key = randomBytes(32);
  const disks: BackingDevice[] = [];
  let sim: NodeSimulator | null = null;
  let op: Operator | null = null;
  let stopping = false;
  let keyDir = '';
  const stop = async (code: number) => {
    if (stopping) return;
    stopping = true;
    say('stopping: operator, simulated node (the engine stops cleanly), control plane…');
    await op?.stop().catch(() => undefined);
    await sim?.stop().catch(() => undefined);
    await cp.stop().catch(() => undefined);
    for (const d of disks) await d.release().catch(() => undefined);
    if (keyDir) await rm(keyDir, { recursive: true, force: true });
    process.exit(code);
  };
  process.on('SIGINT', () => void stop(0));
  process.on('SIGTERM', () => void stop(0));
  try {
    const kube = new Kube(cp.kubeConfig);
    for (const { object } of buildCrds()) {
      await rawRequest(cp.kubeConfig, { method: 'POST', path: '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', body: object });
    }
    await waitFor('CRDs served', async () => {
      try {
        await kube.list(R.shadowsets, 'default');
        await kube.list(R.writebitmaps, 'default');
        return true;
      } catch {
        return false;
      }
    });
    sim = await NodeSimulator.start({ kubeConfig: cp.kubeConfig, nodes: ['node-a'], podKubeconfig: cp.kubeconfigPath });
    await kube.create({ group: '', version: 'v1', plural: 'namespaces', namespaced: false }, undefined, { metadata: { name: NS } });
    for (const name of ['member-a', 'member-b']) {
      const disk = await createBackingDevice(o.memberMiB * 1024 * 1024);
      disks.push(disk);
      await kube.create(R.pvs, undefined, {
        metadata: { name: `demo-${name}` },
        spec: {
          capacity: { storage: `${o.memberMiB}Mi` }, accessModes: ['ReadWriteOnce'], volumeMode: 'Block', storageClassName: 'local',
          local: { path: disk.path },
          nodeAffinity: { required: { nodeSelectorTerms: [{ matchExpressions: [{ key: 'kubernetes.io/hostname', operator: 'In', values: ['node-a'] }] }] } },
          claimRef: { namespace: NS, name },
        },
      });
      await kube.create(R.pvcs, NS, {
        metadata: { name },
        spec: { accessModes: ['ReadWriteOnce'], volumeMode: 'Block', storageClassName: 'local', volumeName: `demo-${name}`, resources: { requests: { storage: `${o.memberMiB}Mi` } } },
      });
    }
    op = new Operator({
      kubeConfig: cp.kubeConfig, log: pino({ level: 'warn', base: { component: 'operator' } }), engineImage: `${PROJECT_IMAGE}:dev`,
      leaderElection: { namespace: 'default', identity: 'demo' },
      // Loopback only, so unauthenticated metrics are allowed (nothing here scrapes them).
      metrics: { address: '127.0.0.1:0', auth: 'none' }, healthAddress: '127.0.0.1:0',
      key, operatorPods: { namespace: 'default', labels: { 'app.kubernetes.io/name': 'shadowset-demo' } },
    });
    await op.start();
    await kube.apply(R.shadowsets, NS, 'demo', {
      apiVersion: API_VERSION, kind: 'ShadowSet', metadata: { name: 'demo', namespace: NS },
      spec: { members: [{ name: 'a', claimName: 'member-a' }, { name: 'b', claimName: 'member-b' }] },
    }, 'demo');
    say('ShadowSet demo/demo applied; waiting for its engine…');
    await waitFor('ShadowSet Ready', async () => {
      const s = (await kube.get(R.shadowsets, NS, 'demo'))?.status as { conditions?: { type: string; status: string }[] } | undefined;
      return s?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
    }, { timeoutMs: 120_000 });
    const pod = await kube.get(R.pods, NS, 'demo-engine');
    const ip = (pod?.status as { podIP?: string }).podIP;
    let kubectl = 'kubectl';
    try {
      kubectl = ensureTools().kubectl;
    } catch {
      // fall back to a kubectl on PATH
    }
    // What a consumer of the set gets from its export Secret, and the engine's token (an admin's view),
    // written where the commands below read them.
    const secret = async (name: string, key: string) =>
      Buffer.from(((await kube.get(R.secrets, NS, name)) as { data?: Record<string, string> } | null)?.data?.[key] ?? '', 'base64').toString('utf8');
    keyDir = await mkdtemp(join(tmpdir(), 'shadowset-demo-keys-'));
    const psk = join(keyDir, 'keys.psk');
    const token = join(keyDir, 'control-token');
    await writeFile(psk, await secret('demo-shadowset-export', 'psk'), { mode: 0o600 });
    await writeFile(token, await secret('demo-shadowset-internal', 'control-token'), { mode: 0o600 });
    const uri = `nbds://${ip}:10809/shadow`;
    process.stdout.write(`
The shadow set is up: two file-backed members (${o.memberMiB} MiB each) on the simulated node node-a.

  export KUBECONFIG=${cp.kubeconfigPath}
  ${kubectl} get shadowsets,writebitmaps -n ${NS}
  ${kubectl} get shadowset demo -n ${NS} -o yaml        # conditions, members, recovery
  ${kubectl} get events -n ${NS}

  virtual unit: ${uri} (NBD over TLS; only the PSK of Secret ${NS}/demo-shadowset-export opens it)
  ${kubectl} get secret demo-shadowset-export -n ${NS} -o jsonpath='{.data.psk}' | base64 -d   # identity:hexkey, saved in ${psk}
  nbdinfo 'nbds://shadowset-export@${ip}:10809/shadow?tls-psk-file=${psk}'
  qemu-io --object tls-creds-psk,id=tls0,endpoint=client,dir=${keyDir},username=shadowset-export \\
    --image-opts driver=nbd,host=${ip},port=10809,export=shadow,tls-creds=tls0 -c 'write -P 0x5a 0 1M' -c 'read -P 0x5a 0 1M'
  engine status: curl -s -H "Authorization: Bearer $(cat ${token})" http://${ip}:8080/v1/status
  (a plain nbd:// client, a wrong key, or the API without the token are refused)

Try: add a third member, detach one for backup (examples/ has the manifests; create a PVC the same way).
Ctrl-C tears everything down.
`);
  } catch (e) {
    process.stderr.write(`demo: ${(e as Error).message}\n`);
    await stop(1);
  }
}
