// The chart's CSI path on kind (E2E_CLUSTER=kind only): the sidecars built here from their Go modules, the node
// plugin registered with each worker's kubelet by the driver itself, and dynamic provisioning. A PVC of a
// shadowset StorageClass becomes a ShadowSet in the PVC's namespace whose members are claims of the harness's
// local Block PVs, one on each worker. A pod on one worker uses it as a raw block device: the attachment brings
// the set's engine to that worker (unit on a node-local socket, the node plugin's qemu-storage-daemon → FUSE →
// loop), and what the pod writes is found on both members; the pod moved to the other worker finds its data,
// the engine having followed with no copy and no merge. Bad parameters leave a PVC Pending with an
// InvalidArgument event that names them, and nothing made; deleting the PVC dissolves the set and deletes its
// member claims.
//
// The member class binds Immediately and exactly one PV of it is offered per worker: the local PVs here are made
// by the harness and no provisioner honours the driver's selected-node annotation, so the PV controller binds
// each member claim to one of them; two members, two PVs on two nodes.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { waitFor } from '@shadowset/e2e';
import { createHash } from 'node:crypto';
import type { BlockVolume } from './env/cluster-env.js';
import type { KindEnv } from './env/kind-env.js';
import { ScenarioChain } from './support/scenario.js';
import { HEADER_BYTES, MiB, StatusWatch, steady } from './support/shadowset.js';

const NS = 'e2e-csi';
const DRIVER = 'csi.shadowset.dev';
const MEMBER_CLASS = 'shadowset-e2e-members';
const SC = 'shadowset-e2e-csi';
const BAD_SC = 'shadowset-e2e-csi-bad';
const MEMBER_MIB = 64;
const kind = process.env.E2E_CLUSTER === 'kind';

interface Obj { metadata: { name: string; namespace?: string; uid?: string; labels?: Record<string, string> }; spec?: Record<string, unknown>; status?: Record<string, unknown> }

let env: KindEnv | undefined;
let image = '';
const chain = new ScenarioChain(() => env, NS);
const state: { pvc?: string; set?: string; pv?: string; sum?: string } = {};

const getJson = async <T = Obj>(args: string[]): Promise<T> => JSON.parse((await env!.kubectl([...args, '-o', 'json'])).stdout) as T;
const items = async (args: string[]): Promise<Obj[]> => (await getJson<{ items: Obj[] }>(args)).items;
const claimYaml = (name: string, sc: string) => JSON.stringify({
  apiVersion: 'v1', kind: 'PersistentVolumeClaim', metadata: { name, namespace: NS },
  spec: { accessModes: ['ReadWriteOnce'], volumeMode: 'Block', storageClassName: sc, resources: { requests: { storage: '32Mi' } } },
});

before(async () => {
  if (!kind) return;
  const { KindEnv, IMAGE } = await import('./env/kind-env.js');
  image = IMAGE;
  env = await KindEnv.start('csi', {
    hostTools: false,
    log: (l) => process.stderr.write(`csi: ${l}\n`),
    csi: {
      logLevel: 'debug',
      provisioner: { pullPolicy: 'Never' }, attacher: { pullPolicy: 'Never' },
      // Immediate: the claim is provisioned without a consumer, which cannot run until the engine beside it exists.
      storageClass: { name: SC, memberClass: MEMBER_CLASS, members: 2, volumeBindingMode: 'Immediate', memberTimeoutSeconds: 10 },
    },
  });
  await env.createNamespace(NS);
  await env.apply('member-class.yaml', JSON.stringify({
    apiVersion: 'storage.k8s.io/v1', kind: 'StorageClass', metadata: { name: MEMBER_CLASS },
    provisioner: 'kubernetes.io/no-provisioner', volumeBindingMode: 'Immediate', reclaimPolicy: 'Retain',
  }));
  for (const [i, node] of env.nodes.entries()) await env.offerBlockVolume(node, `e2e-csi-member-${i + 1}`, MEMBER_MIB, MEMBER_CLASS);
});

after(async () => {
  if (!env) return;
  await env.kubectl(['delete', 'storageclass', MEMBER_CLASS, BAD_SC, '--ignore-not-found'], { allowFail: true });
  await env.stop();
});

if (!kind) test('CSI on kind', (t) => t.skip('E2E_CLUSTER=kind only (npm run test:kind)'));

