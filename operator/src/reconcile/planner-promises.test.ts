// The planner keeps the spec's promises: images only from the operator, hooks only in consumer pods,
// overwrite per member, the minicopy policy on return, the engine's site, live engine/export changes and
// stale engine arguments. Each test asserts the exact actions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { shadowSetSpecSchema } from '../api/shadowset.js';
import { configHash, configText, engineConfig } from './engine-config.js';
import { argsOf, claim, engine, events, kinds, observed, pod, spec } from './fixtures.js';
import { fingerprint, plan } from './planner.js';
import type { Action, Observed } from './types.js';

const two = [{ name: 'a', claimName: 'ca' }, { name: 'b', claimName: 'cb' }];
const inSync = (...names: string[]) => engine(names.map((n) => ({ id: `i${n}`, path: `/dev/shadow/${n}`, state: 'InSync' })));
const ready = (p: ReturnType<typeof plan>) => p.status.conditions?.find((c) => c.type === 'Ready');
const podOf = (a: Action[]) => (a.find((x) => x.kind === 'createEnginePod') as Extract<Action, { kind: 'createEnginePod' }>).pod as {
  metadata: { annotations: Record<string, string> }; spec: { containers: { image: string; args: string[] }[] };
};

test('the engine image is the operator\'s: a spec cannot name one', () => {
  const s = shadowSetSpecSchema.parse({ members: two, engine: { image: 'attacker/image:1', nodeName: 'n1' } });
  assert.equal('image' in s.engine, false, 'engine.image is not part of the spec');
  const p = plan(observed({ spec: s }));
  assert.equal(podOf(p.actions).spec.containers[0]!.image, 'img:1');
});

test('hooks run only in a pod that declares itself a consumer of the set; otherwise HookRefused and no detach', () => {
  const three = [...two, { name: 'c', claimName: 'cc', state: 'Detached' }];
  const hooks = { freeze: { pod: 'app', command: ['sync'] }, thaw: { pod: 'app', command: ['true'] } };
  const base = observed({
    spec: spec(three, { hooks }), claims: { ca: claim('ca'), cb: claim('cb'), cc: claim('cc') }, enginePod: pod('vol-engine', ['a', 'b', 'c']),
    engine: { kind: 'ok', status: inSync('a', 'b', 'c') },
  });
  const cases: [Observed['hookPods'], RegExp][] = [[{ app: null }, /does not exist/], [{ app: { consumerOf: ['other'] } }, /not a consumer of ShadowSet vol/]];
  for (const [hookPods, why] of cases) {
    const p = plan({ ...base, hookPods });
    assert.deepEqual(kinds(p.actions), [], 'nothing is detached');
    assert.equal(ready(p)?.status, 'False');
    assert.equal(ready(p)?.reason, 'HookRefused');
    assert.match(ready(p)?.message ?? '', why);
    assert.deepEqual(events(p.actions).map((e) => [e.type, e.reason]), [['Warning', 'HookRefused']]);
    // The Warning is given once, when the condition turns to it.
    const again = plan({ ...base, hookPods, previous: { conditions: p.status.conditions! } });
    assert.deepEqual(events(again.actions), []);
  }
  const ok = plan({ ...base, hookPods: { app: { consumerOf: ['other', 'vol'] } } });
  assert.deepEqual(ok.actions.filter((a) => a.kind === 'engineRemove'), [{ kind: 'engineRemove', member: 'c', engineId: 'ic', policy: 'Optional', detach: true }]);
});

test('confirmOverwrite allows overwriting that member only: a per-member option, never a global --overwrite', () => {
  const s = spec([{ name: 'a', claimName: 'ca' }, { name: 'b', claimName: 'cb', confirmOverwrite: true, readCost: 3, site: 'zone-b' }, { name: 'c', claimName: 'cc', confirmOverwrite: true }]);
  const o = observed({ spec: s, claims: { ca: claim('ca'), cb: claim('cb'), cc: claim('cc', 'n2') }, memberServers: { c: pod('vol-member-c', ['c'], '127.12.0.4') } });
  const args = argsOf(plan(o).actions);
  const members = args.flatMap((a, i) => (args[i - 1] === '--member' ? [a] : []));
  assert.deepEqual(members, ['/dev/shadow/a', '/dev/shadow/b#readCost=3,site=zone-b,overwrite', 'nbds://127.12.0.4:10810/member#overwrite']);
  assert.ok(!args.includes('--overwrite'));
});

