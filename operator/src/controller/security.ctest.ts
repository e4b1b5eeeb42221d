// The set's listeners as an outsider meets them, against real engines and member servers in the local
// cluster: the control API wants the set's token, the export and the member servers the set's PSKs; the
// Secrets holding them are the operator's (created, owned by the set, deleted with it by uid) and one made
// by someone else under that name is never overwritten.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from '@shadowset/e2e';
import { shadowSetSpecSchema } from '../api/shadowset.js';
import { R } from '../kube/client.js';
import { networkPolicy, policyFingerprint } from '../reconcile/set-objects.js';
import { Cluster, cond, run, type Status } from '@shadowset/testkit/cluster/cluster-fixture';

const NS = 'secure';
const c = new Cluster();
let dir: string;

before(async () => {
  await c.start(['node-a', 'node-b']);
  await c.namespace(NS);
  for (const n of ['a1', 'a2', 'a3']) await c.blockClaim(NS, n, 'node-a');
  await c.blockClaim(NS, 'b1', 'node-b');
  dir = await mkdtemp(join(tmpdir(), 'shadowset-sec-'));
});
after(async () => {
  await c.stop();
  await rm(dir, { recursive: true, force: true });
});

const allInSync = (n: number) => (s: Status) => s.membersInSync === `${n}/${n}` && s.state === 'Steady' && cond(s, 'Ready')?.status === 'True';
/** nbdinfo --size: the output, or the failure with its message. */
async function nbdinfo(uri: string): Promise<{ ok: boolean; out: string }> {
  try {
    const r = await run('nbdinfo', ['--size', uri], { timeout: 20_000 });
    return { ok: true, out: r.stdout.trim() };
  } catch (e) {
    return { ok: false, out: String((e as { stderr?: string }).stderr ?? e) };
  }
}
async function pskFile(name: string, line: string): Promise<string> {
  const f = join(dir, name);
  await writeFile(f, `${line}\n`, { mode: 0o600 });
  return f;
}

test('the engine API answers only the set\'s token; the export only TLS with the set\'s export PSK', async () => {
  await c.apply(NS, 'sec', { members: [{ name: 'm1', claimName: 'a1' }, { name: 'm2', claimName: 'b1' }] });
  const s = await c.until(NS, 'sec', 'in sync', allInSync(2), 90_000);
  assert.equal(s.endpoint, 'nbds://sec.secure.svc:10809/shadow');
  assert.equal((s as { exportSecret?: string }).exportSecret, 'sec-shadowset-export');
  const ip = await c.enginePodIP(NS, 'sec');
  const keys = await c.keys(NS, 'sec');
  // Control API: no token, a wrong token → 401 before anything is done; /healthz stays open for probes.
  for (const headers of [{}, { authorization: `Bearer ${'0'.repeat(64)}` }] as Record<string, string>[]) {
    const res = await fetch(`http://${ip}:8080/v1/status`, { headers });
    assert.equal(res.status, 401);
    assert.equal(((await res.json()) as { code: string }).code, 'ENG_UNAUTHORIZED');
    const add = await fetch(`http://${ip}:8080/v1/members/add`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify({ location: '/dev/sda' }) });
    assert.equal(add.status, 401);
  }
  assert.equal((await fetch(`http://${ip}:8080/healthz`)).status, 200);
  assert.equal((await c.engineStatus(NS, 'sec')).members?.length, 2, 'the set\'s token works');
  // Export: plain NBD and a wrong key are refused; the Secret's key works.
  const size = (await nbdinfo(`nbds://shadowset-export@${ip}:10809/shadow?tls-psk-file=${await pskFile('export.psk', keys.exportPsk)}`));
  assert.ok(size.ok && Number(size.out) > 0, size.out);
  assert.equal((await nbdinfo(`nbd://${ip}:10809/shadow`)).ok, false, 'plain NBD');
  const wrong = await pskFile('wrong.psk', `shadowset-export:${'ab'.repeat(32)}`);
  assert.equal((await nbdinfo(`nbds://shadowset-export@${ip}:10809/shadow?tls-psk-file=${wrong}`)).ok, false, 'a wrong key');
  // A member server: only the set's member PSK (which the engine uses), never plain.
  const ms = ((await c.kube.get(R.pods, NS, 'sec-member-m2'))?.status as { podIP: string }).podIP;
  assert.equal((await nbdinfo(`nbd://${ms}:10810/member`)).ok, false, 'plain NBD to a member server');
  assert.equal((await nbdinfo(`nbds://shadowset-member@${ms}:10810/member?tls-psk-file=${wrong}`)).ok, false, 'a wrong member key');
  const exportKeyAsMember = await pskFile('cross.psk', `shadowset-member:${keys.exportPsk.split(':')[1]}`);
  assert.equal((await nbdinfo(`nbds://shadowset-member@${ms}:10810/member?tls-psk-file=${exportKeyAsMember}`)).ok, false, 'the export key is not the member key');
  assert.ok((await nbdinfo(`nbds://shadowset-member@${ms}:10810/member?tls-psk-file=${await pskFile('member.psk', keys.memberPsk)}`)).ok);
});

