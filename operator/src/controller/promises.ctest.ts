// The operator's promises against a real API server, simulated nodes and real engines: hooks only in
// consumer pods, a Required minicopy policy on return, live changes of export settings, stale engine
// arguments, and per-member overwrite.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { open } from 'node:fs/promises';
import { waitFor } from '@shadowset/e2e';
import { R } from '../kube/client.js';
import { Cluster, cond, memberState, type Status } from '@shadowset/testkit/cluster/cluster-fixture';

const NS = 'promises';
const c = new Cluster();

before(async () => {
  await c.start(['node-a', 'node-b', { name: 'node-z', labels: { 'topology.kubernetes.io/zone': 'zone-z' } }]);
  await c.namespace(NS);
  for (const n of ['a1', 'a2', 'a3', 'a4', 'a5']) await c.blockClaim(NS, n, 'node-a');
  await c.blockClaim(NS, 'b1', 'node-b');
  for (const n of ['z1', 'z2']) await c.blockClaim(NS, n, 'node-z');
});
after(async () => {
  await c.stop();
});

const allInSync = (n: number) => (s: Status) => s.membersInSync === `${n}/${n}` && s.state === 'Steady' && cond(s, 'Ready')?.status === 'True';
const three = [{ name: 'm1', claimName: 'a1' }, { name: 'm2', claimName: 'a2' }, { name: 'm3', claimName: 'a3' }];
const hooks = { freeze: { pod: 'app', command: ['sync'] }, thaw: { pod: 'app', command: ['true'] } };
const enginePod = async (name: string) => {
  const p = await c.kube.get(R.pods, NS, `${name}-engine`);
  return { uid: p?.metadata.uid, args: (p?.spec as { containers: { args: string[] }[] } | undefined)?.containers[0]!.args ?? [] };
};

test('hooks run only in a pod that declares itself a consumer of the set; elsewhere the split is refused', async () => {
  await c.apply(NS, 'hk', { members: three, minicopyPolicy: 'Required' });
  await c.until(NS, 'hk', 'three in sync', allInSync(3));
  assert.ok(!(await enginePod('hk')).args.includes('--site'), 'node-a has no zone label');
  await c.consumerPod(NS, 'app', 'other-set');
  const detached = { members: three.map((m) => (m.name === 'm3' ? { ...m, state: 'Detached' } : m)), minicopyPolicy: 'Required', hooks };
  await c.apply(NS, 'hk', detached);
  const s = await c.until(NS, 'hk', 'HookRefused', (x) => cond(x, 'Ready')?.reason === 'HookRefused');
  assert.equal(cond(s, 'Ready')?.status, 'False');
  assert.match(cond(s, 'Ready')?.message ?? '', /hook pod app is not a consumer of ShadowSet hk/);
  assert.equal(memberState(s, 'm3'), 'InSync', 'the member is not split without its freeze');
  assert.equal(c.hooks.calls.length, 0, 'no hook ran');
  assert.ok((await c.events(NS, 'hk')).some((e) => e.type === 'Warning' && e.reason === 'HookRefused'));
  // The application's owner declares it a consumer: the split goes ahead, with freeze and thaw.
  await c.kube.mergePatch(R.pods, NS, 'app', { metadata: { annotations: { 'shadowset.dev/consumer-of': 'other-set, hk' } } });
  await c.until(NS, 'hk', 'm3 detached', (x) => memberState(x, 'm3') === 'Detached' && cond(x, 'Ready')?.status === 'True');
  assert.deepEqual(c.hooks.calls.map((x) => x.split(':')[0]), ['freeze', 'thaw']);
});

