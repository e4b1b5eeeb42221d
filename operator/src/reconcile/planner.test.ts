import { test } from 'node:test';
import assert from 'node:assert/strict';
import { configHash, engineConfig } from './engine-config.js';
import { claim, engine, kinds, observed, pod, spec } from './fixtures.js';
import { plan } from './planner.js';
import type { Action, Observed } from './types.js';

test('a new set: engine pod with both local claims as devices, the export service, an event', () => {
  const p = plan(observed({}));
  assert.deepEqual(kinds(p.actions), ['ensureSecrets', 'applyNetworkPolicy', 'createEnginePod', 'applyService']);
  const podObj = (p.actions.find((a) => a.kind === 'createEnginePod') as Extract<Action, { kind: 'createEnginePod' }>).pod as { spec: { nodeName: string; containers: { args: string[]; volumeDevices: unknown[] }[] } };
  assert.equal(podObj.spec.nodeName, 'n1');
  const args = podObj.spec.containers[0]!.args;
  assert.deepEqual(args.slice(0, 5), ['serve', '--member', '/dev/shadow/a', '--member', '/dev/shadow/b']);
  assert.ok(args.includes('--hold-on-failure') && args.includes('--include'));
  assert.equal(podObj.spec.containers[0]!.volumeDevices.length, 2);
  assert.ok(p.actions.some((a) => a.kind === 'event' && a.reason === 'EngineCreated'));
  assert.equal(p.status.conditions?.find((c) => c.type === 'Ready')?.reason, 'EnginePending');
});

test('bad claims are refused before anything is created, with the reason in Ready', () => {
  const cases: [Observed['claims'], string][] = [
    [{ ca: { ...claim('ca'), exists: false }, cb: claim('cb') }, 'ClaimNotFound'],
    [{ ca: claim('ca', 'n1', { volumeMode: 'Filesystem' }), cb: claim('cb') }, 'ClaimNotBlock'],
    [{ ca: claim('ca', 'n1', { ownedBy: 'other' }), cb: claim('cb') }, 'ClaimInOtherSet'],
    [{ ca: claim('ca', 'n1', { bound: false }), cb: claim('cb') }, 'ClaimNotBound'],
  ];
  for (const [claims, reason] of cases) {
    const p = plan(observed({ claims }));
    assert.deepEqual(kinds(p.actions), [], reason);
    const ready = p.status.conditions?.find((c) => c.type === 'Ready');
    assert.equal(ready?.status, 'False');
    assert.equal(ready?.reason, reason);
    assert.ok(p.actions.some((a) => a.kind === 'event' && a.type === 'Warning' && a.reason === 'Refused'));
    assert.equal(p.requeueAfterMs, -1);
  }
});

test('an invalid spec is terminal: InvalidSpec, no actions, no requeue', () => {
  const p = plan(observed({ spec: { invalid: 'members: too small' } }));
  assert.deepEqual(p.actions, []);
  assert.equal(p.status.conditions?.find((c) => c.type === 'Ready')?.reason, 'InvalidSpec');
  assert.equal(p.requeueAfterMs, -1);
});

test('a member on another node gets a member server, and the engine waits for it (bounded)', () => {
  const o = observed({ claims: { ca: claim('ca', 'n1'), cb: claim('cb', 'n2') } });
  const p = plan(o);
  assert.deepEqual(kinds(p.actions), ['ensureSecrets', 'applyNetworkPolicy', 'createMemberServer']);
  const ms = (p.actions.find((a) => a.kind === 'createMemberServer') as Extract<Action, { kind: 'createMemberServer' }>).pod as { spec: { nodeName: string; containers: { args: string[] }[] } };
  assert.equal(ms.spec.nodeName, 'n2');
  assert.equal(ms.spec.containers[0]!.args[0], 'serve-device');
  const later = plan({ ...o, memberServers: { b: { ...pod('vol-member-b', ['b'], '127.12.0.2'), createdMs: 0 } } });
  const engineArgs = ((later.actions.find((a) => a.kind === 'createEnginePod') as Extract<Action, { kind: 'createEnginePod' }>).pod as { spec: { containers: { args: string[] }[] } }).spec.containers[0]!.args;
  assert.ok(engineArgs.includes('nbds://127.12.0.2:10810/member'));
});

