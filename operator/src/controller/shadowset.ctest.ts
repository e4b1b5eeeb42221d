// The operator against a real kube-apiserver, simulated nodes and real engine processes on loop
// devices: create, add a member, detach for backup with a WriteBitmap and return with a minicopy,
// delete a bitmap, engine pod failure, and delete/dissolve then re-create (no copy, no merge).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { R } from '../kube/client.js';
import { Cluster, cond, memberState, type Status } from '@shadowset/testkit/cluster/cluster-fixture';

const NS = 'shadow';
const c = new Cluster();

before(async () => {
  await c.start(['node-a', 'node-b']);
  await c.namespace(NS);
  for (const n of ['a1', 'a2', 'a3']) await c.blockClaim(NS, n, 'node-a');
  await c.blockClaim(NS, 'b1', 'node-b');
});
after(async () => {
  await c.stop();
});

const two = { members: [{ name: 'm1', claimName: 'a1' }, { name: 'm2', claimName: 'a2' }] };
const allInSync = (n: number) => (s: Status) => s.membersInSync === `${n}/${n}` && s.state === 'Steady' && cond(s, 'Ready')?.status === 'True';

test('a two-member set comes up: engine pod with both claims, Ready, members InSync, data served over NBD', async () => {
  await c.apply(NS, 'vol', two);
  const s = await c.until(NS, 'vol', 'two members in sync', allInSync(2));
  assert.equal(cond(s, 'Degraded')?.status, 'False');
  assert.equal(cond(s, 'Resyncing')?.reason, 'Steady');
  assert.match(s.endpoint ?? '', /^nbds:\/\/vol\.shadow\.svc:10809\/shadow$/);
  const pod = await c.kube.get(R.pods, NS, 'vol-engine');
  const devices = ((pod?.spec as { containers: { volumeDevices: { devicePath: string }[] }[] }).containers[0]!.volumeDevices).map((d) => d.devicePath);
  assert.deepEqual(devices, ['/dev/shadow/m1', '/dev/shadow/m2']);
  await c.qemuIo(NS, 'vol', ['write -P 0x11 0 4M', 'read -P 0x11 0 4M']);
  const ss = await c.get(NS, 'vol');
  assert.ok(ss?.metadata.finalizers?.includes('shadowset.dev/dissolve'));
  assert.deepEqual((ss?.spec as { members: unknown[] }).members.length, 2, 'the user spec is not rewritten');
});

test('adding a third member runs a full copy (member server pod), then all three are in sync', async () => {
  await c.apply(NS, 'vol', { members: [...two.members, { name: 'm3', claimName: 'a3' }] });
  const s = await c.until(NS, 'vol', 'three in sync', allInSync(3));
  assert.equal(memberState(s, 'm3'), 'InSync');
  assert.ok(await c.kube.get(R.pods, NS, 'vol-member-m3'), 'm3 is served by a member server');
  await c.qemuIo(NS, 'vol', ['read -P 0x11 0 4M']);
  const ev = (await c.events(NS, 'vol')).map((e) => e.reason);
  assert.ok(ev.includes('MemberAdded'), `events: ${ev.join(',')}`);
  assert.ok(ev.includes('CopyCompleted') || ev.includes('CopyStarted'), `events: ${ev.join(',')}`);
});

test('detaching a member for backup creates a WriteBitmap; returning it runs a minicopy of only the dirty chunks', async () => {
  const three = [...two.members, { name: 'm3', claimName: 'a3' }];
  await c.consumerPod(NS, 'app', 'vol');
  await c.apply(NS, 'vol', { members: three.map((m) => (m.name === 'm2' ? { ...m, state: 'Detached' } : m)), hooks: { freeze: { pod: 'app', command: ['fsfreeze', '-f', '/data'] }, thaw: { pod: 'app', command: ['fsfreeze', '-u', '/data'] } } });
  await c.until(NS, 'vol', 'm2 detached', (s) => memberState(s, 'm2') === 'Detached');
  assert.deepEqual(c.hooks.calls.map((x) => x.split(':')[0]), ['freeze', 'thaw']);
  const wbs = await c.kube.list(R.writebitmaps, NS);
  assert.equal(wbs.items.length, 1);
  const wb = wbs.items[0]!;
  assert.equal((wb.spec as { member: string }).member, 'm2');
  await c.qemuIo(NS, 'vol', ['write -P 0x22 1M 64k']);
  const populated = await (async () => {
    for (let i = 0; i < 100; i++) {
      const w = await c.kube.get(R.writebitmaps, NS, wb.metadata.name);
      const st = (w?.status ?? {}) as { dirtyBytes?: number; percentPopulated?: string };
      if ((st.dirtyBytes ?? 0) > 0) return st;
      await new Promise((r) => setTimeout(r, 200));
    }
    return {};
  })();
  assert.equal(populated.dirtyBytes, 65536, 'one 64 KiB chunk written while m2 was away');
  await c.apply(NS, 'vol', { members: three });
  await c.until(NS, 'vol', 'm2 back in sync', allInSync(3));
  const ev = (await c.events(NS, 'vol')).map((e) => e.reason);
  assert.ok(ev.includes('MemberDetached') && ev.includes('BitmapCreated') && ev.includes('MemberReturned'), `events: ${ev.join(',')}`);
  await c.qemuIo(NS, 'vol', ['read -P 0x22 1M 64k', 'read -P 0x11 0 1M']);
  const left = await c.kube.list(R.writebitmaps, NS);
  assert.equal(left.items.filter((x) => !x.metadata.deletionTimestamp).length, 0, 'the bitmap is used once and deleted');
});

