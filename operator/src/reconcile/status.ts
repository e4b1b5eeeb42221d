/** ShadowSet status from what was observed: conditions, members, recovery; events for what changed. */
import type { EngineStatus, MemberAnswer } from '@shadowset/engine/api';
import { ConditionType, EventReason, Reason } from '../api/conditions.js';
import type { Condition, ShadowSetSpec, ShadowSetStatus } from '../api/shadowset.js';
import { engineMemberFor } from './engine-members.js';
import { exportSecretName } from './set-objects.js';
import { placement, type Placement } from './placement.js';
import type { Action, Observed } from './types.js';

const placementStatus = (p: Placement) => ({
  ...(p.node ? { node: p.node } : {}), source: p.source, ...(p.attachment ? { attachment: p.attachment } : {}), ...(p.conflict ? { conflict: p.conflict } : {}),
});

function condition(o: Observed, type: string, ok: boolean, reason: string, message: string): Condition {
  const prev = o.previous.conditions?.find((c) => c.type === type);
  const status = ok ? 'True' : 'False';
  const same = prev && prev.status === status && prev.reason === reason;
  return {
    type, status, reason, message,
    lastTransitionTime: same ? prev.lastTransitionTime : o.now,
    observedGeneration: o.generation,
  };
}

const pct = (done: number, total: number) => (total > 0 ? `${Math.floor((100 * done) / total)}%` : '');

export function buildStatus(o: Observed, eng: EngineStatus | null, problem: { reason: string; message: string } | null, actions: Action[]): ShadowSetStatus {
  const spec = 'invalid' in o.spec ? null : (o.spec as ShadowSetSpec);
  const members = (spec?.members ?? []).map((m) => {
    const e = eng ? engineMemberFor(m, o, eng) : undefined;
    const prev = o.previous.members?.find((x) => x.name === m.name);
    let state = e?.state ?? (prev?.id ? prev.state : 'Pending');
    // Detached until the engine takes it back: the spec says Active one reconcile before the return.
    if ((m.state === 'Detached' || prev?.state === 'Detached') && e && (e.state === 'Removed' || e.state === 'Faulted')) state = 'Detached';
    const claimNode = m.claimName ? (o.claims[m.claimName]?.node ?? undefined) : undefined;
    return {
      name: m.name,
      ...(e?.id ?? prev?.id ? { id: e?.id ?? prev?.id } : {}),
      state,
      ...(e?.reason ? { reason: e.reason } : {}),
      ...(claimNode ? { node: claimNode } : {}),
      ...(e?.progress ? { progress: pct(e.progress.bytesDone, e.progress.bytesTotal), bytesDone: e.progress.bytesDone, bytesTotal: e.progress.bytesTotal } : {}),
    };
  });
  const active = (spec?.members ?? []).filter((m) => m.state === 'Active').length;
  const inSync = members.filter((m) => m.state === 'InSync').length;
  // A member being merged is a full member: it serves reads (a read of an unmerged region is merged
  // first) and holds every acknowledged write. Only a missing or copying member makes the set degraded.
  const merging = members.filter((m) => m.state === 'Merging').length;
  const full = inSync + merging;
  const rec = eng?.recovery;
  const ready = !!eng && !problem;
  const readyReason = problem?.reason ?? (eng ? Reason.EngineRunning : Reason.EnginePending);
  const conditions: Condition[] = [
    condition(o, ConditionType.Ready, ready, readyReason, problem?.message ?? (eng ? `virtual unit served, generation ${eng.generation}` : 'engine not running')),
    condition(o, ConditionType.Degraded, !!eng && full < active,
      full < active ? Reason.MembersNotInSync : merging > 0 ? Reason.MembersMerging : Reason.AllMembersInSync,
      merging > 0
        ? `${full} of ${active} members full, ${merging} of them merging (identical once the merge completes)`
        : `${inSync} of ${active} members in sync`),
    condition(o, ConditionType.Resyncing, !!rec?.mode, rec?.mode ?? Reason.Steady,
      rec?.mode ? `${rec.mode}: ${rec.bytesDone} of ${rec.bytesTotal} bytes` : 'no copy or merge running'),
  ];
  const state = !eng ? (problem ? 'Failed' : 'Pending') : rec?.mode ? 'Transient' : full < active ? 'Degraded' : inSync < active ? 'Transient' : 'Steady';
  const status: ShadowSetStatus = {
    observedGeneration: o.generation,
    conditions,
    state,
    membersInSync: `${inSync}/${active}`,
    progress: rec?.mode ? pct(rec.bytesDone, rec.bytesTotal) : '',
    members,
    ...(eng ? {
      shadowGeneration: eng.generation,
      ...(eng.recordedGeneration ? { recordedGeneration: eng.recordedGeneration } : {}),
      size: eng.size,
      endpoint: `nbds://${o.name}.${o.namespace}.svc:${spec?.export.port ?? 10809}/${eng.export.name}`,
      ...(spec && !spec.export.tlsSecretName ? { exportSecret: exportSecretName(o.name) } : {}),
      recovery: {
        ...(rec?.mode ? { mode: rec.mode } : {}),
        ...(rec?.source ? { source: rec.source } : {}),
        targets: rec?.targets ?? [],
        bytesDone: rec?.bytesDone ?? 0,
        bytesTotal: rec?.bytesTotal ?? 0,
        bytesPerSecond: rec?.bytesPerSecond ?? 0,
        ...(rec?.etaSeconds != null ? { etaSeconds: rec.etaSeconds } : {}),
      },
    } : {}),
    ...(o.enginePod?.node ? { engineNode: o.enginePod.node } : {}),
    ...(spec ? { placement: placementStatus(placement(o, spec)) } : {}),
    ...(o.previous.secrets ? { secrets: o.previous.secrets } : {}),
  };
  events(o, status, actions);
  return status;
}

