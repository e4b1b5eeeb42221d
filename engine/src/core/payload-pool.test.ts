import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PayloadPool } from './payload-pool.js';

const KiB = 1024;
const MiB = 1024 * KiB;

test('a released buffer with no device request on it is handed out again', () => {
  const pool = new PayloadPool();
  const a = pool.take(MiB);
  assert.equal(a.length, MiB);
  pool.release(a);
  const b = pool.take(MiB - 4096); // the same size class
  assert.equal(b.buffer, a.buffer, 'the buffer came back');
  assert.equal(b.length, MiB - 4096);
  assert.deepEqual({ taken: pool.stats.taken, reused: pool.stats.reused }, { taken: 2, reused: 1 });
});

test('payloads outside the pooled sizes get buffers of their own, never reused', () => {
  const pool = new PayloadPool(128 * KiB, 8 * MiB);
  for (const len of [4096, 128 * KiB - 1, 8 * MiB + 1]) {
    const a = pool.take(len);
    assert.equal(a.length, len);
    assert.equal(pool.hold(a), null, `${len}: not the pool's`);
    pool.release(a);
    assert.notEqual(pool.take(len).buffer, a.buffer, `${len}: not reused`);
  }
  assert.equal(pool.stats.taken, 0);
});

test('a buffer a device still holds is not handed out, whatever the taker does, until the device returns', () => {
  const pool = new PayloadPool();
  const a = pool.take(MiB);
  const d1 = pool.hold(a)!;
  const d2 = pool.hold(a)!;
  pool.release(a);
  assert.notEqual(pool.take(MiB).buffer, a.buffer, 'both device requests still out');
  d1(true);
  d1(true); // a second call changes nothing
  assert.notEqual(pool.take(MiB).buffer, a.buffer, 'one device request still out');
  d2(true);
  assert.equal(pool.take(MiB).buffer, a.buffer, 'back once the last device request returned');
});

test('a device request that failed poisons its buffer for good', () => {
  const pool = new PayloadPool();
  const a = pool.take(MiB);
  const d1 = pool.hold(a)!;
  const d2 = pool.hold(a)!;
  d1(false);
  d2(true);
  pool.release(a);
  for (let i = 0; i < 4; i++) assert.notEqual(pool.take(MiB).buffer, a.buffer);
  assert.equal(pool.stats.poisoned, 1);
});

test('the buffer is kept only while the taker has not released it, even with every device done', () => {
  const pool = new PayloadPool();
  const a = pool.take(256 * KiB);
  pool.hold(a)!(true);
  assert.notEqual(pool.take(256 * KiB).buffer, a.buffer, 'not released by its taker yet');
  pool.release(a);
  pool.release(a); // twice: no double entry
  const b = pool.take(256 * KiB);
  assert.equal(b.buffer, a.buffer);
  assert.notEqual(pool.take(256 * KiB).buffer, a.buffer, 'handed out once only');
});

test('idle buffers are bounded by keepBytes and dropped by a trim with no take since the last one', () => {
  const pool = new PayloadPool(128 * KiB, 8 * MiB, 3 * MiB);
  const bufs = Array.from({ length: 5 }, () => pool.take(MiB));
  for (const b of bufs) pool.release(b);
  assert.equal(pool.stats.idleBytes, 3 * MiB, 'three of the five kept');
  pool.trim();
  assert.equal(pool.stats.idleBytes, 3 * MiB, 'buffers were taken since the last trim');
  pool.trim();
  assert.equal(pool.stats.idleBytes, 0);
  assert.ok(!bufs.some((b) => b.buffer === pool.take(MiB).buffer), 'a new buffer after the trim');
});