test('minicopyPolicy Required holds on return: without a bitmap the return is refused, once, until the spec changes', async () => {
  const wb = await waitFor('the bitmap resource', async () => (await c.kube.list(R.writebitmaps, NS)).items.find((b) => (b.spec as { shadowSet?: string }).shadowSet === 'hk'));
  await c.kube.delete(R.writebitmaps, NS, wb.metadata.name);
  await waitFor('bitmap deleted', async () => (await c.kube.get(R.writebitmaps, NS, wb.metadata.name)) === null);
  await c.apply(NS, 'hk', { members: three, minicopyPolicy: 'Required', hooks });
  const s = await c.until(NS, 'hk', 'BitmapRequired', (x) => cond(x, 'Ready')?.reason === 'BitmapRequired');
  assert.match(cond(s, 'Ready')?.message ?? '', /member m3: ENG_BITMAP_REQUIRED/);
  assert.equal(memberState(s, 'm3'), 'Detached', 'no full copy was started instead');
  // Many reconciles later (the status poll), the refusal was not repeated.
  const seen = c.op.metrics.reconciles;
  await waitFor('more reconciles', async () => c.op.metrics.reconciles >= seen + 4, { timeoutMs: 60_000 });
  const refusals = (await c.events(NS, 'hk')).filter((e) => e.reason === 'Refused' && /ENG_BITMAP_REQUIRED/.test(e.message));
  assert.equal(refusals.length, 1, `refusal events: ${refusals.map((e) => e.message).join(' | ')}`);
  assert.equal(memberState((await c.get(NS, 'hk'))!.status as Status, 'm3'), 'Detached');
  // The user accepts a full copy: the return is asked again.
  await c.apply(NS, 'hk', { members: three, minicopyPolicy: 'Optional', hooks });
  await c.until(NS, 'hk', 'm3 back by a full copy', allInSync(3));
  await c.kube.delete(R.shadowsets, NS, 'hk');
});

test('a change of export.port restarts the engine cleanly on the new port; a Service type change needs no restart', async () => {
  await waitFor('hk gone', async () => (await c.get(NS, 'hk')) === null, { timeoutMs: 60_000 });
  const two = [{ name: 'm1', claimName: 'a1' }, { name: 'm2', claimName: 'a2' }];
  await c.apply(NS, 'ex', { members: two });
  await c.until(NS, 'ex', 'two in sync', allInSync(2));
  await c.qemuIo(NS, 'ex', ['write -P 0x5c 0 1M']);
  const first = await enginePod('ex');
  await c.apply(NS, 'ex', { members: two, export: { port: 10900 } });
  await waitFor('a new engine pod', async () => {
    const p = await enginePod('ex');
    return p.uid && p.uid !== first.uid ? p : undefined;
  }, { timeoutMs: 60_000 });
  await c.until(NS, 'ex', 'serving again', allInSync(2));
  const ev = (await c.events(NS, 'ex')).find((e) => e.reason === 'EngineRestarted');
  assert.match(ev?.message ?? '', /export\.port 10809 → 10900/);
  assert.ok((await enginePod('ex')).args.includes('$(POD_IP):10900'));
  const svc = await c.kube.get(R.services, NS, 'ex');
  assert.deepEqual((svc?.spec as { ports: { port: number }[] }).ports.map((p) => p.port), [10900]);
  // A clean stop: the new engine found clean members, so nothing to merge.
  const logs = c.sim.logs(NS, 'ex-engine', 'engine');
  assert.match(logs, /"event":"ShadowSetMounted"[^\n]*"unclean":false/);
  assert.doesNotMatch(logs, /"event":"MergeRequired"/);
  await c.qemuIo(NS, 'ex', ['read -P 0x5c 0 1M'], 10900);

  const second = await enginePod('ex');
  await c.apply(NS, 'ex', { members: two, export: { port: 10900, serviceType: 'NodePort' } });
  await waitFor('Service type NodePort', async () => ((await c.kube.get(R.services, NS, 'ex'))?.spec as { type?: string }).type === 'NodePort');
  assert.equal((await enginePod('ex')).uid, second.uid, 'the engine kept running');
  await c.kube.delete(R.shadowsets, NS, 'ex');
});

