// The CSI stories real kubelets tell (E2E_CLUSTER=kind only), on one cluster: a Filesystem PVC written on one
// worker and read on the other (ext4 by default, xfs on request); a WaitForFirstConsumer shadowset class; the
// one-writer rule as a user sees it (a second node's pod waits with a FailedAttachVolume event); a PVC resize
// through external-resizer and the kubelet (support/csi-expand.ts); and the consumer's node lost
// (support/csi-node-loss.ts). Each story has member classes of its own (static local
// PVs, one per worker unless said), so the PV controller cannot put two members of a set on one node.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { waitFor } from '@shadowset/e2e';
import type { KindEnv } from './env/kind-env.js';
import { CsiKind, secs, sums } from './support/csi-kind.js';
import { registerExpansion } from './support/csi-expand.js';
import { registerNodeLoss } from './support/csi-node-loss.js';
import { ScenarioChain } from './support/scenario.js';
import { StatusWatch, memberDifference, MiB, steady } from './support/shadowset.js';

const NS = 'e2e-csi-stories';
const MEMBER_MIB = 64;
const UNIT_MIB = 48;
const kind = process.env.E2E_CLUSTER === 'kind';

let env: KindEnv | undefined;
let k: CsiKind;
const fs: { pvc: string; pv?: string; set?: string; sum?: string } = { pvc: 'fs-data' };

before(async () => {
  if (!kind) return;
  const { KindEnv, IMAGE } = await import('./env/kind-env.js');
  env = await KindEnv.start('csi-stories', {
    hostTools: false,
    log: (l) => process.stderr.write(`csi-stories: ${l}\n`),
    csi: { logLevel: 'debug', provisioner: { pullPolicy: 'Never' }, attacher: { pullPolicy: 'Never' }, storageClass: { create: false } },
  });
  await env.createNamespace(NS);
  k = new CsiKind(env, NS, IMAGE);
});

after(async () => {
  if (!env) return;
  await env.kubectl(['delete', 'pod', '--all', '-n', NS, '--wait=true', '--timeout=120s'], { allowFail: true });
  await env.kubectl(['delete', 'pvc', '--all', '-n', NS, '--wait=true', '--timeout=180s'], { allowFail: true });
  await env.kubectl(['delete', 'storageclass', '-l', 'shadowset.dev/e2e-stories=true', '--ignore-not-found'], { allowFail: true });
  await env.stop();
});

if (!kind) test('CSI stories on kind', (t) => t.skip('E2E_CLUSTER=kind only (npm run test:kind)'));

const writeFile = (name: string) => [
  'set -e', `dd if=/dev/urandom of=/data/${name} bs=1M count=8 conv=fsync status=none`, `sha256sum /data/${name}`,
  'stat -f -c "fs %T" /data', 'echo written', 'sleep 3600',
].join('\n');
const readFile = (name: string) => [
  'set -e', `sha256sum /data/${name}`, 'stat -f -c "fs %T" /data', 'echo read', 'sleep 3600',
].join('\n');
const fsType = (out: string) => /^fs (\S+)$/m.exec(out)?.[1];

