// A database on a shadowset PVC (E2E_CLUSTER=kind only): PostgreSQL from Debian's packages (built here,
// e2e/scripts/lib/pg-image.mjs) as a one-replica StatefulSet whose data directory is on a Filesystem PVC of the
// driver's class (ext4 made by the node plugin on first stage). pgbench runs from a client pod on the
// control-plane node while, one after the other: (a) the set's engine is killed (the node plugin's NBD client
// holds the I/O, the engine comes back and merges), (b) the database pod is deleted with its node cordoned, so
// it comes back on the other worker and the engine follows (no merge, no copy), (c) the worker that holds the
// other member (not the pod) loses power and boots again (the member removed with a write bitmap, back by
// minicopy). Then pg_amcheck finds nothing, pgbench's own balances add up, and the members are identical.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { after, before, test } from 'node:test';
import { DOCKER, ensureKindToolchain, waitFor } from '@shadowset/e2e';
import { ensureTools } from '@shadowset/testkit/cluster/tools';
import type { KindEnv } from './env/kind-env.js';
import { run } from './support/exec.js';
import { clientPod, parseBench, statefulSet, type BenchResult, type PgUser } from './support/postgres.js';
import { ScenarioChain } from './support/scenario.js';
import { HEADER_BYTES, MiB, StatusWatch, member, memberState, reasons, returnedWithMinicopy, steady } from './support/shadowset.js';

const NS = 'e2e-pg';
const MEMBER_CLASS = 'shadowset-e2e-pg-members';
const SC = 'shadowset-e2e-pg';
const STS = 'pg';
const CLIENT = 'pg-client';
const SECRET = 'pg-auth';
const UNIT_MIB = 384;
const MEMBER_MIB = UNIT_MIB + 16; // the unit, the engine's 8 MiB header, and room to spare
const TIMEOUT_S = 10;
const SCALE = 5;
const BENCH_DEADLINE_MS = 900_000;
const kind = process.env.E2E_CLUSTER === 'kind';

interface Obj { metadata: { name: string; uid?: string }; spec?: Record<string, unknown>; status?: Record<string, unknown> }
interface PodInfo { uid: string; node: string; ip: string; ready: boolean }

let env: KindEnv | undefined;
let watch: StatusWatch | undefined;
let cpNode = '';
const chain = new ScenarioChain(() => env, NS);
const state: { set?: string; pv?: string } = {};

const getJson = async <T = Obj>(args: string[]): Promise<T> => JSON.parse((await env!.kubectl([...args, '-o', 'json'])).stdout) as T;
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

before(async () => {
  if (!kind) return;
  const log = (l: string) => process.stderr.write(`pg: ${l}\n`);
  const pg = (await ensureKindToolchain(log)).postgres;
  if (!pg) throw new Error('the kind toolchain has no PostgreSQL image: run npm run cluster:build -- --kind');
  const { KindEnv } = await import('./env/kind-env.js');
  env = await KindEnv.start('pg', {
    cluster: process.env.E2E_KIND_CLUSTER ?? 'pg-e2e', hostTools: false, log, images: [pg.ref],
    csi: {
      provisioner: { pullPolicy: 'Never' }, attacher: { pullPolicy: 'Never' },
      storageClass: { name: SC, memberClass: MEMBER_CLASS, members: 2, volumeBindingMode: 'Immediate', memberTimeoutSeconds: TIMEOUT_S },
    },
  });
  await env.createNamespace(NS);
  await env.apply('pg-member-class.yaml', JSON.stringify({
    apiVersion: 'storage.k8s.io/v1', kind: 'StorageClass', metadata: { name: MEMBER_CLASS },
    provisioner: 'kubernetes.io/no-provisioner', volumeBindingMode: 'Immediate', reclaimPolicy: 'Retain',
  }));
  for (const [i, node] of env.nodes.entries()) await env.offerBlockVolume(node, `e2e-pg-member-${i + 1}`, MEMBER_MIB, MEMBER_CLASS);
  cpNode = (await env.kubectl(['get', 'nodes', '-l', 'node-role.kubernetes.io/control-plane', '-o', 'jsonpath={.items[0].metadata.name}'])).stdout.trim();
  const user: PgUser = { uid: pg.uid, gid: pg.gid };
  await env.kubectl(['create', 'secret', 'generic', SECRET, '-n', NS, `--from-literal=password=${randomBytes(18).toString('base64url')}`]);
  await env.apply('pg-client.yaml', JSON.stringify(clientPod({ ns: NS, name: CLIENT, image: pg.ref, user, node: cpNode, secret: SECRET })));
  await env.apply('pg-sts.yaml', JSON.stringify(statefulSet({ ns: NS, name: STS, image: pg.ref, user, storageClass: SC, size: `${UNIT_MIB}Mi`, secret: SECRET })));
});

