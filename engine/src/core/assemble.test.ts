import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assemble, type MemberProbe } from './assemble.js';
import { isEngineError } from './errors.js';
import { HEADER_BYTES, MiB } from './geometry.js';
import type { Scb } from './scb.js';

let n = 0;
const opts = { overwrite: false, newId: () => `id-${++n}`, now: '2026-01-01T00:00:00Z' };
const RAW = 64 * MiB + HEADER_BYTES;

function scb(memberId: string, generation: number, members: [string, Scb['members'][number]['state']][], extra: Partial<Scb> = {}): Scb {
  return {
    format: 1, setId: 'S', memberId, generation, clean: true, size: 64 * MiB, chunkSize: 65536,
    members: members.map(([id, state]) => ({ id, path: id, state, since: generation })),
    dataValid: true, intentLogValid: true, copies: [], bitmaps: [], updatedAt: '', ...extra,
  };
}
const probe = (path: string, s: Scb | null, blank = s === null): MemberProbe => ({
  path, rawBytes: RAW, blank, scb: s ? { kind: 'ok', scb: s, seq: 1 } : blank ? { kind: 'empty' } : { kind: 'foreign' },
});

test('blank members become a new set, all in sync, generation 1', () => {
  const p = assemble([probe('a', null), probe('b', null)], opts);
  assert.equal(p.created, true);
  assert.equal(p.generation, 1);
  assert.deepEqual(p.members.map((m) => m.state), ['InSync', 'InSync']);
  assert.equal(p.size, 64 * MiB);
});

test('foreign data is refused without the overwrite flag, accepted as a copy target with it', () => {
  assert.throws(() => assemble([probe('a', null), probe('b', null, false)], opts), (e) => isEngineError(e, 'ENG_FOREIGN_DATA'));
  const p = assemble([probe('a', null), probe('b', null, false)], { ...opts, overwrite: true });
  assert.deepEqual(p.members.map((m) => m.state), ['InSync', 'FullCopy']);
  // The first member holds data: a blank member differs from it, so it is copied, not trusted.
  const q = assemble([probe('a', null, false), probe('b', null)], { ...opts, overwrite: true });
  assert.deepEqual(q.members.map((m) => m.state), ['InSync', 'FullCopy']);
});

test('members of two different sets are refused', () => {
  const other = { ...scb('x', 3, [['x', 'InSync']]), setId: 'T' };
  assert.throws(() => assemble([probe('a', scb('a', 2, [['a', 'InSync']])), probe('x', other)], opts),
    (e) => isEngineError(e, 'ENG_SET_MISMATCH'));
});

test('a clean restart with the same members needs no copy and no merge', () => {
  const ms: [string, 'InSync'][] = [['a', 'InSync'], ['b', 'InSync']];
  const p = assemble([probe('a', scb('a', 5, ms)), probe('b', scb('b', 5, ms))], opts);
  assert.equal(p.created, false);
  assert.equal(p.unclean, false);
  assert.equal(p.generation, 6);
  assert.deepEqual(p.members.map((m) => [m.id, m.role]), [['a', 'source'], ['b', 'source']]);
});

test('a stale member (older generation) is never a source', () => {
  const p = assemble([
    probe('b', scb('b', 4, [['a', 'InSync'], ['b', 'InSync']])),
    probe('a', scb('a', 6, [['a', 'InSync'], ['b', 'Faulted']])),
  ], opts);
  const b = p.members.find((m) => m.id === 'b')!;
  assert.equal(b.role, 'target');
  assert.equal(b.state, 'FullCopy');
  assert.equal(p.members.find((m) => m.id === 'a')!.role, 'source');
});

test('a subset of former members is served; the missing ones are recorded', () => {
  const ms: [string, 'InSync'][] = [['a', 'InSync'], ['b', 'InSync'], ['c', 'InSync']];
  const p = assemble([probe('b', scb('b', 9, ms))], opts);
  assert.deepEqual(p.missing.map((m) => m.id).sort(), ['a', 'c']);
  assert.equal(p.members[0]!.role, 'source');
});

test('an unclean stop is reported so a merge can run', () => {
  const p = assemble([probe('a', scb('a', 2, [['a', 'InSync']], { clean: false }))], opts);
  assert.equal(p.unclean, true);
});

test('only stale members present: refused rather than serving old data as current', () => {
  assert.throws(() => assemble([probe('a', scb('a', 3, [['a', 'FullCopy']], { dataValid: false }))], opts),
    (e) => isEngineError(e, 'ENG_NO_FULL_MEMBER'));
});

test('too many members, duplicates and too-small members are refused', () => {
  const seven = Array.from({ length: 7 }, (_, i) => probe(`m${i}`, null));
  assert.throws(() => assemble(seven, opts), (e) => isEngineError(e, 'ENG_INVALID_ARGUMENT'));
  assert.throws(() => assemble([probe('a', null), probe('a', null)], opts), (e) => isEngineError(e, 'ENG_INVALID_ARGUMENT'));
  assert.throws(() => assemble([{ ...probe('a', null), rawBytes: HEADER_BYTES }], opts), (e) => isEngineError(e, 'ENG_MEMBER_TOO_SMALL'));
});

