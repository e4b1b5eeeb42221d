// A PVC resize end to end on the local control plane (the PVC path of testkit's pvc-path.ts; needs root, loop
// devices, FUSE, qemu-storage-daemon): a Filesystem PVC of the driver written by a pod (a file and its
// SHA-256), its request raised while the pod holds it (refused: offline expansion), the pod deleted, then the
// stand-in external-resizer's ControllerExpandVolume grows the member claims (their class allows expansion:
// the local-volume stand-in makes their devices longer), the set through the real operator (`Resized`), the
// PV; and the kubelet stand-in's NodeExpandVolume grows the filesystem when a new pod stages it: the new pod
// sees the bigger filesystem, the old file intact, and allocates and writes beyond what the old one had free.
// ext4 where this process has CAP_SYS_RESOURCE (resize2fs of a mounted ext4 needs it; this sandbox's root
// lacks it), else xfs (which wants at least 300 MiB).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { HEADER_BYTES } from '@shadowset/engine/api';
import { PROJECT_IMAGE, waitFor } from '@shadowset/e2e';
import { CSI_DRIVER, R, type Obj } from '@shadowset/operator/kube';
import { quantityBytes, STORAGE_CLASSES } from '@shadowset/testkit/cluster/csi-controllers';
import { FS_RESIZE_PENDING } from '@shadowset/testkit/cluster/csi-resizer';
import { FS_PROBE, PVC_DEMO, PvcPath, pvcPathUnavailable } from '@shadowset/testkit/cluster/pvc-path';

const MiB = 2 ** 20;
const { ns, claim } = PVC_DEMO;
/** CAP_SYS_RESOURCE (bit 24) in this process's effective set. */
const sysResource = (BigInt(`0x${/CapEff:\s*([0-9a-f]+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '0'}`) >> 24n) & 1n;
const FS = sysResource === 1n ? 'ext4' : 'xfs';
const FROM_MIB = 320;
const TO_MIB = 448;
const OLD_MIB = 16;

type Line = { event: string; totalBytes?: number; availBytes?: number; sha256?: string; bytes?: number; message?: string };
type ClaimStatus = { phase?: string; capacity?: { storage?: string }; conditions?: { type: string }[] };

const unavailable = pvcPathUnavailable();
const skip = unavailable ?? (FS === 'xfs' && spawnSync('mkfs.xfs', ['-V']).status !== 0 ? 'mkfs.xfs missing' : false);
let env: PvcPath;
let up = 0;
before(async () => {
  if (unavailable) return;
  const t0 = Date.now();
  env = await PvcPath.start({ log: pino({ level: process.env.CSI_LOG ?? 'silent' }) });
  up = Date.now() - t0;
}, { timeout: 240_000 });
after(async () => {
  await env?.stop();
  if (env) assert.deepEqual(await env.leftovers(), [], 'no loop device, FUSE mount or daemon left');
});

