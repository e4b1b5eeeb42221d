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

test('peeks at four bytes across chunk boundaries without taking them', () => {
  const q = new ByteQueue();
  q.push(Buffer.from([0x66]));
  q.push(Buffer.from([0x8e, 0x33]));
  q.push(Buffer.from([0xef, 7]));
  assert.equal(q.peekUInt32BE(), 0x668e33ef);
  assert.equal(q.length, 5);
  q.take(1);
  assert.equal(q.peekUInt32BE(), 0x8e33ef07);
  q.take(2);
  q.push(Buffer.from([1, 2, 3, 4, 5]));
  assert.equal(q.peekUInt32BE(), 0xef070102);
  assert.deepEqual([...q.take(4)], [0xef, 7, 1, 2]);
});
