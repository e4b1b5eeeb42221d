// A PVC resize on kind (issue 14, item 6) through the real external-resizer and kubelet: an xfs PVC written by a
// pod, the pod deleted (the driver grows volumes offline), the claim's request raised; external-resizer's
// ControllerExpandVolume asks the operator to grow the set, the PV takes the new size and the claim waits for a
// node (FileSystemResizePending); the next pod's mount makes the kubelet call NodeExpandVolume (xfs_growfs), and
// that pod sees the bigger filesystem, the old file intact, and writes more than the old one had free.
// kind's member PVs are static local volumes, which cannot grow: they are made bigger than first asked, so the
// member claims already hold the new size (the driver leaves such claims alone); a second resize past what they
// hold is refused on the claim with the driver's message, and the set stays as it was. Member claims that grow
// through their own class are the control-plane test's part (csi/src/itest/resize.ctest.ts).
import assert from 'node:assert/strict';
import { waitFor } from '@shadowset/e2e';
import type { KindEnv } from '../env/kind-env.js';
import type { CsiKind } from './csi-kind.js';
import { secs, sums } from './csi-kind.js';
import type { ScenarioChain } from './scenario.js';
import { MiB } from './shadowset.js';

const FROM_MIB = 320; // mkfs.xfs wants at least 300 MiB
const TO_MIB = 400;
const PAST_MIB = 480; // more than the member volumes hold (MEMBER_MIB less the 8 MiB header)
const MEMBER_MIB = 416;
const CLAIM = 'grow-data';

/** The filesystem's size (statfs blocks × block size) as the pod printed it. */
const fsBytes = (out: string): number => {
  const m = /^size (\d+) (\d+)$/m.exec(out);
  assert.ok(m, `the pod printed its filesystem's size: ${out}`);
  return Number(m[1]) * Number(m[2]);
};
const SIZE = 'stat -f -c "size %b %S" /data';

/** A quantity as the API server writes a storage size back (plain bytes or a binary suffix). */
const qBytes = (q: string | undefined): number => {
  const m = /^(\d+)(Ki|Mi|Gi)?$/.exec(q ?? '');
  assert.ok(m, `a storage quantity: ${q}`);
  return Number(m[1]) * ({ Ki: 1024, Mi: MiB, Gi: 1024 * MiB }[m[2] ?? ''] ?? 1);
};

interface Claim { spec: { volumeName: string }; status: { capacity?: { storage?: string }; conditions?: { type: string }[] } }

