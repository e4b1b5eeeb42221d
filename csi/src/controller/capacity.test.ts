import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isCsiError } from '../errors.js';
import { DEFAULT_CAPACITY, capacityFor, satisfies } from './capacity.js';

const MiB = 1024 ** 2;

test('capacity: no range gives the default; sizes round up to whole MiB', () => {
  assert.equal(capacityFor(undefined), DEFAULT_CAPACITY);
  assert.equal(capacityFor({ required_bytes: '1' }), MiB);
  assert.equal(capacityFor({ required_bytes: String(10 * MiB + 1) }), 11 * MiB);
  assert.equal(capacityFor({ limit_bytes: String(5 * MiB) }), 5 * MiB);
});

test('capacity: a limit that whole MiB would pass rounds to 4 KiB instead; no fitting size is OutOfRange', () => {
  assert.equal(capacityFor({ required_bytes: String(MiB + 1), limit_bytes: String(MiB + 8192) }), MiB + 4096);
  assert.throws(() => capacityFor({ required_bytes: '4097', limit_bytes: '5000' }), (e) => isCsiError(e, 'OutOfRange'));
  assert.throws(() => capacityFor({ required_bytes: '10', limit_bytes: '5' }), (e) => isCsiError(e, 'OutOfRange'));
  assert.throws(() => capacityFor({ required_bytes: '99999999999999999999' }), (e) => isCsiError(e));
  assert.throws(() => capacityFor({ required_bytes: '-1' }), (e) => isCsiError(e, 'InvalidArgument'));
});

test('capacity: an existing size satisfies a range it lies in', () => {
  assert.ok(satisfies(MiB, { required_bytes: String(MiB) }));
  assert.ok(!satisfies(MiB, { required_bytes: String(2 * MiB) }));
  assert.ok(!satisfies(2 * MiB, { limit_bytes: String(MiB) }));
  assert.ok(satisfies(MiB, undefined));
});
