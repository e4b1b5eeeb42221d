// `npm run demo` as root, end to end (less the interactive wait): the demo's own code (testkit's runDemo,
// the PVC path of pvc-path.ts) as a process, checked from outside through its kubeconfig and its work
// directory as a user would. The claim of the shadowset class provisioned by the real driver (its ShadowSet
// Steady with two members on two simulated nodes); the pod's record read back through the unit and found on
// both members; the pod deleted (unpublished, unstaged, detached: nothing of it left on the host) and another
// made on the other node (the engine follows; the record kept); the claim deleted (the set dissolved, member
// claims and volumes gone); then Ctrl-C: nothing left. Needs root, loop devices, FUSE, qemu-storage-daemon.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { open, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { HEADER_BYTES } from '@shadowset/engine/api';
import { repoRoot, waitFor } from '@shadowset/e2e';
import { Kube, KubeConfig, R, type Obj } from '@shadowset/operator/kube';
import { leftovers } from '@shadowset/testkit/cluster/node-cleanup';
import { PVC_DEMO, pvcPathUnavailable } from '@shadowset/testkit/cluster/pvc-path';

const RECORD = 4096;
const { ns } = PVC_DEMO;

async function at(path: string, offset: number): Promise<Buffer> {
  const f = await open(path, 'r');
  try {
    const b = Buffer.alloc(RECORD);
    await f.read(b, 0, RECORD, offset);
    return b;
  } finally {
    await f.close();
  }
}

/** The first 4 KiB of a device read with O_DIRECT, past the page cache: what the unit itself answers. */
const direct = (dev: string): Buffer => execFileSync('dd', [`if=${dev}`, 'bs=4096', 'count=1', 'iflag=direct', 'status=none']);
const backingFile = (loop: string): string => spawnSync('cat', [`/sys/block/${loop.replace('/dev/', '')}/loop/backing_file`], { encoding: 'utf8' }).stdout.trim();
const phase = (o: Obj | null) => (o?.status as { phase?: string } | undefined)?.phase;

