// examples/*.yaml never drift from the API: every ShadowSet's spec parses with the zod schema (also with its
// commented-out hooks switched on), and every claim it names is a block-mode PVC of the examples.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import yaml from 'js-yaml';
import { API_VERSION } from './group.js';
import { shadowSetSpecSchema } from './shadowset.js';

const dir = fileURLToPath(new URL('../../../examples/', import.meta.url));
const files = readdirSync(dir).filter((f) => f.endsWith('.yaml')).sort();

interface Doc { apiVersion?: string; kind?: string; metadata?: { name?: string }; spec?: Record<string, unknown> }
const docs = (file: string): Doc[] => yaml.loadAll(readFileSync(`${dir}${file}`, 'utf8')) as Doc[];

/** A block that is commented out as a whole (`# hooks:` and the lines under it), uncommented. */
function commentedBlock(text: string, key: string): unknown {
  const lines = text.split('\n');
  const start = lines.findIndex((l) => new RegExp(`^\\s*# ${key}:\\s*$`).test(l));
  if (start < 0) return undefined;
  const indent = lines[start]!.indexOf('#');
  const block: string[] = [];
  for (const l of lines.slice(start)) {
    if (l.indexOf('#') !== indent || !/^\s*# /.test(l)) break;
    block.push(l.slice(indent + 2));
  }
  return (yaml.load(block.join('\n')) as Record<string, unknown>)[key];
}

test('there are examples: a two-member set, a third member, a split for backup and a return', () => {
  assert.ok(files.length >= 4, `examples: ${files.join(', ')}`);
  const states = files.flatMap((f) => docs(f)).filter((d) => d.kind === 'ShadowSet')
    .map((d) => shadowSetSpecSchema.parse(d.spec).members.map((m) => m.state).join(','));
  assert.deepEqual(states, ['Active,Active', 'Active,Active,Active', 'Active,Active,Detached', 'Active,Active,Active']);
});

test('every ShadowSet in examples/ parses with the spec schema; its claims are block-mode PVCs of the examples', () => {
  const pvcs = new Map<string, Doc>();
  for (const f of files) for (const d of docs(f)) if (d.kind === 'PersistentVolumeClaim') pvcs.set(d.metadata!.name!, d);
  let sets = 0;
  for (const f of files) {
    for (const d of docs(f).filter((x) => x?.kind === 'ShadowSet')) {
      sets++;
      assert.equal(d.apiVersion, API_VERSION, `${f}: apiVersion`);
      const r = shadowSetSpecSchema.safeParse(d.spec);
      assert.ok(r.success, `${f}: ${r.success ? '' : r.error.message}`);
      for (const m of r.data.members) {
        if (!m.claimName) continue;
        const pvc = pvcs.get(m.claimName);
        assert.ok(pvc, `${f}: member ${m.name} names claim ${m.claimName}, which no example defines`);
        assert.equal((pvc.spec as { volumeMode?: string }).volumeMode, 'Block', `${m.claimName} must be volumeMode Block`);
      }
    }
  }
  assert.ok(sets >= 4);
});

test('commented-out hooks in the examples are valid when switched on', () => {
  let found = 0;
  for (const f of files) {
    const hooks = commentedBlock(readFileSync(`${dir}${f}`, 'utf8'), 'hooks');
    if (hooks === undefined) continue;
    found++;
    const set = docs(f).find((d) => d.kind === 'ShadowSet')!;
    const r = shadowSetSpecSchema.safeParse({ ...set.spec, hooks });
    assert.ok(r.success, `${f} hooks: ${r.success ? '' : r.error.message}`);
    assert.ok(r.data.hooks?.freeze && r.data.hooks.thaw, `${f}: both freeze and thaw hooks`);
  }
  assert.ok(found >= 1, 'the split example shows hooks');
});
