import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isCsiError } from '../errors.js';
import { ZONE_LABEL, chooseNodes } from './placement.js';

const node = (name: string, o: { zone?: string; ready?: boolean; cordoned?: boolean; taint?: string; labels?: Record<string, string> } = {}) => ({
  metadata: { name, labels: { ...(o.zone ? { [ZONE_LABEL]: o.zone } : {}), ...o.labels } },
  spec: { unschedulable: o.cordoned ?? false, taints: o.taint ? [{ key: o.taint, effect: 'NoSchedule' }] : [] },
  status: { conditions: [{ type: 'Ready', status: o.ready === false ? 'False' : 'True' }] },
});

test('placement: members get different nodes, whatever the volume', () => {
  const nodes = ['a', 'b', 'c', 'd'].map((n) => node(n));
  for (const v of ['pvc-1', 'pvc-2', 'pvc-3', 'x']) {
    const got = chooseNodes(nodes, 3, v);
    assert.equal(new Set(got).size, 3, `${v}: ${got.join(',')}`);
  }
  // Different volumes start on different nodes, so the cluster's load spreads.
  const firsts = new Set(Array.from({ length: 20 }, (_, i) => chooseNodes(nodes, 1, `pvc-${i}`)[0]));
  assert.ok(firsts.size > 1);
});

test('placement: zones first, then nodes within them', () => {
  const nodes = [node('a1', { zone: 'a' }), node('a2', { zone: 'a' }), node('a3', { zone: 'a' }), node('b1', { zone: 'b' }), node('c1', { zone: 'c' })];
  for (const v of ['v1', 'v2', 'v3', 'v4']) {
    const zones = chooseNodes(nodes, 3, v).map((n) => n[0]);
    assert.deepEqual([...zones].sort(), ['a', 'b', 'c'], v);
  }
  const four = chooseNodes(nodes, 4, 'v');
  assert.equal(new Set(four).size, 4);
});

test('placement: cordoned, NotReady, tainted nodes and those outside allowedTopologies hold no member', () => {
  const nodes = [node('ok'), node('cordoned', { cordoned: true }), node('down', { ready: false }), node('tainted', { taint: 'x' }),
    node('other', { labels: { rack: 'r2' } }), node('r1', { labels: { rack: 'r1' } })];
  assert.ok(chooseNodes(nodes, 2, 'v').every((n) => ['ok', 'other', 'r1'].includes(n)));
  const allowed = [{ matchLabelExpressions: [{ key: 'rack', values: ['r1'] }] }];
  assert.deepEqual(chooseNodes(nodes, 1, 'v', allowed), ['r1']);
  assert.throws(() => chooseNodes(nodes, 2, 'v', allowed), (e) => isCsiError(e, 'ResourceExhausted') && /2 members need 2 different nodes; 1 can hold one/.test(e.message) && /cordoned/.test(e.message));
  for (const bad of ['cordoned', 'down', 'tainted']) assert.ok(!chooseNodes(nodes, 3, 'v').includes(bad));
});