test('npm run demo as root: a PVC provisioned by the driver, a pod writing through it (on both members), pod and claim deleted, then Ctrl-C leaves nothing', { timeout: 300_000, skip: pvcPathUnavailable() ?? false }, async (t) => {
  const t0 = Date.now();
  const demo = spawn(process.execPath, ['-e', `import(${JSON.stringify(join(repoRoot, 'testkit', 'dist', 'cluster', 'demo.js'))}).then((m) => m.runDemo({ memberMiB: 32 }))`], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  demo.stdout.on('data', (c: Buffer) => (out += c.toString()));
  demo.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((resolve) => demo.once('exit', (code) => resolve(code)));
  t.after(async () => {
    if (demo.exitCode === null) {
      demo.kill('SIGINT');
      await exited;
    }
  });
  try {
    await waitFor('the demo\'s what to try', () => {
      if (/^demo: .*(failed|timed out)/m.test(out) || demo.exitCode !== null) throw new Error('the demo failed');
      return out.includes('Ctrl-C tears everything down.');
    }, { timeoutMs: 200_000, intervalMs: 200 });
  } catch (e) {
    throw new Error(`${(e as Error).message}\n${out.slice(-3000)}`);
  }
  const up = Date.now() - t0;
  const dir = /work directory (\S+)/.exec(out)?.[1];
  const kubeconfig = /export KUBECONFIG=(\S+)/.exec(out)?.[1];
  assert.ok(dir && kubeconfig, 'the demo prints its work directory and kubeconfig');
  assert.match(out, /wrote record 1 /);
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  const kube = new Kube(kc);

  // Provisioned: the PVC Bound to the driver's PV; its set Steady with two members on different nodes.
  const claim = await kube.get(R.pvcs, ns, PVC_DEMO.claim);
  assert.equal(phase(claim), 'Bound');
  const pvName = String((claim?.spec as { volumeName: string }).volumeName);
  const handle = String(((await kube.get(R.pvs, undefined, pvName))?.spec as { csi: { driver: string; volumeHandle: string } }).csi.volumeHandle);
  const setName = handle.slice(ns.length + 1);
  assert.equal(handle, `${ns}/${setName}`);
  const set = await kube.get(R.shadowsets, ns, setName);
  const st = set?.status as { state: string; membersInSync: string; engineNode: string; placement: { source: string } };
  assert.equal(st.state, 'Steady');
  assert.equal(st.membersInSync, '2/2');
  const claims = (set?.spec as { members: { claimName: string }[] }).members.map((m) => m.claimName);
  const memberPvs = await Promise.all(claims.map(async (c) => (await kube.get(R.pvs, undefined, String(((await kube.get(R.pvcs, ns, c))?.spec as { volumeName: string }).volumeName)))!));
  const memberNodes = memberPvs.map((p) => JSON.stringify(p.spec?.nodeAffinity));
  assert.notEqual(memberNodes[0], memberNodes[1], 'the members are on different nodes');
  const memberDevices = memberPvs.map((p) => String((p.spec as { local: { path: string } }).local.path));
  const memberFiles = memberDevices.map((d) => (d.startsWith('/dev/loop') ? backingFile(d) : d));

  // Attached beside the pod, its record read back through the unit and found on both members.
  const pod = (await kube.get(R.pods, ns, PVC_DEMO.pod))!;
  const node = String((pod.spec as { nodeName: string }).nodeName);
  assert.deepEqual((await kube.list(R.volumeattachments)).items.map((v) => [(v.spec as { nodeName: string }).nodeName, (v.status as { attached: boolean }).attached]), [[node, true]]);
  assert.equal(st.engineNode, node, 'the engine runs beside its consumer');
  assert.equal(st.placement.source, 'VolumeAttachment');
  const target = join(dir, 'nodes', node, 'kubelet', 'plugins/kubernetes.io/csi/volumeDevices/publish', pvName, pod.metadata.uid!);
  const unit = direct(target);
  assert.match(unit.toString('utf8'), /^shadowset-demo-record\n\{"count":1,"pod":"writer"/, 'the record reads back through the unit');
  for (const d of memberDevices) assert.ok((await at(d, HEADER_BYTES)).equals(unit), `member ${d} holds the record`);

  // The pod deleted: unpublished, unstaged, detached; nothing of it on the host.
  await kube.delete(R.pods, ns, PVC_DEMO.pod);
  await waitFor('the pod gone', async () => (await kube.get(R.pods, ns, PVC_DEMO.pod)) === null, { timeoutMs: 60_000, intervalMs: 250 });
  assert.deepEqual((await kube.list(R.volumeattachments)).items.map((v) => v.metadata.name), []);
  const host = (await leftovers(dir)).filter((l) => l.startsWith('mount') || l.startsWith('loop') || l.includes('qemu-storage-daemon'));
  assert.deepEqual(host, [], 'no mount, loop device or daemon once the pod is gone');

  // Another pod, on the other node: the engine follows it; the pod finds the first record and writes the next.
  const other = PVC_DEMO.nodes.find((n) => n !== node)!;
  const second = await kube.create(R.pods, ns, {
    metadata: { name: PVC_DEMO.pod },
    spec: { ...(pod.spec as object), nodeName: other },
  });
  const log = join(dir, 'sim', 'pods', `${ns}_${PVC_DEMO.pod}_${second.metadata.uid!.slice(0, 8)}`, 'logs', 'writer.log');
  await waitFor('the second pod\'s record', async () => (await readFile(log, 'utf8').catch(() => '')).includes('"event":"RecordWritten"'), { timeoutMs: 90_000, intervalMs: 250 });
  assert.match(await readFile(log, 'utf8'), /"event":"FoundRecord","record":\{"count":1.*"event":"RecordWritten","record":\{"count":2,"pod":"writer","node":"[a-z-]+"/s);
  const moved = (await kube.get(R.shadowsets, ns, setName))?.status as { engineNode: string };
  assert.equal(moved.engineNode, other, 'the engine moved beside the new pod');
  await kube.delete(R.pods, ns, PVC_DEMO.pod);
  await waitFor('the second pod gone', async () => (await kube.get(R.pods, ns, PVC_DEMO.pod)) === null, { timeoutMs: 60_000, intervalMs: 250 });

  // The claim deleted: DeleteVolume dissolves the set; its member claims and their volumes go.
  await kube.delete(R.pvcs, ns, PVC_DEMO.claim);
  await waitFor('the PV, the set, the member claims and their volumes gone', async () => {
    if (await kube.get(R.pvs, undefined, pvName)) return false;
    if (await kube.get(R.shadowsets, ns, setName)) return false;
    for (const c of claims) if (await kube.get(R.pvcs, ns, c)) return false;
    for (const p of memberPvs) if (await kube.get(R.pvs, undefined, p.metadata.name)) return false;
    return true;
  }, { timeoutMs: 120_000, intervalMs: 250 });

  // Ctrl-C: the demo stops everything and finds nothing left; neither do we.
  demo.kill('SIGINT');
  assert.equal(await exited, 0, out.slice(-3000));
  assert.match(out, /nothing left: no loop device, FUSE mount, qemu-storage-daemon or engine/, out.slice(-3000));
  assert.deepEqual(await leftovers(dir), []);
  assert.deepEqual(await readdir(dir).catch(() => 'removed'), 'removed', 'the work directory is removed');
  const loops = spawnSync('losetup', ['-a'], { encoding: 'utf8' }).stdout;
  for (const f of memberFiles) assert.ok(!loops.includes(`(${f})`), `no loop device over member file ${f}`);
  t.diagnostic(`demo up (PVC Bound, set Steady, pod's record written) in ${up} ms; whole story ${Date.now() - t0} ms`);
});
