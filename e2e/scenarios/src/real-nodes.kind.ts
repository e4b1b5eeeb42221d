// Stories only real nodes can tell (the kind tier, E2E_CLUSTER=kind): a worker holding a member loses power
// under a verifying write load and boots again; the engine pod is deleted (not only its process killed)
// under load and replaced; the Helm release is upgraded to a new image while the set serves. Every story
// ends with the load's model read back through the engine and the members compared byte for byte.
// See e2e/README.md ("kind mode").
import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import { waitFor } from '@shadowset/e2e';
import type { BlockVolume, ClusterEnv } from './env/cluster-env.js';
import { startClusterEnv } from './env/start-env.js';
import { NbdClient } from './support/nbd-client.js';
import { ScenarioChain } from './support/scenario.js';
import {
  HEADER_BYTES, MiB, StatusWatch, cond, conditionsOf, engineLogTime, engineStatus, member, memberDifference, memberState, reasons, returnEvents, returnedWithMinicopy, shadowSetYaml, show, steady,
  type SetStatus,
} from './support/shadowset.js';
import { BLOCK, background, VersionedBlocks } from './support/workload.js';

const NS = 'e2e-nodes';
const SET = 'rn';
const MEMBER_MIB = 56;
const UNIT = MEMBER_MIB * MiB - HEADER_BYTES; // 48 MiB
const TIMEOUT_S = 5;
const load = new VersionedBlocks(0, 16 * MiB, 23);

let env: ClusterEnv | undefined;
let watch: StatusWatch;
const vol: Record<string, BlockVolume> = {};
const chain = new ScenarioChain(() => env, NS);
const vols = () => [vol.k1!, vol.k2!, vol.k3!];

before(async () => {
  env = await startClusterEnv('nodes');
  await env.createNamespace(NS);
  vol.k1 = await env.createBlockVolume(NS, 'k1', env.nodes[0], MEMBER_MIB);
  vol.k2 = await env.createBlockVolume(NS, 'k2', env.nodes[0], MEMBER_MIB);
  vol.k3 = await env.createBlockVolume(NS, 'k3', env.nodes[1], MEMBER_MIB);
  watch = new StatusWatch(env, NS, SET);
  await env.apply('rn.yaml', shadowSetYaml(NS, SET, {
    members: [{ name: 'k1', claimName: 'k1' }, { name: 'k2', claimName: 'k2' }, { name: 'k3', claimName: 'k3' }],
    memberTimeoutSeconds: TIMEOUT_S, minicopyPolicy: 'Optional',
    // Slow enough that a merge or minicopy shows in status, quick enough for the unit's size.
    throttle: { copyBytesPerSecond: 4 * MiB, mergeBytesPerSecond: 512 * 1024 },
  }));
  await watch.until('three members in sync', steady(3), 180_000);
});

after(async () => {
  watch?.stop();
  await env?.stop();
});

const connect = async () => NbdClient.connect(await env!.engine(NS, SET));
const noProblems = () => assert.deepEqual(load.problems.slice(0, 10), [], 'the workload saw wrong data');

/** Every acknowledged write through the engine (twice, on a fresh connection) and on every member; members identical. */
async function checkData(where: string): Promise<void> {
  const c = await connect();
  try {
    await load.verify((o, l) => c.read(o, l), `${where}: read back`);
    await load.verify((o, l) => c.read(o, l), `${where}: read back again`);
  } finally {
    await c.close();
  }
  noProblems();
  await watch.until('the set steady before comparing members', steady(3), 120_000);
  assert.equal(await memberDifference(env!, vols(), UNIT), null);
  for (const v of vols()) await load.verify((o, l) => env!.readVolume(v, HEADER_BYTES + o, l), `${where}: member ${v.claim}`);
  noProblems();
}

/**
 * What a restart of the engine cost, from every status seen since `t0`: never a copy, and a merge (if any)
 * of at most `bound` bytes. Returns the merge's size (0: none).
 */
function restartCost(t0: number, bound: number): number {
  const seen = watch.since(t0);
  const modes = seen.map((s: SetStatus) => cond(s, 'Resyncing')?.reason).filter(Boolean);
  assert.ok(!modes.some((r) => r === 'FullCopy' || r === 'Minicopy'), `no copy after the restart: ${modes.join(', ')}`);
  const merges = seen.filter((s) => s.recovery?.mode === 'Merge').map((s) => s.recovery?.bytesTotal ?? 0);
  const merged = Math.max(0, ...merges);
  assert.ok(merged <= bound, `a minimerge at most: ${merged} bytes merged, bound ${bound} (unit ${UNIT})`);
  return merged;
}

