// Security wiring of the planner's objects: every listener authenticated with keys derived per set, pods
// without privilege, Secrets created (never read), a NetworkPolicy per set, and what status tells clients.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deriveSetKeys } from '../security/keys.js';
import { configText, engineConfig } from './engine-config.js';
import { claim, engine, events, kinds, observed, pod, spec } from './fixtures.js';
import { LOCKED_DOWN } from './pods.js';
import { plan } from './planner.js';
import type { Action } from './types.js';

interface Container { args: string[]; securityContext: Record<string, unknown>; volumeMounts: { name: string; mountPath: string; readOnly?: boolean }[] }
interface PodObj { spec: { containers: Container[]; volumes: { name: string; secret?: { secretName: string; defaultMode: number; items: { key: string; path: string }[] } }[] } }
const created = (a: Action[], kind: 'createEnginePod' | 'createMemberServer') => (a.find((x) => x.kind === kind) as { pod: unknown }).pod as PodObj;
const flag = (args: string[], name: string) => args.flatMap((x, i) => (args[i - 1] === name ? [x] : []));
const two = [{ name: 'a', claimName: 'ca' }, { name: 'b', claimName: 'cb' }];

test('the engine pod: token and member PSK from the internal Secret, the export PSK from the export Secret, allowed locations', () => {
  const o = observed({ spec: spec([...two, { name: 'x', nbd: 'nbd://storage.example:10809/x' }]) });
  const c = created(plan(o).actions, 'createEnginePod').spec.containers[0]!;
  assert.deepEqual(flag(c.args, '--control-token-file'), ['/etc/shadowset/internal/control-token']);
  assert.deepEqual(flag(c.args, '--member-psk-file'), ['/etc/shadowset/internal/member.psk']);
  assert.deepEqual(flag(c.args, '--export-psk-file'), ['/etc/shadowset/export/psk']);
  assert.deepEqual(flag(c.args, '--allow-location'), ['/dev/shadow/', 'nbds://', 'nbd://storage.example:10809/x']);
  assert.deepEqual(flag(c.args, '--tls-cert'), []);
  const volumes = created(plan(o).actions, 'createEnginePod').spec.volumes;
  assert.deepEqual(volumes.find((v) => v.name === 'internal')?.secret, {
    secretName: 'vol-shadowset-internal', defaultMode: 0o400, items: [{ key: 'control-token', path: 'control-token' }, { key: 'member.psk', path: 'member.psk' }],
  });
  assert.deepEqual(volumes.find((v) => v.name === 'export')?.secret, { secretName: 'vol-shadowset-export', defaultMode: 0o400, items: [{ key: 'psk', path: 'psk' }] });
  assert.deepEqual(c.volumeMounts.filter((m) => m.readOnly).map((m) => m.mountPath), ['/etc/shadowset/internal', '/etc/shadowset/export']);
});

test('engine and member-server containers run without privilege, capabilities or a writable root', () => {
  const o = observed({ claims: { ca: claim('ca', 'n1'), cb: claim('cb', 'n2') } });
  const ms = created(plan(o).actions, 'createMemberServer');
  const eng = created(plan({ ...o, memberServers: { b: pod('vol-member-b', ['b'], '127.12.0.2') } }).actions, 'createEnginePod');
  for (const c of [ms.spec.containers[0]!, eng.spec.containers[0]!]) {
    assert.deepEqual(c.securityContext, LOCKED_DOWN);
    assert.equal(c.securityContext.privileged, false);
    assert.equal(c.securityContext.allowPrivilegeEscalation, false);
    assert.equal(c.securityContext.readOnlyRootFilesystem, true);
    assert.deepEqual(c.securityContext.capabilities, { drop: ['ALL'] });
    assert.deepEqual(c.securityContext.seccompProfile, { type: 'RuntimeDefault' });
  }
  // The member server: TLS-PSK with the member key, and no access to the control token.
  const m = ms.spec.containers[0]!;
  assert.deepEqual(flag(m.args, '--psk-file'), ['/etc/shadowset/internal/member.psk']);
  assert.deepEqual(ms.spec.volumes.find((v) => v.name === 'internal')?.secret?.items, [{ key: 'member.psk', path: 'member.psk' }]);
  assert.ok(flag(eng.spec.containers[0]!.args, '--member').includes('nbds://127.12.0.2:10810/member'));
});