test('deleting a WriteBitmap while its member is away makes the return a full copy', async () => {
  const three = [...two.members, { name: 'm3', claimName: 'a3' }];
  await c.apply(NS, 'vol', { members: three.map((m) => (m.name === 'm3' ? { ...m, state: 'Detached' } : m)) });
  await c.until(NS, 'vol', 'm3 detached', (s) => memberState(s, 'm3') === 'Detached');
  const wb = (await c.kube.list(R.writebitmaps, NS)).items[0]!;
  await c.kube.delete(R.writebitmaps, NS, wb.metadata.name);
  for (let i = 0; i < 100 && (await c.kube.get(R.writebitmaps, NS, wb.metadata.name)); i++) await new Promise((r) => setTimeout(r, 200));
  assert.equal(await c.kube.get(R.writebitmaps, NS, wb.metadata.name), null, 'bitmap resource gone');
  assert.ok((await c.events(NS, 'vol')).some((e) => e.reason === 'BitmapDeleted'));
  await c.apply(NS, 'vol', { members: three });
  let sawFullCopy = false;
  await c.until(NS, 'vol', 'm3 back', (s) => {
    if (memberState(s, 'm3') === 'FullCopy') sawFullCopy = true;
    return allInSync(3)(s);
  });
  const m3 = (await c.get(NS, 'vol'))!.status as Status;
  assert.ok(sawFullCopy || /full copy/.test(m3.members?.find((m) => m.name === 'm3')?.reason ?? ''), 'm3 returned by a full copy');
});

test('engine pod failure: the restarted engine merges and the set comes back in sync', async () => {
  const before = (await c.get(NS, 'vol'))!.status as Status;
  const pid = c.sim.pids(NS, 'vol-engine').engine;
  assert.ok(pid);
  await c.qemuIo(NS, 'vol', ['write -P 0x33 2M 1M']);
  process.kill(pid, 'SIGKILL');
  const s = await c.until(NS, 'vol', 'back after the crash', (x) => (x.shadowGeneration ?? 0) > (before.shadowGeneration ?? 0) && allInSync(3)(x), 90_000);
  assert.ok(s);
  const logs = c.sim.logs(NS, 'vol-engine', 'engine');
  assert.match(logs, /"event":"MergeRequired"/, 'the recreated engine merged');
  await c.qemuIo(NS, 'vol', ['read -P 0x33 2M 1M']);
});

test('bad input is refused with a clear condition and an event, and nothing is attached', async () => {
  await c.blockClaim(NS, 'fs', 'node-a', 16, 'Filesystem');
  const foreign = await c.blockClaim(NS, 'foreign', 'node-a', 16);
  await (await import('node:fs/promises')).writeFile(foreign.path, Buffer.from('not a shadow member, some user data'), { flag: 'r+' });
  const cases: [string, unknown, string][] = [
    ['missing', { members: [{ name: 'x', claimName: 'nope' }] }, 'ClaimNotFound'],
    ['fsmode', { members: [{ name: 'x', claimName: 'fs' }] }, 'ClaimNotBlock'],
    ['stolen', { members: [{ name: 'x', claimName: 'a1' }] }, 'ClaimInOtherSet'],
    ['foreign', { members: [{ name: 'x', claimName: 'foreign' }] }, 'ForeignData'],
  ];
  for (const [name, spec, reason] of cases) {
    await c.apply(NS, name, spec);
    const s = await c.until(NS, name, `${name} refused`, (x) => cond(x, 'Ready')?.reason === reason);
    assert.equal(cond(s, 'Ready')?.status, 'False');
    assert.ok((await c.events(NS, name)).some((e) => e.reason === 'Refused' && e.type === 'Warning'), `${name}: no Refused event`);
    if (reason !== 'ForeignData') assert.equal(await c.kube.get(R.pods, NS, `${name}-engine`), null, `${name}: nothing attached`);
  }
  const head = Buffer.alloc(35);
  const fh = await (await import('node:fs/promises')).open(foreign.path, 'r');
  await fh.read(head, 0, 35, 0);
  await fh.close();
  assert.equal(head.toString(), 'not a shadow member, some user data', 'the foreign device is untouched');
  for (const [name] of cases) await c.kube.delete(R.shadowsets, NS, name);
});

