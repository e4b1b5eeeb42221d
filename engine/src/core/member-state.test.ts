import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { chooseReturn, isFull, isWritable, memberEvents, reachable, step, type MemberEvent } from './member-state.js';
import { memberStates, type MemberState } from './scb.js';

const events: readonly MemberEvent[] = memberEvents;

test('the manual\'s transitions', () => {
  const next = (s: MemberState, type: MemberEvent['type']) => {
    const r = step(s, { type } as MemberEvent);
    return r.ok ? r.state : 'rejected';
  };
  assert.equal(next('InSync', 'fault'), 'Faulted');
  assert.equal(next('FullCopy', 'remove'), 'Removed');
  assert.equal(next('InSync', 'mergeStart'), 'Merging');
  assert.equal(next('Merging', 'mergeComplete'), 'InSync');
  assert.equal(next('FullCopy', 'mergeStart'), 'FullCopy', 'a copy target is copied after the merge, not merged');
  assert.equal(next('Minicopy', 'copyComplete'), 'InSync');
  assert.equal(next('Minicopy', 'copyFailed'), 'FullCopy', 'a minicopy that fails midway becomes a full copy');
  assert.equal(next('FullCopy', 'copyFailed'), 'FullCopy');
  assert.equal(next('Removed', 'copyComplete'), 'rejected', 'a member that left is never made InSync by a copy');
  assert.equal(next('Faulted', 'copyFailed'), 'rejected');
  assert.equal(next('Faulted', 'remove'), 'Faulted', 'a member that left stays as it left');
  assert.deepEqual(step('Minicopy', { type: 'copyPlanned', mode: 'FullCopy' }), { ok: true, state: 'FullCopy', changed: true });
  assert.equal(step('InSync', { type: 'copyPlanned', mode: 'FullCopy' }).ok, false, 'a full member is never made a copy target by a plan');
});

test('reachability: out of the set is final; a copy target reaches InSync only through its copy', () => {
  for (const gone of ['Removed', 'Faulted'] as const) {
    for (const s of memberStates) assert.equal(reachable(gone, s), s === gone, `${gone} -> ${s}`);
  }
  assert.ok(reachable('FullCopy', 'InSync'));
  assert.ok(reachable('InSync', 'Faulted'));
  assert.ok(!reachable('InSync', 'FullCopy'), 'a full member never becomes a copy target (a new life starts as one)');
  assert.ok(!reachable('Merging', 'Minicopy'));
});

test('every event sequence: only writable members change, nothing out of the set comes back by an event, repeats are no-ops', () => {
  fc.assert(fc.property(fc.constantFrom(...memberStates), fc.array(fc.constantFrom(...events), { maxLength: 30 }), (start, seq) => {
    let s: MemberState = start;
    for (const e of seq) {
      const r = step(s, e);
      if (!r.ok) continue;
      assert.equal(r.changed, r.state !== s);
      if (!isWritable(s)) assert.equal(r.state, s, `${s} changed on ${e.type}`);
      if (isFull(r.state) && !isFull(s)) assert.ok(e.type === 'copyComplete', `${s} became full on ${e.type}`);
      const again = step(r.state, e);
      // The same event again: no further change (copyFailed on FullCopy stays FullCopy).
      if (again.ok) assert.equal(again.changed, false, `${e.type} twice from ${s}`);
      s = r.state;
    }
  }), { numRuns: 500 });
});

test('a return is a minicopy only if the member is as it left', () => {
  const base = { setId: 'S', memberId: 'm', chunkSize: 65536, bitmap: { generation: 7, chunkSize: 65536 }, record: { setId: 'S', memberId: 'm', generation: 7, dataValid: true } };
  assert.equal(chooseReturn(base).mode, 'Minicopy');
  assert.equal(chooseReturn({ ...base, bitmap: null }).mode, 'FullCopy');
  assert.equal(chooseReturn({ ...base, record: { ...base.record, generation: 8 } }).mode, 'FullCopy');
  assert.equal(chooseReturn({ ...base, record: { ...base.record, dataValid: false } }).mode, 'FullCopy');
  assert.equal(chooseReturn({ ...base, record: { ...base.record, memberId: 'x' } }).mode, 'FullCopy');
  assert.equal(chooseReturn({ ...base, bitmap: { generation: 7, chunkSize: 131072 } }).mode, 'FullCopy');
  assert.equal(chooseReturn({ ...base, record: { ...base.record, generation: 9, dataValid: false }, resumingMinicopy: true }).mode, 'Minicopy');
});
