// Where the engine runs: pinned, beside its consumer (the CSI driver's VolumeAttachment), where it runs, or
// beside the first node-bound claim; the move itself, conflicts, and the unit socket on the host.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { configHash, configText, engineConfig } from './engine-config.js';
import { claim, engine, events, kinds, observed, pod, spec } from './fixtures.js';
import { nodeDown, unitSocketHostDir } from './placement.js';
import { plan } from './planner.js';
import type { Action, AttachmentInfo, Observed } from './types.js';

const va = (name: string, node: string, createdMs: number, extra: Partial<AttachmentInfo> = {}): AttachmentInfo => ({ name, node, createdMs, deleting: false, attached: true, ...extra });
// Member a's volume is on n1, b's on n2.
const claims = { ca: claim('ca', 'n1'), cb: claim('cb', 'n2') };
const serverA = pod('vol-member-a', ['a'], '127.11.0.9', { node: 'n1' });
type PodObj = { spec: { nodeName?: string; volumes: { name: string; hostPath?: { path: string; type: string } }[]; containers: { args: string[]; volumeMounts: { name: string; mountPath: string }[] }[] } };
const created = (a: Action[]) => (a.find((x) => x.kind === 'createEnginePod') as Extract<Action, { kind: 'createEnginePod' }> | undefined)?.pod as PodObj | undefined;
const steady = engine([{ id: 'ia', path: 'nbds://127.11.0.9:10810/member', state: 'InSync' }, { id: 'ib', path: '/dev/shadow/b', state: 'InSync' }]);

test('a live VolumeAttachment places a new engine on its node: the member there attached, the other through its member server', () => {
  const p = plan(observed({ claims, attachments: [va('csi-1', 'n2', 5)], memberServers: { a: serverA } }));
  const podObj = created(p.actions)!;
  assert.equal(podObj.spec.nodeName, 'n2');
  assert.deepEqual(podObj.spec.containers[0]!.args.slice(0, 5), ['serve', '--member', '/dev/shadow/b', '--member', 'nbds://127.11.0.9:10810/member']);
  assert.deepEqual(p.status.placement, { node: 'n2', source: 'VolumeAttachment', attachment: 'csi-1' });
});

test('without an attachment a new engine goes beside the first node-bound claim (today\'s rule)', () => {
  const p = plan(observed({ claims, memberServers: { b: pod('vol-member-b', ['b'], '127.11.0.8', { node: 'n2' }) } }));
  assert.equal(created(p.actions)!.spec.nodeName, 'n1');
  assert.deepEqual(p.status.placement, { node: 'n1', source: 'Claim' });
});

test('a pinned node wins over the attachment', () => {
  const p = plan(observed({ claims, spec: spec([{ name: 'a', claimName: 'ca' }, { name: 'b', claimName: 'cb' }], { engine: { nodeName: 'n1' } }), attachments: [va('csi-1', 'n2', 5)], memberServers: { b: pod('vol-member-b', ['b'], '127.11.0.8', { node: 'n2' }) } }));
  assert.equal(created(p.actions)!.spec.nodeName, 'n1');
  assert.equal(p.status.placement?.source, 'Pinned');
});

test('the engine stays where it runs when no attachment is live (no restart when the consumer goes away)', () => {
  const running = pod('vol-engine', ['b'], '127.11.0.2', { node: 'n2', memberLocations: ['nbds://127.11.0.9:10810/member', '/dev/shadow/b'] });
  for (const attachments of [[], [va('csi-1', 'n1', 5, { deleting: true })]]) {
    const p = plan(observed({ claims, enginePod: running, memberServers: { a: serverA }, engine: { kind: 'ok', status: steady }, attachments }));
    assert.ok(!p.actions.some((a) => a.kind === 'deleteEnginePod'), JSON.stringify(p.actions));
    assert.deepEqual(p.status.placement, { node: 'n2', source: 'Running' });
  }
});

test('an attachment on another node moves the engine: its pod is deleted (SIGTERM, a clean stop) with an EngineMoved event', () => {
  const running = pod('vol-engine', ['a'], '127.11.0.2', { node: 'n1' });
  const p = plan(observed({ claims, enginePod: running, engine: { kind: 'ok', status: steady }, attachments: [va('csi-old', 'n1', 1, { deleting: true }), va('csi-new', 'n2', 9)] }));
  assert.deepEqual(kinds(p.actions), ['deleteEnginePod']);
  const ev = events(p.actions).find((e) => e.reason === 'EngineMoved');
  assert.match(ev?.message ?? '', /from node n1 to n2, because of VolumeAttachment csi-new/);
  assert.equal(p.status.conditions?.find((c) => c.type === 'Ready')?.status, 'False');
  // The same attachment on the engine's own node moves nothing.
  const here = plan(observed({ claims, enginePod: running, engine: { kind: 'ok', status: steady }, attachments: [va('csi-1', 'n1', 1)] }));
  assert.ok(!here.actions.some((a) => a.kind === 'deleteEnginePod'));
});