test('the minicopy policy holds on return: Required is sent as Required, else Optional', () => {
  const eng = engine([{ id: 'ia', path: '/dev/shadow/a', state: 'InSync' }, { id: 'ib', path: '/dev/shadow/b', state: 'Removed' }]);
  const prev = { members: [{ name: 'a', id: 'ia', state: 'InSync' }, { name: 'b', id: 'ib', state: 'Detached' }] };
  for (const [policy, sent] of [['Required', 'Required'], ['Optional', 'Optional'], ['Never', 'Optional']] as const) {
    const p = plan(observed({ spec: spec(two, { minicopyPolicy: policy }), enginePod: pod('vol-engine', ['a', 'b']), engine: { kind: 'ok', status: eng }, previous: prev }));
    assert.deepEqual(p.actions.filter((a) => a.kind === 'engineReturn'), [{ kind: 'engineReturn', member: 'b', engineId: 'ib', minicopy: sent }], policy);
  }
});

test('a refused return (no usable bitmap under Required) stays in Ready and is asked again only when something changes', () => {
  const eng0 = engine([{ id: 'ia', path: '/dev/shadow/a', state: 'InSync' }, { id: 'ib', path: '/dev/shadow/b', state: 'Removed' }]);
  const eng = { ...eng0, settings: { ...eng0.settings, minicopyPolicy: 'Required' as const } };
  const o = observed({
    spec: spec(two, { minicopyPolicy: 'Required' }), enginePod: pod('vol-engine', ['a', 'b']), engine: { kind: 'ok', status: eng },
    previous: { members: [{ name: 'a', id: 'ia', state: 'InSync' }, { name: 'b', id: 'ib', state: 'Detached' }] },
  });
  const held = { fingerprint: fingerprint(o, eng), reason: 'BitmapRequired', message: 'member b: ENG_BITMAP_REQUIRED: no usable write bitmap' };
  const p = plan({ ...o, refusals: { 'engineReturn:b': held } });
  assert.deepEqual(kinds(p.actions), []);
  assert.equal(ready(p)?.status, 'False');
  assert.equal(ready(p)?.reason, 'BitmapRequired');
  assert.equal(ready(p)?.message, held.message);
  // The user changed the spec (new generation), or the engine's membership changed: asked again.
  for (const changed of [{ ...o, generation: 2 }, { ...o, engine: { kind: 'ok' as const, status: { ...eng, generation: 4 } } }]) {
    const q = plan({ ...changed, refusals: { 'engineReturn:b': held } });
    assert.deepEqual(q.actions.filter((a) => a.kind === 'engineReturn'), [{ kind: 'engineReturn', member: 'b', engineId: 'ib', minicopy: 'Required' }]);
  }
});

test('the engine\'s site is the zone of its node, when the node is known', () => {
  const site = (a: string[]) => (a.includes('--site') ? a[a.indexOf('--site') + 1] : undefined);
  assert.equal(site(argsOf(plan(observed({ nodeZones: { n1: 'zone-a' } })).actions)), 'zone-a');
  assert.equal(site(argsOf(plan(observed({ nodeZones: { n1: null } })).actions)), undefined, 'a node without a zone label');
  const pinned = observed({ spec: spec(two, { engine: { nodeName: 'n9' } }), claims: { ca: claim('ca', null), cb: claim('cb', null) }, nodeZones: { n9: 'zone-9' } });
  assert.equal(site(argsOf(plan(pinned).actions)), 'zone-9');
  const unknown = observed({ claims: { ca: claim('ca', null), cb: claim('cb', null) }, nodeZones: {} });
  assert.equal(site(argsOf(plan(unknown).actions)), undefined, 'scheduled by the cluster: node unknown');
});

