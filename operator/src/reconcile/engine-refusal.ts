/**
 * Engine error codes → Ready condition reasons: the one place the operator maps them (never the
 * engine's message text, which is for people).
 */
import type { EngineErrorCode } from '@shadowset/engine/api';
import { Reason } from '../api/conditions.js';

type ReasonName = (typeof Reason)[keyof typeof Reason];

/** When the engine refused: at its start (it holds the failure and answers it on /v1/status), or a change the operator asked for. */
export type RefusedDuring = 'start' | 'change';

/**
 * Codes with a reason of their own. Checked against the engine's code type: a code the engine renames or
 * drops fails the operator's build here.
 */
const byCode = {
  ENG_FOREIGN_DATA: Reason.ForeignData,
  ENG_OTHER_SET: Reason.ForeignData,
  ENG_SET_MISMATCH: Reason.ForeignData,
  ENG_STALE_RECORD: Reason.NewestMemberMissing,
  ENG_BITMAP_REQUIRED: Reason.BitmapRequired,
  ENG_MERGE_ACTIVE: Reason.DetachRefused,
  ENG_LAST_FULL_MEMBER: Reason.DetachRefused,
  ENG_UNAUTHORIZED: Reason.EngineUnauthorized,
} as const satisfies Partial<Record<EngineErrorCode, ReasonName>>;
const reasons: ReadonlyMap<string, ReasonName> = new Map(Object.entries(byCode));

/** Any other code: an engine that did not start is not serving; a change it refused is not possible as asked. */
const otherwise: Record<RefusedDuring, ReasonName> = { start: Reason.EngineUnreachable, change: Reason.ImpossibleChange };

export function refusalReason(code: string, during: RefusedDuring): ReasonName {
  return reasons.get(code) ?? otherwise[during];
}