if (kind) {
  const files = new ScenarioChain(() => env, NS);

  files.scenario('Filesystem PVC (ext4 by default): a file written and fsync\'d on one worker is read with its checksum on the other, and both members hold the same bytes', async (note) => {
    const [here, there] = env!.nodes;
    await k.memberClass('kst-m-fs', [1, 1], MEMBER_MIB);
    await k.shadowClass('kst-fs', 'Immediate', { memberClass: 'kst-m-fs', members: '2', memberTimeoutSeconds: '10' });
    await k.claim(fs.pvc, 'kst-fs', 'Filesystem', UNIT_MIB);
    Object.assign(fs, await k.bound(fs.pvc));
    const watch = new StatusWatch(env!, NS, fs.set!);
    try {
      await watch.until('two members in sync', steady(2), 180_000);
    } finally {
      watch.stop();
    }
    let t0 = Date.now();
    await k.pod('fs-writer', fs.pvc, 'Filesystem', here, writeFile('f'));
    const wrote = await k.said('fs-writer', /^written$/m);
    const attach = Date.now() - t0;
    assert.equal(fsType(wrote), 'ext2/ext3', 'the volume is mounted as ext4 (stat -f names the ext family so)');
    [fs.sum] = sums(wrote);
    assert.ok(fs.sum, `the pod printed the file's checksum: ${wrote}`);
    await k.placedOn(fs.set!, here);
    await k.deletePod('fs-writer');
    t0 = Date.now();
    await k.pod('fs-reader', fs.pvc, 'Filesystem', there, readFile('f'));
    const read = await k.said('fs-reader', /^read$/m);
    const move = Date.now() - t0;
    assert.equal(sums(read)[0], fs.sum, 'the same file and checksum on the other worker');
    await k.placedOn(fs.set!, there);
    // Compared at rest: while the filesystem is mounted, ext4 writes on its own (journal commits, lazy inode
    // table zeroing), and two members read a moment apart can differ by a write in flight. The staging mount
    // goes at NodeUnstage, before the detach, so with the attachment gone nothing writes.
    await k.deletePod('fs-reader');
    await waitFor('the attachment to go', async () => (await k.attachments(fs.pv!)).length === 0, { timeoutMs: 180_000, intervalMs: 1000 });
    const members = [...(await k.members(fs.set!, MEMBER_MIB)).values()];
    assert.deepEqual(members.map((m) => m.node).sort(), [...env!.nodes].sort(), 'one member on each worker');
    assert.equal(await memberDifference(env!, members, UNIT_MIB * MiB), null, 'the members hold the same bytes');
    note(`first pod wrote ${secs(attach)} after it was created on ${here}; the pod on ${there} read the file ${secs(move)} after it was created`);
  }, 600_000);

  files.scenario('one writer: a pod on the other worker waits ContainerCreating with a FailedAttachVolume event naming the holder; deleting the holder lets it attach and run', async (note) => {
    const [here, there] = env!.nodes;
    // fs-reader (on `there`) holds the volume; a second pod on `here` wants it.
    await k.pod('fs-reader', fs.pvc, 'Filesystem', there, readFile('f'));
    await k.said('fs-reader', /^read$/m);
    await k.pod('fs-second', fs.pvc, 'Filesystem', here, readFile('f'));
    const ev = await waitFor('a FailedAttachVolume event on the second pod', async () =>
      (await env!.events(NS, 'fs-second')).find((e) => e.reason === 'FailedAttachVolume'), { timeoutMs: 180_000, intervalMs: 1000 });
    note(`FailedAttachVolume: ${ev.message}`);
    assert.ok(ev.message.includes('fs-reader') || ev.message.includes(there), `the event names the holder (pod fs-reader or node ${there}): ${ev.message}`);
    const second = await k.json(['get', 'pod', 'fs-second', '-n', NS]);
    assert.notEqual((second.status as { phase?: string }).phase, 'Running', 'the second pod does not run while the first holds the volume');
    assert.doesNotMatch(await k.podLog('fs-second'), /read/, 'the second pod never started');
    const vas = await k.attachments(fs.pv!);
    assert.deepEqual(vas.filter((v) => (v.status as { attached?: boolean } | undefined)?.attached).map((v) => (v.spec as { nodeName: string }).nodeName), [there], 'attached to the holder\'s node only');
    await k.deletePod('fs-reader');
    const t0 = Date.now();
    const read = await k.said('fs-second', /^read$/m, 300_000);
    assert.equal(sums(read)[0], fs.sum, 'the second pod reads the file');
    await k.placedOn(fs.set!, here);
    note(`the second pod ran ${secs(Date.now() - t0)} after the holder was deleted (the engine moved back to ${here})`);
    await k.deletePod('fs-second');
  }, 480_000);

  files.scenario('an fsType xfs class: the node plugin makes xfs (its image has mkfs.xfs) and the file is read back', async (note) => {
    const [here] = env!.nodes;
    // mkfs.xfs wants at least 300 MiB.
    await k.memberClass('kst-m-xfs', [1, 1], 336);
    await k.shadowClass('kst-xfs', 'Immediate', { memberClass: 'kst-m-xfs', 'csi.storage.k8s.io/fstype': 'xfs' });
    await k.claim('xfs-data', 'kst-xfs', 'Filesystem', 320);
    const { set } = await k.bound('xfs-data');
    const t0 = Date.now();
    await k.pod('xfs-writer', 'xfs-data', 'Filesystem', here, [writeFile('f').replace('sleep 3600', 'true'), 'sync', 'sha256sum /data/f', 'echo reread', 'sleep 3600'].join('\n'));
    const out = await k.said('xfs-writer', /^reread$/m, 300_000);
    assert.equal(fsType(out), 'xfs');
    const [a, b] = sums(out);
    assert.ok(a && a === b, `the file's checksum twice: ${out}`);
    note(`xfs made and mounted, 8 MiB written ${secs(Date.now() - t0)} after the pod was created (set ${set})`);
    await k.deletePod('xfs-writer');
  }, 480_000);

  const wffc = new ScenarioChain(() => env, NS);
  wffc.scenario('a WaitForFirstConsumer shadowset class: the PVC waits for a pod, then is provisioned; the engine runs on the pod\'s node and the pod writes', async (note) => {
    const [, there] = env!.nodes;
    await k.memberClass('kst-m-wffc', [1, 1], MEMBER_MIB);
    await k.shadowClass('kst-wffc', 'WaitForFirstConsumer', { memberClass: 'kst-m-wffc' });
    await k.claim('late', 'kst-wffc', 'Filesystem', UNIT_MIB);
    const waiting = await waitFor('the claim to wait for its consumer', async () =>
      (await env!.events(NS, 'late')).find((e) => e.reason === 'WaitForFirstConsumer'), { timeoutMs: 60_000, intervalMs: 1000 });
    note(`before a pod: ${waiting.message}`);
    const pending = await k.json(['get', 'pvc', 'late', '-n', NS]);
    assert.equal((pending.status as { phase: string }).phase, 'Pending');
    assert.equal((await k.items(['get', 'shadowsets', '-n', NS])).filter((s) => s.metadata.name.startsWith(`pvc-${pending.metadata.uid}`)).length, 0, 'no set before a consumer');
    const t0 = Date.now();
    await k.pod('late-writer', 'late', 'Filesystem', there, writeFile('g'));
    const { set } = await k.bound('late');
    const provisioned = Date.now() - t0;
    const claim = await k.json<{ metadata: { annotations?: Record<string, string> } }>(['get', 'pvc', 'late', '-n', NS]);
    assert.equal(claim.metadata.annotations?.['volume.kubernetes.io/selected-node'], there, 'the scheduler chose the pod\'s node for the claim');
    const out = await k.said('late-writer', /^written$/m, 300_000);
    assert.ok(sums(out)[0]);
    await k.placedOn(set, there);
    note(`provisioned ${secs(provisioned)} after the pod was created, the pod wrote ${secs(Date.now() - t0)} after; engine on ${there}`);
    await k.deletePod('late-writer');
  }, 480_000);

  registerExpansion(new ScenarioChain(() => env, NS), () => ({ env: env!, k, ns: NS }));

  // The consumer's node lost last: it powers a worker off and on again.
  registerNodeLoss(new ScenarioChain(() => env, NS), () => ({ env: env!, k }));
}
