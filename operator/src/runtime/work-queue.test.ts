import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WorkQueue } from './work-queue.js';

test('a key added many times runs once; one run per key at a time; re-added while running runs again', async () => {
  const runs: string[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const q = new WorkQueue(async (k) => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    runs.push(k);
    if (runs.length === 1) await gate;
    inFlight--;
  });
  q.add('a');
  q.add('a');
  q.add('a'); // a is running now: marks it dirty once
  q.add('b');
  await new Promise((r) => setImmediate(r));
  release();
  await q.idle();
  await q.idle();
  assert.deepEqual(runs.sort(), ['a', 'a', 'b']);
  assert.ok(maxInFlight <= 2);
  q.stop();
});

test('failures back off exponentially per key and successes reset it', async () => {
  let n = 0;
  const q = new WorkQueue(async () => {
    n++;
    if (n < 3) throw new Error('transient');
  }, { baseBackoffMs: 10, maxBackoffMs: 40 });
  q.add('k');
  const deadline = Date.now() + 5000;
  while (n < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  assert.equal(n, 3);
  assert.equal(q.backoffFor('k'), 10);
  q.stop();
});
