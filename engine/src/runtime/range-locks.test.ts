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
