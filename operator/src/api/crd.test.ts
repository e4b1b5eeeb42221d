import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { buildCrds, renderCrd } from './crd.js';
import { shadowSetSpecSchema } from './shadowset.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));

test('crds/ and the chart\'s copy match the zod schemas (run `npm run gen` after changing them)', () => {
  for (const { file, object } of buildCrds()) {
    const want = renderCrd(object);
    for (const dir of ['crds', 'charts/shadowset/crds']) {
      assert.equal(readFileSync(`${root}${dir}/${file}`, 'utf8'), want, `${dir}/${file} is out of date`);
    }
  }
});

test('no category is also a resource name (kubectl would expand `kubectl delete shadowset NAME` to every kind)', () => {
  const names = buildCrds().map(({ object }) => (object as { spec: { names: { plural: string; singular: string; shortNames: string[]; categories: string[] } } }).spec.names);
  const resourceNames = new Set(names.flatMap((n) => [n.plural, n.singular, ...n.shortNames]));
  for (const n of names) for (const c of n.categories) assert.ok(!resourceNames.has(c), `category ${c} is a resource name`);
});

test('the CRD schema is structural: every object has a type, no $schema, CEL rules attached', () => {
  const spec = (buildCrds()[0]!.object as { spec: { versions: { schema: { openAPIV3Schema: Record<string, unknown> } }[] } })
    .spec.versions[0]!.schema.openAPIV3Schema;
  const walk = (n: unknown, path: string): void => {
    if (!n || typeof n !== 'object' || Array.isArray(n)) return;
    const o = n as Record<string, unknown>;
    if ('properties' in o || 'items' in o) assert.ok(o.type, `${path} has no type`);
    assert.ok(!('$schema' in o), `${path} has $schema`);
    for (const [k, v] of Object.entries(o)) walk(v, `${path}.${k}`);
  };
  walk(spec, 'root');
  const text = JSON.stringify(spec);
  assert.match(text, /has\(self.claimName\) != has\(self.nbd\)/);
  assert.match(text, /x-kubernetes-list-map-keys/);
});

test('spec defaults are applied by the schema', () => {
  const s = shadowSetSpecSchema.parse({ members: [{ name: 'a', claimName: 'pvc-a' }] });
  assert.equal(s.minicopyPolicy, 'Optional');
  // Left unset: the operator's site-wide defaults apply (chart values engine.memberTimeoutSeconds, engine.maxCopies).
  assert.equal(s.memberTimeoutSeconds, undefined);
  assert.equal(s.throttle.maxCopies, undefined);
  assert.equal(s.export.port, 10809);
  assert.equal(s.members[0]!.state, 'Active');
  assert.throws(() => shadowSetSpecSchema.parse({ members: [] }));
});