/** How the engine of the current pod came up: clean, or with a minimerge (never a full merge). */
async function mountedHow(): Promise<string> {
  const logs = await env!.logs(NS, `${SET}-engine`, 'engine');
  const mounted = /"event":"ShadowSetMounted"[^\n]*"unclean":(true|false)/.exec(logs.split('\n').filter((l) => l.includes('ShadowSetMounted')).at(-1) ?? '');
  assert.ok(mounted, 'the engine log shows the set mounted');
  assert.doesNotMatch(logs, /"event":"MergeRequired"[^\n]*"full":true/, 'no full merge was asked for');
  return mounted[1] === 'false' ? 'stopped cleanly: no merge needed' : 'unclean: the write-intent log bounded the merge';
}

chain.scenario(`a worker holding a member loses power under load: removed after the ${TIMEOUT_S} s member timeout with a bitmap, I/O goes on; it boots and returns with a minicopy`, async (note, t) => {
  if (env!.mode !== 'kind') {
    t.skip('the local mode cannot cut a node off before its processes die');
    return;
  }
  const [, remote] = env!.nodes;
  const server = (await env!.get(NS, 'pods', `${SET}-member-k3`)) as { spec: { nodeName: string }; status?: { podIP?: string } } | null;
  assert.equal(server?.spec.nodeName, remote, `k3 is served by a member server on ${remote}`);
  const ipBefore = server?.status?.podIP;
  const client = await connect();
  const bg = background(load, client, { queueDepth: 4, readFraction: 0.2, count: (8 * MiB) / BLOCK });
  try {
    await waitFor('the load to run', () => load.writesAcked > 300, { timeoutMs: 30_000 });
    const t0 = Date.now();
    await env!.failNode(remote, 'poweroff');
    const faulted = await watch.until('k3 removed', (s) => memberState(s, 'k3') === 'Faulted', 90_000);
    const removedAfter = Date.now() - t0;
    assert.match(member(faulted, 'k3')?.reason ?? '', /member timeout/, 'removed because it stopped answering');
    assert.ok(removedAfter >= TIMEOUT_S * 1000 - 500, `removed ${removedAfter} ms after the power went: not before the member timeout`);
    assert.equal(cond(faulted, 'Degraded')?.status, 'True');
    const bitmap = await waitFor('a WriteBitmap for k3', async () =>
      (await env!.list(NS, 'writebitmaps')).find((x) => (x.spec as { member?: string }).member === 'k3'), { timeoutMs: 30_000, intervalMs: 200 });
    const acked = load.writesAcked;
    await waitFor('I/O to go on without k3', () => load.writesAcked > acked + 500, { timeoutMs: 30_000 });
    await show(env!, note, ['get', 'shadowsets,writebitmaps', '-n', NS]);
    const engineRemoved = (await engineLogTime(env!, NS, SET, 'MemberFaulted', member(faulted, 'k3')!.id!, t0)) - t0;
    assert.ok(engineRemoved >= TIMEOUT_S * 1000 - 500, `the engine removed k3 ${engineRemoved} ms after the power went: not before the member timeout`);
    note(`k3 ${member(faulted, 'k3')?.reason ?? ''}: removed by the engine ${(engineRemoved / 1000).toFixed(1)} s after ${remote} lost power, Faulted in status after ${(removedAfter / 1000).toFixed(1)} s; WriteBitmap ${(bitmap.metadata as { name: string }).name}`);

    const t1 = Date.now();
    await env!.recoverNode(remote);
    const booted = Date.now() - t1;
    await watch.until('k3 back in sync', steady(3), 240_000);
    // The engine's log and the events say what ran (a quick minicopy can start and end between two of the
    // operator's status updates).
    const bytes = await returnedWithMinicopy(env!, NS, SET, 'k3', member(faulted, 'k3')!.id!, t0);
    assert.ok(!watch.since(t1).some((s) => cond(s, 'Resyncing')?.reason === 'FullCopy'), 'no full copy in status');
    const ipAfter = ((await env!.get(NS, 'pods', `${SET}-member-k3`)) as { status?: { podIP?: string } } | null)?.status?.podIP;
    note(`${remote} booted and Ready in ${(booted / 1000).toFixed(1)} s; k3 back with a minicopy of ${bytes} bytes ${((Date.now() - t1) / 1000).toFixed(1)} s after power returned (member server ${ipBefore} → ${ipAfter})`);
  } finally {
    const stats = await bg.stop();
    assert.equal(stats.ended, null, 'the load never stopped');
    await client.close();
  }
  await checkData('after the node returned');
  const ev = await env!.events(NS, SET);
  assert.ok(returnEvents(env!.mode).every((r) => ev.some((e) => e.reason === r)), reasons(ev));
}, 420_000);