test('a set the CSI driver made for a claim repeats its warnings on that claim, and only on that claim', async () => {
  const claim = (name: string) => c.kube.create(R.pvcs, NS, {
    apiVersion: 'v1', kind: 'PersistentVolumeClaim', metadata: { name, namespace: NS },
    spec: { accessModes: ['ReadWriteOnce'], volumeMode: 'Block', storageClassName: 'shadowset-sc', resources: { requests: { storage: '16Mi' } } },
  });
  const consumer = await claim('consumer');
  const other = await claim('bystander');
  for (const n of ['fs-made', 'fs-spoof']) await c.blockClaim(NS, n, 'node-a', 16, 'Filesystem');
  const set = (name: string, forClaim: string, volumeName: string) => c.kube.apply(R.shadowsets, NS, name, {
    apiVersion: 'shadowset.dev/v1alpha1', kind: 'ShadowSet',
    metadata: { name, namespace: NS, annotations: { 'csi.shadowset.dev/claim': forClaim, 'csi.shadowset.dev/volume-name': volumeName } },
    spec: { members: [{ name: 'x', claimName: name.replace('pvc-', 'fs-') }] },
  }, 'test-user');
  // The driver's set: its volume name is the claim's uid with external-provisioner's prefix.
  await set('pvc-made', 'consumer', `pvc-${consumer.metadata.uid}`);
  // A hand-made set that names another claim: its volume name does not match that claim's uid.
  await set('pvc-spoof', 'bystander', 'pvc-not-that-claim');
  for (const name of ['pvc-made', 'pvc-spoof']) await c.until(NS, name, `${name} refused`, (x) => cond(x, 'Ready')?.reason === 'ClaimNotBlock');
  const onClaim = (await c.events(NS, 'consumer')).filter((e) => e.type === 'Warning' && e.reason === 'Refused');
  assert.ok(onClaim.length > 0, 'the refusal is on the claim');
  assert.match(onClaim[0]!.message, /^ShadowSet pvc-made: .*fs-made/);
  const kinds = (await c.kube.list(R.events, NS)).items
    .filter((e) => (e.involvedObject as { name?: string }).name === 'consumer')
    .map((e) => e.involvedObject as { kind?: string; uid?: string });
  assert.ok(kinds.every((k) => k.kind === 'PersistentVolumeClaim' && k.uid === consumer.metadata.uid), 'the events name the claim by kind and uid');
  assert.deepEqual(await c.events(NS, 'bystander'), [], 'nothing on a claim the set is not the volume of');
  assert.ok(other.metadata.uid);
  for (const name of ['pvc-made', 'pvc-spoof']) await c.kube.delete(R.shadowsets, NS, name);
});

test('deleting the set dissolves it; re-creating it from the same claims needs no copy and no merge', async () => {
  await c.kube.delete(R.shadowsets, NS, 'vol');
  for (let i = 0; i < 300 && (await c.get(NS, 'vol')); i++) await new Promise((r) => setTimeout(r, 200));
  assert.equal(await c.get(NS, 'vol'), null, 'dissolved and gone');
  assert.equal(await c.kube.get(R.pods, NS, 'vol-engine'), null);
  await c.apply(NS, 'vol', { members: [...two.members, { name: 'm3', claimName: 'a3' }] });
  await c.until(NS, 'vol', 'back in sync', allInSync(3));
  const logs = c.sim.logs(NS, 'vol-engine', 'engine');
  assert.match(logs, /"event":"ShadowSetMounted"[^\n]*"unclean":false/);
  assert.doesNotMatch(logs, /"event":"(CopyStarted|MergeRequired)"/);
  await c.qemuIo(NS, 'vol', ['read -P 0x33 2M 1M', 'read -P 0x22 1M 64k']);
});