test('two live attachments on different nodes: the older is followed, status and a Warning event say which was not', () => {
  const o = observed({ claims, attachments: [va('csi-late', 'n1', 20), va('csi-early', 'n2', 10)], memberServers: { a: serverA } });
  const p = plan(o);
  assert.equal(created(p.actions)!.spec.nodeName, 'n2');
  assert.equal(p.status.placement?.attachment, 'csi-early');
  assert.match(p.status.placement?.conflict ?? '', /csi-late \(node n1\).*csi-early \(node n2\) is followed/);
  assert.ok(events(p.actions).some((e) => e.type === 'Warning' && e.reason === 'AttachmentConflict'));
  // Announced once: not again while the conflict is the same.
  const again = plan({ ...o, previous: { placement: p.status.placement! } } as Observed);
  assert.ok(!events(again.actions).some((e) => e.reason === 'AttachmentConflict'));
});

test('unit socket: with a live attachment the engine serves on <dir>/<ns>/<set>/nbd.sock (only that directory, DirectoryOrCreate)', () => {
  const p = plan(observed({ claims, unitSocketDir: '/run/shadowset/units', attachments: [va('csi-1', 'n2', 5)], memberServers: { a: serverA } }));
  const podObj = created(p.actions)!;
  assert.deepEqual(podObj.spec.volumes.find((v) => v.name === 'unit')?.hostPath, { path: '/run/shadowset/units/ns/vol', type: 'DirectoryOrCreate' });
  assert.deepEqual(podObj.spec.containers[0]!.volumeMounts.find((m) => m.name === 'unit'), { name: 'unit', mountPath: '/run/shadowset/unit' });
  const args = podObj.spec.containers[0]!.args;
  assert.equal(args[args.indexOf('--socket') + 1], '/run/shadowset/unit/nbd.sock');
  // No attachment: no host path at all; the socket stays in the pod's own volume.
  const plain = created(plan(observed({ unitSocketDir: '/run/shadowset/units' })).actions)!;
  assert.ok(!plain.spec.volumes.some((v) => v.hostPath));
  assert.equal(plain.spec.containers[0]!.args[plain.spec.containers[0]!.args.indexOf('--socket') + 1], '/run/shadow/nbd.sock');
  // A set the CSI driver made serves the socket before any attachment (an engine taking over after its
  // consumer's node died starts before the new consumer's attachment; it must not be restarted for it).
  const driverMade = created(plan(observed({ unitSocketDir: '/run/shadowset/units', madeByDriver: true })).actions)!;
  assert.ok(driverMade.spec.volumes.some((v) => v.hostPath), 'a driver-made set mounts its unit socket directory at once');
  assert.equal(driverMade.spec.containers[0]!.args[driverMade.spec.containers[0]!.args.indexOf('--socket') + 1], '/run/shadowset/unit/nbd.sock');
});

test('unit socket: a pod that has it keeps it when the attachment goes; a pod without it is restarted cleanly to get it', () => {
  const s = spec([{ name: 'a', claimName: 'ca' }, { name: 'b', claimName: 'cb' }]);
  const withUnit = engineConfig(s, 'img:1', '/run/shadowset/units/ns/vol');
  const running = pod('vol-engine', ['a', 'b'], '127.11.0.2', { node: 'n1', configHash: configHash(withUnit), config: configText(withUnit) });
  const eng = engine([{ id: 'ia', path: '/dev/shadow/a', state: 'InSync' }, { id: 'ib', path: '/dev/shadow/b', state: 'InSync' }]);
  const kept = plan(observed({ enginePod: running, engine: { kind: 'ok', status: eng }, unitSocketDir: '/run/shadowset/units' }));
  assert.ok(!kept.actions.some((a) => a.kind === 'deleteEnginePod'), JSON.stringify(kept.actions));
  const bare = pod('vol-engine', ['a', 'b'], '127.11.0.2', { node: 'n1', config: configText(engineConfig(s, 'img:1')) });
  const p = plan(observed({ enginePod: bare, engine: { kind: 'ok', status: eng }, unitSocketDir: '/run/shadowset/units', attachments: [va('csi-1', 'n1', 5)] }));
  assert.deepEqual(kinds(p.actions), ['deleteEnginePod']);
  assert.match(events(p.actions)[0]!.message, /unit\.socketDir unset → \/run\/shadowset\/units\/ns\/vol/);
});

test('unit socket directory: only <dir>/<namespace>/<set>, never a path that could leave dir', () => {
  assert.equal(unitSocketHostDir('/run/shadowset/units/', 'ns', 'vol'), '/run/shadowset/units/ns/vol');
  for (const [dir, ns, name] of [['/run/u', '..', 'vol'], ['/run/u', 'ns', '../x'], ['/run/u', 'ns', 'a/b'], ['run/u', 'ns', 'vol'], ['/run/../etc', 'ns', 'vol'], ['/run/u', 'ns', 'a..b'], ['/run/u', '', 'vol']] as const) {
    assert.equal(unitSocketHostDir(dir, ns, name), null, `${dir} ${ns} ${name}`);
  }
});

