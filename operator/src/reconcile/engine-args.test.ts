// The engine's command lines the operator builds, parsed by the engine's own parsers: a flag renamed,
// dropped or given another meaning on either side fails here, not in a pod's crash loop.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { INTENT_LOG_CAP_DEFAULT_MIB, engineProcessEnv } from '@shadowset/engine/api';
import { parseServeArgs, parseServeDeviceArgs } from '@shadowset/engine/cli-args';
import { z } from 'zod';
import type { MemberSpec, ShadowSetSpec } from '../api/shadowset.js';
import { allowedNbd } from './engine-config.js';
import { spec } from './fixtures.js';
import { DEVICE_DIR, HTTP_PORT, MEMBER_PORT, enginePod, memberLocation, memberServerPod, memberServerUri, type EnginePodInput } from './pods.js';

const owner = { name: 'vol', namespace: 'ns', uid: 'u1' };
/** What the kubelet puts in for the pods' fieldRef variables. */
const FIELDS: Record<string, string> = { 'status.podIP': '10.244.1.7', 'spec.nodeName': 'node-a' };

const podView = z.object({
  spec: z.object({
    containers: z.array(z.object({
      command: z.array(z.string()),
      args: z.array(z.string()),
      env: z.array(z.object({ name: z.string(), value: z.string().optional(), valueFrom: z.object({ fieldRef: z.object({ fieldPath: z.string() }) }).optional() })),
      volumeDevices: z.array(z.object({ name: z.string(), devicePath: z.string() })),
      volumeMounts: z.array(z.object({ name: z.string(), mountPath: z.string() })),
    })).length(1),
    volumes: z.array(z.object({ name: z.string(), secret: z.object({ secretName: z.string(), items: z.array(z.object({ key: z.string(), path: z.string() })) }).optional() })),
  }),
});
type PodView = z.infer<typeof podView>;

/** The container's arguments as the process gets them: `$(VAR)` expanded from the container's env, as the kubelet does. */
function processArgs(p: PodView): string[] {
  const c = p.spec.containers[0]!;
  assert.deepEqual(c.command, ['shadow-engine']);
  const env = new Map(c.env.map((e) => [e.name, e.value ?? FIELDS[e.valueFrom?.fieldRef.fieldPath ?? '']]));
  const args = c.args.map((a) => a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (all, name: string) => env.get(name) ?? all));
  for (const a of args) assert.ok(!a.includes('$('), `argument ${a} names a variable the container does not have`);
  return args;
}

/** The Secret and key a path in the container is, through its mounts (null: not a mounted Secret file). */
function secretFile(p: PodView, path: string): string | null {
  const c = p.spec.containers[0]!;
  for (const m of c.volumeMounts) {
    if (!path.startsWith(`${m.mountPath}/`)) continue;
    const item = p.spec.volumes.find((v) => v.name === m.name)?.secret?.items.find((i) => i.path === path.slice(m.mountPath.length + 1));
    const secretName = p.spec.volumes.find((v) => v.name === m.name)?.secret?.secretName;
    if (item && secretName) return `${secretName}/${item.key}`;
  }
  return null;
}

/** Every engine pod shape the operator makes: devices and NBD members with every member option, both export modes, with and without the optional flags. */
function engineInputs(): EnginePodInput[] {
  const plain = spec([{ name: 'a', claimName: 'ca' }, { name: 'b', claimName: 'cb' }]);
  const rich = spec([
    { name: 'a', claimName: 'ca', readCost: 5, site: 'zone-a', confirmOverwrite: true },
    { name: 'b', claimName: 'cb', readCost: 0 },
    { name: 'n', nbd: 'nbd://storage.example:10809/x', site: 'east.1' },
    { name: 'u', nbd: 'nbd+unix:///export?socket=/run/nbd.sock', confirmOverwrite: true },
  ], {
    minicopyPolicy: 'Required', memberTimeoutSeconds: 3, throttle: { copyBytesPerSecond: 1048576, mergeBytesPerSecond: 65536, maxCopies: 2 },
    export: { port: 10900, tlsSecretName: 'vol-tls' }, engine: { intentLogCapMiB: 64 }, size: 48 * 1024 * 1024,
  });
  const never = spec([{ name: 'a', claimName: 'ca' }], { minicopyPolicy: 'Never', throttle: { copyBytesPerSecond: 0, mergeBytesPerSecond: 0 } });
  const m = (s: ShadowSetSpec, name: string) => s.members.find((x) => x.name === name)!;
  return [
    { owner, spec: plain, image: 'img:1', node: null, site: null, attached: plain.members, remote: [], memberTimeoutSeconds: 120 },
    {
      owner, spec: rich, image: 'img:1', node: 'n1', site: 'zone-a', attached: [m(rich, 'a')],
      remote: [{ member: m(rich, 'b'), location: memberServerUri('10.244.2.9') }, { member: m(rich, 'n'), location: m(rich, 'n').nbd! }, { member: m(rich, 'u'), location: m(rich, 'u').nbd! }],
      memberTimeoutSeconds: 3, minGeneration: 42,
    },
    { owner, spec: never, image: 'img:1', node: 'n1', site: null, attached: never.members, remote: [], memberTimeoutSeconds: 86400, minGeneration: 0 },
  ];
}

