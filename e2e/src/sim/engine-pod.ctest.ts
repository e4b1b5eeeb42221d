// The real engine (engine/bin/shadow-engine.js) run by the simulator as the project image's container:
// two block PVCs on loop devices become its members, it serves on its pod IP, and it stops on deletion.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { CoreV1Api } from '@kubernetes/client-node';
import type { V1Pod } from '@kubernetes/client-node';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { startControlPlane } from '../cluster/control-plane.js';
import type { ControlPlane } from '../cluster/control-plane.js';
import { NodeSimulator } from './node-simulator.js';
import { PROJECT_IMAGE } from './commands.js';
import { createBackingDevice } from '../devices.js';
import type { BackingDevice } from '../devices.js';
import { waitFor } from '../wait.js';

const NS = 'engine-pod';
let cp: ControlPlane;
let sim: NodeSimulator;
let core: CoreV1Api;
const disks: BackingDevice[] = [];

before(async () => {
  cp = await startControlPlane();
  core = cp.kubeConfig.makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name: NS } } });
  sim = await NodeSimulator.start({ kubeConfig: cp.kubeConfig, nodes: ['node-a'] });
  for (const m of ['m0', 'm1']) {
    const disk = await createBackingDevice(32 * 1024 * 1024);
    disks.push(disk);
    await core.createPersistentVolume({ body: {
      metadata: { name: `pv-${m}` },
      spec: {
        capacity: { storage: '32Mi' }, accessModes: ['ReadWriteOnce'], volumeMode: 'Block', storageClassName: 'local',
        local: { path: disk.path },
        nodeAffinity: { required: { nodeSelectorTerms: [{ matchExpressions: [
          { key: 'kubernetes.io/hostname', operator: 'In', values: ['node-a'] }] }] } },
        claimRef: { namespace: NS, name: m },
      },
    } });
    await core.createNamespacedPersistentVolumeClaim({ namespace: NS, body: {
      metadata: { name: m },
      spec: { accessModes: ['ReadWriteOnce'], volumeMode: 'Block', storageClassName: 'local', volumeName: `pv-${m}`,
        resources: { requests: { storage: '32Mi' } } },
    } });
  }
});

after(async () => {
  await sim?.stop();
  await cp?.stop();
  for (const d of disks) await d.release();
});

test('the engine runs in a simulated pod with two block PVCs as members and serves on its pod IP', async () => {
  await core.createNamespacedPod({ namespace: NS, body: {
    metadata: { name: 'engine' },
    spec: {
      containers: [{
        name: 'engine',
        image: `${PROJECT_IMAGE}:dev`,
        command: ['shadow-engine'],
        // as in Kubernetes, $(POD_IP) in args expands only from the container's own env
        env: [{ name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } }],
        args: ['serve', '--member', '/dev/shadow/m0', '--member', '/dev/shadow/m1', '--socket', '/run/shadow/nbd.sock',
          '--listen', '$(POD_IP):10809', '--http', '$(POD_IP):8080'],
        volumeDevices: [{ name: 'm0', devicePath: '/dev/shadow/m0' }, { name: 'm1', devicePath: '/dev/shadow/m1' }],
        volumeMounts: [{ name: 'run', mountPath: '/run/shadow' }],
        readinessProbe: { httpGet: { path: '/healthz', port: 8080 }, periodSeconds: 1 },
      }],
      volumes: [
        { name: 'm0', persistentVolumeClaim: { claimName: 'm0' } },
        { name: 'm1', persistentVolumeClaim: { claimName: 'm1' } },
        { name: 'run', emptyDir: {} },
      ],
    },
  } });
  const pod = await waitFor('engine pod Ready', async () => {
    const p: V1Pod = await core.readNamespacedPod({ name: 'engine', namespace: NS });
    return p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ? p : undefined;
  }, { timeoutMs: 30_000 }).catch((err: Error) => {
    throw new Error(`${err.message}\nengine output:\n${sim.logs(NS, 'engine', 'engine').slice(-3000)}`);
  });
  const podIP = pod.status?.podIP ?? '';
  const res = await fetch(`http://${podIP}:8080/v1/status`);
  assert.equal(res.status, 200);
  const status = (await res.json()) as { members: { path: string; state: string }[]; export: { tcp: string | null; socket: string | null } };
  assert.equal(status.members.length, 2);
  assert.deepEqual(status.members.map((m) => m.state), ['InSync', 'InSync']);
  assert.match(status.members[0]?.path ?? '', /\/dev\/shadow\/m0$/);
  assert.equal(status.export.tcp, `${podIP}:10809`);
  // the socket went to the pod's emptyDir, not to the host's /run
  assert.ok(status.export.socket && status.export.socket.endsWith(join('run', 'shadow', 'nbd.sock')));
  assert.notEqual(status.export.socket, '/run/shadow/nbd.sock');
  assert.ok(existsSync(status.export.socket));

  const pid = sim.pids(NS, 'engine').engine;
  assert.ok(pid !== undefined);
  await core.deleteNamespacedPod({ name: 'engine', namespace: NS });
  await waitFor('engine pod removed', async () => {
    try {
      await core.readNamespacedPod({ name: 'engine', namespace: NS });
      return false;
    } catch (err) {
      return (err as { code?: number }).code === 404;
    }
  });
  assert.throws(() => process.kill(pid, 0), 'the engine process is gone');
});
