// The node simulator against a real API server: nodes, pods run as processes with their block devices,
// restarts, deletion, node failure and return.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { CoreV1Api } from '@kubernetes/client-node';
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { fileURLToPath } from 'node:url';
import { readFile } from 'node:fs/promises';
import { startControlPlane } from '../cluster/control-plane.js';
import type { ControlPlane } from '../cluster/control-plane.js';
import { NodeSimulator } from './node-simulator.js';
import { PROJECT_IMAGE } from './commands.js';
import { createBackingDevice } from '../devices.js';
import type { BackingDevice } from '../devices.js';
import { waitFor } from '../wait.js';

const NS = 'sim-test';
const IMAGE = `${PROJECT_IMAGE}:test`;
const MiB = 1024 * 1024;

let cp: ControlPlane;
let sim: NodeSimulator;
let core: CoreV1Api;
let disk: BackingDevice;

before(async () => {
  cp = await startControlPlane();
  core = cp.kubeConfig.makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name: NS } } });
  disk = await createBackingDevice(16 * MiB, 'SHADOWSET-M0');
  sim = await NodeSimulator.start({
    kubeConfig: cp.kubeConfig,
    nodes: ['node-a', { name: 'node-b', labels: { 'topology.kubernetes.io/zone': 'b' } }],
    // the test's "image program"; the engine's shadow-engine entry is in the default table
    commands: { 'device-probe': fileURLToPath(new URL('./fixtures/device-probe.js', import.meta.url)) },
    backoff: { initialMs: 200, maxMs: 1000 },
  });
});

