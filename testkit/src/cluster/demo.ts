/**
 * The README's first command: the embedded default. As root (with qemu-storage-daemon, loop devices and
 * FUSE) the PVC path (pvc-demo.ts): a PVC of the shadowset StorageClass provisioned by the CSI driver and a
 * pod writing to it. Otherwise, saying why, what it showed before: a local control plane (built from Go
 * modules on first use), the CRDs, a simulated node, two file-backed members as local block PVs, the
 * operator, and an example two-member ShadowSet. Prints what to try; Ctrl-C tears everything down.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { waitFor } from '@shadowset/e2e';
import { API_VERSION, R } from '@shadowset/operator';
import { LocalCluster } from './local-cluster.js';
import { runPvcDemo } from './pvc-demo.js';
import { pvcPathUnavailable } from './pvc-path.js';
import { ensureTools } from './tools.js';

const NS = 'demo';
const say = (s: string) => process.stdout.write(`demo: ${s}\n`);

export async function runDemo(o: { memberMiB: number }): Promise<void> {
  const why = pvcPathUnavailable();
  if (why === null) return runPvcDemo({ volumeMiB: o.memberMiB });
  say(`the PVC path (a StorageClass, a PVC and a pod through the CSI driver) needs root: ${why}.`);
  say('showing a hand-made ShadowSet instead (run as root for the PVC path).');
  return runSetDemo(o);
}

/** Without root: a hand-made two-member ShadowSet and its authenticated NBD export. */
async function runSetDemo(o: { memberMiB: number }): Promise<void> {
  say('starting the local control plane (etcd + kube-apiserver; built from Go modules on first use, which takes a few minutes)…');
  const cluster = new LocalCluster({ name: 'demo', log: pino({ level: 'warn', base: { component: 'operator' } }) });
  let stopping = false;
  let keyDir = '';
  const stop = async (code: number) => {
    if (stopping) return;
    stopping = true;
    say('stopping: operator, simulated node (the engine stops cleanly), control plane…');
    await cluster.stop().catch(() => undefined);
    if (keyDir) await rm(keyDir, { recursive: true, force: true });
    process.exit(code);
  };
  process.on('SIGINT', () => void stop(0));
  process.on('SIGTERM', () => void stop(0));
  try {
    await cluster.start(['node-a'], { podKubeconfig: true });
    const { kube } = cluster;
    await cluster.namespace(NS);
    for (const name of ['member-a', 'member-b']) await cluster.blockClaim(NS, name, 'node-a', o.memberMiB);
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

  export KUBECONFIG=${cluster.cp.kubeconfigPath}
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
