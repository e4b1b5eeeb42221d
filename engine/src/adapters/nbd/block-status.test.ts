/**
 * base:allocation answers, both sides (block-status.ts): what the server says for a range, what the
 * client accepts, and that the two together give back exactly where the device may hold data.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { addDataRanges, describeRange, readDescriptors, type Descriptor } from './block-status.js';
import * as P from './protocol.js';
import { blockStatusChunk } from './replies.js';

const HZ = P.STATE_HOLE | P.STATE_ZERO;

test('the server describes a range from the data extents: holes as hole+zero, data as 0, clipped to the range', () => {
  const ext: [number, number][] = [[4096, 8192], [16384, 65536]];
  assert.deepEqual(describeRange(ext, 0, 65536), [[4096, HZ], [4096, 0], [8192, HZ], [49152, 0]]);
  assert.deepEqual(describeRange(ext, 6000, 20000), [[2192, 0], [8192, HZ], [9616, 0]]);
  assert.deepEqual(describeRange(ext, 65536, 4096), [[4096, HZ]], 'past the last extent');
  assert.deepEqual(describeRange([], 0, 1 << 20), [[1 << 20, HZ]]);
  assert.deepEqual(describeRange(null, 512, 1 << 20), [[1 << 20, 0]], 'unknown: all of it may hold data');
  // Touching extents give one descriptor.
  assert.deepEqual(describeRange([[0, 4096], [4096, 8192]], 0, 16384), [[8192, 0], [8192, HZ]]);
});

test('the server gives at most `max` descriptors, covering a prefix of the range (REQ_ONE: one)', () => {
  const ext: [number, number][] = [];
  for (let i = 0; i < 100; i++) ext.push([i * 8192, i * 8192 + 4096]);
  const ds = describeRange(ext, 0, 100 * 8192, 10);
  assert.equal(ds.length, 10);
  assert.deepEqual(ds.slice(0, 2), [[4096, 0], [4096, HZ]]);
  assert.deepEqual(describeRange(ext, 0, 100 * 8192, 1), [[4096, 0]]);
  assert.deepEqual(describeRange(ext, 4096, 100, 1), [[100, HZ]]);
});

test('the client refuses answers the protocol does not allow', () => {
  const payload = (id: number, ds: number[][]) => blockStatusChunk(1n, id, ds as [number, number][]).subarray(20);
  assert.deepEqual(readDescriptors(payload(1, [[4096, 0], [4096, HZ]]), 1, 8192), [[4096, 0], [4096, HZ]]);
  assert.deepEqual(readDescriptors(payload(1, [[4096, 0], [1 << 20, HZ]]), 1, 8192), [[4096, 0], [4096, HZ]], 'the last may pass the end: clipped');
  assert.deepEqual(readDescriptors(payload(1, [[512, 0]]), 1, 8192), [[512, 0]], 'a prefix is an answer');
  assert.throws(() => readDescriptors(payload(2, [[4096, 0]]), 1, 8192), /context 2/);
  assert.throws(() => readDescriptors(payload(1, [[0, 0], [4096, 0]]), 1, 8192), /length 0/);
  assert.throws(() => readDescriptors(payload(1, [[8192, 0], [4096, 0]]), 1, 8192), /past the end/);
  assert.throws(() => readDescriptors(payload(1, []), 1, 8192), /payload of 4 bytes/);
  assert.throws(() => readDescriptors(Buffer.concat([payload(1, [[4096, 0]]), Buffer.alloc(3)]), 1, 8192), /payload of 15 bytes/);
});

test('the client keeps the ranges not called zero, merged where they touch; a hole without the zero bit counts as data', () => {
  const out: Array<[number, number]> = [[0, 4096]];
  const end = addDataRanges(out, 4096, [[4096, 0], [4096, P.STATE_HOLE], [4096, HZ], [4096, P.STATE_ZERO], [4096, 0]]);
  assert.equal(end, 4096 * 6);
  assert.deepEqual(out, [[0, 4096 * 3], [4096 * 5, 4096 * 6]]);
});

/** Sorted, disjoint, non-touching ranges inside [0, size). */
const extentsArb = (size: number) =>
  fc.uniqueArray(fc.integer({ min: 0, max: size }), { maxLength: 40 }).map((cuts) => {
    const c = [...cuts].sort((a, b) => a - b);
    const out: [number, number][] = [];
    for (let i = 0; i + 1 < c.length; i += 2) if (c[i]! < c[i + 1]!) out.push([c[i]!, c[i + 1]!]);
    return out.filter((e, i) => i === 0 || out[i - 1]![1] < e[0]);
  });

test('asked piece by piece with any limit, server and client together give back the extents within the range', () => {
  const size = 1 << 16;
  fc.assert(
    fc.property(extentsArb(size), fc.integer({ min: 0, max: size - 1 }), fc.integer({ min: 1, max: size }), fc.integer({ min: 1, max: 8 }), (ext, offset, len, max) => {
      const length = Math.min(len, size - offset);
      const got: Array<[number, number]> = [];
      for (let at = offset; at < offset + length; ) {
        const chunk = blockStatusChunk(7n, 1, describeRange(ext, at, offset + length - at, max));
        const ds: Descriptor[] = readDescriptors(chunk.subarray(20), 1, offset + length - at);
        const next = addDataRanges(got, at, ds);
        assert.ok(next > at, 'every answer covers something');
        at = next;
      }
      const want = ext.map(([s, e]) => [Math.max(s, offset), Math.min(e, offset + length)] as [number, number]).filter(([s, e]) => s < e);
      assert.deepEqual(got, want);
    }),
    { numRuns: 500 },
  );
});
