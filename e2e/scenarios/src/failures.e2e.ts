// Failures and refusals: the node of a remote member fails under a write load and returns (member timeout,
// write bitmap, minicopy), and invalid manifests are refused with a clear condition, touching nothing.
// See e2e/README.md ("Scenarios").
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before } from 'node:test';
import { waitFor } from '@shadowset/e2e';
import type { BlockVolume, ClusterEnv } from './env/cluster-env.js';
import { startClusterEnv } from './env/start-env.js';
import { NbdClient } from './support/nbd-client.js';
import { ScenarioChain } from './support/scenario.js';
import { HEADER_BYTES, MiB, StatusWatch, cond, conditionsOf, engineLogTime, member, show, memberDifference, memberState, reasons, returnEvents, returnedWithMinicopy, shadowSetYaml, steady } from './support/shadowset.js';
import { background, VersionedBlocks } from './support/workload.js';

const NS = 'e2e-fail';
const MEMBER_MIB = 56;
const UNIT = MEMBER_MIB * MiB - HEADER_BYTES; // 48 MiB

let env: ClusterEnv | undefined;
const watches: StatusWatch[] = [];
const vol: Record<string, BlockVolume> = {};
const chain = new ScenarioChain(() => env, NS);

before(async () => {
  env = await startClusterEnv('fail');
  await env.createNamespace(NS);
  vol.n1 = await env.createBlockVolume(NS, 'n1', env.nodes[0], MEMBER_MIB);
  vol.n2 = await env.createBlockVolume(NS, 'n2', env.nodes[0], MEMBER_MIB);
  vol.n3 = await env.createBlockVolume(NS, 'n3', env.nodes[1], MEMBER_MIB);
});

after(async () => {
  for (const w of watches) w.stop();
  await env?.stop();
});

chain.scenario('a member\'s node fails under load: removed after the member timeout with a bitmap, I/O goes on; it returns with a minicopy', async (note) => {
  const [, remote] = env!.nodes;
  const watch = new StatusWatch(env!, NS, 'nf');
  watches.push(watch);
  await env!.apply('nf.yaml', shadowSetYaml(NS, 'nf', {
    members: [{ name: 'n1', claimName: 'n1' }, { name: 'n2', claimName: 'n2' }, { name: 'n3', claimName: 'n3' }],
    memberTimeoutSeconds: 3, minicopyPolicy: 'Optional', throttle: { copyBytesPerSecond: 4 * MiB },
  }));
  await watch.until('three members in sync', steady(3), 120_000);
  const server = (await env!.get(NS, 'pods', 'nf-member-n3')) as { spec: { nodeName: string } } | null;
  assert.equal(server?.spec.nodeName, remote, `n3 is served by a member server on ${remote}`);

  const load = new VersionedBlocks(0, 8 * MiB, 11);
  const ep = await env!.engine(NS, 'nf');
  const client = await NbdClient.connect(ep);
  const bg = background(load, client, { queueDepth: 4, readFraction: 0.2 });
  try {
    await waitFor('the load to run', () => load.writesAcked > 300, { timeoutMs: 30_000 });
    const t0 = Date.now();
    await env!.failNode(remote);
    const faulted = await watch.until('n3 removed', (s) => memberState(s, 'n3') === 'Faulted', 60_000);
    const removedAfter = Date.now() - t0;
    assert.match(member(faulted, 'n3')?.reason ?? '', /member timeout/, 'removed because it stopped answering');
    assert.ok(removedAfter >= 2500, `removed ${removedAfter} ms after the node failed: not before the 3 s member timeout`);
    assert.equal(faulted.membersInSync, '2/3');
    assert.equal(cond(faulted, 'Degraded')?.status, 'True');
    const bitmap = await waitFor('a WriteBitmap for n3', async () =>
      (await env!.list(NS, 'writebitmaps')).find((x) => (x.spec as { member?: string }).member === 'n3'), { timeoutMs: 30_000, intervalMs: 200 });
    await show(env!, note, ['get', 'shadowsets,writebitmaps', '-n', NS]);
    await show(env!, note, conditionsOf(NS, 'nf'));
    const acked = load.writesAcked;
    await waitFor('I/O to go on without n3', () => load.writesAcked > acked + 500, { timeoutMs: 30_000 });
    const engineRemoved = (await engineLogTime(env!, NS, 'nf', 'MemberFaulted', member(faulted, 'n3')!.id!, t0)) - t0;
    assert.ok(engineRemoved >= 2500, `the engine removed n3 ${engineRemoved} ms after the node failed: not before the 3 s member timeout`);
    note(`n3 ${member(faulted, 'n3')?.reason ?? ''}: removed by the engine ${(engineRemoved / 1000).toFixed(1)} s after the node failed, Faulted in status after ${(removedAfter / 1000).toFixed(1)} s; WriteBitmap ${(bitmap.metadata as { name: string }).name}`);

    const t1 = Date.now();
    await env!.recoverNode(remote);
    await watch.until('n3 back in sync', steady(3), 180_000);
    const seen = watch.since(t1);
    // The engine's log and the events say what ran: on kind a minicopy of a few MiB can start and end
    // between two of the operator's status updates, so the status need not show it.
    const bytes = await returnedWithMinicopy(env!, NS, 'nf', 'n3', member(faulted, 'n3')!.id!, t0);
    assert.ok(!seen.some((s) => cond(s, 'Resyncing')?.reason === 'FullCopy'), 'no full copy in status');
    // The simulator's nodes answer at once, and its minicopy of a throttled 8 MiB load is seen in status.
    if (env!.mode === 'local') assert.ok(seen.some((s) => cond(s, 'Resyncing')?.reason === 'Minicopy'), `a minicopy in status: ${JSON.stringify(seen.map((s) => cond(s, 'Resyncing')?.reason))}`);
    note(`returned with a minicopy of ${bytes} bytes ${((Date.now() - t1) / 1000).toFixed(1)} s after the node came back`);
  } finally {
    const stats = await bg.stop();
    assert.equal(stats.ended, null, 'the load never stopped');
  }
  await load.verify((o, l) => client.read(o, l), 'read back');
  await client.close();
  await ep.close();
  assert.deepEqual(load.problems.slice(0, 10), []);
  assert.equal(await memberDifference(env!, [vol.n1!, vol.n2!, vol.n3!], UNIT), null);
  const ev = await env!.events(NS, 'nf');
  assert.ok(returnEvents(env!.mode).every((r) => ev.some((e) => e.reason === r)), reasons(ev));
  await env!.kubectl(['delete', 'shadowset', 'nf', '-n', NS, '--wait', '--timeout=120s']);
}, 300_000);

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