/** States a member leaves only by a return, and the states a return leads to. */
const AWAY = new Set(['Faulted', 'Removed', 'Detached']);
const BACK = new Set(['InSync', 'FullCopy', 'Minicopy']);

/** Events for every member state change and every copy or merge start and end. */
function events(o: Observed, next: ShadowSetStatus, actions: Action[]): void {
  const ev = (type: 'Normal' | 'Warning', reason: string, message: string) => actions.push({ kind: 'event', type, reason, message });
  for (const m of next.members ?? []) {
    const before = o.previous.members?.find((x) => x.name === m.name)?.state;
    if (!before || before === m.state) continue;
    const msg = `member ${m.name}: ${before} → ${m.state}${m.reason ? ` (${m.reason})` : ''}`;
    // Copy starts are announced when the copy is asked for; an end is a copy target become InSync, read
    // from the engine's states (its reason text is for people). Status holds the state the engine answered
    // when the copy was asked for (withAnswers), so a copy is seen ending however short it was.
    if (m.state === 'InSync' && (before === 'FullCopy' || before === 'Minicopy')) {
      ev('Normal', before === 'Minicopy' ? EventReason.MinicopyCompleted : EventReason.CopyCompleted, msg);
    }
    else if (m.state === 'Faulted') ev('Warning', EventReason.MemberFaulted, msg);
    // A return is announced when the engine answers it (and withAnswers keeps that state), so a member
    // seen back here got no answer: the call outlived its timeout (the member's node was silent when it was
    // made) and the engine finished the return once the node answered.
    else if (AWAY.has(before) && BACK.has(m.state)) {
      ev('Normal', EventReason.MemberReturned, `member ${m.name} returned to the set: ${before} → ${m.state}`);
      if (m.state === 'Minicopy') ev('Normal', EventReason.MinicopyStarted, `minicopy of member ${m.name} started (write bitmap)`);
      else if (m.state === 'FullCopy') ev('Normal', EventReason.CopyStarted, `full copy of member ${m.name} started`);
    }
    // Detached and Removed are announced by the action that caused them, not again here.
  }
  const was = o.previous.recovery?.mode;
  const now = next.recovery?.mode;
  if (now === 'Merge' && was !== 'Merge') ev('Normal', EventReason.MergeStarted, `merge of ${next.recovery?.bytesTotal ?? 0} bytes`);
  if (was === 'Merge' && now !== 'Merge') ev('Normal', EventReason.MergeCompleted, 'merge completed');
}

/**
 * Status with the engine's answers to this reconcile's adds and returns (by member name): the member's id
 * and the state it entered (FullCopy, Minicopy, InSync), as the engine said, before its next status.
 */
export function withAnswers(status: ShadowSetStatus, answers: Record<string, MemberAnswer>): ShadowSetStatus {
  if (!status.members || Object.keys(answers).length === 0) return status;
  return { ...status, members: status.members.map((m) => (Object.hasOwn(answers, m.name) ? { ...m, id: answers[m.name]!.id, state: answers[m.name]!.state } : m)) };
}