test('steady: nothing to do but mirror status; a new spec member is added through its member server', () => {
  const base = observed({
    enginePod: pod('vol-engine', ['a', 'b']),
    engine: { kind: 'ok', status: engine([{ id: 'ia', path: '/x/dev/shadow/a', state: 'InSync' }, { id: 'ib', path: '/x/dev/shadow/b', state: 'InSync' }]) },
  });
  const p = plan(base);
  assert.deepEqual(kinds(p.actions), []);
  assert.equal(p.status.membersInSync, '2/2');
  assert.equal(p.status.state, 'Steady');
  const grown = { ...base, spec: spec([{ name: 'a', claimName: 'ca' }, { name: 'b', claimName: 'cb' }, { name: 'c', claimName: 'cc' }]), claims: { ...base.claims, cc: claim('cc') } };
  assert.deepEqual(kinds(plan(grown).actions), ['ensureSecrets', 'createMemberServer']);
  const ready = plan({ ...grown, memberServers: { c: pod('vol-member-c', ['c'], '127.11.0.9') } });
  const add = ready.actions.find((a) => a.kind === 'engineAdd') as Extract<Action, { kind: 'engineAdd' }>;
  assert.deepEqual(add.body, { location: 'nbds://127.11.0.9:10810/member', noCopy: false, confirmOverwrite: false, readCost: 1 });
});

test('detach: removal with the set\'s minicopy policy; refused while merging or with fewer than two full members left', () => {
  const eng3 = engine([{ id: 'ia', path: '/dev/shadow/a', state: 'InSync' }, { id: 'ib', path: '/dev/shadow/b', state: 'InSync' }, { id: 'ic', path: '/dev/shadow/c', state: 'InSync' }]);
  const sp = spec([{ name: 'a', claimName: 'ca' }, { name: 'b', claimName: 'cb', state: 'Detached' }, { name: 'c', claimName: 'cc' }], { minicopyPolicy: 'Required' });
  const o = observed({ spec: sp, claims: { ca: claim('ca'), cb: claim('cb'), cc: claim('cc') }, enginePod: pod('vol-engine', ['a', 'b', 'c']), engine: { kind: 'ok', status: eng3 } });
  const p = plan(o);
  const rm = p.actions.find((a) => a.kind === 'engineRemove') as Extract<Action, { kind: 'engineRemove' }>;
  assert.deepEqual(rm, { kind: 'engineRemove', member: 'b', engineId: 'ib', policy: 'Required', detach: true });
  const merging = plan({ ...o, engine: { kind: 'ok', status: { ...eng3, recovery: { ...eng3.recovery, mode: 'Merge' } } } });
  assert.ok(!merging.actions.some((a) => a.kind === 'engineRemove'));
  assert.equal(merging.status.conditions?.find((c) => c.type === 'Ready')?.reason, 'DetachRefused');
  const twoOnly = plan({ ...o, spec: spec([{ name: 'a', claimName: 'ca' }, { name: 'b', claimName: 'cb', state: 'Detached' }]), engine: { kind: 'ok', status: engine([{ id: 'ia', path: '/dev/shadow/a', state: 'InSync' }, { id: 'ib', path: '/dev/shadow/b', state: 'InSync' }]) } });
  assert.ok(!twoOnly.actions.some((a) => a.kind === 'engineRemove'));
  assert.match(twoOnly.status.conditions?.find((c) => c.type === 'Ready')?.message ?? '', /fewer than two/);
});

test('a detached member set Active again is returned; a member dropped from the spec is removed; bitmaps become resources', () => {
  const eng = engine([{ id: 'ia', path: '/dev/shadow/a', state: 'InSync' }, { id: 'ib', path: '/dev/shadow/b', state: 'Removed' }, { id: 'ix', path: 'nbd://h/x', state: 'InSync' }], {
    bitmaps: [{ id: 'bm-123456789', member: 'ib', chunkSize: 65536, coveredBytes: 1 << 30, dirtyBytes: 65536, percentPopulated: 0.01, createdAt: 't', masterNode: 'n1', generation: 3 }],
  });
  const o = observed({ enginePod: pod('vol-engine', ['a', 'b']), engine: { kind: 'ok', status: eng }, previous: { members: [{ name: 'a', id: 'ia', state: 'InSync' }, { name: 'b', id: 'ib', state: 'Detached' }] } });
  const p = plan(o);
  assert.deepEqual(p.actions.filter((a) => a.kind === 'engineReturn'), [{ kind: 'engineReturn', member: 'b', engineId: 'ib', minicopy: 'Optional' }]);
  assert.deepEqual(p.actions.filter((a) => a.kind === 'engineRemove'), [{ kind: 'engineRemove', member: 'ix', engineId: 'ix', policy: 'Optional', detach: false }]);
  const bm = p.actions.find((a) => a.kind === 'applyBitmapCr') as Extract<Action, { kind: 'applyBitmapCr' }>;
  assert.equal(bm.name, 'vol-b-bm-12345');
  assert.deepEqual(bm.spec, { shadowSet: 'vol', bitmapId: 'bm-123456789', member: 'b' });
  const gone = plan({ ...o, bitmapCrs: [{ name: 'vol-b-old', bitmapId: 'old', member: 'b', deleting: false }] });
  assert.ok(gone.actions.some((a) => a.kind === 'deleteBitmapCr' && a.name === 'vol-b-old'));
});