chain.scenario('invalid manifests are refused with a clear condition and nothing is touched', async (note) => {
  const fsMode = await env!.createBlockVolume(NS, 'fsmode', env!.nodes[0], 16, 'Filesystem');
  const foreign = await env!.createBlockVolume(NS, 'foreign', env!.nodes[0], 16);
  const blank = await env!.createBlockVolume(NS, 'blank', env!.nodes[0], 16);
  await env!.writeVolume(foreign, 0, Buffer.from('an ext4 superblock, or any user data: not a shadow set member'));
  const head = async (v: BlockVolume) => sha(await env!.readVolume(v, 0, 9 * MiB));
  const before = { fsMode: await head(fsMode), foreign: await head(foreign), blank: await head(blank) };

  const refused = async (name: string, members: unknown[], reason: string, attaches: boolean) => {
    const w = new StatusWatch(env!, NS, name);
    watches.push(w);
    await env!.apply(`${name}.yaml`, shadowSetYaml(NS, name, { members }));
    const s = await w.until(`${name} refused`, (x) => cond(x, 'Ready')?.reason === reason, 60_000);
    assert.equal(cond(s, 'Ready')?.status, 'False');
    const ev = await env!.events(NS, name);
    assert.ok(ev.some((e) => e.type === 'Warning' && e.reason === 'Refused'), reasons(ev));
    const pods = (await env!.list(NS, 'pods', `shadowset.dev/shadowset=${name}`)).map((p) => (p.metadata as { name: string }).name);
    if (!attaches) assert.deepEqual(pods, [], `${name}: no pod was created`);
    note(`${name}: Ready=False ${reason}: ${cond(s, 'Ready')?.message}`);
  };
  await refused('bad-fsmode', [{ name: 'x', claimName: 'fsmode' }], 'ClaimNotBlock', false);
  // The engine attaches both, finds data that is not a shadow set member's and starts nothing.
  await refused('bad-foreign', [{ name: 'a', claimName: 'blank' }, { name: 'b', claimName: 'foreign' }], 'ForeignData', true);

  // Seven members: the CRD's schema refuses it before anything exists.
  const seven = Array.from({ length: 7 }, (_, i) => ({ name: `m${i}`, claimName: `c${i}` }));
  const r = await env!.apply('bad-seven.yaml', shadowSetYaml(NS, 'bad-seven', { members: seven }), { allowFail: true });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /spec\.members: Too many: 7: must have at most 6 items/);
  assert.equal(await env!.get(NS, 'shadowsets', 'bad-seven'), null);
  note(`bad-seven: ${/spec\.members: Too many[^\n]*/.exec(r.stderr)?.[0] ?? ''}`);

  for (const name of ['bad-fsmode', 'bad-foreign']) await env!.kubectl(['delete', 'shadowset', name, '-n', NS, '--wait', '--timeout=120s']);
  assert.deepEqual({ fsMode: await head(fsMode), foreign: await head(foreign), blank: await head(blank) }, before, 'no device was written');
  const out = (await env!.kubectl(['get', 'shadowsets', '-n', NS])).stdout + (await env!.kubectl(['get', 'shadowsets', '-n', NS], { allowFail: true })).stderr;
  assert.match(out, /No resources found/);
});
