import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Reason } from '../api/conditions.js';
import { refusalReason } from './engine-refusal.js';

test('engine refusal codes map to Ready reasons by code, in one table for a start and a change alike', () => {
  const both: [string, string][] = [
    ['ENG_FOREIGN_DATA', Reason.ForeignData],
    ['ENG_OTHER_SET', Reason.ForeignData],
    ['ENG_SET_MISMATCH', Reason.ForeignData],
    ['ENG_STALE_RECORD', Reason.NewestMemberMissing],
    ['ENG_BITMAP_REQUIRED', Reason.BitmapRequired],
    ['ENG_MERGE_ACTIVE', Reason.DetachRefused],
    ['ENG_LAST_FULL_MEMBER', Reason.DetachRefused],
    ['ENG_UNAUTHORIZED', Reason.EngineUnauthorized],
  ];
  for (const [code, reason] of both) {
    assert.equal(refusalReason(code, 'start'), reason, `${code} at start`);
    assert.equal(refusalReason(code, 'change'), reason, `${code} on a change`);
  }
});

test('any other code: an engine that did not start is unreachable, a refused change is impossible as asked', () => {
  for (const code of ['ENG_NO_FULL_MEMBER', 'ENG_IO', 'ENG_INVALID_ARGUMENT', 'ENG_INTERNAL', 'ENG_SOMETHING_NEW', 'toString', '__proto__', '']) {
    assert.equal(refusalReason(code, 'start'), Reason.EngineUnreachable, code);
    assert.equal(refusalReason(code, 'change'), Reason.ImpossibleChange, code);
  }
});
