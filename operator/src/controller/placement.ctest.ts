// The engine beside its consumer, on the local control plane with simulated nodes and real engines: PV and
// VolumeAttachments made by hand as the attach/detach controller would. The engine runs on the attachment's
// node and serves the unit on the host socket the CSI node plugin opens; moving the attachment to another
// node stops it cleanly there and starts it on the new node with no merge and no copy, and every write the
// export acknowledged during the move is there afterwards, on both members alike.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { lstat, mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HEADER_BYTES } from '@shadowset/engine/api';
import { Cluster, cond, run, type Status } from '@shadowset/testkit/cluster/cluster-fixture';
import { R } from '../kube/client.js';

const NS = 'shadow';
const SET = 'mv';
const CHUNK = 65536;
/** Bounds of the writer: attempts in all, and writes acknowledged by the new engine before it stops. */
const MAX_ATTEMPTS = 600;
const AFTER_MOVE = 5;

let units = '';
let c: Cluster;

before(async () => {
  units = await mkdtemp(join(tmpdir(), 'shadowset-units-'));
  c = new Cluster({ unitSocketDir: units });
  await c.start(['node-a', 'node-b']);
  await c.namespace(NS);
  await c.blockClaim(NS, 'a1', 'node-a');
  await c.blockClaim(NS, 'b1', 'node-b');
});
after(async () => {
  try {
    await c.stop();
  } finally {
    await rm(units, { recursive: true, force: true });
  }
});

type PlacedStatus = Status & { engineNode?: string; placement?: { node?: string; source?: string; attachment?: string }; size?: number };
const served = (node: string, va: string) => (s: PlacedStatus) =>
  s.engineNode === node && s.placement?.attachment === va && s.membersInSync === '2/2' && s.state === 'Steady' && cond(s, 'Ready')?.status === 'True';

/** What the attach/detach controller makes: a VolumeAttachment of the driver for the set's PV on a node. */
const attach = (name: string, node: string) => c.kube.create(R.volumeattachments, undefined, {
  apiVersion: 'storage.k8s.io/v1', kind: 'VolumeAttachment', metadata: { name },
  spec: { attacher: 'csi.shadowset.dev', nodeName: node, source: { persistentVolumeName: `pv-csi-${SET}` } },
});

const socketPath = () => join(units, NS, SET, 'nbd.sock');
const nbd = () => `driver=nbd,server.type=unix,server.path=${socketPath()},export=shadow`;

type Phase = 'before' | 'during' | 'after';

/**
 * Writes chunk after chunk through the unit socket (a new connection each), recording what was acknowledged
 * in each phase: before the attachment moves, during the move, and once the new engine serves (it stops
 * after AFTER_MOVE of those).
 */
function writer(phase: () => Phase, early: number) {
  const acked: { off: number; pattern: number }[] = [];
  let started!: () => void;
  /** Resolves once `early` writes were acknowledged (or the writer gave up). */
  const warm = new Promise<void>((r) => (started = r));
  let failed = 0;
  const by: Record<Phase, number> = { before: 0, during: 0, after: 0 };
  const done = (async () => {
    for (let i = 0; i < MAX_ATTEMPTS && by.after < AFTER_MOVE; i++) {
      const off = acked.length * CHUNK;
      const pattern = 16 + (acked.length % 224);
      const at = phase();
      try {
        const r = await run('qemu-io', ['--image-opts', nbd(), '-c', `write -P ${pattern} ${off} 64k`, '-c', 'flush']);
        if (/failed|error/i.test(r.stdout + r.stderr)) throw new Error(r.stdout + r.stderr);
        acked.push({ off, pattern });
        if (acked.length >= early) started();
        by[at]++;
      } catch {
        failed++; // not acknowledged (the engine is stopping or not yet serving): nothing promised
        await new Promise((r) => setTimeout(r, 100)); // a retry's pace, so the attempts last through a slow move
      }
    }
    started();
  })();
  return { acked, done, warm, by, failed: () => failed };
}

