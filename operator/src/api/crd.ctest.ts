// The generated CRDs against a real kube-apiserver: accepted, established, defaults applied, and the
// OpenAPI and CEL rules refusing what can be refused statically.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { CustomObjectsApi } from '@kubernetes/client-node';
import { startControlPlane, type ControlPlane } from '@shadowset/e2e';
import { installCrds } from '@shadowset/testkit/cluster/local-cluster';
import { GROUP, VERSION } from './group.js';

let cp: ControlPlane;
let custom: CustomObjectsApi;

before(async () => {
  cp = await startControlPlane();
  // buildCrds() as raw JSON (a typed client would drop `default` and the x-kubernetes-* extensions), established.
  await installCrds(cp);
  custom = cp.kubeConfig.makeApiClient(CustomObjectsApi);
});
after(async () => {
  await cp?.stop();
});

const create = (name: string, spec: unknown) =>
  custom.createNamespacedCustomObject({
    group: GROUP, version: VERSION, namespace: 'default', plural: 'shadowsets',
    body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'ShadowSet', metadata: { name }, spec },
  }) as Promise<{ spec: Record<string, unknown> }>;

async function refused(name: string, spec: unknown, message: RegExp): Promise<void> {
  await assert.rejects(create(name, spec), (e: unknown) => {
    const body = String((e as { body?: unknown }).body ?? e);
    assert.match(body, message);
    return true;
  });
}

test('a valid two-member ShadowSet is accepted with defaults filled in', async () => {
  const o = await create('two', { members: [{ name: 'a', claimName: 'pvc-a' }, { name: 'b', claimName: 'pvc-b' }] });
  assert.equal(o.spec.minicopyPolicy, 'Optional');
  assert.equal(o.spec.memberTimeoutSeconds, undefined, 'left to the operator\'s default');
  assert.equal((o.spec.members as { state: string }[])[0]!.state, 'Active');
});

test('seven members, duplicate names, duplicate claims and bad enums are refused by the API server', async () => {
  const seven = Array.from({ length: 7 }, (_, i) => ({ name: `m${i}`, claimName: `pvc-${i}` }));
  await refused('seven', { members: seven }, /must have at most 6 items|Too many/);
  await refused('dup', { members: [{ name: 'a', claimName: 'x' }, { name: 'a', claimName: 'y' }] }, /Duplicate value/);
  await refused('dupclaim', { members: [{ name: 'a', claimName: 'x' }, { name: 'b', claimName: 'x' }] }, /a claim may back only one member/);
  await refused('both', { members: [{ name: 'a', claimName: 'x', nbd: 'nbd://h/e' }] }, /exactly one of claimName or nbd/);
  await refused('policy', { members: [{ name: 'a', claimName: 'x' }], minicopyPolicy: 'Sometimes' }, /Unsupported value/);
  await refused('source', { members: [{ name: 'a', claimName: 'x' }], copySource: 'zz' }, /copySource must be/);
  await refused('detached', { members: [{ name: 'a', claimName: 'x', state: 'Detached' }] }, /at least one member must be Active/);
});

test('the export port may not be the engine\'s HTTP port or the member port; site and NBD URIs fit the engine\'s argument syntax', async () => {
  await refused('port8080', { members: [{ name: 'a', claimName: 'x' }], export: { port: 8080 } }, /export\.port must not be 8080 \(the engine's HTTP API\) or 10810/);
  await refused('port10810', { members: [{ name: 'a', claimName: 'x' }], export: { port: 10810 } }, /export\.port must not be 8080/);
  await refused('sitehash', { members: [{ name: 'a', claimName: 'x', site: 'east#overwrite' }] }, /spec\.members\[0\]\.site/);
  await refused('sitecomma', { members: [{ name: 'a', claimName: 'x', site: 'a,b' }] }, /spec\.members\[0\]\.site/);
  await refused('nbdhash', { members: [{ name: 'a', nbd: 'nbd://h:10809/e#overwrite' }] }, /spec\.members\[0\]\.nbd/);
  const ok = await create('zoned', { members: [{ name: 'a', claimName: 'x', site: 'eu-west-1a' }], export: { port: 10811 } });
  assert.equal((ok.spec.export as { port: number }).port, 10811);
});

test('a spec cannot choose the engine image: engine.image is not in the schema and is dropped', async () => {
  const o = await create('imaged', { members: [{ name: 'a', claimName: 'x' }], engine: { image: 'attacker/image:1', nodeName: 'n1' } });
  assert.deepEqual(o.spec.engine, { nodeName: 'n1' });
});

test('WriteBitmap specs are immutable', async () => {
  const base = { group: GROUP, version: VERSION, namespace: 'default', plural: 'writebitmaps' };
  await custom.createNamespacedCustomObject({ ...base, body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'WriteBitmap', metadata: { name: 'b1' }, spec: { shadowSet: 's', bitmapId: 'x', member: 'a' } } });
  await assert.rejects(
    custom.patchNamespacedCustomObject({ ...base, name: 'b1', body: [{ op: 'replace', path: '/spec/member', value: 'b' }] }),
    (e: unknown) => /immutable/.test(String((e as { body?: unknown }).body ?? e)),
  );
});