after(async () => {
  await sim?.stop();
  await cp?.stop();
  await disk?.release();
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function probe(args: string[], extra: Partial<V1Container> = {}): V1Container {
  return { name: 'probe', image: IMAGE, command: ['device-probe'], args, ...extra };
}

async function createPod(name: string, spec: V1Pod['spec']): Promise<void> {
  await core.createNamespacedPod({ namespace: NS, body: { metadata: { name }, spec } });
}

function readPod(name: string): Promise<V1Pod> {
  return core.readNamespacedPod({ name, namespace: NS });
}

function condition(pod: V1Pod, type: string): string | undefined {
  return pod.status?.conditions?.find((c) => c.type === type)?.status;
}

async function waitReady(name: string, timeoutMs = 20_000): Promise<V1Pod> {
  return waitFor(`pod ${name} Ready`, async () => {
    const p = await readPod(name);
    return p.status?.phase === 'Running' && condition(p, 'Ready') === 'True' ? p : undefined;
  }, { timeoutMs });
}

test('registers its nodes as Ready, with addresses and labels', async () => {
  const nodes = await core.listNode();
  const byName = new Map(nodes.items.map((n) => [n.metadata?.name, n]));
  for (const name of ['node-a', 'node-b']) {
    const n = byName.get(name);
    assert.ok(n, `node ${name} registered`);
    assert.equal(n.status?.conditions?.find((c) => c.type === 'Ready')?.status, 'True');
    assert.equal(n.status?.addresses?.find((a) => a.type === 'InternalIP')?.address, sim.nodeIP(name));
    assert.equal(n.metadata?.labels?.['kubernetes.io/hostname'], name);
  }
  assert.equal(byName.get('node-b')?.metadata?.labels?.['topology.kubernetes.io/zone'], 'b');
});

test('runs a pod of the project image with its block PVC visible at the device path', async () => {
  // a local PV on node-b whose path is the loop device (or file), pre-bound to its claim
  await core.createPersistentVolume({ body: {
    metadata: { name: 'pv-m0' },
    spec: {
      capacity: { storage: '16Mi' }, accessModes: ['ReadWriteOnce'], volumeMode: 'Block',
      storageClassName: 'local', persistentVolumeReclaimPolicy: 'Retain',
      local: { path: disk.path },
      nodeAffinity: { required: { nodeSelectorTerms: [{ matchExpressions: [
        { key: 'kubernetes.io/hostname', operator: 'In', values: ['node-b'] }] }] } },
      claimRef: { namespace: NS, name: 'm0' },
    },
  } });
  await core.createNamespacedPersistentVolumeClaim({ namespace: NS, body: {
    metadata: { name: 'm0' },
    spec: { accessModes: ['ReadWriteOnce'], volumeMode: 'Block', storageClassName: 'local', volumeName: 'pv-m0',
      resources: { requests: { storage: '16Mi' } } },
  } });
  await createPod('with-device', {
    // no nodeName: the simulator's binder must follow the PV's node affinity to node-b
    containers: [
      probe(['--device', '/dev/shadow/m0', '--port', '8080'], {
        volumeDevices: [{ name: 'm0', devicePath: '/dev/shadow/m0' }],
        readinessProbe: { httpGet: { path: '/ready', port: 8080 }, periodSeconds: 1 },
      }),
      // not the project's image: only marked Running
      { name: 'sidecar', image: 'registry.example/sidecar:1.0' },
    ],
    volumes: [{ name: 'm0', persistentVolumeClaim: { claimName: 'm0' } }],
  });
  const pod = await waitReady('with-device');
  assert.equal(pod.spec?.nodeName, 'node-b');
  const podIP = pod.status?.podIP ?? '';
  assert.match(podIP, /^127\.12\.\d+\.\d+$/, 'node-b hands out 127.12.x.y');
  assert.equal(pod.status?.hostIP, sim.nodeIP('node-b'));
  const statuses = new Map(pod.status?.containerStatuses?.map((c) => [c.name, c]));
  assert.equal(statuses.get('probe')?.ready, true);
  assert.ok(statuses.get('probe')?.state?.running);
  assert.equal(statuses.get('sidecar')?.ready, true);
  assert.deepEqual(Object.keys(sim.pids(NS, 'with-device')), ['probe'], 'only the project image runs a process');

  // the process listens on its pod IP and reports what it found at the device path
  const res = await fetch(`http://${podIP}:8080/`);
  const report = (await res.json()) as Record<string, unknown>;
  assert.equal(report.podIP, podIP, 'POD_IP is exported to the process');
  assert.equal(report.kind, disk.kind === 'loop' ? 'block' : 'file');
  assert.equal(report.real, disk.path);
  assert.equal(report.size, 16 * MiB);
  assert.equal(report.head, 'SHADOWSET-M0', 'the process reads the real device');
  assert.match(String(report.device), /\/dev\/shadow\/m0$/);
  assert.notEqual(report.device, '/dev/shadow/m0', 'the device path is rewritten under the pod root');
  assert.match(sim.logs(NS, 'with-device', 'probe'), new RegExp(`size=${16 * MiB}`));
});

test('a container that cannot find its PV node-locally is not started', async () => {
  // pinned to node-a by the operator (nodeName), but the PV lives on node-b
  await createPod('wrong-node', {
    nodeName: 'node-a',
    containers: [probe(['--device', '/dev/shadow/m0'], { volumeDevices: [{ name: 'm0', devicePath: '/dev/shadow/m0' }] })],
    volumes: [{ name: 'm0', persistentVolumeClaim: { claimName: 'm0' } }],
  });
  const pod = await waitFor('CreateContainerConfigError', async () => {
    const p = await readPod('wrong-node');
    const w = p.status?.containerStatuses?.[0]?.state?.waiting;
    return w?.reason === 'CreateContainerConfigError' ? p : undefined;
  });
  assert.equal(pod.status?.phase, 'Pending');
  assert.match(pod.status?.containerStatuses?.[0]?.state?.waiting?.message ?? '', /node affinity/);
  assert.deepEqual(sim.pids(NS, 'wrong-node'), {});
});

test('a secret volume is files under the pod root with defaultMode\'s mode, its path rewritten; a missing Secret holds the pod', async () => {
  await core.createNamespacedSecret({ namespace: NS, body: { metadata: { name: 'probe-secret' }, data: { token: Buffer.from('s3cret-value').toString('base64') } } });
  const mountOf = (secretName: string) => ({
    restartPolicy: 'Never',
    containers: [probe(['--file', '/etc/probe/token', '--exit', '0'], { volumeMounts: [{ name: 'sec', mountPath: '/etc/probe', readOnly: true }] })],
    volumes: [{ name: 'sec', secret: { secretName, defaultMode: 0o400 } }],
  });
  await createPod('with-secret', mountOf('probe-secret'));
  await waitFor('with-secret Succeeded', async () => (await readPod('with-secret')).status?.phase === 'Succeeded');
  const out = sim.logs(NS, 'with-secret', 'probe');
  assert.match(out, /fileText=s3cret-value fileMode=400/);
  await createPod('no-secret', mountOf('absent-secret'));
  const waiting = await waitFor('CreateContainerConfigError', async () => {
    const w = (await readPod('no-secret')).status?.containerStatuses?.[0]?.state?.waiting;
    return w?.reason === 'CreateContainerConfigError' ? w : undefined;
  });
  assert.match(waiting.message ?? '', /secret "absent-secret" not found/);
  assert.deepEqual(sim.pids(NS, 'no-secret'), {});
});

test('a crashing container is restarted with back-off and its restarts counted', async () => {
  await createPod('crasher', { containers: [probe(['--exit', '3'])] });
  // observed while backing off after at least two restarts
  const pod = await waitFor('two restarts', async () => {
    const p = await readPod('crasher');
    const c = p.status?.containerStatuses?.[0];
    return (c?.restartCount ?? 0) >= 2 && c?.state?.waiting?.reason === 'CrashLoopBackOff' ? p : undefined;
  });
  const cs = pod.status?.containerStatuses?.[0];
  assert.equal(cs?.lastState?.terminated?.exitCode, 3);
  assert.equal(cs?.lastState?.terminated?.reason, 'Error');
  assert.equal(pod.status?.phase, 'Running', 'a restarting container keeps the pod Running');
  assert.equal(condition(pod, 'Ready'), 'False');
  // the output of every run is kept
  assert.ok((sim.logs(NS, 'crasher', 'probe').match(/device-probe /g) ?? []).length >= 3);
});

test('restartPolicy Never and OnFailure end in Failed and Succeeded', async () => {
  await createPod('fails-once', { restartPolicy: 'Never', containers: [probe(['--exit', '7'])] });
  await createPod('succeeds', { restartPolicy: 'OnFailure', containers: [probe(['--exit', '0'])] });
  const failed = await waitFor('Failed', async () => {
    const p = await readPod('fails-once');
    return p.status?.phase === 'Failed' ? p : undefined;
  });
  const cs = failed.status?.containerStatuses?.[0];
  assert.equal(cs?.state?.terminated?.exitCode, 7);
  assert.equal(cs?.restartCount, 0);
  const ok = await waitFor('Succeeded', async () => {
    const p = await readPod('succeeds');
    return p.status?.phase === 'Succeeded' ? p : undefined;
  });
  assert.equal(ok.status?.containerStatuses?.[0]?.state?.terminated?.reason, 'Completed');
});

test('deleting a pod stops its process, then the pod object is removed', async () => {
  // Ready only once it answers: without a readiness probe a container is Ready when spawned, and a delete
  // that quick (a loaded machine) comes before the probe has its SIGTERM handler, so it dies silently.
  await createPod('doomed', { nodeName: 'node-a', containers: [probe(['--port', '8081'], { readinessProbe: { httpGet: { path: '/ready', port: 8081 }, periodSeconds: 1 } })] });
  await waitReady('doomed');
  const pid = sim.pids(NS, 'doomed').probe;
  assert.ok(pid !== undefined && alive(pid));
  await core.deleteNamespacedPod({ name: 'doomed', namespace: NS });
  await waitFor('pod object gone', async () => {
    try {
      await readPod('doomed');
      return false;
    } catch (err) {
      return (err as { code?: number }).code === 404;
    }
  });
  assert.equal(alive(pid), false, 'process is gone');
  // Its last output may still be in the pipe when the pod object goes: wait for it, bounded.
  await waitFor('SIGTERM handler output', async () => /terminating/.test(sim.logs(NS, 'doomed', 'probe')), { timeoutMs: 5000 }).catch(() => undefined);
  assert.match(sim.logs(NS, 'doomed', 'probe'), /terminating/, 'it was asked to stop with SIGTERM');
});

test('a node failure kills its processes and marks it NotReady; its return restarts them', async () => {
  await createPod('survivor', { nodeName: 'node-a', containers: [probe(['--port', '8082'])] });
  await createPod('deleted-while-down', { nodeName: 'node-a', containers: [probe(['--port', '8084'])] });
  await waitReady('deleted-while-down');
  const before = await waitReady('survivor');
  assert.equal(before.status?.containerStatuses?.[0]?.restartCount, 0);
  const pid = sim.pids(NS, 'survivor').probe;
  assert.ok(pid !== undefined);

  await sim.failNode('node-a');
  const node = await core.readNode({ name: 'node-a' });
  assert.equal(node.status?.conditions?.find((c) => c.type === 'Ready')?.status, 'Unknown');
  assert.ok(node.spec?.taints?.some((t) => t.key === 'node.kubernetes.io/unreachable' && t.effect === 'NoExecute'));
  assert.equal(alive(pid), false, 'SIGKILLed with its node');
  const down = await readPod('survivor');
  assert.equal(condition(down, 'Ready'), 'False');
  assert.equal(down.metadata?.deletionTimestamp, undefined, 'the pod stays');
  // with its kubelet down, a deletion is not carried out and a newly bound pod not started
  await core.deleteNamespacedPod({ name: 'deleted-while-down', namespace: NS });
  await createPod('late', { nodeName: 'node-a', containers: [probe(['--port', '8083'])] });
  // give the simulator every chance to (wrongly) act: a pod it does handle, on node-b, goes Ready meanwhile
  await createPod('canary', { nodeName: 'node-b', containers: [probe(['--port', '8085'])] });
  await waitReady('canary');
  assert.ok((await readPod('deleted-while-down')).metadata?.deletionTimestamp, 'still there, terminating');
  assert.equal((await readPod('late')).status?.containerStatuses, undefined, 'not started');
  // node-b is unaffected
  assert.equal(condition(await readPod('with-device'), 'Ready'), 'True');

  await sim.recoverNode('node-a');
  const back = await core.readNode({ name: 'node-a' });
  assert.equal(back.status?.conditions?.find((c) => c.type === 'Ready')?.status, 'True');
  assert.equal(back.spec?.taints?.some((t) => t.key === 'node.kubernetes.io/unreachable') ?? false, false);
  const after = await waitReady('survivor');
  const cs = after.status?.containerStatuses?.[0];
  assert.equal(cs?.restartCount, 1);
  assert.equal(cs?.lastState?.terminated?.exitCode, 137, 'killed by SIGKILL');
  const newPid = sim.pids(NS, 'survivor').probe;
  assert.ok(newPid !== undefined && newPid !== pid && alive(newPid));
  await waitReady('late');
  await waitFor('pod deleted while down removed', async () => {
    try {
      await readPod('deleted-while-down');
      return false;
    } catch (err) {
      return (err as { code?: number }).code === 404;
    }
  });
});

test('a frozen node (failNode with freeze) stops its processes without killing them; its return resumes them', async () => {
  await createPod('frozen', { nodeName: 'node-b', containers: [probe(['--port', '8086'])] });
  await waitReady('frozen');
  const pid = sim.pids(NS, 'frozen').probe!;
  const state = () => readFile(`/proc/${pid}/stat`, 'utf8').then((s) => s.slice(s.lastIndexOf(')') + 2)[0]);

  await sim.failNode('node-b', { freeze: true });
  assert.equal(await state(), 'T', 'stopped, not killed');
  assert.equal(condition(await readPod('frozen'), 'Ready'), 'False');
  const node = await core.readNode({ name: 'node-b' });
  assert.equal(node.status?.conditions?.find((c) => c.type === 'Ready')?.status, 'Unknown');

  await sim.recoverNode('node-b');
  const back = await waitReady('frozen');
  assert.notEqual(await state(), 'T');
  assert.equal(sim.pids(NS, 'frozen').probe, pid, 'the same process goes on');
  assert.equal(back.status?.containerStatuses?.[0]?.restartCount, 0);
});
