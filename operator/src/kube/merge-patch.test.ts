import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mergePatchFrom } from './merge-patch.js';

test('keys that disappeared are nulled, at every depth; arrays and scalars are replaced whole', () => {
  const from = { state: 'Transient', recovery: { mode: 'FullCopy', source: 'a', bytesDone: 5 }, members: [{ name: 'm', progress: '5%' }] };
  const to = { state: 'Steady', recovery: { bytesDone: 0 }, members: [{ name: 'm' }] };
  assert.deepEqual(mergePatchFrom(from, to), { state: 'Steady', recovery: { mode: null, source: null, bytesDone: 0 }, members: [{ name: 'm' }] });
  assert.deepEqual(mergePatchFrom({}, to), to);
  assert.deepEqual(mergePatchFrom({ a: 1 }, {}), { a: null });
});
