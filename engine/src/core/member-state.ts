/**
 * The member state machine, after the manual: a member is a full member (`InSync`, or `Merging` while a
 * merge makes the members identical again), a copy target (`FullCopy`, `Minicopy`), or out of the set
 * (`Removed` by request, `Faulted` by a failure). Pure: `step(state, event)` gives the next state, or a
 * rejection naming why the event does not apply. Repeating an event whose result already holds is a
 * no-op (`changed: false`), not an error.
 *
 * A member that leaves and comes back is a new life of the same member: its return starts from the
 * state it returns in (`FullCopy` or `Minicopy`, see `chooseReturn`), not from a transition.
 */
import type { MemberState } from './scb.js';

export type { MemberState } from './scb.js';

export type MemberEvent =
  /** It failed (I/O, metadata write, flush, timeout). */
  | { type: 'fault' }
  /** It leaves by request (split for backup, taken out of the spec). */
  | { type: 'remove' }
  /** A merge starts: full members become Merging until it completes. */
  | { type: 'mergeStart' }
  | { type: 'mergeComplete' }
  /** Its copy (full copy or minicopy) completed and is on stable storage. */
  | { type: 'copyComplete' }
  /** Its copy failed midway: a minicopy becomes a full copy, a full copy resumes. */
  | { type: 'copyFailed' }
  /**
   * The copy a copy target gets is settled once its bitmap has been checked (at start, or as it joins):
   * the plan may have assumed the other mode.
   */
  | { type: 'copyPlanned'; mode: 'FullCopy' | 'Minicopy' };

export type Step =
  | { ok: true; state: MemberState; changed: boolean }
  | { ok: false; reason: string };

export const isFull = (s: MemberState): boolean => s === 'InSync' || s === 'Merging';
export const isCopyTarget = (s: MemberState): boolean => s === 'FullCopy' || s === 'Minicopy';
export const isWritable = (s: MemberState): boolean => isFull(s) || isCopyTarget(s);

const to = (from: MemberState, state: MemberState): Step => ({ ok: true, state, changed: from !== state });
const no = (from: MemberState, e: MemberEvent): Step => ({ ok: false, reason: `a member that is ${from} cannot take ${e.type}` });

export function step(state: MemberState, e: MemberEvent): Step {
  switch (e.type) {
    case 'fault':
      // A member that already left stays as it left (its record says why).
      return isWritable(state) ? to(state, 'Faulted') : to(state, state);
    case 'remove':
      return isWritable(state) ? to(state, 'Removed') : to(state, state);
    case 'mergeStart':
      if (state === 'InSync' || state === 'Merging') return to(state, 'Merging');
      // Copy targets and absent members take no part in a merge (a copy target is copied after it).
      return to(state, state);
    case 'mergeComplete':
      return state === 'Merging' ? to(state, 'InSync') : to(state, state);
    case 'copyComplete':
      if (isCopyTarget(state)) return to(state, 'InSync');
      return state === 'InSync' ? to(state, state) : no(state, e);
    case 'copyFailed':
      return isCopyTarget(state) ? to(state, 'FullCopy') : no(state, e);
    case 'copyPlanned':
      return isCopyTarget(state) ? to(state, e.mode) : no(state, e);
  }
}

/** Every event, for exhaustive walks of the machine. */
export const memberEvents: readonly MemberEvent[] = [
  { type: 'fault' }, { type: 'remove' }, { type: 'mergeStart' }, { type: 'mergeComplete' }, { type: 'copyComplete' },
  { type: 'copyFailed' }, { type: 'copyPlanned', mode: 'FullCopy' }, { type: 'copyPlanned', mode: 'Minicopy' },
];

/** Whether some sequence of events (none included) takes a member from `from` to `to`. */
export function reachable(from: MemberState, to: MemberState): boolean {
  const seen = new Set<MemberState>([from]);
  for (let frontier = [from]; frontier.length > 0;) {
    const next: MemberState[] = [];
    for (const s of frontier) {
      for (const e of memberEvents) {
        const r = step(s, e);
        if (r.ok && !seen.has(r.state)) {
          seen.add(r.state);
          next.push(r.state);
        }
      }
    }
    frontier = next;
  }
  return seen.has(to);
}

/** What a returning member's own record says, and the write bitmap kept for it, if any. */
export interface ReturnFacts {
  setId: string;
  memberId: string;
  chunkSize: number;
  /** The member's own record, as found on it (null: none, or not of this set). */
  record: { setId: string; memberId: string; generation: number; dataValid: boolean } | null;
  bitmap: { generation: number; chunkSize: number } | null;
  /** At start: the newest record lists the member in a minicopy from this bitmap (every write since went to it too). */
  resumingMinicopy?: boolean;
}

/**
 * How a member comes back: a minicopy if a bitmap was kept for it and the member is as it left (its
 * own record has the bitmap's generation and says its data was complete then), else a full copy.
 */
export function chooseReturn(f: ReturnFacts): { mode: 'Minicopy' | 'FullCopy'; why: string } {
  if (!f.bitmap) return { mode: 'FullCopy', why: 'no write bitmap' };
  const r = f.record;
  if (!r || r.setId !== f.setId || r.memberId !== f.memberId) return { mode: 'FullCopy', why: 'the member does not hold its record of this set' };
  if (f.bitmap.chunkSize !== f.chunkSize) return { mode: 'FullCopy', why: 'the bitmap has another chunk size' };
  if (f.resumingMinicopy) return { mode: 'Minicopy', why: 'its minicopy resumes' };
  if (r.generation !== f.bitmap.generation) return { mode: 'FullCopy', why: `the member changed after it left (generation ${r.generation}, bitmap ${f.bitmap.generation})` };
  if (!r.dataValid) return { mode: 'FullCopy', why: 'its record says its data was not complete when it left' };
  return { mode: 'Minicopy', why: 'the member is as it left' };
}
