import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RangeLocks } from './range-locks.js';

test('overlapping ranges wait; disjoint ranges do not', async () => {
  const locks = new RangeLocks();
  const order: string[] = [];
  const r1 = await locks.acquire(0, 100);
  const disjoint = await locks.acquire(100, 50);
  order.push('disjoint');
  const p = locks.acquire(50, 100).then((rel) => {
    order.push('overlap');
    rel();
  });
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(order, ['disjoint']);
  disjoint();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(order, ['disjoint'], 'still blocked by the first range');
  r1();
  await p;
  assert.deepEqual(order, ['disjoint', 'overlap']);
  assert.equal(locks.size, 0);
});

test('a waiting request is not overtaken by later overlapping ones (a whole-unit lock is not starved)', async () => {
  const locks = new RangeLocks();
  const small = await locks.acquire(0, 10);
  let whole = false;
  const w = locks.acquire(0, 1000).then((rel) => {
    whole = true;
    return rel;
  });
  // A later request in a range that is free now must queue behind the waiting whole-unit request.
  let later = false;
  const l = locks.acquire(500, 10).then((rel) => {
    later = true;
    assert.ok(whole, 'a later request overtook the waiting whole-unit request');
    rel();
  });
  await new Promise((r) => setImmediate(r));
  assert.deepEqual([whole, later], [false, false]);
  small();
  const rel = await w;
  await new Promise((r) => setImmediate(r));
  assert.equal(later, false, 'the later request ran while the whole unit was held');
  rel();
  await l;
  assert.equal(locks.size, 0);
});
