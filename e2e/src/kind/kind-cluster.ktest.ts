// A kind cluster from the node image built on this machine: one control plane and two workers come up
// without pulling any image, pods on different nodes reach each other through the repo's pod network, a
// ClusterIP Service answers by address and by DNS name, and deleting the cluster leaves nothing behind.
// Tier "kind" (`npm run test:kind`): needs root, Debian's docker.io and the toolchain of
// `npm run cluster:build -- --kind` (built here first if missing).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createKindCluster, KIND_NETWORK, type KindCluster } from './cluster.js';
import { docker, dockerVersion } from './docker.js';
import { waitFor } from '../wait.js';

const NAME = 'shadowset-ktest';
let cluster: KindCluster | undefined;
let engineWasRunning = false;

before(async () => {
  engineWasRunning = dockerVersion() !== undefined;
  cluster = await createKindCluster({ name: NAME, workers: 2, replaceExisting: true });
});
after(async () => {
  await cluster?.delete();
});

function c(): KindCluster {
  assert.ok(cluster, 'the cluster was not created');
  return cluster;
}

interface NodeList {
  items: { metadata: { name: string; labels: Record<string, string> }; status: { nodeInfo: { kubeletVersion: string }; conditions: { type: string; status: string }[] } }[];
}

// A line-per-connection TCP server and a client, in Perl (perl-base is in every Debian image).
const SERVER = '$s=IO::Socket::INET->new(LocalPort=>8080,Listen=>16,ReuseAddr=>1) or die "listen: $@"; while($c=$s->accept){print $c "hello from $ENV{HOSTNAME}\\n"; close $c}';
const CLIENT = '$c=IO::Socket::INET->new(PeerAddr=>$ARGV[0],Timeout=>5) or die "connect $ARGV[0]: $@\\n"; print scalar <$c>';

function echoPod(name: string, node: string): object {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'default', labels: { app: 'echo', pod: name } },
    spec: {
      nodeSelector: { 'kubernetes.io/hostname': node },
      terminationGracePeriodSeconds: 1,
      containers: [{ name: 'echo', image: c().toolchain.netImage, imagePullPolicy: 'Never', command: ['perl', '-MIO::Socket::INET', '-e', SERVER] }],
    },
  };
}

async function fetchFrom(pod: string, address: string): Promise<string> {
  const out = await c().kubectl(['exec', pod, '--', 'perl', '-MIO::Socket::INET', '-e', CLIENT, address], { timeoutMs: 20_000 });
  return out.trim();
}

test('one control plane and two workers are Ready, at the version built, on an internal network', async () => {
  const nodes = JSON.parse(await c().kubectl(['get', 'nodes', '-o', 'json'])) as NodeList;
  assert.equal(nodes.items.length, 3);
  const cps = nodes.items.filter((n) => 'node-role.kubernetes.io/control-plane' in n.metadata.labels);
  assert.equal(cps.length, 1);
  for (const n of nodes.items) {
    assert.equal(n.status.nodeInfo.kubeletVersion, c().toolchain.kubernetesVersion);
    assert.equal(n.status.conditions.find((x) => x.type === 'Ready')?.status, 'True', `${n.metadata.name} Ready`);
  }
  // Docker drops whatever an internal network's containers send off it: the nodes have no way out.
  assert.equal(docker(['network', 'inspect', '--format', '{{.Internal}}', KIND_NETWORK]).stdout.trim(), 'true');
  for (const node of c().nodes) {
    const nets = docker(['inspect', '--format', '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}', node]).stdout.trim();
    assert.equal(nets, KIND_NETWORK, `${node} is only on ${KIND_NETWORK}`);
  }
});