test(`a Filesystem PVC (${FS}) grown offline end to end: refused while a pod holds it; members, set (Resized), PV, PVC and filesystem grow; data kept`, { timeout: 420_000, skip }, async (t) => {
  const t0 = Date.now();
  const { kube, sim } = env.cluster;
  const cls = `shadowset-${FS}`;
  await kube.create(STORAGE_CLASSES, undefined, {
    apiVersion: 'storage.k8s.io/v1', kind: 'StorageClass', metadata: { name: cls }, provisioner: CSI_DRIVER, reclaimPolicy: 'Delete', allowVolumeExpansion: true,
    parameters: { memberClass: PVC_DEMO.memberClass, members: '2', 'csi.storage.k8s.io/fstype': FS },
  });
  const { pvName, setName } = await env.provision(FROM_MIB, 180_000, env.claimManifest(FROM_MIB, { volumeMode: 'Filesystem', storageClassName: cls }));
  const provisioned = Date.now() - t0;
  const set0 = (await kube.get(R.shadowsets, ns, setName))!;
  const memberClaims = (set0.spec as { members: { claimName: string }[] }).members.map((m) => m.claimName);
  assert.equal((set0.status as { size: number }).size, FROM_MIB * MiB);

  /** A pod running the probe on the claim mounted at /data; answers its lines once `Done` (or throws on `Failed`). */
  const runProbe = async (name: string, ops: string[]): Promise<Line[]> => {
    const created = await kube.create(R.pods, ns, {
      metadata: { name },
      spec: {
        restartPolicy: 'Never', terminationGracePeriodSeconds: 10,
        containers: [{ name: 'probe', image: `${PROJECT_IMAGE}:dev`, command: [FS_PROBE, '/data', ...ops], volumeMounts: [{ name: 'data', mountPath: '/data' }] }],
        volumes: [{ name: 'data', persistentVolumeClaim: { claimName: claim } }],
      },
    });
    await waitFor(`pod ${name} running`, async () => {
      const p = await kube.get(R.pods, ns, name);
      return p?.metadata.uid === created.metadata.uid && (p?.status as { phase?: string } | undefined)?.phase === 'Running';
    }, { timeoutMs: 120_000, intervalMs: 250 });
    const lines = await waitFor(`pod ${name} done`, () => {
      const lines = sim.logs(ns, name, 'probe').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Line);
      return lines.some((l) => l.event === 'Done' || l.event === 'Failed') ? lines : undefined;
    }, { timeoutMs: 120_000, intervalMs: 250 });
    assert.deepEqual(lines.filter((l) => l.event === 'Failed'), [], `pod ${name} failed`);
    return lines;
  };
  const event = (l: Line[], e: string) => l.find((x) => x.event === e)!;
  const claimOf = async () => (await kube.get(R.pvcs, ns, claim))!;
  const claimEvents = async (reason: string) => (await kube.list(R.events, ns)).items
    .filter((e) => (e.involvedObject as { name?: string }).name === claim && e.reason === reason).map((e) => String(e.message));
  const memberRequests = async () => Promise.all(memberClaims.map(async (c) => {
    const o = (await kube.get(R.pvcs, ns, c))!;
    return [quantityBytes(String((o.spec as { resources: { requests: { storage: string } } }).resources.requests.storage)), quantityBytes(String((o.status as ClaimStatus).capacity?.storage))];
  }));

  // A pod writes a file; the filesystem has its first size.
  const first = await runProbe('fs-1', [`write:old.bin:${OLD_MIB}`]);
  const before = event(first, 'Done');
  const written = event(first, 'Wrote');
  // xfs keeps its internal log (64 MiB at this size) out of statfs's total.
  assert.ok(before.totalBytes! <= FROM_MIB * MiB && before.totalBytes! > (FROM_MIB - 80) * MiB, `a ${FS} of about ${FROM_MIB} MiB: ${before.totalBytes}`);

  // The request raised while the pod holds the volume: refused (the attachment named), nothing grown.
  await kube.mergePatch(R.pvcs, ns, claim, { spec: { resources: { requests: { storage: `${TO_MIB}Mi` } } } });
  const refused = await waitFor('a VolumeResizeFailed event on the PVC', async () => (await claimEvents('VolumeResizeFailed')).find((m) => m.includes('code = FAILED_PRECONDITION')), { timeoutMs: 60_000, intervalMs: 250 });
  assert.match(refused, /is attached to node node-[ab] \(VolumeAttachment csi-[0-9a-f]+\); it grows offline only/);
  assert.deepEqual(await memberRequests(), memberClaims.map(() => [FROM_MIB * MiB + HEADER_BYTES, FROM_MIB * MiB + HEADER_BYTES]), 'no member claim asked to grow');
  const held = (await kube.get(R.shadowsets, ns, setName))!;
  assert.equal((held.spec as { size?: number }).size ?? FROM_MIB * MiB, FROM_MIB * MiB, 'the set\'s spec.size unchanged');
  assert.equal((held.status as { size: number }).size, FROM_MIB * MiB);
  assert.equal(quantityBytes(String(((await claimOf()).status as ClaimStatus).capacity?.storage)), FROM_MIB * MiB, 'the PVC\'s capacity unchanged');

  // The pod deleted (unpublished, unstaged, detached): the resizer's next try goes through.
  const deleted = Date.now();
  await env.deletePod('fs-1');
  await waitFor(`the PVC ${FS_RESIZE_PENDING}`, async () => ((await claimOf()).status as ClaimStatus).conditions?.some((c) => c.type === FS_RESIZE_PENDING), { timeoutMs: 120_000, intervalMs: 250 });
  const controllerDone = Date.now() - deleted;
  const want = TO_MIB * MiB + HEADER_BYTES;
  assert.deepEqual(await memberRequests(), memberClaims.map(() => [want, want]), 'each member claim asked for and got unit + header');
  for (const c of memberClaims) {
    const pv = (await kube.get(R.pvs, undefined, String(((await kube.get(R.pvcs, ns, c))!.spec as { volumeName: string }).volumeName)))!;
    assert.equal(quantityBytes(String((pv.spec as { capacity: { storage: string } }).capacity.storage)), want, `member PV ${pv.metadata.name} capacity`);
    const dev = String((pv.spec as { local: { path: string } }).local.path);
    assert.equal(Number(spawnSync('blockdev', ['--getsize64', dev], { encoding: 'utf8' }).stdout.trim()), want, `member device ${dev} grew`);
  }
  const grown = (await kube.get(R.shadowsets, ns, setName))!;
  assert.equal((grown.spec as { size: number }).size, TO_MIB * MiB, 'the set\'s spec.size');
  assert.equal((grown.status as { size: number }).size, TO_MIB * MiB, 'the set\'s status.size (the engine\'s)');
  const resized = (await kube.list(R.events, ns)).items.filter((e: Obj) => (e.involvedObject as { kind?: string; name?: string }).name === setName && e.reason === 'Resized');
  assert.equal(resized.length, 1, 'one Resized event on the set');
  const pv = (await kube.get(R.pvs, undefined, pvName))!;
  assert.equal((pv.spec as { capacity: { storage: string } }).capacity.storage, `${TO_MIB}Mi`, 'the PV\'s capacity');
  assert.equal(quantityBytes(String(((await claimOf()).status as ClaimStatus).capacity?.storage)), FROM_MIB * MiB, 'the PVC\'s capacity waits for the node step');
  assert.ok((await claimEvents('FileSystemResizeRequired')).length === 1);

  // A new pod: NodeExpandVolume at its stage; the filesystem is bigger, the old file intact, the new space usable.
  const fill = Math.ceil(before.availBytes! / MiB) + 32;
  const second = await runProbe('fs-2', ['check:old.bin', `fill:new.bin:${fill}`]);
  const after = event(second, 'Start');
  assert.equal(event(second, 'Checked').sha256, written.sha256, 'the old file reads back with its checksum');
  assert.equal(event(second, 'Filled').bytes, fill * MiB, `${fill} MiB allocated and its last MiB written: more than the old filesystem had free (${before.availBytes})`);
  assert.ok(after.totalBytes! - before.totalBytes! >= (TO_MIB - FROM_MIB - 8) * MiB, `the filesystem grew by about ${TO_MIB - FROM_MIB} MiB: ${before.totalBytes} → ${after.totalBytes}`);
  const status = (await claimOf()).status as ClaimStatus;
  assert.equal(status.capacity?.storage, `${TO_MIB}Mi`, 'the PVC\'s capacity');
  assert.deepEqual((status.conditions ?? []).map((c) => c.type), [], 'no condition left on the PVC');
  t.diagnostic(`up ${up} ms, provisioned ${provisioned} ms; controller side ${controllerDone} ms after the pod's delete; ${FS} ${before.totalBytes} → ${after.totalBytes} bytes; ControllerExpandVolume calls ${env.resizer.calls.made} (${env.resizer.calls.refused} refused); whole ${Date.now() - t0} ms`);

  await env.deletePod('fs-2');
  await env.deleteClaim(pvName);
  assert.deepEqual(await kube.get(R.shadowsets, ns, setName), null);
});

