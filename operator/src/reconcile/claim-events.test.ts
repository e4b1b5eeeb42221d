import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Obj } from '../kube/client.js';
import { claimNamed, isVolumeOf } from './claim-events.js';

const set = (annotations?: Record<string, string>): Obj => ({ metadata: { name: 'pvc-u1', namespace: 'db', annotations } });
const claim = (o: Partial<Obj['metadata']> = {}): Obj => ({ metadata: { name: 'data', namespace: 'db', uid: 'u1', ...o } });
const made = set({ 'csi.shadowset.dev/claim': 'data', 'csi.shadowset.dev/volume-name': 'pvc-u1' });

test('a set the driver made for a claim names that claim; others name none', () => {
  assert.equal(claimNamed(made), 'data');
  assert.equal(claimNamed(set()), null);
  assert.equal(claimNamed(set({ 'csi.shadowset.dev/claim': 'data' })), null, 'no volume name: not made by the driver');
  assert.equal(claimNamed(set({ 'csi.shadowset.dev/claim': 'Bad/Name', 'csi.shadowset.dev/volume-name': 'pvc-u1' })), null);
});

test('warnings go to the claim only when its uid gives the set\'s volume name', () => {
  assert.equal(isVolumeOf(made, claim()), true);
  assert.equal(isVolumeOf(made, null), false);
  assert.equal(isVolumeOf(made, claim({ uid: 'u2' })), false, 'another claim of that name (recreated): not this volume');
  assert.equal(isVolumeOf(made, claim({ namespace: 'other' })), false);
  assert.equal(isVolumeOf(made, claim({ name: 'other' })), false);
  assert.equal(isVolumeOf(made, claim({ deletionTimestamp: '2026-01-01T00:00:00Z' })), false);
  // A hand-made set that names someone else's claim: its volume name cannot match that claim's uid.
  assert.equal(isVolumeOf(set({ 'csi.shadowset.dev/claim': 'data', 'csi.shadowset.dev/volume-name': 'pvc-other' }), claim()), false);
});
