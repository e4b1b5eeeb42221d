// The chart's CSI path on kind (E2E_CLUSTER=kind only): the sidecars built here from their Go modules, the node
// plugin registered with each worker's kubelet by the driver itself, and dynamic provisioning. A PVC of a
// shadowset StorageClass becomes a ShadowSet in the PVC's namespace whose members are claims of the harness's
// local Block PVs, one on each worker; bad parameters leave a PVC Pending with an InvalidArgument event that
// names them, and nothing made; deleting the PVC dissolves the set and deletes its member claims.
//
// The member class binds Immediately and exactly one PV of it is offered per worker: the local PVs here are made
// by the harness and no provisioner honours the driver's selected-node annotation, so the PV controller binds
// each member claim to one of them; two members, two PVs on two nodes. Pods using the volume need the engine
// beside its consumer (csi/README.md, What remains), so this file asserts provisioning, not a pod's use.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { waitFor } from '@shadowset/e2e';
import type { KindEnv } from './env/kind-env.js';
import { ScenarioChain } from './support/scenario.js';
import { StatusWatch, steady } from './support/shadowset.js';

const NS = 'e2e-csi';
const DRIVER = 'csi.shadowset.dev';
const MEMBER_CLASS = 'shadowset-e2e-members';
const SC = 'shadowset-e2e-csi';
const BAD_SC = 'shadowset-e2e-csi-bad';
const MEMBER_MIB = 64;
const kind = process.env.E2E_CLUSTER === 'kind';

interface Obj { metadata: { name: string; namespace?: string; uid?: string; labels?: Record<string, string> }; spec?: Record<string, unknown>; status?: Record<string, unknown> }

let env: KindEnv | undefined;
const chain = new ScenarioChain(() => env, NS);
const state: { pvc?: string; set?: string; pv?: string } = {};

const getJson = async <T = Obj>(args: string[]): Promise<T> => JSON.parse((await env!.kubectl([...args, '-o', 'json'])).stdout) as T;
const items = async (args: string[]): Promise<Obj[]> => (await getJson<{ items: Obj[] }>(args)).items;
const claimYaml = (name: string, sc: string) => JSON.stringify({
  apiVersion: 'v1', kind: 'PersistentVolumeClaim', metadata: { name, namespace: NS },
  spec: { accessModes: ['ReadWriteOnce'], volumeMode: 'Block', storageClassName: sc, resources: { requests: { storage: '32Mi' } } },
});

before(async () => {
  if (!kind) return;
  const { KindEnv } = await import('./env/kind-env.js');
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