test('the engine pod records its configuration; a change of export or engine settings restarts it cleanly', () => {
  const created = podOf(plan(observed({})).actions);
  const want = engineConfig(spec(two), 'img:1');
  assert.equal(created.metadata.annotations['shadowset.dev/config-hash'], configHash(want));
  assert.equal(created.metadata.annotations['shadowset.dev/config'], configText(want));
  const running = (s: ReturnType<typeof spec>, image = 'img:1'): Observed => observed({
    spec: s, engineImage: image, enginePod: pod('vol-engine', ['a', 'b'], '127.11.0.2', { configHash: configHash(want), config: configText(want) }),
    engine: { kind: 'ok', status: inSync('a', 'b') },
  });
  const cases: [Observed, RegExp][] = [
    [running(spec(two, { export: { port: 10900 } })), /export\.port 10809 → 10900/],
    [running(spec(two, { export: { tlsSecretName: 'tls' } })), /export\.tlsSecretName unset → tls/],
    [running(spec(two, { engine: { resources: { limits: { memory: '1Gi' } } } })), /engine\.resources unset → \{"limits":\{"memory":"1Gi"\}\}/],
    [running(spec(two, { engine: { nodeSelector: { disk: 'ssd' } } })), /engine\.nodeSelector/],
    [running(spec(two), 'img:2'), /image img:1 → img:2/],
  ];
  for (const [o, what] of cases) {
    const p = plan(o);
    assert.deepEqual(kinds(p.actions), ['deleteEnginePod'], String(what));
    const ev = events(p.actions);
    assert.deepEqual(ev.map((e) => e.reason), ['EngineRestarted']);
    assert.match(ev[0]!.message, what);
    assert.equal(ready(p)?.reason, 'EnginePending');
  }
  // A pod being deleted is waited for; then the new one is created (and the Service applied).
  const stopping = running(spec(two, { export: { port: 10900 } }));
  assert.deepEqual(kinds(plan({ ...stopping, enginePod: { ...stopping.enginePod!, deleting: true } }).actions), []);
  const gone = plan({ ...stopping, enginePod: null, engine: { kind: 'none' } });
  assert.deepEqual(kinds(gone.actions), ['ensureSecrets', 'createEnginePod', 'applyService']);
  assert.ok(argsOf(gone.actions).includes('$(POD_IP):10900'));
  // Settings the engine takes live do not restart it.
  const live = plan(running(spec(two, { throttle: { copyBytesPerSecond: 1048576 }, memberTimeoutSeconds: 9, minicopyPolicy: 'Required' })));
  assert.deepEqual(kinds(live.actions), ['engineSettings']);
  // A pod made by an older operator (no record) is restarted once.
  const old = plan({ ...running(spec(two)), enginePod: pod('vol-engine', ['a', 'b'], '127.11.0.2', { configHash: '' }) });
  assert.match(events(old.actions)[0]?.message ?? '', /predates/);
});

test('the Service follows export.serviceType and export.port, and is re-applied if missing', () => {
  const o = observed({ enginePod: pod('vol-engine', ['a', 'b']), engine: { kind: 'ok', status: inSync('a', 'b') } });
  assert.deepEqual(kinds(plan(o).actions), []);
  const svc = (p: ReturnType<typeof plan>) => (p.actions.find((a) => a.kind === 'applyService') as Extract<Action, { kind: 'applyService' }>).service as { spec: { type: string; ports: { port: number }[] } };
  const typed = plan({ ...o, spec: spec(two, { export: { serviceType: 'NodePort' } }), service: { type: 'ClusterIP', port: 10809 } });
  assert.deepEqual(kinds(typed.actions), ['applyService'], 'a type change needs no engine restart');
  assert.equal(svc(typed).spec.type, 'NodePort');
  assert.deepEqual(kinds(plan({ ...o, service: null }).actions), ['applyService']);
});

