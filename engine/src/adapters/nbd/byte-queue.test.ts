import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ByteQueue } from './byte-queue.js';

test('takes messages across chunk boundaries and skips payloads', () => {
  const q = new ByteQueue();
  q.push(Buffer.from([1, 2, 3]));
  q.push(Buffer.from([4, 5]));
  q.push(Buffer.from([6, 7, 8, 9]));
  assert.equal(q.length, 9);
  assert.deepEqual([...q.take(2)], [1, 2]);
  assert.deepEqual([...q.take(4)], [3, 4, 5, 6]);
  assert.equal(q.skip(10), 3);
  assert.equal(q.length, 0);
});