after(async () => {
  if (!env) return;
  watch?.stop();
  await env.kubectl(['delete', 'statefulset', STS, '-n', NS, '--wait=true', '--timeout=120s'], { allowFail: true });
  await env.kubectl(['delete', 'pvc', '--all', '-n', NS, '--wait=true', '--timeout=180s'], { allowFail: true });
  await env.kubectl(['uncordon', ...env.nodes], { allowFail: true });
  await env.kubectl(['delete', 'storageclass', MEMBER_CLASS, '--ignore-not-found'], { allowFail: true });
  await env.stop();
});

if (!kind) test('PostgreSQL on a shadowset PVC', (t) => t.skip('E2E_CLUSTER=kind only (npm run test:kind)'));

async function dbPod(): Promise<PodInfo | undefined> {
  const p = await env!.get(NS, 'pods', `${STS}-0`) as { metadata: { uid: string; deletionTimestamp?: string }; spec: { nodeName?: string }; status?: { podIP?: string; conditions?: { type: string; status: string }[] } } | null;
  if (!p || p.metadata.deletionTimestamp || !p.spec.nodeName || !p.status?.podIP) return undefined;
  return { uid: p.metadata.uid, node: p.spec.nodeName, ip: p.status.podIP, ready: p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false };
}
const readyDb = (what: string, ok: (p: PodInfo) => boolean = () => true, timeoutMs = 300_000) =>
  waitFor(what, async () => { const p = await dbPod(); return p?.ready && ok(p) ? p : undefined; }, { timeoutMs, intervalMs: 1000 });

/** Runs a client program in the client pod against the database pod's address. */
async function client(args: string[], timeoutMs: number): Promise<{ code: number | null; out: string }> {
  const r = await env!.kubectl(['exec', '-n', NS, CLIENT, '--', ...args], { allowFail: true, timeoutMs });
  return { code: r.code, out: r.stdout + r.stderr };
}
async function sql(query: string, timeoutMs = 60_000): Promise<string> {
  const db = await readyDb('the database pod Ready');
  const r = await client(['psql', '-h', db.ip, '-d', 'bench', '-v', 'ON_ERROR_STOP=1', '-Atc', query], timeoutMs);
  if (r.code !== 0) throw new Error(`psql: ${query}: ${r.out}`);
  return r.out.trim();
}
const historyRows = async () => Number(await sql('select count(*) from pgbench_history'));

/**
 * pgbench's TPC-B-like script: 4 clients, `perClient` transactions each (a fixed count, so a run cannot end
 * before the fault that is meant to hit it), progress every 5 s, under a deadline of its own. Its output is
 * streamed: `running` resolves at the first progress line that shows transactions completing, the moment a
 * fault is injected (polling the database from here is too slow on a loaded machine to say when).
 */