/** Writes to 1 MiB only, once the intent log has forgotten earlier loads, until the connection drops. */
async function hotLoadUntilRestart(restart: () => Promise<void>): Promise<{ acked: number; unknown: number }> {
  const ep = await env!.engine(NS, SET);
  await waitFor('the write-intent log to empty', async () => (await engineStatus(ep)).intentLog.dirtyChunks === 0, { timeoutMs: 30_000, intervalMs: 500 });
  await ep.close();
  const client = await connect();
  const bg = background(load, client, { queueDepth: 8, readFraction: 0.1, first: (8 * MiB) / BLOCK, count: MiB / BLOCK, mayLoseConnection: true });
  const acked0 = load.writesAcked;
  await waitFor('the load to run', () => load.writesAcked > acked0 + 300, { timeoutMs: 30_000 });
  await restart();
  // Bounded: if the engine were never restarted, the load is stopped and the assertion below says so.
  let timer: NodeJS.Timeout | undefined;
  const stats = await Promise.race([bg.done, new Promise<void>((resolve) => (timer = setTimeout(resolve, 240_000)))
    .then(() => bg.stop())]).finally(() => clearTimeout(timer));
  await client.close().catch(() => undefined);
  assert.ok(stats.ended, 'the engine went away under the load (within 240 s of the restart)');
  return { acked: stats.writesAcked, unknown: stats.writesUnknown };
}

const enginePod = async () => (await env!.get(NS, 'pods', `${SET}-engine`)) as { metadata: { uid: string }; spec: { containers: { image: string }[] }; status?: { conditions?: { type: string; status: string }[] } } | null;
const isReady = (p: Awaited<ReturnType<typeof enginePod>>) => p?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;

chain.scenario('the engine pod deleted under load is replaced; the replacement merges at most what the write-intent log marked; no acknowledged write is lost', async (note) => {
  const before = await enginePod();
  const gen = watch.current.shadowGeneration ?? 0;
  const t0 = Date.now();
  const stats = await hotLoadUntilRestart(async () => {
    await env!.kubectl(['delete', 'pod', `${SET}-engine`, '-n', NS, '--wait=false']);
  });
  const after = await waitFor('a new engine pod, Ready', async () => {
    const p = await enginePod();
    return p && p.metadata.uid !== before?.metadata.uid && isReady(p) ? p : undefined;
  }, { timeoutMs: 180_000, intervalMs: 500 });
  await watch.until('in sync under the new pod', (s) => (s.shadowGeneration ?? 0) > gen && steady(3)(s), 180_000);
  const merged = restartCost(t0, 2 * MiB);
  const how = await mountedHow();
  await show(env!, note, conditionsOf(NS, SET));
  note(`pod ${before?.metadata.uid.slice(0, 8)} deleted after ${stats.acked} acknowledged writes (${stats.unknown} in flight); pod ${after.metadata.uid.slice(0, 8)} ${how}; merged ${merged} bytes; in sync ${((Date.now() - t0) / 1000).toFixed(1)} s after the delete`);
  await checkData('after the engine pod was replaced');
}, 420_000);

chain.scenario('helm upgrade to a new image tag while the set serves: the operator and the engine move to it, the data stays, the restart costs at most a minimerge', async (note, t) => {
  if (env!.mode !== 'kind') {
    t.skip('the local mode has no Helm release');
    return;
  }
  const next = await env!.prepareUpgrade();
  const before = await enginePod();
  const gen = watch.current.shadowGeneration ?? 0;
  const t0 = Date.now();
  let images = { from: '', to: '' };
  const stats = await hotLoadUntilRestart(async () => {
    images = await env!.upgradeRelease(next);
  });
  assert.notEqual(images.to, images.from);
  const after = await waitFor(`the engine pod on ${images.to}, Ready`, async () => {
    const p = await enginePod();
    return p && p.spec.containers[0]!.image === images.to && isReady(p) ? p : undefined;
  }, { timeoutMs: 180_000, intervalMs: 500 });
  assert.notEqual(after.metadata.uid, before?.metadata.uid);
  await watch.until('in sync on the new image', (s) => (s.shadowGeneration ?? 0) > gen && steady(3)(s), 180_000);
  const merged = restartCost(t0, 2 * MiB);
  const how = await mountedHow();
  note(`${images.from} → ${images.to}; ${stats.acked} writes acknowledged before the engine moved (${stats.unknown} in flight); the new engine ${how}; merged ${merged} bytes; in sync ${((Date.now() - t0) / 1000).toFixed(1)} s after the upgrade began`);
  await checkData('after the upgrade');
  const ev = await env!.events(NS, SET);
  assert.ok(!ev.some((e) => /CopyStarted|MinicopyStarted/.test(e.reason) && new Date(e.at).getTime() >= t0 - 1000), reasons(ev));
}, 600_000);