test('every engine command line the operator builds parses with the engine\'s own parser, to what the operator meant', () => {
  for (const input of engineInputs()) {
    const pod = podView.parse(enginePod(input));
    const args = processArgs(pod);
    assert.equal(args[0], 'serve');
    const a = parseServeArgs(args.slice(1));
    const s = input.spec;
    const wanted = [
      ...input.attached.map((m) => ({ m, location: `${DEVICE_DIR}/${m.name}` })),
      ...input.remote.map((r) => ({ m: r.member, location: r.location })),
    ];
    const asOperator = (m: MemberSpec, location: string) => ({ location, readCost: m.readCost, site: m.site ?? '', overwrite: m.confirmOverwrite });
    assert.deepEqual(a.members.map((x) => ({ location: x.location, readCost: x.readCost ?? 1, site: x.site ?? '', overwrite: x.overwrite ?? false })),
      wanted.map((w) => asOperator(w.m, w.location)));
    // The operator reads its pods' member locations back (gather): the same split as the engine's.
    const memberArgs = args.flatMap((x, i) => (args[i - 1] === '--member' ? [x] : []));
    assert.deepEqual(memberArgs.map(memberLocation), a.members.map((x) => x.location));
    // Each attached member's device is in the pod.
    for (const m of input.attached) assert.ok(pod.spec.containers[0]!.volumeDevices.some((d) => d.devicePath === `${DEVICE_DIR}/${m.name}`));
    // The engine's memory flag reaches it even when started as `node <script>` (the simulated nodes).
    const env = Object.fromEntries(pod.spec.containers[0]!.env.flatMap((e) => (e.value === undefined ? [] : [[e.name, e.value]])));
    assert.deepEqual(env, engineProcessEnv({}));

    assert.deepEqual(a.listen, { host: FIELDS['status.podIP'], port: s.export.port });
    assert.deepEqual(a.http, { host: FIELDS['status.podIP'], port: HTTP_PORT });
    assert.equal(a.memberTimeoutMs, input.memberTimeoutSeconds * 1000);
    assert.equal(a.faultPolicy, s.minicopyPolicy);
    assert.deepEqual([a.holdOnFailure, a.include, a.keepRemoved, a.overwrite, a.intentLog], [true, true, true, false, true]);
    assert.ok(a.stateFile?.startsWith('/run/shadow/'), 'the state file is on the pod\'s own volume');
    assert.equal(a.minGeneration, input.minGeneration || undefined);
    assert.equal(a.site, input.site ?? undefined);
    assert.deepEqual([a.resync.copyBytesPerSecond ?? 0, a.resync.mergeBytesPerSecond ?? 0], [s.throttle.copyBytesPerSecond, s.throttle.mergeBytesPerSecond]);
    assert.equal(a.intentLogCapBytes, (s.engine.intentLogCapMiB ?? INTENT_LOG_CAP_DEFAULT_MIB) * 1024 * 1024, 'the intent log cap');
    assert.equal(a.allowLocations.length, 2 + allowedNbd(s).length);
    assert.equal(a.newSetSize, s.size, 'a new set is made at spec.size');
    if (input.node === 'n1' && input.site) assert.equal(a.newSetSize, 48 * 1024 * 1024, 'the rich spec carries its size through');

    // Key files are the set's Secrets, mounted: the control token and the member PSK, and the export's TLS.
    assert.equal(secretFile(pod, a.controlTokenFile!), 'vol-shadowset-internal/control-token');
    assert.equal(secretFile(pod, a.memberPskFile!), 'vol-shadowset-internal/member.psk');
    if (s.export.tlsSecretName) {
      assert.equal(a.exportPskFile, null);
      assert.deepEqual([a.tls && secretFile(pod, a.tls.cert), a.tls && secretFile(pod, a.tls.key), a.tls?.ca && secretFile(pod, a.tls.ca), a.tls?.required],
        ['vol-tls/tls.crt', 'vol-tls/tls.key', 'vol-tls/ca.crt', true]);
    } else {
      assert.equal(a.tls, null);
      assert.equal(secretFile(pod, a.exportPskFile!), 'vol-shadowset-export/psk');
    }
  }
});

test('every member-server command line parses with the engine\'s own parser; the engine reaches it at the URI the operator gives it', () => {
  const s = spec([{ name: 'a', claimName: 'ca' }, { name: 'b', claimName: 'cb', readCost: 3, site: 'zone-b', confirmOverwrite: true }]);
  for (const m of s.members) {
    for (const node of [null, 'n2']) {
      const pod = podView.parse(memberServerPod(owner, m, 'img:1', node));
      const args = processArgs(pod);
      assert.equal(args[0], 'serve-device');
      const d = parseServeDeviceArgs(args.slice(1));
      assert.equal(d.device, `${DEVICE_DIR}/${m.name}`);
      assert.ok(pod.spec.containers[0]!.volumeDevices.some((v) => v.devicePath === d.device), 'the device is the member\'s volume');
      assert.deepEqual(d.listen, { host: FIELDS['status.podIP'], port: MEMBER_PORT });
      // The engine's --member for it: TLS-PSK (nbds), this port and this export name, the PSK the engine presents.
      assert.equal(memberServerUri(d.listen.host), `nbds://${d.listen.host}:${d.listen.port}/${d.exportName}`);
      assert.equal(secretFile(pod, d.pskFile!), 'vol-shadowset-internal/member.psk');
    }
  }
});

test('a flag the engine does not know fails the parse: the check above can fail', () => {
  const pod = podView.parse(enginePod(engineInputs()[0]!));
  const args = processArgs(pod);
  assert.throws(() => parseServeArgs([...args.slice(1), '--fault-policy', 'Never']));
  assert.throws(() => parseServeArgs(args.slice(1).map((x) => (x === '--minicopy-policy' ? '--policy' : x))));
  const ms = processArgs(podView.parse(memberServerPod(owner, spec([{ name: 'a', claimName: 'ca' }]).members[0]!, 'img:1', null)));
  assert.throws(() => parseServeDeviceArgs(ms.slice(1).filter((x, i, all) => x !== '--psk-file' && all[i - 1] !== '--psk-file')), 'off loopback without its PSK');
});
