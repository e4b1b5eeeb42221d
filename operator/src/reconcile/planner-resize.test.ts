/**
 * spec.size: the planner asks the engine to grow once nothing resyncs; a spec smaller than the set is
 * reported, never acted on; status.size follows the engine. The CRD refuses a shrink and a size that is
 * not a multiple of 4096.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { shadowSetSpecSchema } from '../api/shadowset.js';
import { engine, observed, pod, spec } from './fixtures.js';
import { plan } from './planner.js';

const GiB = 1 << 30;
const eng = (extra = {}) => engine([{ id: 'ia', path: '/x/dev/shadow/a', state: 'InSync' }, { id: 'ib', path: '/x/dev/shadow/b', state: 'InSync' }], extra);
const members = [{ name: 'a', claimName: 'ca' }, { name: 'b', claimName: 'cb' }];
const at = (size: number | undefined, status = eng()) => observed({
  spec: spec(members, size === undefined ? {} : { size }), enginePod: pod('vol-engine', ['a', 'b']), engine: { kind: 'ok', status },
});

test('spec.size above the set: the engine is asked to grow; status.size is the engine\'s', () => {
  const p = plan(at(2 * GiB));
  assert.deepEqual(p.actions.filter((a) => a.kind === 'engineResize'), [{ kind: 'engineResize', from: GiB, size: 2 * GiB }]);
  assert.equal(p.status.size, GiB, 'status shows the size the set has, not the one asked');
  assert.ok(p.requeueAfterMs > 0 && p.requeueAfterMs <= 1000, 'looked at again soon, to follow the growth');
  const done = plan(at(2 * GiB, eng({ size: 2 * GiB })));
  assert.deepEqual(done.actions.filter((a) => a.kind === 'engineResize'), []);
  assert.equal(done.status.size, 2 * GiB);
  assert.deepEqual(plan(at(undefined)).actions.filter((a) => a.kind === 'engineResize'), [], 'unset: the set keeps its size');
});

test('no growth is asked while a copy or merge runs (the engine would refuse it)', () => {
  const st = eng();
  const copying = plan(at(2 * GiB, { ...st, state: 'Transient', recovery: { ...st.recovery, mode: 'FullCopy' } }));
  assert.deepEqual(copying.actions.filter((a) => a.kind === 'engineResize'), []);
});

test('spec.size below the set is reported (a set cannot shrink), nothing is asked', () => {
  const p = plan(at(GiB / 2));
  assert.deepEqual(p.actions.filter((a) => a.kind === 'engineResize'), []);
  const ready = p.status.conditions?.find((c) => c.type === 'Ready');
  assert.equal(ready?.reason, 'InvalidSpec');
  assert.match(ready?.message ?? '', /cannot shrink/);
});

test('the schema: size is a positive multiple of 4096 within the bound; the CRD also refuses a value smaller than before (a transition rule)', () => {
  const base = { members: [{ name: 'a', claimName: 'ca' }] };
  assert.ok(shadowSetSpecSchema.safeParse({ ...base, size: 2 * GiB }).success);
  assert.ok(!shadowSetSpecSchema.safeParse({ ...base, size: 2 * GiB + 1 }).success);
  assert.ok(!shadowSetSpecSchema.safeParse({ ...base, size: 0 }).success);
  assert.ok(!shadowSetSpecSchema.safeParse({ ...base, size: 2 ** 51 }).success);
  const rules = JSON.stringify(shadowSetSpecSchema.shape.size.meta());
  assert.match(rules, /self >= oldSelf/);
});