test('an engine restarted with a member server\'s old address gets that member back at its new address', async () => {
  await waitFor('ex gone', async () => (await c.get(NS, 'ex')) === null, { timeoutMs: 60_000 });
  const members = [{ name: 'm1', claimName: 'a4' }, { name: 'm2', claimName: 'b1' }];
  await c.apply(NS, 'st', { members });
  await c.until(NS, 'st', 'two in sync', allInSync(2));
  const oldServer = await c.kube.get(R.pods, NS, 'st-member-m2');
  const oldIp = (oldServer?.status as { podIP: string }).podIP;
  assert.ok((await enginePod('st')).args.includes(`nbds://${oldIp}:10810/member`));
  await c.qemuIo(NS, 'st', ['write -P 0x6d 0 1M']);
  // The member server goes (its node's pod rescheduled, say) and the engine's container dies with it.
  await c.kube.delete(R.pods, NS, 'st-member-m2');
  process.kill(c.sim.pids(NS, 'st-engine').engine!, 'SIGKILL');
  const newIp = await waitFor('a new member server', async () => {
    const ip = ((await c.kube.get(R.pods, NS, 'st-member-m2'))?.status as { podIP?: string } | undefined)?.podIP;
    return ip && ip !== oldIp ? ip : undefined;
  }, { timeoutMs: 120_000 });
  // The engine serves again with the member at its new address, in sync.
  await waitFor('m2 in sync at the new address', async () => {
    try {
      const st = await c.engineStatus(NS, 'st');
      return st.members?.some((m) => m.path === `nbds://${newIp}:10810/member` && m.state === 'InSync');
    } catch {
      return false; // between engines
    }
  }, { timeoutMs: 120_000 });
  await c.until(NS, 'st', 'two in sync', allInSync(2));
  await c.qemuIo(NS, 'st', ['read -P 0x6d 0 1M']);
  await c.kube.delete(R.shadowsets, NS, 'st');
});

test('an engine on a node with a zone label serves with --site set to that zone', async () => {
  await c.apply(NS, 'zs', { members: [{ name: 'm1', claimName: 'z1', site: 'zone-z' }, { name: 'm2', claimName: 'z2', site: 'zone-y' }] });
  await c.until(NS, 'zs', 'two in sync', allInSync(2));
  const args = (await enginePod('zs')).args;
  assert.deepEqual(args.slice(args.indexOf('--site'), args.indexOf('--site') + 2), ['--site', 'zone-z']);
  const st = await c.engineStatus(NS, 'zs') as { members?: { site?: string }[] };
  assert.deepEqual(st.members?.map((m) => m.site), ['zone-z', 'zone-y'], 'each member carries its site');
  await c.kube.delete(R.shadowsets, NS, 'zs');
});

test('confirmOverwrite lets the engine overwrite that member only: another member with foreign data is refused, untouched', async () => {
  await waitFor('st gone', async () => (await c.get(NS, 'st')) === null, { timeoutMs: 60_000 });
  const keep = await c.blockClaim(NS, 'keep', 'node-a', 16);
  const scratch = await c.blockClaim(NS, 'scratch', 'node-a', 16);
  const text = (s: string) => Buffer.from(s.padEnd(40, '.'));
  const put = async (path: string, b: Buffer) => {
    const fh = await open(path, 'r+');
    await fh.write(b, 0, b.length, 0);
    await fh.close();
  };
  const head = async (path: string) => {
    const fh = await open(path, 'r');
    const b = Buffer.alloc(40);
    await fh.read(b, 0, 40, 0);
    await fh.close();
    return b.toString();
  };
  await put(keep.path, text('precious data, not a shadow member'));
  await put(scratch.path, text('scratch data, may be overwritten'));
  await c.apply(NS, 'ow', { members: [{ name: 'k', claimName: 'keep' }, { name: 's', claimName: 'scratch', confirmOverwrite: true }] });
  const s = await c.until(NS, 'ow', 'ForeignData', (x) => cond(x, 'Ready')?.reason === 'ForeignData');
  assert.match(cond(s, 'Ready')?.message ?? '', /dev\/shadow\/k holds data without shadow metadata/);
  assert.equal(await head(keep.path), text('precious data, not a shadow member').toString(), 'the member without confirmOverwrite is untouched');
  assert.equal(await head(scratch.path), text('scratch data, may be overwritten').toString(), 'nothing is written before the refusal');
  await c.kube.delete(R.shadowsets, NS, 'ow');
});