test('nothing was pulled: every image on every node was preloaded, and no Pulling event exists', async () => {
  const preloaded = new Set(c().toolchain.preloaded);
  for (const node of c().nodes) {
    const images = c().nodeImages(node);
    assert.ok(images.length >= preloaded.size, `${node} lists its images`);
    const extra = images.filter((i) => !preloaded.has(i) && !preloaded.has(i.replace(/^docker\.io\/library\//, '')));
    assert.deepEqual(extra, [], `${node} has only preloaded images`);
  }
  // kube-system's pods run on IfNotPresent: an image missing from a node would have shown as Pulling.
  const pulls = await c().kubectl(['get', 'events', '-A', '--field-selector', 'reason=Pulling', '-o', 'name']);
  assert.equal(pulls.trim(), '');
  const running = JSON.parse(await c().kubectl(['get', 'pods', '-n', 'kube-system', '-o', 'json'])) as { items: { status: { phase: string } }[] };
  assert.ok(running.items.length >= 10, 'kube-system pods exist');
  assert.ok(running.items.every((p) => p.status.phase === 'Running'), 'every kube-system pod runs');
});

test('pods on different workers reach each other by pod IP, both ways', async () => {
  const [, w1, w2] = c().nodes;
  assert.ok(w1 && w2);
  await c().kubectl(['apply', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [echoPod('echo-a', w1), echoPod('echo-b', w2)] }) });
  await c().kubectl(['wait', '--for=condition=Ready', 'pod/echo-a', 'pod/echo-b', '--timeout=120s'], { timeoutMs: 130_000 });
  const ip = async (pod: string) => (await c().kubectl(['get', 'pod', pod, '-o', 'jsonpath={.status.podIP}'])).trim();
  const [ipA, ipB] = [await ip('echo-a'), await ip('echo-b')];
  assert.match(ipA, /^10\.244\./);
  assert.notEqual(ipA.split('.').slice(0, 3).join('.'), ipB.split('.').slice(0, 3).join('.'), 'the pods are in different node subnets');
  assert.equal(await fetchFrom('echo-a', `${ipB}:8080`), 'hello from echo-b');
  assert.equal(await fetchFrom('echo-b', `${ipA}:8080`), 'hello from echo-a');
});

test('a ClusterIP Service answers from another node, by address and by DNS name', async () => {
  await c().kubectl(['apply', '-f', '-'], {
    input: JSON.stringify({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'echo-b', namespace: 'default' },
      spec: { selector: { pod: 'echo-b' }, ports: [{ port: 80, targetPort: 8080 }] },
    }),
  });
  const clusterIP = (await c().kubectl(['get', 'service', 'echo-b', '-o', 'jsonpath={.spec.clusterIP}'])).trim();
  assert.match(clusterIP, /^10\.96\./);
  // kube-proxy programs the Service within a moment of its endpoints appearing
  const byIP = await waitFor('the Service by its ClusterIP', () => fetchFrom('echo-a', `${clusterIP}:80`), { timeoutMs: 30_000, intervalMs: 500 });
  assert.equal(byIP, 'hello from echo-b');
  assert.equal(await fetchFrom('echo-a', 'echo-b.default.svc.cluster.local:80'), 'hello from echo-b');
  assert.equal(await fetchFrom('echo-a', 'echo-b:80'), 'hello from echo-b');
});

test('CoreDNS answers for the cluster only: no forward to a resolver off it', async () => {
  const corefile = (await c().kubectl(['-n', 'kube-system', 'get', 'configmap', 'coredns', '-o', 'jsonpath={.data.Corefile}'])).trim();
  assert.match(corefile, /kubernetes cluster\.local/);
  assert.doesNotMatch(corefile, /\bforward\b/);
});

test('an image loaded with `kind load docker-image` runs with imagePullPolicy Never', async () => {
  const ref = 'shadowset.local/ktest-load:1';
  docker(['tag', c().toolchain.netImage, ref]);
  try {
    await c().loadImage(ref);
    for (const node of c().nodes) assert.ok(c().nodeImages(node).some((i) => i.endsWith(ref)), `${ref} on ${node}`);
    const pod = echoPod('loaded', c().nodes[1] ?? '');
    (pod as { spec: { containers: { image: string }[] } }).spec.containers[0]!.image = ref;
    await c().kubectl(['apply', '-f', '-'], { input: JSON.stringify(pod) });
    await c().kubectl(['wait', '--for=condition=Ready', 'pod/loaded', '--timeout=60s'], { timeoutMs: 70_000 });
    assert.equal(await fetchFrom('echo-a', `${(await c().kubectl(['get', 'pod', 'loaded', '-o', 'jsonpath={.status.podIP}'])).trim()}:8080`), 'hello from loaded');
  } finally {
    docker(['rmi', ref], { allowFail: true });
  }
});

test('deleting the cluster leaves no node container, no network, and no dockerd of ours', async () => {
  const ran = c();
  cluster = undefined;
  await ran.delete();
  if (engineWasRunning || !ran.startedDockerd) {
    assert.equal(docker(['ps', '-aq', '--filter', `label=io.x-k8s.kind.cluster=${NAME}`]).stdout.trim(), '');
    // the network goes with the last cluster on it; another cluster (another test run) may still use it
    const net = docker(['network', 'inspect', '--format', '{{range .Containers}}{{.Name}} {{end}}', KIND_NETWORK], { allowFail: true });
    if (net.status === 0) {
      assert.ok(net.stdout.trim() !== '', 'an empty network is removed');
      assert.ok(!net.stdout.includes(`${NAME}-`), 'no node of this cluster is left on the network');
    }
  } else {
    assert.equal(dockerVersion(), undefined, 'the dockerd started for the cluster is stopped');
  }
});
