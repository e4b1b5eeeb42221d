import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MemberState } from '@shadowset/engine/api';
import type { ShadowSetStatus } from '../api/shadowset.js';
import { claim, engine, events, observed, pod, spec } from './fixtures.js';
import { plan } from './planner.js';
import { withAnswers } from './status.js';
import type { Observed } from './types.js';

const two = (b: { state: MemberState; reason: string }) =>
  engine([{ id: 'ia', path: '/dev/shadow/a', state: 'InSync' }, { id: 'ib', path: '/dev/shadow/b', ...b }]);
const world = (previousB: string, b: { state: MemberState; reason: string }): Observed => observed({
  enginePod: pod('vol-engine', ['a', 'b']),
  engine: { kind: 'ok', status: two(b) },
  previous: { members: [{ name: 'a', id: 'ia', state: 'InSync' }, { name: 'b', id: 'ib', state: previousB }] },
});
const reasons = (o: Observed) => events(plan(o).actions).map((e) => e.reason);

test('a copy\'s end is read from the engine\'s member states, never from its reason text', () => {
  assert.deepEqual(reasons(world('FullCopy', { state: 'InSync', reason: '' })), ['CopyCompleted']);
  assert.deepEqual(reasons(world('Minicopy', { state: 'InSync', reason: '' })), ['MinicopyCompleted']);
  // A minicopy that fell back to a full copy ends as a full copy.
  assert.deepEqual(reasons(world('FullCopy', { state: 'InSync', reason: 'minicopy failed; full copy complete' })), ['CopyCompleted']);
  // A merge's end is not a copy's, whatever the reason still says of the member's last copy.
  assert.deepEqual(reasons(world('Merging', { state: 'InSync', reason: 'full copy complete' })), []);
  assert.deepEqual(reasons(world('InSync', { state: 'InSync', reason: 'minicopy complete' })), []);
  assert.deepEqual(reasons(world('FullCopy', { state: 'Faulted', reason: 'member timeout' })), ['MemberFaulted']);
});

test('the state the engine answered to an add is kept in status: a copy over before the next look still ends with an event', () => {
  const grown = observed({
    spec: spec([{ name: 'a', claimName: 'ca' }, { name: 'b', claimName: 'cb' }, { name: 'c', claimName: 'cc' }]),
    claims: { ca: claim('ca'), cb: claim('cb'), cc: claim('cc') },
    enginePod: pod('vol-engine', ['a', 'b']),
    memberServers: { c: pod('vol-member-c', ['c'], '127.11.0.9') },
    engine: { kind: 'ok', status: two({ state: 'InSync', reason: '' }) },
    previous: { members: [{ name: 'a', id: 'ia', state: 'InSync' }, { name: 'b', id: 'ib', state: 'InSync' }] },
  });
  const first = plan(grown);
  assert.ok(first.actions.some((a) => a.kind === 'engineAdd' && a.member === 'c'));
  assert.equal(first.status.members?.find((m) => m.name === 'c')?.state, 'Pending');
  const written: ShadowSetStatus = withAnswers(first.status, { c: { id: 'ic', state: 'FullCopy' } });
  assert.deepEqual(written.members?.find((m) => m.name === 'c'), { name: 'c', id: 'ic', state: 'FullCopy', node: 'n1' });
  assert.deepEqual(written.members?.filter((m) => m.name !== 'c'), first.status.members?.filter((m) => m.name !== 'c'), 'other members as planned');
  // The copy was done before the operator looked again: the engine already says InSync.
  const done = engine([
    { id: 'ia', path: '/dev/shadow/a', state: 'InSync' }, { id: 'ib', path: '/dev/shadow/b', state: 'InSync' },
    { id: 'ic', path: 'nbds://127.11.0.9:10810/member', state: 'InSync' },
  ]);
  const next = plan({ ...grown, engine: { kind: 'ok', status: done }, previous: written });
  assert.deepEqual(events(next.actions).map((e) => [e.reason, e.message]), [['CopyCompleted', 'member c: FullCopy → InSync']]);
  assert.deepEqual(withAnswers(first.status, {}), first.status);
});

test('a return the operator never heard back about is announced from the engine\'s states', () => {
  // The reconcile that asks for a return still sees the member away, and the engine's answer goes into
  // status (withAnswers): nothing is announced from the states then, so nothing twice.
  assert.deepEqual(reasons(world('Faulted', { state: 'Faulted', reason: 'member timeout' })), []);
  assert.deepEqual(reasons(world('Minicopy', { state: 'InSync', reason: '' })), ['MinicopyCompleted']);
  // No answer (the call outlived its timeout while the member's node was silent; the engine finished the
  // return when the node answered): the member is seen back, in its copy or already in sync.
  assert.deepEqual(reasons(world('Faulted', { state: 'Minicopy', reason: '' })), ['MemberReturned', 'MinicopyStarted']);
  assert.deepEqual(reasons(world('Removed', { state: 'FullCopy', reason: '' })), ['MemberReturned', 'CopyStarted']);
  assert.deepEqual(reasons(world('Faulted', { state: 'InSync', reason: '' })), ['MemberReturned']);
  assert.deepEqual(reasons(world('Detached', { state: 'InSync', reason: '' })), ['MemberReturned']);
});