test('the set\'s Secrets are created before its pods, with keys derived from the operator key and the set\'s uid', () => {
  const o = observed({});
  const p = plan(o);
  assert.deepEqual(kinds(p.actions).slice(0, 1), ['ensureSecrets']);
  const secrets = (p.actions[0] as Extract<Action, { kind: 'ensureSecrets' }>).secrets as { metadata: { name: string; ownerReferences: { uid: string }[] }; data: Record<string, string> }[];
  const text = (b: string) => Buffer.from(b, 'base64').toString('utf8');
  const want = deriveSetKeys(Buffer.alloc(32, 7), { namespace: 'ns', name: 'vol', uid: 'u1' });
  assert.deepEqual(secrets.map((s) => s.metadata.name), ['vol-shadowset-internal', 'vol-shadowset-export']);
  assert.deepEqual(Object.fromEntries(Object.entries(secrets[0]!.data).map(([k, v]) => [k, text(v)])), { 'control-token': want.controlToken, 'member.psk': `${want.memberPsk}\n` });
  assert.deepEqual(Object.fromEntries(Object.entries(secrets[1]!.data).map(([k, v]) => [k, text(v)])), { psk: `${want.exportPsk}\n` });
  for (const s of secrets) assert.equal(s.metadata.ownerReferences[0]!.uid, 'u1', 'owned by the set');
  assert.match(want.exportPsk, /^shadowset-export:[0-9a-f]{64}$/);
  assert.match(want.memberPsk, /^shadowset-member:[0-9a-f]{64}$/);
  assert.match(want.controlToken, /^[0-9a-f]{64}$/);
});

test('derived keys: one per purpose, new for a re-created set (new uid), never from a short key', () => {
  const key = Buffer.alloc(32, 1);
  const a = deriveSetKeys(key, { namespace: 'ns', name: 'vol', uid: 'u1' });
  assert.deepEqual(deriveSetKeys(key, { namespace: 'ns', name: 'vol', uid: 'u1' }), a, 'deterministic: the operator computes them again');
  const b = deriveSetKeys(key, { namespace: 'ns', name: 'vol', uid: 'u2' });
  assert.notEqual(a.controlToken, b.controlToken);
  assert.notEqual(a.exportPsk, b.exportPsk);
  const other = deriveSetKeys(Buffer.alloc(32, 2), { namespace: 'ns', name: 'vol', uid: 'u1' });
  assert.notEqual(a.controlToken, other.controlToken);
  const hex = (line: string) => line.split(':')[1];
  assert.equal(new Set([a.controlToken, hex(a.memberPsk), hex(a.exportPsk)]).size, 3, 'purposes do not share a key');
  assert.throws(() => deriveSetKeys(Buffer.alloc(31), { namespace: 'ns', name: 'vol', uid: 'u1' }), /at least 32/);
});

test('a NetworkPolicy per set: HTTP from the operator\'s pods, the member port from the set\'s engine, the export open', () => {
  const p = plan(observed({}));
  const np = (p.actions.find((a) => a.kind === 'applyNetworkPolicy') as Extract<Action, { kind: 'applyNetworkPolicy' }>).policy as { metadata: { name: string }; spec: unknown };
  assert.equal(np.metadata.name, 'vol-shadowset');
  assert.deepEqual(np.spec, {
    podSelector: { matchLabels: { 'shadowset.dev/shadowset': 'vol' } },
    policyTypes: ['Ingress'],
    ingress: [
      { from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'shadowset-system' } }, podSelector: { matchLabels: { app: 'op' } } }], ports: [{ protocol: 'TCP', port: 8080 }] },
      { from: [{ podSelector: { matchLabels: { 'shadowset.dev/shadowset': 'vol', 'shadowset.dev/role': 'engine' } } }], ports: [{ protocol: 'TCP', port: 10810 }] },
      { ports: [{ protocol: 'TCP', port: 10809 }] },
    ],
  });
  // Running: put back if missing, or if it no longer fits the export port.
  const running = observed({ enginePod: pod('vol-engine', ['a', 'b']), engine: { kind: 'ok', status: engine([{ id: 'ia', path: '/dev/shadow/a', state: 'InSync' }, { id: 'ib', path: '/dev/shadow/b', state: 'InSync' }]) } });
  assert.deepEqual(kinds(plan(running).actions), []);
  assert.deepEqual(kinds(plan({ ...running, networkPolicyFingerprint: null }).actions), ['applyNetworkPolicy']);
});