test('resync shows in conditions and status; settings are pushed when they differ', () => {
  const eng = engine([{ id: 'ia', path: '/dev/shadow/a', state: 'InSync' }, { id: 'ib', path: '/dev/shadow/b', state: 'FullCopy' }], {
    state: 'Transient', recovery: { mode: 'FullCopy', source: 'ia', targets: ['ib'], bytesTotal: 1000, bytesDone: 250, bytesPerSecond: 100, etaSeconds: 8 },
  });
  const o = observed({ spec: spec([{ name: 'a', claimName: 'ca' }, { name: 'b', claimName: 'cb' }], { throttle: { copyBytesPerSecond: 5242880 } }), enginePod: pod('vol-engine', ['a', 'b']), engine: { kind: 'ok', status: eng } });
  const p = plan(o);
  const resync = p.status.conditions?.find((c) => c.type === 'Resyncing');
  assert.equal(resync?.status, 'True');
  assert.equal(resync?.reason, 'FullCopy');
  assert.equal(p.status.progress, '25%');
  assert.equal(p.status.membersInSync, '1/2');
  assert.equal(p.status.conditions?.find((c) => c.type === 'Degraded')?.status, 'True');
  const set = p.actions.find((a) => a.kind === 'engineSettings') as Extract<Action, { kind: 'engineSettings' }>;
  assert.equal(set.body.copyBytesPerSecond, 5242880);
  assert.equal(p.requeueAfterMs, 1000);
});

test('a merge is not a degraded set: merging members are full members; a missing one still degrades it', () => {
  const merge = { mode: 'Merge' as const, source: 'ia', targets: ['ia', 'ib'], bytesTotal: 4096, bytesDone: 0, bytesPerSecond: 0, etaSeconds: null };
  const eng = engine([{ id: 'ia', path: '/dev/shadow/a', state: 'Merging' }, { id: 'ib', path: '/dev/shadow/b', state: 'Merging' }], { state: 'Transient', recovery: merge });
  const p = plan(observed({ enginePod: pod('vol-engine', ['a', 'b']), engine: { kind: 'ok', status: eng } }));
  const degraded = p.status.conditions?.find((c) => c.type === 'Degraded');
  assert.equal(degraded?.status, 'False');
  assert.equal(degraded?.reason, 'MembersMerging');
  assert.equal(degraded?.message, '2 of 2 members full, 2 of them merging (identical once the merge completes)');
  assert.equal(p.status.conditions?.find((c) => c.type === 'Resyncing')?.reason, 'Merge');
  assert.equal(p.status.state, 'Transient');
  assert.equal(p.status.membersInSync, '0/2');

  const oneGone = engine([{ id: 'ia', path: '/dev/shadow/a', state: 'Merging' }, { id: 'ib', path: '/dev/shadow/b', state: 'Faulted' }], { state: 'Transient', recovery: merge });
  const q = plan(observed({ enginePod: pod('vol-engine', ['a', 'b']), engine: { kind: 'ok', status: oneGone } }));
  const d2 = q.status.conditions?.find((c) => c.type === 'Degraded');
  assert.equal(d2?.status, 'True');
  assert.equal(d2?.reason, 'MembersNotInSync');
  assert.equal(d2?.message, '1 of 2 members full, 1 of them merging (identical once the merge completes)');
});

test('an engine that refused to start (foreign data) shows ForeignData, not a crash', () => {
  const p = plan(observed({ enginePod: pod('vol-engine', ['a', 'b']), engine: { kind: 'refused', code: 'ENG_FOREIGN_DATA', message: 'member /dev/shadow/b holds data' } }));
  const ready = p.status.conditions?.find((c) => c.type === 'Ready');
  assert.equal(ready?.reason, 'ForeignData');
  assert.match(ready?.message ?? '', /holds data/);
  assert.deepEqual(kinds(p.actions), []);
  // The newest record on a member the engine cannot open: its own reason, so nobody mistakes it for a network fault.
  const stale = plan(observed({ enginePod: pod('vol-engine', ['a', 'b']), engine: { kind: 'refused', code: 'ENG_STALE_RECORD', message: 'the newest record ... generation 9 was recorded before' } }));
  assert.equal(stale.status.conditions?.find((c) => c.type === 'Ready')?.reason, 'NewestMemberMissing');
});