if (kind) {
  chain.scenario('the node plugin registers itself with every worker\'s kubelet: CSINode lists the driver', async (note) => {
    for (const node of env!.nodes) {
      const drivers = await waitFor(`CSINode ${node} to list ${DRIVER}`, async () => {
        const r = await env!.kubectl(['get', 'csinode', node, '-o', 'json'], { allowFail: true });
        if (r.code !== 0) return undefined;
        const names = ((JSON.parse(r.stdout) as { spec: { drivers?: { name: string; nodeID: string }[] } }).spec.drivers ?? []);
        return names.some((d) => d.name === DRIVER) ? names : undefined;
      }, { timeoutMs: 120_000, intervalMs: 1000 });
      // The node id the kubelet got from NodeGetInfo on the socket GetInfo named.
      assert.equal(drivers.find((d) => d.name === DRIVER)?.nodeID, node);
      note(`${node}: ${drivers.map((d) => d.name).join(', ')}`);
    }
    const logs = await env!.kubectl(['logs', '-n', 'shadowset-system', '-l', 'app.kubernetes.io/component=csi-node', '--tail=200'], { allowFail: true });
    assert.match(logs.stdout, /KubeletRegistered/, 'the kubelet reported the registration to the plugin');
  });

  chain.scenario('a PVC of the class provisions a ShadowSet beside it, members on distinct nodes, Ready and listed by kubectl', async (note) => {
    state.pvc = 'data';
    await env!.apply('pvc.yaml', claimYaml(state.pvc, SC));
    const pvc = await waitFor('the PVC to bind', async () => {
      const c = await getJson(['get', 'pvc', state.pvc!, '-n', NS]);
      return (c.status as { phase?: string }).phase === 'Bound' ? c : undefined;
    }, { timeoutMs: 120_000, intervalMs: 1000 });
    state.pv = (pvc.spec as { volumeName: string }).volumeName;
    const pv = await getJson<{ spec: { csi: { driver: string; volumeHandle: string } } }>(['get', 'pv', state.pv]);
    assert.equal(pv.spec.csi.driver, DRIVER);
    const [setNs, set] = pv.spec.csi.volumeHandle.split('/');
    assert.equal(setNs, NS, 'the set lives in the PVC\'s namespace (--extra-create-metadata)');
    assert.equal(set, `pvc-${pvc.metadata.uid}`, 'named after the CO\'s volume name');
    state.set = set!;
    const watch = new StatusWatch(env!, NS, state.set);
    try {
      await watch.until('two members in sync', steady(2), 180_000);
    } finally {
      watch.stop();
    }
    const members = await items(['get', 'pvc', '-n', NS, '-l', `csi.shadowset.dev/volume=${state.set}`]);
    assert.deepEqual(members.map((m) => m.metadata.name).sort(), [`${state.set}-m1`, `${state.set}-m2`]);
    const nodes = [];
    for (const m of members) {
      const pvName = (m.spec as { volumeName?: string }).volumeName;
      assert.ok(pvName, `${m.metadata.name} is bound`);
      const memberPv = await getJson<{ spec: { nodeAffinity: { required: { nodeSelectorTerms: { matchExpressions: { values: string[] }[] }[] } } } }>(['get', 'pv', pvName]);
      nodes.push(memberPv.spec.nodeAffinity.required.nodeSelectorTerms[0]!.matchExpressions[0]!.values[0]);
    }
    assert.deepEqual([...nodes].sort(), [...env!.nodes].sort(), 'one member on each worker');
    const shown = (await env!.kubectl(['get', 'shadowsets', '-n', NS])).stdout;
    note(shown.trim());
    assert.match(shown, new RegExp(`^${state.set}\\s`, 'm'));
  }, 300_000);

  // A pod that uses the PVC as a raw block device: its node's VolumeAttachment brings the set's engine there
  // (serving the unit on a node-local socket), the node plugin attaches it (qemu-storage-daemon → FUSE → loop).
  const consumerYaml = (name: string, node: string, script: string) => JSON.stringify({
    apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: NS },
    spec: {
      nodeSelector: { 'kubernetes.io/hostname': node }, restartPolicy: 'Never', terminationGracePeriodSeconds: 5,
      containers: [{ name: 'app', image, imagePullPolicy: 'Never', command: ['sh', '-c', script], volumeDevices: [{ name: 'data', devicePath: '/dev/xvda' }] }],
      volumes: [{ name: 'data', persistentVolumeClaim: { claimName: state.pvc } }],
    },
  });
  const podSaid = (name: string, what: RegExp, timeoutMs = 240_000) => waitFor(`pod ${name} to print ${what}`, async () => {
    const pod = await getJson(['get', 'pod', name, '-n', NS]);
    if ((pod.status as { phase?: string }).phase === 'Failed') throw new Error(`pod ${name} failed: ${await env!.logs(NS, name, 'app')}`);
    const out = await env!.logs(NS, name, 'app');
    return what.test(out) ? out : undefined;
  }, { timeoutMs, intervalMs: 1000 });
  const sums = (out: string) => [...out.matchAll(/^([0-9a-f]{64})\s/gm)].map((m) => m[1]!);
  const memberVolumes = async () => {
    const out: BlockVolume[] = [];
    for (const m of await items(['get', 'pvc', '-n', NS, '-l', `csi.shadowset.dev/volume=${state.set}`])) {
      const pv = await getJson<{ spec: { local: { path: string }; nodeAffinity: { required: { nodeSelectorTerms: { matchExpressions: { values: string[] }[] }[] } } } }>(['get', 'pv', (m.spec as { volumeName: string }).volumeName]);
      out.push({ namespace: NS, claim: m.metadata.name, node: pv.spec.nodeAffinity.required.nodeSelectorTerms[0]!.matchExpressions[0]!.values[0]!, sizeBytes: MEMBER_MIB * MiB, devicePath: pv.spec.local.path });
    }
    return out;
  };
  const placedOn = (node: string) => waitFor(`the engine on ${node}`, async () => {
    const set = await getJson(['get', 'shadowset', state.set!, '-n', NS]);
    const p = (set.status as { placement?: { node?: string; source?: string } } | undefined)?.placement;
    const engine = await env!.get(NS, 'pods', `${state.set}-engine`) as { spec?: { nodeName?: string } } | null;
    return p?.node === node && p.source === 'VolumeAttachment' && engine?.spec?.nodeName === node ? p : undefined;
  }, { timeoutMs: 180_000, intervalMs: 1000 });

  chain.scenario('a pod on a worker uses the PVC as a block device: the engine runs beside it, its writes reach both members', async (note) => {
    const [here] = env!.nodes;
    const t0 = Date.now();
    await env!.apply('writer.yaml', consumerYaml('writer', here, [
      'set -e', 'head -c 4194304 /dev/urandom > /tmp/p',
      'dd if=/tmp/p of=/dev/xvda bs=1M oflag=direct conv=fsync status=none',
      'sha256sum < /tmp/p', 'dd if=/dev/xvda bs=1M count=4 iflag=direct status=none | sha256sum', 'echo written', 'sleep 3600',
    ].join('\n')));
    const out = await podSaid('writer', /^written$/m);
    note(`the pod ran and wrote 4 MiB ${((Date.now() - t0) / 1000).toFixed(1)} s after it was created`);
    const [wrote, readBack] = sums(out);
    assert.ok(wrote, `the pod printed its data's checksum: ${out}`);
    assert.equal(readBack, wrote, 'the pod read back what it wrote through the device');
    state.sum = wrote;
    const p = await placedOn(here);
    note(`placement: ${JSON.stringify(p)}`);
    const vas = (await items(['get', 'volumeattachments'])).filter((v) => (v.spec as { source?: { persistentVolumeName?: string } }).source?.persistentVolumeName === state.pv);
    assert.equal(vas.length, 1, 'one VolumeAttachment');
    assert.equal((vas[0]!.spec as { nodeName: string }).nodeName, here);
    assert.equal((vas[0]!.status as { attached?: boolean } | undefined)?.attached, true);
    for (const v of await memberVolumes()) {
      const data = await env!.readVolume(v, HEADER_BYTES, 4 * MiB);
      assert.equal(createHash('sha256').update(data).digest('hex'), wrote, `member ${v.claim} on ${v.node} holds the pod's data`);
    }
  }, 420_000);

  chain.scenario('the pod moves to the other worker: the engine follows with no copy and no merge, and the data is there', async (note) => {
    const [, there] = env!.nodes;
    const copiesBefore = (await env!.events(NS, state.set!)).filter((e) => /Copy|Merge/.test(e.reason)).length;
    await env!.kubectl(['delete', 'pod', 'writer', '-n', NS, '--wait=true']);
    const t0 = Date.now();
    await env!.apply('reader.yaml', consumerYaml('reader', there, [
      'set -e', 'dd if=/dev/xvda bs=1M count=4 iflag=direct status=none | sha256sum', 'echo read', 'sleep 3600',
    ].join('\n')));
    const out = await podSaid('reader', /^read$/m);
    note(`the pod on ${there} read the volume ${((Date.now() - t0) / 1000).toFixed(1)} s after it was created`);
    assert.equal(sums(out)[0], state.sum, 'the data the first pod wrote, read on the other node');
    await placedOn(there);
    const log = await env!.logs(NS, `${state.set}-engine`, 'engine');
    assert.doesNotMatch(log, /MergeRequired|MergeDemanded|CopyResumed/, 'the engine on the new node started clean');
    const events = await env!.events(NS, state.set!);
    assert.ok(events.some((e) => e.reason === 'EngineMoved'), 'an EngineMoved event');
    assert.equal(events.filter((e) => /Copy|Merge/.test(e.reason)).length, copiesBefore, 'no copy or merge since the move');
    await env!.kubectl(['delete', 'pod', 'reader', '-n', NS, '--wait=true']);
    await waitFor('the VolumeAttachment to go', async () => (await items(['get', 'volumeattachments'])).some((v) => (v.spec as { source?: { persistentVolumeName?: string } }).source?.persistentVolumeName === state.pv) ? undefined : true, { timeoutMs: 180_000, intervalMs: 1000 });
  }, 420_000);

  chain.scenario('invalid parameters leave the PVC Pending with an InvalidArgument event naming each, and nothing is created', async (note) => {
    await env!.apply('bad-class.yaml', JSON.stringify({
      apiVersion: 'storage.k8s.io/v1', kind: 'StorageClass', metadata: { name: BAD_SC }, provisioner: DRIVER,
      volumeBindingMode: 'Immediate', parameters: { memberClass: MEMBER_CLASS, members: '9', colour: 'blue' },
    }));
    await env!.apply('bad-pvc.yaml', claimYaml('bad', BAD_SC));
    const ev = await waitFor('a ProvisioningFailed event on the PVC', async () => (await env!.events(NS, 'bad')).find((e) => e.reason === 'ProvisioningFailed'), { timeoutMs: 120_000, intervalMs: 1000 });
    note(ev.message);
    assert.match(ev.message, /InvalidArgument/);
    assert.match(ev.message, /\bmembers\b/);
    assert.match(ev.message, /\bcolour\b/);
    const bad = await getJson(['get', 'pvc', 'bad', '-n', NS]);
    assert.equal((bad.status as { phase: string }).phase, 'Pending');
    assert.deepEqual((await items(['get', 'shadowsets', '-n', NS])).map((s) => s.metadata.name), [state.set], 'no set for the bad claim');
    assert.deepEqual((await items(['get', 'pvc', '-n', NS])).map((c) => c.metadata.name).sort(), ['bad', 'data', `${state.set}-m1`, `${state.set}-m2`], 'no member claims for it');
    await env!.kubectl(['delete', 'pvc', 'bad', '-n', NS, '--wait=true']);
  });

  chain.scenario('deleting the PVC dissolves the set and deletes its member claims and the volume', async () => {
    await env!.kubectl(['delete', 'pvc', state.pvc!, '-n', NS, '--wait=true']);
    await waitFor('the set, its member claims and the PV to be gone', async () => {
      const sets = await items(['get', 'shadowsets', '-n', NS]);
      const claims = await items(['get', 'pvc', '-n', NS, '-l', `csi.shadowset.dev/volume=${state.set}`]);
      const pv = await env!.kubectl(['get', 'pv', state.pv!], { allowFail: true });
      return sets.length === 0 && claims.length === 0 && pv.code !== 0 ? true : undefined;
    }, { timeoutMs: 180_000, intervalMs: 1000 });
    assert.deepEqual(await env!.list(NS, 'pods'), [], 'no engine or member-server pod left');
  }, 240_000);
}