test('a new engine is not started while a member server still serves a member it will attach (the old engine\'s path to it): the server is deleted first', () => {
  // The engine ran on n1 and reached b through b's member server on n2; now the consumer is on n2 and the
  // engine pod is gone (moved, or its node lost). Until that server is gone, an engine on n1 that is cut off
  // rather than stopped could still write b through it.
  const serverB = pod('vol-member-b', ['b'], '127.11.0.8', { node: 'n2' });
  const p = plan(observed({ claims, attachments: [va('csi-2', 'n2', 9)], memberServers: { a: serverA, b: serverB } }));
  assert.equal(created(p.actions), undefined, 'no engine pod yet');
  assert.deepEqual(p.actions.filter((a) => a.kind === 'deleteMemberServer').map((a) => (a as { name: string }).name), ['vol-member-b']);
  assert.match(p.status.conditions?.find((c) => c.type === 'Ready')?.message ?? '', /member server.*b/);
  // Still stopping: not deleted again, still no engine.
  const stopping = plan(observed({ claims, attachments: [va('csi-2', 'n2', 9)], memberServers: { a: serverA, b: { ...serverB, deleting: true } } }));
  assert.equal(created(stopping.actions), undefined);
  assert.ok(!stopping.actions.some((a) => a.kind === 'deleteMemberServer'));
  // Gone: the engine starts on n2 with b as its device and a through its server.
  const next = created(plan(observed({ claims, attachments: [va('csi-2', 'n2', 9)], memberServers: { a: serverA } })).actions)!;
  assert.equal(next.spec.nodeName, 'n2');
  assert.deepEqual(next.spec.containers[0]!.args.slice(0, 5), ['serve', '--member', '/dev/shadow/b', '--member', 'nbds://127.11.0.9:10810/member']);
});

test('a member whose node is down (NotReady, or tainted out-of-service) is not waited for: no member server is made there and the engine starts without it', () => {
  // The consumer moved to n2 after n1 died: a member server on n1 would never run (the taint evicts it,
  // the operator makes it again), and waiting for it kept the new engine from ever starting.
  const down = { n1: 'NotReady' };
  const p = plan(observed({ claims, attachments: [va('csi-2', 'n2', 9)], nodesDown: down }));
  assert.ok(!p.actions.some((a) => a.kind === 'createMemberServer'), JSON.stringify(kinds(p.actions)));
  const podObj = created(p.actions)!;
  assert.equal(podObj.spec.nodeName, 'n2');
  assert.deepEqual(podObj.spec.containers[0]!.args.slice(0, 3), ['serve', '--member', '/dev/shadow/b']);
  assert.ok(!podObj.spec.containers[0]!.args.includes('nbds://127.11.0.9:10810/member'));
  // A server left there (being evicted) is not waited for either.
  const evicted = plan(observed({ claims, attachments: [va('csi-2', 'n2', 9)], nodesDown: down, memberServers: { a: { ...serverA, ready: false, deleting: true } } }));
  assert.equal(created(evicted.actions)?.spec.nodeName, 'n2');
  // The node up: the member server is made and waited for, as before.
  const up = plan(observed({ claims, attachments: [va('csi-2', 'n2', 9)] }));
  assert.ok(up.actions.some((a) => a.kind === 'createMemberServer'));
  assert.equal(created(up.actions), undefined);
});

test('nodeDown: gone, tainted out-of-service or not Ready is down; Ready and untainted is not', () => {
  const ready = { type: 'Ready', status: 'True' };
  assert.equal(nodeDown(null), 'no such node');
  assert.equal(nodeDown({ status: { conditions: [ready] } }), null);
  assert.match(nodeDown({ status: { conditions: [{ type: 'Ready', status: 'Unknown' }] } }) ?? '', /not Ready \(Unknown\)/);
  assert.match(nodeDown({ status: {} }) ?? '', /no Ready condition/);
  assert.match(nodeDown({ spec: { taints: [{ key: 'node.kubernetes.io/out-of-service', value: 'nodeshutdown', effect: 'NoExecute' }] }, status: { conditions: [ready] } }) ?? '', /out-of-service/);
  assert.equal(nodeDown({ spec: { taints: [{ key: 'example.com/other', effect: 'NoSchedule' }] }, status: { conditions: [ready] } }), null);
});

test('without an attachment or a running engine, a new engine goes beside the first claim whose node is up', () => {
  const p = plan(observed({ claims, nodesDown: { n1: 'not Ready (Unknown)' } }));
  assert.equal(created(p.actions)!.spec.nodeName, 'n2');
  assert.deepEqual(p.status.placement, { node: 'n2', source: 'Claim' });
  // Every claim's node down: the first, as before (nothing better to do).
  assert.equal(plan(observed({ claims, nodesDown: { n1: 'x', n2: 'y' } })).status.placement?.node, 'n1');
});