test('the engine follows the VolumeAttachment: served on the host socket there; moved cleanly, no merge, no copy, every acknowledged write kept', { timeout: 240_000 }, async (t) => {
  // The PV that names the set (static provisioning) and the consumer's attachment on node-a.
  await c.kube.create(R.pvs, undefined, {
    metadata: { name: `pv-csi-${SET}` },
    spec: { capacity: { storage: '32Mi' }, accessModes: ['ReadWriteOnce'], volumeMode: 'Block', persistentVolumeReclaimPolicy: 'Retain', csi: { driver: 'csi.shadowset.dev', volumeHandle: `${NS}/${SET}` } },
  });
  await attach('va-a', 'node-a');
  await c.apply(NS, SET, { members: [{ name: 'm1', claimName: 'a1' }, { name: 'm2', claimName: 'b1' }] });
  const first = (await c.until(NS, SET, 'served on node-a', served('node-a', 'va-a') as (s: Status) => boolean, 90_000)) as PlacedStatus;
  assert.deepEqual(first.placement, { node: 'node-a', source: 'VolumeAttachment', attachment: 'va-a' });
  const podA = await c.kube.get(R.pods, NS, `${SET}-engine`);
  const specA = podA?.spec as { nodeName: string; volumes: { name: string; hostPath?: { path: string; type: string } }[]; containers: { args: string[]; securityContext: { privileged: boolean } }[] };
  assert.equal(specA.nodeName, 'node-a');
  assert.deepEqual(specA.volumes.filter((v) => v.hostPath).map((v) => v.hostPath), [{ path: join(units, NS, SET), type: 'DirectoryOrCreate' }], 'only the set\'s own host directory');
  assert.equal(specA.containers[0]!.securityContext.privileged, false);
  const st = await lstat(socketPath());
  assert.ok(st.isSocket(), 'the unit is served on the host socket');
  assert.equal(st.mode & 0o777, 0o660);

  // Events are listed by name, not time: count the resync starts seen before the move instead.
  const resyncStarts = async () => (await c.events(NS, SET)).filter((e) => /^(Merge|Copy|Minicopy)Started$/.test(e.reason)).map((e) => `${e.reason}: ${e.message}`).sort();
  const startsBefore = await resyncStarts();
  let phase: Phase = 'before';
  const w = writer(() => phase, 5);
  // Some writes before the move, then the consumer moves: detach from node-a, attach to node-b.
  await w.warm;
  assert.ok(w.acked.length >= 5, 'writes acknowledged before the move');
  const t0 = Date.now();
  await c.kube.delete(R.volumeattachments, undefined, 'va-a');
  await attach('va-b', 'node-b');
  phase = 'during';
  const after = (await c.until(NS, SET, 'served on node-b', served('node-b', 'va-b') as (s: Status) => boolean, 120_000)) as PlacedStatus;
  assert.equal(after.placement?.source, 'VolumeAttachment');
  const moveMs = Date.now() - t0;
  phase = 'after';
  await w.done;
  t.diagnostic(`moved in ${moveMs} ms (attachment switched → Ready on node-b, 2/2 in sync); writes acknowledged: ${w.by.before} before, ${w.by.during} during the move, ${w.by.after} by the new engine; ${w.failed()} attempts not acknowledged while no engine served`);
  assert.ok(w.by.after >= AFTER_MOVE, `writes acknowledged by the new engine: ${w.by.after} (of ${w.acked.length}, ${w.failed()} not acknowledged)`);

  // Cleanly stopped on node-a, started on node-b with m2 attached there and m1 through its member server.
  const podB = await c.kube.get(R.pods, NS, `${SET}-engine`);
  assert.notEqual(podB?.metadata.uid, podA?.metadata.uid);
  const specB = podB?.spec as { nodeName: string; containers: { volumeDevices: { devicePath: string }[] }[] };
  assert.equal(specB.nodeName, 'node-b');
  assert.deepEqual(specB.containers[0]!.volumeDevices.map((d) => d.devicePath), ['/dev/shadow/m2']);
  assert.equal((await c.kube.get(R.pods, NS, `${SET}-member-m1`))?.spec?.nodeName, 'node-a');
  const oldLog = await readFile(join(c.sim.workDir, 'pods', `${NS}_${SET}-engine_${podA!.metadata.uid!.slice(0, 8)}`, 'logs', 'engine.log'), 'utf8');
  assert.match(oldLog, /"event":"ShadowSetStopped"/, 'the engine on node-a stopped cleanly');
  const newLog = c.sim.logs(NS, `${SET}-engine`, 'engine');
  assert.match(newLog, /"event":"EngineReady"/);
  assert.doesNotMatch(newLog, /"event":"(MergeRequired|MergeDemanded|CopyResumed)"/, 'the new engine neither merged nor copied');
  const eng = (await c.engineStatus(NS, SET)) as unknown as { members: { state: string }[]; recovery: { mode: string | null; bytesTotal: number } };
  assert.deepEqual(eng.members.map((m) => m.state), ['InSync', 'InSync']);
  assert.equal(eng.recovery.mode, null);
  const moves = (await c.events(NS, SET)).filter((e) => e.reason === 'EngineMoved');
  assert.equal(moves.length, 1);
  assert.match(moves[0]!.message, /from node node-a to node-b, because of VolumeAttachment va-b/);
  assert.deepEqual(await resyncStarts(), startsBefore, 'no merge, no copy after the move');

  // Every acknowledged write reads back through the unit socket on node-b ...
  const reads = w.acked.flatMap((a) => ['-c', `read -P ${a.pattern} ${a.off} 64k`]);
  const r = await run('qemu-io', ['--image-opts', nbd(), ...reads]);
  assert.doesNotMatch(r.stdout + r.stderr, /failed|error/i);
  // ... and both members hold the same bytes (read from their devices; the unit starts HEADER_BYTES in).
  const span = w.acked.length * CHUNK;
  const bytes = async (claim: string) => {
    const f = await open(c.disks.get(`${NS}/${claim}`)!.path, 'r');
    try {
      const b = Buffer.alloc(span);
      await f.read(b, 0, span, HEADER_BYTES);
      return b;
    } finally {
      await f.close();
    }
  };
  const [m1, m2] = [await bytes('a1'), await bytes('b1')];
  assert.ok(m1.equals(m2), 'the members are identical where the writes went');
  assert.equal(m2[w.acked.at(-1)!.off], w.acked.at(-1)!.pattern);
});