async function bench(perClient: number): Promise<{ running: Promise<void>; done: Promise<BenchResult>; ended: () => boolean }> {
  const db = await readyDb('the database pod Ready');
  let out = '';
  let ended = false;
  let progressed!: () => void;
  const running = new Promise<void>((resolve) => (progressed = resolve));
  const child = spawn(ensureTools().kubectl, ['--kubeconfig', env!.kubeconfigPath, 'exec', '-n', NS, CLIENT, '--',
    'pgbench', '-h', db.ip, '-c', '4', '-j', '2', '-t', String(perClient), '-P', '5', '-n', 'bench'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const onData = (b: Buffer) => {
    out += b.toString('utf8');
    if (/^progress: [\d.]+ s, [1-9]/m.test(out)) progressed();
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const timer = setTimeout(() => child.kill('SIGKILL'), BENCH_DEADLINE_MS);
  const done = new Promise<BenchResult>((resolve) => child.once('close', (code) => {
    clearTimeout(timer);
    ended = true;
    progressed();
    resolve(parseBench(code, out));
  }));
  return { running, done, ended: () => ended };
}
/**
 * Starts pgbench and returns once it has committed transactions; it must still be running then. (The result
 * is wrapped: an async function that returned the run's promise itself would wait for the whole run.)
 */
async function benchRunning(perClient: number): Promise<{ done: Promise<BenchResult>; ended: () => boolean }> {
  const b = await bench(perClient);
  await b.running;
  if (b.ended()) throw new Error(`pgbench ended before the fault: ${(await b.done).output}`);
  return { done: b.done, ended: b.ended };
}
const clean = (b: BenchResult, what: string) => {
  assert.equal(b.code, 0, `${what}: pgbench exited ${b.code}: ${b.errors.join(' | ') || b.output.slice(-2000)}`);
  assert.equal(b.failed ?? 0, 0, `${what}: no failed transaction`);
  assert.ok(b.processed > 0, `${what}: transactions processed`);
};

const engineLog = () => env!.logs(NS, `${state.set}-engine`, 'engine');
const logSince = (log: string, t0: number, event: string) => log.split('\n').filter((l) => l.includes(`"event":"${event}"`) && Number(/"time":(\d+)/.exec(l)?.[1] ?? 0) >= t0 - 1000);
const eventsSince = async (t0: number) => (await env!.events(NS, state.set!)).filter((e) => Date.parse(e.at) >= t0 - 1000);
const enginePod = async () => await env!.get(NS, 'pods', `${state.set}-engine`) as { metadata: { uid: string }; spec: { nodeName: string }; status?: { containerStatuses?: { name: string; restartCount: number; ready: boolean }[] } } | null;

/** The member claims of the set, each with the node and device of its local PV. */
async function members(): Promise<{ name: string; node: string; device: string }[]> {
  const claims = (await getJson<{ items: Obj[] }>(['get', 'pvc', '-n', NS, '-l', `csi.shadowset.dev/volume=${state.set}`])).items;
  const out = [];
  for (const c of claims) {
    const pv = await getJson<{ spec: { local: { path: string }; nodeAffinity: { required: { nodeSelectorTerms: { matchExpressions: { values: string[] }[] }[] } } } }>(['get', 'pv', (c.spec as { volumeName: string }).volumeName]);
    out.push({ name: c.metadata.name.slice(state.set!.length + 1), node: pv.spec.nodeAffinity.required.nodeSelectorTerms[0]!.matchExpressions[0]!.values[0]!, device: pv.spec.local.path });
  }
  return out;
}

if (kind) {
  chain.scenario('PostgreSQL starts on an ext4 Filesystem PVC of the driver\'s class, its set Steady on two workers; pgbench initialises', async (note) => {
    const t0 = Date.now();
    const db = await readyDb('pg-0 Ready (pg_isready)', () => true, 480_000);
    note(`pg-0 Ready on ${db.node} ${secs(Date.now() - t0)} after the StatefulSet was applied`);
    const pvc = await getJson(['get', 'pvc', `data-${STS}-0`, '-n', NS]);
    state.pv = (pvc.spec as { volumeName: string }).volumeName;
    const pv = await getJson<{ spec: { csi: { volumeHandle: string; fsType?: string } } }>(['get', 'pv', state.pv]);
    state.set = pv.spec.csi.volumeHandle.split('/')[1]!;
    watch = new StatusWatch(env!, NS, state.set);
    await watch.until('two members in sync', steady(2), 180_000);
    assert.deepEqual((await members()).map((m) => m.node).sort(), [...env!.nodes].sort(), 'one member on each worker');
    const mounts = (await env!.kubectl(['exec', '-n', NS, `${STS}-0`, '-c', 'postgres', '--', 'sh', '-c', 'grep " /data " /proc/mounts; ls -a /data'])).stdout;
    assert.match(mounts, /^\S+ \/data ext4 rw/m, `ext4 mounted read-write at /data: ${mounts}`);
    assert.match(mounts, /^lost\+found$/m, 'a fresh ext4 (lost+found at its root)');
    assert.match(mounts, /^pgdata$/m);
    const amcheck = await client(['sh', '-c', `psql -h ${db.ip} -d postgres -Atc 'create database bench' && pgbench -h ${db.ip} -i -s ${SCALE} -q bench`], 600_000);
    assert.equal(amcheck.code, 0, `pgbench -i: ${amcheck.out}`);
    note(`pgbench -i -s ${SCALE}: ${Number(await sql('select count(*) from pgbench_accounts'))} accounts, ${secs(Date.now() - t0)} since the start`);
  }, 900_000);

  chain.scenario('(a) the engine is killed under pgbench: I/O waits in the NBD client, the engine comes back and merges, pgbench completes without error', async (note) => {
    const before = await enginePod();
    const restarts = before?.status?.containerStatuses?.find((c) => c.name === 'engine')?.restartCount ?? 0;
    // Long enough to go on well past the engine's return: with 600 per client the run ended 94–189
    // transactions after the engine was back (about 2 s down, pgbench at a few hundred per second), and
    // once with none left, failing the check below for want of transactions rather than for any fault.
    const { done } = await benchRunning(2500);
    const t0 = Date.now();
    await env!.killEngine(NS, state.set!);
    const back = await waitFor('the engine container restarted and Ready', async () => {
      const p = await enginePod();
      const c = p?.status?.containerStatuses?.find((x) => x.name === 'engine');
      return p && p.metadata.uid === before?.metadata.uid && c && c.restartCount > restarts && c.ready ? p : undefined;
    }, { timeoutMs: 180_000, intervalMs: 500 });
    const readyAfter = Date.now() - t0;
    const mid = await historyRows();
    const b = await done;
    clean(b, 'pgbench through the engine kill');
    const end = await historyRows();
    assert.ok(end > mid, `transactions committed after the engine came back (${mid} → ${end} history rows)`);
    await watch!.until('in sync after the merge', steady(2), 300_000);
    const log = await engineLog();
    const merges = logSince(log, t0, 'MergeRequired');
    assert.ok(merges.length > 0, 'the restarted engine found the unclean stop and merged (MergeRequired in its log)');
    assert.match(merges[0]!, /"full":false/, `a minimerge from the write-intent log: ${merges[0]}`);
    assert.ok(logSince(log, t0, 'ShadowSetMounted').some((l) => l.includes('"unclean":true')), 'mounted unclean');
    assert.ok(!logSince(log, t0, 'CopyStarted').length, 'no copy');
    note(`engine on ${back.spec.nodeName} killed; Ready again ${secs(readyAfter)} later; ${merges[0]!.match(/"chunks":\d+/)?.[0] ?? ''}; Steady ${secs(Date.now() - t0)} after the kill; events: ${reasons(await eventsSince(t0))}`);
    note(`pgbench: ${b.processed} transactions, 0 failed; ${end - mid} of them after the engine was back; the longest time with none completing: ${b.longestStallS} s`);
  }, 1_200_000);

  chain.scenario('(b) the pod is deleted with its node cordoned: it comes back on the other worker, the engine follows with no merge and no copy, pgbench completes after the move', async (note) => {
    const from = (await readyDb('pg-0 Ready')).node;
    const to = env!.nodes.find((n) => n !== from)!;
    const engineBefore = await enginePod();
    const { done } = await benchRunning(2000);
    await env!.kubectl(['cordon', from]);
    const t0 = Date.now();
    try {
      await env!.kubectl(['delete', 'pod', `${STS}-0`, '-n', NS, '--wait=false']);
      const db = await readyDb(`pg-0 Ready on ${to}`, (p) => p.node === to);
      const movedAfter = Date.now() - t0;
      // Postgres's fast stop ends the sessions of a pgbench that was running: that run is not expected to pass.
      const during = await done;
      note(`pgbench during the move: exit ${during.code}, ${during.processed} transactions; ${during.errors.slice(0, 3).join(' | ') || 'no error printed'}`);
      const afterMove = await (await bench(200)).done;
      clean(afterMove, 'pgbench after the move');
      const engine = await enginePod();
      assert.equal(engine?.spec.nodeName, to, 'the engine runs beside the database');
      assert.notEqual(engine?.metadata.uid, engineBefore?.metadata.uid, 'a new engine pod');
      const ev = await eventsSince(t0);
      assert.ok(ev.some((e) => e.reason === 'EngineMoved'), `an EngineMoved event: ${reasons(ev)}`);
      assert.ok(!ev.some((e) => /Copy|Merge/.test(e.reason)), `no copy or merge event: ${reasons(ev)}`);
      const log = await engineLog();
      assert.equal(logSince(log, t0, 'MergeRequired').length + logSince(log, t0, 'CopyStarted').length + logSince(log, t0, 'CopyResumed').length, 0, 'no merge or copy in the new engine\'s log');
      assert.ok(logSince(log, t0, 'ShadowSetMounted').some((l) => l.includes('"unclean":false')), 'the set was stopped cleanly and mounted clean');
      assert.ok(!watch!.since(t0).some((s) => ['Merge', 'FullCopy', 'Minicopy'].includes(s.recovery?.mode ?? '')), 'no merge or copy in status since the delete');
      note(`pg-0 ${from} → ${db.node}: Ready ${secs(movedAfter)} after the delete; pgbench after the move: ${afterMove.processed} transactions, 0 failed; events: ${reasons(ev)}`);
    } finally {
      await env!.kubectl(['uncordon', from]);
    }
  }, 1_200_000);

  chain.scenario('(c) the worker of the other member loses power under pgbench: the member is removed with a bitmap, returns by minicopy when the node boots, pgbench completes', async (note) => {
    const db = await readyDb('pg-0 Ready');
    const away = (await members()).find((m) => m.node !== db.node)!;
    const { done, ended } = await benchRunning(1000);
    const t0 = Date.now();
    await env!.failNode(away.node, 'poweroff');
    const faulted = await watch!.until(`${away.name} removed`, (s) => memberState(s, away.name) === 'Faulted', 120_000);
    const removedAfter = Date.now() - t0;
    const bitmap = await waitFor(`a WriteBitmap for ${away.name}`, async () =>
      (await env!.list(NS, 'writebitmaps')).find((x) => (x.spec as { member?: string }).member === away.name), { timeoutMs: 60_000, intervalMs: 500 });
    const h = await historyRows();
    let extra: Promise<BenchResult> | null = null;
    await waitFor('transactions to go on without the member', async () => {
      if ((await historyRows()) > h + 100) return true;
      // On a fast machine the first run can commit all its transactions between the fault and here:
      // then a new run must commit them without the member.
      if (ended() && !extra) extra = bench(100).then((x) => x.done);
      return undefined;
    }, { timeoutMs: 120_000, intervalMs: 1000 });
    if (extra) clean(await extra, 'pgbench started while the member was away');
    const t1 = Date.now();
    await env!.recoverNode(away.node);
    const booted = Date.now() - t1;
    await watch!.until(`${away.name} back in sync`, steady(2), 300_000);
    const bytes = await returnedWithMinicopy(env!, NS, state.set!, away.name, member(faulted, away.name)!.id!, t0);
    assert.ok(!watch!.since(t0).some((s) => s.recovery?.mode === 'FullCopy'), 'no full copy in status');
    const b = await done;
    clean(b, 'pgbench through the member node\'s loss');
    note(`${away.name} on ${away.node}: Faulted in status ${secs(removedAfter)} after the power went (timeout ${TIMEOUT_S} s), WriteBitmap ${(bitmap.metadata as { name: string }).name}; node Ready ${secs(booted)} after power returned; back by a minicopy of ${bytes} bytes, Steady ${secs(Date.now() - t1)} after; pgbench ${b.processed} transactions, 0 failed, the longest time with none completing ${b.longestStallS} s`);
  }, 1_200_000);

  chain.scenario('afterwards: pg_amcheck finds nothing, pgbench\'s balances add up, and the members are identical', async (note) => {
    const db = await readyDb('pg-0 Ready');
    const check = await client(['pg_amcheck', '-h', db.ip, '--all', '--heapallindexed', '--install-missing', '--progress'], 600_000);
    assert.equal(check.code, 0, `pg_amcheck: ${check.out}`);
    note(`pg_amcheck --all --heapallindexed: exit 0; ${check.out.trim().split(/[\r\n]/).filter(Boolean).at(-1) ?? ''}`);
    // TPC-B-like: each committed transaction adds one delta to an account, a teller and a branch, and
    // inserts one history row with it; an aborted one changes none of them.
    const [acc, tel, br, hist, rows] = (await sql('select (select sum(abalance) from pgbench_accounts), (select sum(tbalance) from pgbench_tellers), (select sum(bbalance) from pgbench_branches), (select coalesce(sum(delta),0) from pgbench_history), (select count(*) from pgbench_history)')).split('|');
    assert.ok(Number(rows) > 0, 'pgbench wrote history');
    assert.deepEqual([acc, tel, br], [hist, hist, hist], `accounts, tellers, branches and history agree (${rows} transactions)`);
    note(`${rows} transactions in pgbench_history; sum(delta) = sum(abalance) = sum(tbalance) = sum(bbalance) = ${hist}`);
    // The database stopped and the volume detached, so the unit is quiet; then both members read on their nodes.
    await env!.kubectl(['scale', 'statefulset', STS, '-n', NS, '--replicas=0']);
    await waitFor('the VolumeAttachment to go', async () => ((await getJson<{ items: Obj[] }>(['get', 'volumeattachments'])).items
      .some((v) => (v.spec as { source?: { persistentVolumeName?: string } }).source?.persistentVolumeName === state.pv) ? undefined : true), { timeoutMs: 180_000, intervalMs: 1000 });
    await watch!.until('the set steady', steady(2), 120_000);
    const size = watch!.current.size ?? UNIT_MIB * MiB;
    assert.equal(size % MiB, 0);
    const sums = [];
    for (const m of await members()) {
      const r = await run(DOCKER, ['exec', m.node, 'sh', '-c', `dd if=${m.device} bs=1M skip=${HEADER_BYTES / MiB} count=${size / MiB} iflag=direct status=none | sha256sum`], { timeoutMs: 300_000 });
      sums.push({ ...m, sum: r.stdout.trim().split(/\s/)[0]! });
    }
    note(sums.map((s) => `${s.name} on ${s.node} (${s.device}): ${s.sum.slice(0, 16)}…`).join('; '));
    assert.equal(sums.length, 2);
    assert.equal(sums[0]!.sum, sums[1]!.sum, `the members' ${size / MiB} MiB past the header are identical`);
  }, 900_000);
}