test('a Block PVC grown offline: no node step; the pod\'s device has the new size, the record kept, the new end reaches both members', { timeout: 300_000, skip: unavailable ?? false }, async (t) => {
  const t0 = Date.now();
  const { kube } = env.cluster;
  const [from, to] = [64, 96];
  const { pvName, setName } = await env.provision(from, 180_000);
  const set = (await kube.get(R.shadowsets, ns, setName))!;
  const memberDevices = await Promise.all((set.spec as { members: { claimName: string }[] }).members.map(async (m) => {
    const c = (await kube.get(R.pvcs, ns, m.claimName))!;
    const pv = (await kube.get(R.pvs, undefined, String((c.spec as { volumeName: string }).volumeName)))!;
    return String((pv.spec as { local: { path: string } }).local.path);
  }));
  await env.runWriter();
  await env.deletePod();
  await kube.mergePatch(R.pvcs, ns, claim, { spec: { resources: { requests: { storage: `${to}Mi` } } } });
  const status = await waitFor('the PVC\'s capacity grown', async () => {
    const st = (await kube.get(R.pvcs, ns, claim))!.status as ClaimStatus;
    return st.capacity?.storage === `${to}Mi` ? st : undefined;
  }, { timeoutMs: 120_000, intervalMs: 250 });
  const grown = Date.now() - t0;
  assert.deepEqual((status.conditions ?? []).map((c) => c.type), [], 'no FileSystemResizePending: a Block volume needs no node step');
  assert.equal(((await kube.get(R.pvs, undefined, pvName))!.spec as { capacity: { storage: string } }).capacity.storage, `${to}Mi`);
  assert.equal(((await kube.get(R.shadowsets, ns, setName))!.status as { size: number }).size, to * MiB);
  for (const d of memberDevices) assert.equal(Number(spawnSync('blockdev', ['--getsize64', d], { encoding: 'utf8' }).stdout.trim()), to * MiB + HEADER_BYTES, `member device ${d}`);

  // A new pod finds the record and writes the next; its device has the new size; the unit's last 4 KiB written
  // through it are on both members.
  const { pod, line } = await env.runWriter();
  assert.equal(line.record.count, 2, 'the record written before the resize was found');
  const node = String((pod.spec as { nodeName: string }).nodeName);
  const device = join(env.kubeletDirOf(node), 'plugins/kubernetes.io/csi/volumeDevices/publish', pvName, pod.metadata.uid!);
  assert.equal(Number(spawnSync('blockdev', ['--getsize64', device], { encoding: 'utf8' }).stdout.trim()), to * MiB, 'the published device has the new size');
  const tail = randomBytes(4096);
  const at = to * MiB - 4096;
  const fh = await open(device, 'r+');
  try {
    await fh.write(tail, 0, tail.length, at);
    await fh.sync();
  } finally {
    await fh.close();
  }
  for (const d of memberDevices) {
    const m = await open(d, 'r');
    try {
      const b = Buffer.alloc(4096);
      await m.read(b, 0, 4096, HEADER_BYTES + at);
      assert.ok(b.equals(tail), `member ${d} holds the unit's new last block`);
    } finally {
      await m.close();
    }
  }
  t.diagnostic(`Block ${from} → ${to} MiB: PVC grown ${grown} ms after the provisioning began; ControllerExpandVolume calls so far ${env.resizer.calls.made} (${env.resizer.calls.refused} refused); whole ${Date.now() - t0} ms`);
  await env.deletePod();
  await env.deleteClaim(pvName);
});