test('the set\'s Secrets and NetworkPolicy are the operator\'s: owned by the set, recorded by uid, deleted with it', async () => {
  const ss = await c.get(NS, 'sec');
  const recorded = ((ss?.status ?? {}) as { secrets?: { name: string; uid: string }[] }).secrets ?? [];
  assert.deepEqual(recorded.map((x) => x.name).sort(), ['sec-shadowset-export', 'sec-shadowset-internal']);
  for (const { name, uid } of recorded) {
    const sec = await c.kube.get(R.secrets, NS, name);
    assert.equal(sec?.metadata.uid, uid);
    assert.equal(sec?.metadata.ownerReferences?.[0]?.uid, ss?.metadata.uid);
  }
  const np = await c.kube.get(R.networkpolicies, NS, 'sec-shadowset');
  assert.deepEqual((np?.spec as { ingress: { ports: { port: number }[] }[] }).ingress.map((r) => r.ports.map((p) => p.port)), [[8080], [10810], [10809]]);
  // As stored, it is what the operator wants: nothing to re-apply at each look.
  const want = networkPolicy({ name: 'sec', namespace: NS, uid: ss!.metadata.uid! }, shadowSetSpecSchema.parse(ss!.spec), c.operatorPods);
  assert.equal(policyFingerprint(np as never), policyFingerprint(want as never));
  await c.kube.delete(R.shadowsets, NS, 'sec');
  await waitFor('dissolved', async () => (await c.get(NS, 'sec')) === null, { timeoutMs: 60_000 });
  for (const name of ['sec-shadowset-export', 'sec-shadowset-internal']) assert.equal(await c.kube.get(R.secrets, NS, name), null, `${name} deleted`);
  assert.equal(await c.kube.get(R.networkpolicies, NS, 'sec-shadowset'), null);
});

test('a Secret made by someone else under the set\'s name is left as is: the engine refuses, Ready says which Secret', async () => {
  const planted = 'planted-token-known-to-someone-else-0123456789';
  await c.kube.create(R.secrets, NS, {
    metadata: { name: 'own-shadowset-internal' },
    data: { 'control-token': Buffer.from(planted).toString('base64'), 'member.psk': Buffer.from(`shadowset-member:${'cd'.repeat(32)}\n`).toString('base64') },
  });
  await c.apply(NS, 'own', { members: [{ name: 'm1', claimName: 'a2' }, { name: 'm2', claimName: 'a3' }] });
  const s = await c.until(NS, 'own', 'EngineUnauthorized', (x) => cond(x, 'Ready')?.reason === 'EngineUnauthorized', 90_000);
  assert.match(cond(s, 'Ready')?.message ?? '', /Secret own-shadowset-internal was not made for this ShadowSet/);
  const sec = await c.kube.get(R.secrets, NS, 'own-shadowset-internal');
  assert.equal(Buffer.from((sec as unknown as { data: Record<string, string> }).data['control-token']!, 'base64').toString(), planted, 'not overwritten');
  assert.deepEqual(((s as { secrets?: { name: string }[] }).secrets ?? []).map((x) => x.name), ['own-shadowset-export'], 'only the Secret it made is recorded');
  // Dissolving the set leaves the planted Secret: it is not the operator's.
  await c.kube.delete(R.shadowsets, NS, 'own');
  await waitFor('dissolved', async () => (await c.get(NS, 'own')) === null, { timeoutMs: 60_000 });
  assert.ok(await c.kube.get(R.secrets, NS, 'own-shadowset-internal'));
  assert.equal(await c.kube.get(R.secrets, NS, 'own-shadowset-export'), null);
});