test('a returned member listed twice in a record (attached, and again as former) is judged by its first entry', () => {
  // Records written before the fix listed a returned member as InSync and again as Removed; the
  // newest of them, found only on that member, must still make it a source.
  const rec: [string, Scb['members'][number]['state']][] = [['b', 'InSync'], ['a', 'InSync'], ['a', 'Removed']];
  const p = assemble([probe('a', scb('a', 7, rec)), probe('b', scb('b', 6, [['b', 'InSync'], ['a', 'Minicopy']]))], opts);
  assert.equal(p.members.find((m) => m.id === 'a')!.role, 'source');
});

test('no source: the error names each member and why it is not current', () => {
  assert.throws(() => assemble([probe('a', scb('a', 3, [['a', 'FullCopy']], { dataValid: false }))], opts),
    (e) => isEngineError(e, 'ENG_NO_FULL_MEMBER') && /a was FullCopy/.test((e as Error).message));
});

test('overwrite is per member: a confirmed member of another set becomes a copy target, the others are still checked', () => {
  const ours: [string, 'InSync'][] = [['a', 'InSync']];
  const other = { ...scb('x', 3, [['x', 'InSync']]), setId: 'T' };
  const p = assemble([probe('a', scb('a', 2, ours)), { ...probe('x', other), overwrite: true }], opts);
  assert.equal(p.setId, 'S');
  assert.deepEqual(p.members.map((m) => [m.path, m.role, m.state]), [['a', 'source', 'InSync'], ['x', 'target', 'FullCopy']]);
  // Foreign data on a member without the confirmation is still refused, whatever another member says.
  assert.throws(() => assemble([probe('a', scb('a', 2, ours)), { ...probe('x', other), overwrite: true }, probe('f', null, false)], opts),
    (e) => isEngineError(e, 'ENG_FOREIGN_DATA') && /member f /.test((e as Error).message));
  assert.throws(() => assemble([probe('a', scb('a', 2, ours)), probe('x', other)], opts), (e) => isEngineError(e, 'ENG_SET_MISMATCH'));
});

test('keepRemoved: a member the newest record lists as Removed stays out even when given', () => {
  const rec: [string, 'InSync' | 'Removed'][] = [['a', 'InSync'], ['b', 'Removed']];
  const probes = [probe('a', scb('a', 5, rec)), probe('b', scb('b', 4, [['a', 'InSync'], ['b', 'Removed']]))];
  const kept = assemble(probes, { ...opts, keepRemoved: true });
  assert.deepEqual(kept.members.map((m) => m.id), ['a']);
  assert.deepEqual(kept.away.map((m) => [m.id, m.role]), [['b', 'away']]);
  assert.deepEqual(kept.missing.map((m) => [m.id, m.state]), [['b', 'Removed']]);
  // Without it (reconstruct), it joins as a copy target.
  const joined = assemble(probes, opts);
  assert.deepEqual(joined.members.map((m) => [m.id, m.role]), [['a', 'source'], ['b', 'target']]);
});

test('a member that recorded its own departure before the others did: the set\'s record is one of a member in the set, and unclean wins', () => {
  // b was leaving: its own record (same generation) lists itself Removed and says clean; a crash came
  // before a and c recorded the departure (their record: b InSync, not clean).
  const running: [string, 'InSync'][] = [['a', 'InSync'], ['b', 'InSync'], ['c', 'InSync']];
  const leaving: [string, 'InSync' | 'Removed'][] = [['a', 'InSync'], ['b', 'Removed'], ['c', 'InSync']];
  const p = assemble([
    probe('b', scb('b', 9, leaving, { clean: true })),
    probe('a', scb('a', 9, running, { clean: false })),
    probe('c', scb('c', 9, running, { clean: false })),
  ], opts);
  assert.equal(p.unclean, true, 'the others crashed with writes in flight: a merge is owed');
  assert.equal(p.reference?.memberId, 'a');
  assert.deepEqual(p.members.map((m) => [m.id, m.role]), [['b', 'source'], ['a', 'source'], ['c', 'source']]);
});

test('newSetSize: a new set takes the asked size (members may be bigger), or the smallest member\'s room when that is less; a set the members hold keeps its own size', () => {
  const big = (path: string) => ({ ...probe(path, null), rawBytes: 128 * MiB + HEADER_BYTES });
  const p = assemble([big('a'), big('b')], { ...opts, newSetSize: 48 * MiB });
  assert.equal(p.created, true);
  assert.equal(p.size, 48 * MiB);
  assert.equal(assemble([big('a'), big('b')], { ...opts, newSetSize: 128 * MiB }).size, 128 * MiB, 'exactly the usable bytes fit');
  assert.equal(assemble([big('a'), probe('b', null)], { ...opts, newSetSize: 96 * MiB }).size, 64 * MiB, 'a smaller member makes a smaller set (grown later)');
  const ms: [string, 'InSync'][] = [['a', 'InSync'], ['b', 'InSync']];
  const q = assemble([probe('a', scb('a', 5, ms)), probe('b', scb('b', 5, ms))], { ...opts, newSetSize: 32 * MiB });
  assert.equal(q.created, false);
  assert.equal(q.size, 64 * MiB, 'the recorded size, not the asked one');
});