export function registerExpansion(chain: ScenarioChain, ctx: () => { env: KindEnv; k: CsiKind; ns: string }): void {
  chain.scenario('a PVC resize through external-resizer and the kubelet (offline, xfs): the set grows, the filesystem grows at the next mount, the file is intact; a resize past what the members hold is refused on the PVC', async (note) => {
    const { env, k, ns } = ctx();
    const [here] = env.nodes;
    await k.memberClass('kst-m-grow', [1, 1], MEMBER_MIB);
    await k.shadowClass('kst-grow', 'Immediate', { memberClass: 'kst-m-grow', 'csi.storage.k8s.io/fstype': 'xfs' }, true);
    await k.claim(CLAIM, 'kst-grow', 'Filesystem', FROM_MIB);
    const { pv, set } = await k.bound(CLAIM);
    await k.pod('grow-writer', CLAIM, 'Filesystem', here, [
      'set -e', 'dd if=/dev/urandom of=/data/f bs=1M count=8 conv=fsync status=none', 'sha256sum /data/f', SIZE, 'echo written', 'sleep 3600',
    ].join('\n'));
    const wrote = await k.said('grow-writer', /^written$/m, 300_000);
    const [sum] = sums(wrote);
    const before = fsBytes(wrote);
    await k.deletePod('grow-writer');
    await waitFor('the attachment to go', async () => (await k.attachments(pv)).length === 0, { timeoutMs: 180_000, intervalMs: 1000 });

    const resize = (mib: number) => env.kubectl(['patch', 'pvc', CLAIM, '-n', ns, '--type=merge', '-p', JSON.stringify({ spec: { resources: { requests: { storage: `${mib}Mi` } } } })]);
    const t0 = Date.now();
    await resize(TO_MIB);
    await waitFor('the set to grow', async () => {
      const s = await k.json(['get', 'shadowset', set, '-n', ns]);
      return ((s.status as { size?: number }).size ?? 0) >= TO_MIB * MiB ? s : undefined;
    }, { timeoutMs: 240_000, intervalMs: 1000 });
    const setGrew = Date.now() - t0;
    const pending = await waitFor('the PV to grow and the claim to wait for a node', async () => {
      const pvNow = await k.json<{ spec: { capacity: { storage: string } } }>(['get', 'pv', pv]);
      const c = await k.json<Claim>(['get', 'pvc', CLAIM, '-n', ns]);
      return qBytes(pvNow.spec.capacity.storage) === TO_MIB * MiB && c.status.conditions?.some((x) => x.type === 'FileSystemResizePending') ? c : undefined;
    }, { timeoutMs: 180_000, intervalMs: 1000 });
    assert.equal(qBytes(pending.status.capacity?.storage), FROM_MIB * MiB, 'the claim keeps its old capacity until the filesystem has grown');
    const resized = (await env.events(ns, set)).filter((e) => e.reason === 'Resized');
    assert.ok(resized.length > 0, 'the set has a Resized event');

    // Room beyond what the old filesystem had: the new pod writes more than its whole size would have held free.
    const more = Math.ceil((TO_MIB - FROM_MIB) / 2);
    const t1 = Date.now();
    await k.pod('grow-reader', CLAIM, 'Filesystem', here, [
      'set -e', 'sha256sum /data/f', SIZE, 'set -- $(stat -f -c "%a %S" /data)', 'avail=$(($1 * $2 / 1048576))', 'echo "avail $avail"',
      `dd if=/dev/zero of=/data/g bs=1M count=$((avail - ${more})) conv=fsync status=none`, 'echo read', 'sleep 3600',
    ].join('\n'));
    const read = await k.said('grow-reader', /^read$/m, 300_000);
    assert.equal(sums(read)[0], sum, 'the file written before the resize, intact');
    const after = fsBytes(read);
    assert.ok(after - before >= (TO_MIB - FROM_MIB - 8) * MiB, `the filesystem grew by about ${TO_MIB - FROM_MIB} MiB: ${before} → ${after} bytes`);
    const avail = Number(/^avail (\d+)$/m.exec(read)?.[1]);
    assert.ok(avail * MiB > before, `more free (${avail} MiB) than the old filesystem's whole size (${before} bytes), and it was written`);
    const done = await waitFor('the claim to show its new capacity', async () => {
      const c = await k.json<Claim>(['get', 'pvc', CLAIM, '-n', ns]);
      return qBytes(c.status.capacity?.storage) === TO_MIB * MiB && !c.status.conditions?.some((x) => x.type === 'FileSystemResizePending') ? c : undefined;
    }, { timeoutMs: 120_000, intervalMs: 1000 });
    assert.ok(done);
    note(`set grown ${secs(setGrew)} after the request was raised; the next pod saw xfs at ${(after / MiB).toFixed(0)} MiB (was ${(before / MiB).toFixed(0)}), file intact, ${secs(Date.now() - t1)} after it was created`);

    // Past what the member volumes hold: their class cannot expand, so external-resizer reports the driver's
    // refusal on the claim, and the set keeps its size.
    await k.deletePod('grow-reader');
    await waitFor('the attachment to go', async () => (await k.attachments(pv)).length === 0, { timeoutMs: 180_000, intervalMs: 1000 });
    await resize(PAST_MIB);
    const failed = await waitFor('a VolumeResizeFailed event on the claim', async () =>
      (await env.events(ns, CLAIM)).find((e) => e.reason === 'VolumeResizeFailed' && /does not allow volume expansion/.test(e.message)), { timeoutMs: 180_000, intervalMs: 1000 });
    note(`past the members: ${failed.message}`);
    const s = await k.json(['get', 'shadowset', set, '-n', ns]);
    assert.equal((s.status as { size?: number }).size, TO_MIB * MiB, 'the set keeps its size');
    assert.equal((s.spec as { size?: number }).size, TO_MIB * MiB, 'nothing asked the set to grow further');
  }, 900_000);
}
