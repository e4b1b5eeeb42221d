// `npm run demo -- --kind`: the demo on a kind cluster of this machine's own making (the toolchain of
// `npm run cluster:build -- --kind`): the project image built and loaded, the chart installed with helm,
// two member PVs on loop devices inside the two workers, and the example two-member ShadowSet. Prints what
// to try, then waits. Ctrl-C (or SIGTERM) dissolves the set and deletes the cluster, its loop devices,
// and the dockerd if one was started for it. It is the scenarios' KindEnv, so the demo and the kind tier
// share one way of doing each step.
import { spawnSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { waitFor, DOCKER } from '@shadowset/e2e';
import { ensureTools } from '@shadowset/testkit/cluster/tools';
import { KindEnv } from '../env/kind-env.js';
import { shadowSetYaml } from '../support/shadowset.js';

const CLUSTER = process.env.DEMO_KIND_CLUSTER ?? 'shadowset-demo';
const NS = 'demo';
const SET = 'demo';
const MEMBER_MIB = Number(process.env.DEMO_MEMBER_MIB ?? 256);
// Short, so that pausing a node shows the removal within seconds (the default is 120 s).
const TIMEOUT_S = 10;
const say = (s: string) => process.stdout.write(`demo: ${s}\n`);

if (!Number.isInteger(MEMBER_MIB) || MEMBER_MIB < 16 || MEMBER_MIB > 4096) {
  say(`DEMO_MEMBER_MIB must be a whole number of MiB from 16 to 4096, not ${process.env.DEMO_MEMBER_MIB}`);
  process.exit(2);
}

let env: KindEnv | undefined;
let interrupted = false;
let ready = false;
let stopping: Promise<never> | undefined;

function stop(code: number): Promise<never> {
  stopping ??= (async () => {
    say('stopping: the set is dissolved, then the cluster, its loop devices and a dockerd started for it are removed…');
    const t = Date.now();
    try {
      // A node paused by hand (the "Try" above) would hold its pods' deletion until a timeout.
      const paused = spawnSync(DOCKER, ['ps', '--filter', `label=io.x-k8s.kind.cluster=${CLUSTER}`, '--filter', 'status=paused', '--format', '{{.Names}}'], { encoding: 'utf8' });
      for (const node of (paused.stdout ?? '').split('\n').filter(Boolean)) spawnSync(DOCKER, ['unpause', node], { stdio: 'ignore' });
      await env?.stop();
      say(`torn down in ${((Date.now() - t) / 1000).toFixed(1)} s`);
    } catch (e) {
      say(`tearing down failed: ${(e as Error).message}`);
      code = code || 1;
    }
    process.exit(code);
  })();
  return stopping;
}

const onSignal = () => {
  // During start-up the step under way ends (a terminal's Ctrl-C reaches its processes too, or the next
  // check below throws) and what was made is undone in order; once up, the teardown starts here.
  if (interrupted) return;
  interrupted = true;
  say('interrupted');
  if (ready) void stop(0);
};
const check = () => {
  if (interrupted) throw new Error('interrupted');
};
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

try {
  say(`starting kind cluster ${CLUSTER} (one control plane, two workers; the toolchain is built first if needed)…`);
  env = await KindEnv.start('demo', { cluster: CLUSTER, hostTools: false, log: (l) => say(l) });
  check();
  const [a, b] = env.nodes;
  await env.createNamespace(NS);
  await env.createBlockVolume(NS, 'member-a', a, MEMBER_MIB);
  await env.createBlockVolume(NS, 'member-b', b, MEMBER_MIB);
  await env.apply('demo.yaml', shadowSetYaml(NS, SET, {
    members: [{ name: 'a', claimName: 'member-a' }, { name: 'b', claimName: 'member-b' }], memberTimeoutSeconds: TIMEOUT_S,
  }));
  say(`ShadowSet ${NS}/${SET} applied; waiting for its engine…`);
  await waitFor('ShadowSet Ready', async () => {
    check();
    const s = (await env!.get(NS, 'shadowsets', SET))?.status as { conditions?: { type: string; status: string }[] } | undefined;
    return s?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
  }, { timeoutMs: 300_000, intervalMs: 1000 });
  const ep = await env.engine(NS, SET);
  const tokenFile = join(ep.pskDir, 'control-token');
  await mkdir(ep.pskDir, { recursive: true });
  await writeFile(tokenFile, ep.token, { mode: 0o600 });
  const { kubectl, helm } = ensureTools();
  check();
  ready = true;
  process.stdout.write(`
The shadow set is up on kind: members a (${a}) and b (${b}), ${MEMBER_MIB} MiB loop devices made inside
the node containers and offered as local Block PVs; the operator runs from the Helm chart, the engine and
b's member server as pods on real kubelets.

  export KUBECONFIG=${env.kubeconfigPath}
  ${kubectl} get shadowsets,writebitmaps -n ${NS}
  ${kubectl} get shadowset ${SET} -n ${NS} -o yaml        # conditions, members, recovery
  ${kubectl} get pods -n ${NS} -o wide; ${kubectl} get events -n ${NS}
  ${helm} list -A

  virtual unit: ${ep.uri} (pod IPs are not reachable from this machine: kubectl port-forward to a relay pod)
  nbdinfo 'nbds://${ep.psk.identity}@127.0.0.1:${ep.port}/shadow?tls-psk-file=${ep.pskFile}'
  qemu-io --object tls-creds-psk,id=tls0,endpoint=client,dir=${ep.pskDir},username=${ep.psk.identity} \\
    --image-opts driver=nbd,host=127.0.0.1,port=${ep.port},export=shadow,tls-creds=tls0 -c 'write -P 0x5a 0 1M' -c 'read -P 0x5a 0 1M'
  engine status: curl -s -H "Authorization: Bearer $(cat ${tokenFile})" ${ep.http}/v1/status
  (the PSK is Secret ${NS}/${SET}-shadowset-export's; a plain nbd:// client, a wrong key, or the API without the token are refused)

Try (under a write load, e.g. the qemu-io above in a loop): ${DOCKER} pause ${b}: member b is removed after the
${TIMEOUT_S} s member timeout with a write bitmap; ${DOCKER} unpause ${b}: it returns with a minicopy. Or
kubectl delete pod ${SET}-engine -n ${NS}: the new engine merges only what its write-intent log marked (nothing,
after a clean stop).
Ctrl-C tears everything down.
`);
  // Until a signal: the port-forward alone must not decide how long this process lives.
  setInterval(() => undefined, 1 << 30);
} catch (e) {
  say(`failed: ${(e as Error).message}`);
  // KindEnv.start undoes its own start-up when it fails; anything made after it is undone here.
  await stop(interrupted ? 130 : 1);
}