test('status: the endpoint is nbds:// and names the export Secret; Secrets made by the operator are kept in status', () => {
  const eng = engine([{ id: 'ia', path: '/dev/shadow/a', state: 'InSync' }, { id: 'ib', path: '/dev/shadow/b', state: 'InSync' }]);
  const secrets = [{ name: 'vol-shadowset-internal', uid: 's1' }, { name: 'vol-shadowset-export', uid: 's2' }];
  const p = plan(observed({ enginePod: pod('vol-engine', ['a', 'b']), engine: { kind: 'ok', status: eng }, previous: { secrets } }));
  assert.equal(p.status.endpoint, 'nbds://vol.ns.svc:10809/shadow');
  assert.equal(p.status.exportSecret, 'vol-shadowset-export');
  assert.deepEqual(p.status.secrets, secrets);
});

test('an engine that refuses the operator\'s token says which Secret is not this set\'s, and is not replaced for it', () => {
  const p = plan(observed({ enginePod: pod('vol-engine', ['a', 'b']), engine: { kind: 'refused', code: 'ENG_UNAUTHORIZED', message: 'a valid bearer token is required' } }));
  assert.deepEqual(kinds(p.actions), []);
  const ready = p.status.conditions?.find((c) => c.type === 'Ready');
  assert.equal(ready?.reason, 'EngineUnauthorized');
  assert.match(ready?.message ?? '', /Secret vol-shadowset-internal was not made for this ShadowSet \(uid u1\)/);
  assert.deepEqual(events(p.actions).map((e) => [e.type, e.reason]), [['Warning', 'Refused']]);
});

test('a pod held by the kubelet (a TLS Secret without ca.crt) shows why in Ready', () => {
  const held = pod('vol-engine', ['a', 'b'], '127.11.0.2', { phase: 'Pending', ready: false, waiting: 'CreateContainerConfigError: couldn\'t find key ca.crt in Secret ns/vol-tls' });
  const o = observed({ spec: spec(two, { export: { tlsSecretName: 'vol-tls' } }), enginePod: held, engine: { kind: 'none' } });
  const ready = plan(o).status.conditions?.find((c) => c.type === 'Ready');
  assert.equal(ready?.reason, 'EnginePending');
  assert.match(ready?.message ?? '', /couldn't find key ca\.crt/);
});

test('a new NBD member in the spec restarts the engine: its API may add only the URIs it was started with', () => {
  const eng = engine([{ id: 'ia', path: '/dev/shadow/a', state: 'InSync' }, { id: 'ib', path: '/dev/shadow/b', state: 'InSync' }]);
  const config = configText(engineConfig(spec(two), 'img:1'));
  const before = observed({ enginePod: pod('vol-engine', ['a', 'b'], '127.11.0.2', { config }), engine: { kind: 'ok', status: eng } });
  assert.deepEqual(kinds(plan(before).actions), []);
  const grown = { ...before, spec: spec([...two, { name: 'x', nbd: 'nbd://storage.example:10809/x' }]) };
  const p = plan(grown);
  assert.deepEqual(kinds(p.actions), ['deleteEnginePod']);
  assert.match(events(p.actions)[0]!.message, /members\.nbd \[\] → \["nbd:\/\/storage\.example:10809\/x"\]/);
});