test('member timeout and max copies: the spec wins, else the operator\'s site-wide defaults', () => {
  const argsOf = (p: ReturnType<typeof plan>) =>
    ((p.actions.find((a) => a.kind === 'createEnginePod') as Extract<Action, { kind: 'createEnginePod' }>).pod as { spec: { containers: { args: string[] }[] } }).spec.containers[0]!.args;
  const site = plan(observed({ defaults: { memberTimeoutSeconds: 45, maxCopies: 2 } }));
  const a = argsOf(site);
  assert.equal(a[a.indexOf('--member-timeout') + 1], '45');
  const own = plan(observed({ spec: spec([{ name: 'a', claimName: 'ca' }, { name: 'b', claimName: 'cb' }], { memberTimeoutSeconds: 7 }) }));
  const b = argsOf(own);
  assert.equal(b[b.indexOf('--member-timeout') + 1], '7');
  const running = plan(observed({
    defaults: { memberTimeoutSeconds: 45, maxCopies: 2 }, enginePod: pod('vol-engine', ['a', 'b']),
    engine: { kind: 'ok', status: engine([{ id: 'ia', path: '/dev/shadow/a', state: 'InSync' }, { id: 'ib', path: '/dev/shadow/b', state: 'InSync' }]) },
  }));
  const st = running.actions.find((x) => x.kind === 'engineSettings') as Extract<Action, { kind: 'engineSettings' }>;
  assert.equal(st.body.maxCopies, 2);
  assert.equal(st.body.memberTimeoutSeconds, 45);
});

test('export over TLS: the Secret is mounted for the engine and the endpoint says nbds', () => {
  const o = observed({ spec: spec([{ name: 'a', claimName: 'ca' }, { name: 'b', claimName: 'cb' }], { export: { tlsSecretName: 'vol-tls' } }) });
  const podObj = ((plan(o).actions.find((a) => a.kind === 'createEnginePod') as Extract<Action, { kind: 'createEnginePod' }>).pod) as {
    spec: { containers: { args: string[]; volumeMounts: { name: string; mountPath: string }[] }[]; volumes: { name: string; secret?: { secretName: string } }[] };
  };
  const c = podObj.spec.containers[0]!;
  assert.deepEqual(c.args.slice(c.args.indexOf('--tls-cert'), c.args.indexOf('--tls-cert') + 6), ['--tls-cert', '/etc/shadowset/tls/tls.crt', '--tls-key', '/etc/shadowset/tls/tls.key', '--tls-ca', '/etc/shadowset/tls/ca.crt']);
  assert.ok(!c.args.includes('--export-psk-file'), 'one TLS mode for the export');
  assert.ok(c.volumeMounts.some((m) => m.name === 'tls' && m.mountPath === '/etc/shadowset/tls'));
  // Client certificates are required: without ca.crt in the Secret the kubelet holds the pod (Ready says why).
  assert.deepEqual(podObj.spec.volumes.find((v) => v.name === 'tls')?.secret, { secretName: 'vol-tls', defaultMode: 0o400, items: ['tls.crt', 'tls.key', 'ca.crt'].map((k) => ({ key: k, path: k })) });
  const running = plan({ ...o, enginePod: { ...pod('vol-engine', ['a', 'b']), configHash: configHash(engineConfig(o.spec as never, o.engineImage)) }, engine: { kind: 'ok', status: engine([{ id: 'ia', path: '/dev/shadow/a', state: 'InSync' }, { id: 'ib', path: '/dev/shadow/b', state: 'InSync' }]) } });
  assert.match(running.status.endpoint ?? '', /^nbds:\/\/vol\.ns\.svc:10809\/shadow$/);
});

test('a CSI set\'s members on one node: a warning when the engine starts, naming them and the node', () => {
  assert.ok(!plan(observed({})).actions.some((a) => a.kind === 'event' && a.reason === 'MembersShareNode'), 'a hand-made set may mean it');
  const shared = plan(observed({ madeByDriver: true }));
  const warn = shared.actions.find((a) => a.kind === 'event' && a.reason === 'MembersShareNode');
  assert.ok(warn && warn.kind === 'event' && warn.type === 'Warning');
  assert.match(warn.message, /members a, b are all on node n1: losing that node loses every copy/);
  const spread = plan(observed({ madeByDriver: true, claims: { ca: claim('ca', 'n1'), cb: claim('cb', 'n2') }, memberServers: { b: pod('vol-member-b', ['b'], '127.11.0.8', { node: 'n2' }) } }));
  assert.ok(spread.actions.some((a) => a.kind === 'createEnginePod'));
  assert.ok(!spread.actions.some((a) => a.kind === 'event' && a.reason === 'MembersShareNode'), 'different nodes: no warning');
  const anywhere = plan(observed({ madeByDriver: true, claims: { ca: claim('ca', null), cb: claim('cb', null) } }));
  assert.ok(!anywhere.actions.some((a) => a.kind === 'event' && a.reason === 'MembersShareNode'), 'network volumes (no node): no warning');
});
