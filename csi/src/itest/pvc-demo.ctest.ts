// The demo's PVC path (testkit/src/cluster/pvc-path.ts), run end to end as `npm run demo` sets it up, less
// the interactive wait: a claim of the shadowset class is provisioned by the real driver (its ShadowSet Steady
// with two members on two simulated nodes), a pod writes through it (attach, engine beside the pod, stage and
// publish for real), the data read back through the unit and found on both members; the pod deleted and
// another made (the record kept); the claim deleted (the set dissolved, member claims and volumes gone); then
// nothing left on the host. Needs root, loop devices, FUSE, qemu-storage-daemon.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { HEADER_BYTES } from '@shadowset/engine/api';
import { R } from '@shadowset/operator/kube';
import { leftovers } from '@shadowset/testkit/cluster/node-cleanup';
import { PVC_DEMO, PvcPath, pvcPathUnavailable } from '@shadowset/testkit/cluster/pvc-path';

const RECORD = 4096;

async function head(path: string, offset: number): Promise<Buffer> {
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

test('npm run demo\'s PVC path: provisioned, attached beside the pod, written through, on both members, torn down to nothing', { timeout: 300_000, skip: pvcPathUnavailable() ?? false }, async (t) => {
  const t0 = Date.now();
  const env = await PvcPath.start();
  let stopped = false;
  t.after(async () => {
    if (!stopped) await env.stop();
  });
  const { kube } = env.cluster;
  const { pvName, setName } = await env.provision(64);
  const claim = await kube.get(R.pvcs, PVC_DEMO.ns, PVC_DEMO.claim);
  assert.equal((claim?.status as { phase: string }).phase, 'Bound');
  const set = await env.setSteady(setName);
  const members = (set.spec as { members: { claimName: string }[] }).members;
  assert.equal(members.length, 2);
  const memberPvs = await Promise.all(members.map(async (m) => {
    const c = await kube.get(R.pvcs, PVC_DEMO.ns, m.claimName);
    return String((c?.spec as { volumeName: string }).volumeName);
  }));
  const nodesOf = await Promise.all(memberPvs.map(async (p) => JSON.stringify((await kube.get(R.pvs, undefined, p))?.spec?.nodeAffinity)));
  assert.notEqual(nodesOf[0], nodesOf[1], 'the members are on different nodes');
  const ready = Date.now() - t0;

  // The pod: attached on its node, the engine there, the record written through the published device.
  const first = await env.runWriter();
  const node = String((first.pod.spec as { nodeName: string }).nodeName);
  assert.equal(first.line.record.count, 1);
  assert.equal(first.line.record.node, node);
  const vas = (await kube.list(R.volumeattachments)).items;
  assert.deepEqual(vas.map((v) => [(v.spec as { nodeName: string }).nodeName, (v.status as { attached: boolean }).attached]), [[node, true]]);
  const st = (await kube.get(R.shadowsets, PVC_DEMO.ns, setName))?.status as { engineNode: string; placement: { source: string } };
  assert.equal(st.engineNode, node, 'the engine runs beside its consumer');
  assert.equal(st.placement.source, 'VolumeAttachment');
  const target = join(env.kubeletDirOf(node), 'plugins/kubernetes.io/csi/volumeDevices/publish', pvName, first.pod.metadata.uid!);
  const unit = direct(target);
  assert.match(unit.toString('utf8'), new RegExp(`"pod":"${PVC_DEMO.pod}"`), 'the record reads back through the unit');
  for (const pv of memberPvs) {
    assert.ok((await head(env.provisioner.disks.get(pv)!.path, HEADER_BYTES)).equals(unit), `member ${pv} holds the record`);
  }
  const memberLoops = memberPvs.map((p) => env.provisioner.disks.get(p)!.path);

  // The pod deleted: unpublished, unstaged, detached — nothing of it left on the host; another pod finds the record.
  await env.deletePod();
  assert.deepEqual((await kube.list(R.volumeattachments)).items.map((v) => v.metadata.name), []);
  const afterPod = await leftovers(env.dir);
  assert.deepEqual(afterPod.filter((l) => l.startsWith('mount') || l.startsWith('loop') || l.includes('qemu-storage-daemon')), [], 'no mount, loop device or daemon once the pod is gone');
  const second = await env.runWriter();
  assert.equal(second.line.record.count, 2, 'the second pod found the first one\'s record');
  await env.deletePod();

  // The claim deleted: the set dissolved, its member claims and their volumes gone.
  await env.deleteClaim(pvName);
  assert.equal(await kube.get(R.shadowsets, PVC_DEMO.ns, setName), null);
  for (const m of members) assert.equal(await kube.get(R.pvcs, PVC_DEMO.ns, m.claimName), null);
  for (const p of memberPvs) assert.equal(await kube.get(R.pvs, undefined, p), null);
  assert.equal(env.provisioner.disks.size, 0, 'the member devices are freed');

  stopped = true;
  await env.stop();
  const dir = env.dir;
  assert.deepEqual(await leftovers(dir), [], 'no mount, loop device, daemon or engine left');
  const loops = spawnSync('losetup', ['-a'], { encoding: 'utf8' }).stdout;
  for (const l of memberLoops) assert.ok(!loops.includes(`${l}:`), `${l} detached`);
  t.diagnostic(`PVC Bound and set Steady in ${ready} ms; whole story ${Date.now() - t0} ms`);
});