test('an engine that does not serve with stale member arguments is recreated; one that serves returns its members instead', () => {
  const withServer = spec([{ name: 'a', claimName: 'ca' }, { name: 'b', claimName: 'cb' }]);
  const claims = { ca: claim('ca', 'n1'), cb: claim('cb', 'n2') };
  const enginePod = pod('vol-engine', ['a'], '127.11.0.2', { memberLocations: ['/dev/shadow/a', 'nbds://127.12.0.5:10810/member'] });
  const servers = { b: pod('vol-member-b', ['b'], '127.12.0.9') };
  const down = (engineView: Observed['engine'], sinceMs: number | null) =>
    plan(observed({ spec: withServer, claims, enginePod, memberServers: servers, engine: engineView, engineDownSinceMs: sinceMs }));
  const unreachable = { kind: 'unreachable' as const, message: 'connect ECONNREFUSED' };
  const recreated = down(unreachable, 1_000_000 - 31_000);
  assert.deepEqual(kinds(recreated.actions), ['deleteEnginePod']);
  assert.match(events(recreated.actions)[0]!.message, /stale: member location nbds:\/\/127\.12\.0\.5:10810\/member/);
  assert.deepEqual(kinds(down(unreachable, 1_000_000 - 5_000).actions), [], 'not for a moment\'s silence');
  assert.deepEqual(kinds(down({ kind: 'refused', code: 'ENG_IO', message: 'cannot open' }, 1_000_000).actions), ['deleteEnginePod'], 'a refusal is final');
  // Fresh arguments are not stale: an engine that does not serve for another reason is left alone.
  const fresh = { ...enginePod, memberLocations: ['/dev/shadow/a', 'nbds://127.12.0.9:10810/member'] };
  assert.deepEqual(kinds(plan(observed({ spec: withServer, claims, enginePod: fresh, memberServers: servers, engine: unreachable, engineDownSinceMs: 0 })).actions), []);
  // A claim attached for a member that is no longer that claim's.
  const moved = plan(observed({ spec: spec([{ name: 'a', claimName: 'cz' }, { name: 'b', claimName: 'cb' }]), claims: { cz: claim('cz'), cb: claim('cb') }, enginePod: pod('vol-engine', ['a', 'b']), engine: unreachable, engineDownSinceMs: 0 }));
  assert.match(events(moved.actions)[0]?.message ?? '', /claim ca is attached as member a/);
  // Serving: the member the engine recorded as removed is returned at its member server's current address.
  const eng = engine([{ id: 'ia', path: '/dev/shadow/a', state: 'InSync' }, { id: 'ib', path: 'nbds://127.12.0.5:10810/member', state: 'Removed' }]);
  const serving = plan(observed({
    spec: withServer, claims, enginePod, memberServers: servers, engine: { kind: 'ok', status: eng },
    previous: { members: [{ name: 'a', id: 'ia', state: 'InSync' }, { name: 'b', id: 'ib', state: 'InSync' }] },
  }));
  assert.deepEqual(serving.actions.filter((a) => a.kind !== 'event'), [{ kind: 'engineReturn', member: 'b', engineId: 'ib', minicopy: 'Optional', location: 'nbds://127.12.0.9:10810/member' }]);
});

test('the spec refuses a site or an NBD URI that would break the engine\'s argument syntax, and the reserved ports', () => {
  const bad: [object, RegExp][] = [
    [{ members: [{ name: 'a', claimName: 'c', site: 'east#overwrite' }] }, /label value/],
    [{ members: [{ name: 'a', claimName: 'c', site: 'a,b' }] }, /label value/],
    [{ members: [{ name: 'a', claimName: 'c', site: 'x'.repeat(64) }] }, /label value|63/],
    [{ members: [{ name: 'a', nbd: 'nbd://h:10809/e#overwrite' }] }, /without #/],
    [{ members: [{ name: 'a', claimName: 'c' }], export: { port: 8080 } }, /must not be 8080/],
    [{ members: [{ name: 'a', claimName: 'c' }], export: { port: 10810 } }, /must not be 8080 .* or 10810/],
  ];
  for (const [s, why] of bad) {
    const r = shadowSetSpecSchema.safeParse(s);
    assert.equal(r.success, false, JSON.stringify(s));
    assert.match(r.error!.issues.map((i) => i.message).join('; '), why);
  }
  assert.ok(shadowSetSpecSchema.safeParse({ members: [{ name: 'a', claimName: 'c', site: 'eu-west-1a' }], export: { port: 10811 } }).success);
});
