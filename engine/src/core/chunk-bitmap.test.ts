import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ChunkBitmap, PAGE_BYTES } from './chunk-bitmap.js';

test('bits set, clear, count and list; dirty pages are reported once', () => {
  const b = new ChunkBitmap(100_000);
  assert.equal(b.set(3), true);
  assert.equal(b.set(3), false);
  b.set(40_000);
  assert.equal(b.count, 2);
  assert.deepEqual(b.list(), [3, 40_000]);
  const pages = b.takeDirtyPages();
  assert.deepEqual(pages.map((p) => p.page), [0, 1]);
  assert.equal(pages[0]!.bytes.length, PAGE_BYTES);
  assert.deepEqual(b.takeDirtyPages(), []);
  b.clear(3);
  assert.deepEqual(b.list(), [40_000]);
  assert.throws(() => b.set(100_000));
});

test('a bitmap rebuilt from its bytes is equal, and stray bits past the end are dropped', () => {
  const b = new ChunkBitmap(20);
  b.set(1);
  b.set(19);
  const bytes = new Uint8Array(b.bits);
  bytes[3] = 0xff; // bits 24..31: beyond 20 chunks
  const c = new ChunkBitmap(20, bytes);
  assert.deepEqual(c.list(), [1, 19]);
  assert.equal(c.count, 2);
});

test('count and list of a bitmap rebuilt from any bytes match a bit-by-bit reading, for any number of chunks', () => {
  fc.assert(fc.property(fc.integer({ min: 1, max: 70_000 }), fc.uint8Array({ minLength: 1, maxLength: 9000 }), fc.nat(), (chunks, raw, shift) => {
    const bytes = new Uint8Array(Math.ceil(chunks / 8) + (shift % 5000));
    for (let i = 0; i < bytes.length; i++) bytes[i] = raw[i % raw.length]!;
    const b = new ChunkBitmap(chunks, bytes);
    const expected: number[] = [];
    for (let c = 0; c < chunks; c++) if (c < bytes.length * 8 && bytes[c >> 3]! & (1 << (c & 7))) expected.push(c);
    assert.deepEqual(b.list(), expected);
    assert.equal(b.count, expected.length);
  }), { numRuns: 200 });
});
