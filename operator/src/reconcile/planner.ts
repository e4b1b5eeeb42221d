/**
 * The ShadowSet planner: (observed world, spec) → actions, status and when to look again. Pure and
 * deterministic; the controller gathers and acts.
 */
import { isWritableState, type EngineStatus } from '@shadowset/engine/api';
import { EventReason, Reason } from '../api/conditions.js';
import type { MemberSpec, ShadowSetSpec } from '../api/shadowset.js';
import { engineConfig, recordedUnitSocketDir } from './engine-config.js';
import { liveAttachments, placement, unitSocketHostDir } from './placement.js';
import { refusalReason } from './engine-refusal.js';
import { replaceReason } from './engine-pod-plan.js';
import { hookRefusal } from './hooks-check.js';
import { engineMemberFor } from './engine-members.js';
import { enginePod, memberServerPod, memberServerUri } from './pods.js';
import { exportService, internalSecretName, networkPolicy, policyFingerprint, setSecrets } from './set-objects.js';
import { buildStatus } from './status.js';
import type { Action, Observed, Plan } from './types.js';

const FAULT_RETURN_PACE_MS = 30_000;
const MEMBER_SERVER_WAIT_MS = 60_000;

/** Why the spec cannot be put in place now (terminal until something changes), or null. */
export function refusal(o: Observed, spec: ShadowSetSpec, members: MemberSpec[]): { reason: string; message: string } | null {
  for (const m of members) {
    if (!m.claimName) continue;
    const c = o.claims[m.claimName];
    if (!c || !c.exists) return { reason: Reason.ClaimNotFound, message: `member ${m.name}: PersistentVolumeClaim ${m.claimName} does not exist` };
    if (c.ownedBy) return { reason: Reason.ClaimInOtherSet, message: `member ${m.name}: claim ${m.claimName} already belongs to ShadowSet ${c.ownedBy}` };
    if (c.volumeMode !== 'Block') {
      return { reason: Reason.ClaimNotBlock, message: `member ${m.name}: claim ${m.claimName} has volumeMode ${c.volumeMode ?? 'Filesystem'}; members must be block-mode claims` };
    }
    if (!c.bound) return { reason: Reason.ClaimNotBound, message: `member ${m.name}: claim ${m.claimName} is not bound to a volume yet` };
  }
  void spec;
  return null;
}

/**
 * What an engine refusal is remembered against: the spec's generation and the engine's membership, states
 * and bitmaps. A refused change is asked again only once one of them changed.
 */
export function fingerprint(o: Observed, eng: EngineStatus): string {
  return JSON.stringify([o.generation, eng.generation, eng.members.map((m) => `${m.id}:${m.state}`), eng.bitmaps.map((b) => b.id)]);
}
const refusalKey = (a: { kind: string; member: string }) => `${a.kind}:${a.member}`;
export { refusalKey };

export function plan(o: Observed): Plan {
  const actions: Action[] = [];
  if ('invalid' in o.spec) {
    return { actions, status: buildStatus(o, null, { reason: Reason.InvalidSpec, message: o.spec.invalid }, actions), requeueAfterMs: -1 };
  }
  const spec = o.spec;
  const memberTimeout = spec.memberTimeoutSeconds ?? o.defaults.memberTimeoutSeconds;
  const owner = { name: o.name, namespace: o.namespace, uid: o.uid };
  const active = spec.members.filter((m) => m.state === 'Active');

  // The engine's node: pinned, beside the consumer (its VolumeAttachment), where it runs, or where the
  // first node-bound claim lives (placement.ts).
  const claimNode = (m: MemberSpec) => (m.claimName ? (o.claims[m.claimName]?.node ?? null) : null);
  const where = placement(o, spec);
  const engineNode = where.node;
  const local = (m: MemberSpec) => !!m.claimName && (claimNode(m) === null || engineNode === null || claimNode(m) === engineNode);

  // The unit socket on the host, for the CSI node plugin: once the set has a live attachment, and kept by a
  // pod that has it (the consumer going away restarts nothing).
  const unitDir = o.unitSocketDir ? unitSocketHostDir(o.unitSocketDir, o.namespace, o.name) : null;
  // A set the CSI driver made is there to be attached: its engine always serves the socket, so one started
  // before its consumer's attachment exists (after the consumer's node died, say) is not restarted for it.
  const unit = unitDir && (o.madeByDriver || liveAttachments(o.attachments).length > 0 || recordedUnitSocketDir(o.enginePod?.config) === unitDir) ? unitDir : null;
  const wanted = engineConfig(spec, o.engineImage, unit);
  if (o.enginePod?.deleting) {
    return { actions, status: buildStatus(o, null, { reason: Reason.EnginePending, message: `engine pod ${o.enginePod.name} is stopping` }, actions), requeueAfterMs: 1000 };
  }
  if (where.conflict && o.previous.placement?.conflict !== where.conflict) {
    actions.push({ kind: 'event', type: 'Warning', reason: EventReason.AttachmentConflict, message: where.conflict });
  }
  // The consumer is on another node: stop the engine cleanly here (SIGTERM), start it there next.
  if (o.enginePod?.node && where.source === 'VolumeAttachment' && o.enginePod.node !== where.node) {
    const why = `engine moves from node ${o.enginePod.node} to ${where.node}, because of VolumeAttachment ${where.attachment}`;
    actions.push({ kind: 'deleteEnginePod', reason: why });
    actions.push({ kind: 'event', type: 'Normal', reason: EventReason.EngineMoved, message: `${why} (a clean stop, then a start there)` });
    return { actions, status: buildStatus(o, null, { reason: Reason.EnginePending, message: why }, actions), requeueAfterMs: 1000 };
  }
  const replace = replaceReason(o, spec, wanted, claimNode);
  if (replace) {
    actions.push({ kind: 'deleteEnginePod', reason: replace });
    actions.push({ kind: 'event', type: 'Normal', reason: EventReason.EngineRestarted, message: `engine pod replaced (SIGTERM: a clean stop): ${replace}` });
    return { actions, status: buildStatus(o, null, { reason: Reason.EnginePending, message: `engine restarting: ${replace}` }, actions), requeueAfterMs: 1000 };
  }

  if (!o.enginePod) {
    const why = refusal(o, spec, active);
    if (why) {
      if (o.previous.conditions?.find((c) => c.type === 'Ready')?.reason !== why.reason) {
        actions.push({ kind: 'event', type: 'Warning', reason: EventReason.Refused, message: why.message });
      }
      return { actions, status: buildStatus(o, null, why, actions), requeueAfterMs: -1 };
    }
    // A member server of a member this engine will attach as a device served the engine before it, on
    // another node. While it lives, that engine, if its node is cut off rather than stopped, could still
    // write the member through it: delete it, and start nothing until it is gone (operator/README.md,
    // *Node loss*).
    const served = active.filter((m) => local(m) && o.memberServers[m.name]);
    if (served.length > 0) {
      for (const m of served) if (!o.memberServers[m.name]!.deleting) actions.push({ kind: 'deleteMemberServer', member: m.name, name: o.memberServers[m.name]!.name });
      const names = served.map((m) => m.name).join(', ');
      return { actions, status: buildStatus(o, null, { reason: Reason.EnginePending, message: `waiting for the member server of ${names} to stop: the new engine attaches it as a device` }, actions), requeueAfterMs: 1000 };
    }
    // The Secrets first: the pods mount them. Then the NetworkPolicy, before any listener exists.
    actions.push({ kind: 'ensureSecrets', secrets: setSecrets(owner, o.keys) });
    const policy = networkPolicy(owner, spec, o.operatorPods);
    if (o.networkPolicyFingerprint !== policyFingerprint(policy as never)) actions.push({ kind: 'applyNetworkPolicy', policy });
    // Members on other nodes are served by member servers; start the engine with those already running.
    // A member whose node is down is not waited for (a member server there would never run): the engine
    // starts without it, records it away with a write bitmap, and it is returned once its node is back.
    const down = (m: MemberSpec) => { const n = claimNode(m); return n !== null && o.nodesDown[n] !== undefined; };
    const remote = active.filter((m) => m.claimName && !local(m) && !down(m));
    const reached = [
      ...remote.filter((m) => o.memberServers[m.name]?.ready && o.memberServers[m.name]?.podIP).map((m) => ({ member: m, location: memberServerUri(o.memberServers[m.name]!.podIP!) })),
      ...active.filter((m) => m.nbd).map((m) => ({ member: m, location: m.nbd! })),
    ];
    for (const m of remote) if (!o.memberServers[m.name]) actions.push({ kind: 'createMemberServer', member: m.name, pod: memberServerPod(owner, m, o.engineImage, claimNode(m)) });
    // Start with every member that can be had: wait (a bounded time) for member servers to come up.
    const waiting = remote.filter((m) => !o.memberServers[m.name]?.ready);
    const waitedMs = Math.max(0, ...remote.map((m) => o.nowMs - (o.memberServers[m.name]?.createdMs ?? o.nowMs)));
    if (waiting.length > 0 && waitedMs < MEMBER_SERVER_WAIT_MS) {
      return { actions, status: buildStatus(o, null, { reason: Reason.EnginePending, message: `waiting for member servers of ${waiting.map((m) => m.name).join(', ')}` }, actions), requeueAfterMs: 1000 };
    }
    const site = engineNode ? (o.nodeZones[engineNode] ?? null) : null;
    actions.push({
      kind: 'createEnginePod',
      pod: enginePod({
        owner, spec, image: o.engineImage, node: engineNode, site, attached: active.filter(local), remote: reached,
        memberTimeoutSeconds: memberTimeout, minGeneration: o.previous.recordedGeneration, unitSocketHostDir: unit,
      }),
    });
    actions.push({ kind: 'applyService', service: exportService(owner, spec) });
    actions.push({ kind: 'event', type: 'Normal', reason: EventReason.EngineCreated, message: `engine pod created with ${active.length} member(s)` });
    // The CSI driver means its sets' members to be on different nodes, but a member class that binds
    // Immediately places its volumes itself and may put two on one node: said at each engine start. A
    // hand-made set may mean it (two disks of one node, like md): nothing is said.
    const crowded = o.madeByDriver ? sharedNodes(active, claimNode) : null;
    if (crowded) actions.push({ kind: 'event', type: 'Warning', reason: EventReason.MembersShareNode, message: crowded });
    return { actions, status: buildStatus(o, null, { reason: Reason.EnginePending, message: 'engine pod created' }, actions), requeueAfterMs: 2000 };
  }

  // The Service follows export.serviceType and export.port (a port change also restarted the engine), the
  // NetworkPolicy the export port; both are put back if deleted.
  if (!o.service || o.service.type !== spec.export.serviceType || o.service.port !== spec.export.port) {
    actions.push({ kind: 'applyService', service: exportService(owner, spec) });
  }
  const policy = networkPolicy(owner, spec, o.operatorPods);
  if (o.networkPolicyFingerprint !== policyFingerprint(policy as never)) actions.push({ kind: 'applyNetworkPolicy', policy });

  const refused = o.engine.kind === 'refused' ? { reason: refusalReason(o.engine.code, 'start'), message: `engine refused to start: ${o.engine.message}` } : null;
  if (refused?.reason === Reason.EngineUnauthorized) {
    // The pod mounts a Secret this operator did not derive for this set (one left by an earlier set of the
    // same name, or made by someone else): it is never overwritten, so say what to do.
    const why = {
      reason: refused.reason,
      message: `the engine refuses this operator's control token: Secret ${internalSecretName(o.name)} was not made for this ShadowSet (uid ${o.uid}); delete that Secret and the pod ${o.enginePod.name}`,
    };
    if (o.previous.conditions?.find((c) => c.type === 'Ready')?.reason !== why.reason) actions.push({ kind: 'event', type: 'Warning', reason: EventReason.Refused, message: why.message });
    return { actions, status: buildStatus(o, null, why, actions), requeueAfterMs: 30_000 };
  }
  if (o.engine.kind !== 'ok') {
    const why = refused
      ?? (o.engine.kind === 'unreachable'
        ? { reason: Reason.EngineUnreachable, message: o.engine.message }
        : { reason: Reason.EnginePending, message: `engine pod ${o.enginePod.name} is ${o.enginePod.phase}${o.enginePod.waiting ? ` (${o.enginePod.waiting})` : ''}` });
    if (refused && o.previous.conditions?.find((c) => c.type === 'Ready')?.reason !== why.reason) {
      actions.push({ kind: 'event', type: 'Warning', reason: EventReason.Refused, message: why.message });
    }
    return { actions, status: buildStatus(o, null, why, actions), requeueAfterMs: refused ? 30_000 : 2000 };
  }

  const eng = o.engine.status;
  const attached = new Set(o.enginePod.attached);
  const merging = eng.recovery.mode === 'Merge';
  let problem: { reason: string; message: string } | null = null;
  const known = new Set<string>();
  // A change the engine refused is not asked again until something changed (see fingerprint).
  const print = fingerprint(o, eng);
  const ask = (a: Extract<Action, { kind: 'engineAdd' | 'engineRemove' | 'engineReturn' }>) => {
    const held = o.refusals[refusalKey(a)];
    if (held && held.fingerprint === print) problem = { reason: held.reason, message: held.message };
    else actions.push(a);
  };

  // Settings first, so a copy this reconcile starts already runs at the rate the spec asks for.
  const source = spec.copySource === 'Alternate' ? null : spec.copySource === 'Master' ? 'master'
    : (engineMemberFor(spec.members.find((m) => m.name === spec.copySource)!, o, eng)?.id ?? null);
  const want = {
    copySource: source, copyBytesPerSecond: spec.throttle.copyBytesPerSecond,
    mergeBytesPerSecond: spec.throttle.mergeBytesPerSecond, maxCopies: spec.throttle.maxCopies ?? o.defaults.maxCopies, minicopyPolicy: spec.minicopyPolicy,
  };
  const have = eng.settings;
  if (have.copySource !== want.copySource || have.copyBytesPerSecond !== want.copyBytesPerSecond
    || have.mergeBytesPerSecond !== want.mergeBytesPerSecond || have.maxCopies !== want.maxCopies || have.minicopyPolicy !== want.minicopyPolicy
    || eng.memberTimeoutSeconds !== memberTimeout) {
    actions.push({ kind: 'engineSettings', body: { ...want, memberTimeoutSeconds: memberTimeout } });
  }

  // spec.size: grow once nothing resyncs (the engine refuses while a copy or merge runs, and names the
  // members still too small otherwise; the controller reports that as ResizePending).
  if (spec.size !== undefined && spec.size > eng.size && eng.recovery.mode === null) {
    actions.push({ kind: 'engineResize', from: eng.size, size: spec.size });
  } else if (spec.size !== undefined && spec.size < eng.size) {
    problem = { reason: Reason.InvalidSpec, message: `spec.size ${spec.size} is smaller than the set (${eng.size} bytes); a set cannot shrink` };
  }

  for (const m of spec.members) {
    const e = engineMemberFor(m, o, eng);
    if (e) known.add(e.id);
    const viaServer = !!m.claimName && !attached.has(m.name);
    const server = o.memberServers[m.name];
    if (m.state === 'Detached') {
      if (e && isWritableState(e.state)) {
        const others = eng.members.filter((x) => x.id !== e.id && x.state === 'InSync').length;
        if (merging) problem = { reason: Reason.DetachRefused, message: `member ${m.name} not detached: a merge is running` };
        else if (others < 2) problem = { reason: Reason.DetachRefused, message: `member ${m.name} not detached: fewer than two full members would remain` };
        else {
          // Freeze and thaw run only in a pod that declares itself this set's consumer.
          const hook = hookRefusal(o, spec);
          if (hook) {
            problem = hook;
            if (o.previous.conditions?.find((c) => c.type === 'Ready')?.reason !== hook.reason) {
              actions.push({ kind: 'event', type: 'Warning', reason: EventReason.HookRefused, message: hook.message });
            }
          } else {
            ask({ kind: 'engineRemove', member: m.name, engineId: e.id, policy: spec.minicopyPolicy, detach: true });
          }
        }
      }
      continue;
    }
    // Active.
    if (e && isWritableState(e.state)) continue;
    if (m.claimName) {
      const why = refusal(o, spec, [m]);
      if (why) {
        problem = why;
        continue;
      }
    }
    if (viaServer && (!server || !server.ready || !server.podIP)) {
      if (!server) actions.push({ kind: 'createMemberServer', member: m.name, pod: memberServerPod(owner, m, o.engineImage, claimNode(m)) });
      continue; // wait for the member server
    }
    const location = m.nbd ?? (viaServer ? memberServerUri(server!.podIP!) : undefined);
    if (e) {
      // A former member: return it (a faulted one at a measured pace, so a bad device does not flap).
      if (e.state === 'Faulted' && o.nowMs - (o.lastReturnAttempt[m.name] ?? 0) < FAULT_RETURN_PACE_MS) continue;
      // The set's policy holds on return too: Required fails rather than fall back to a full copy.
      const minicopy = spec.minicopyPolicy === 'Required' ? 'Required' : 'Optional';
      ask({ kind: 'engineReturn', member: m.name, engineId: e.id, minicopy, ...(location && location !== e.path ? { location } : {}) });
    } else if (location) {
      ask({ kind: 'engineAdd', member: m.name, body: { location, noCopy: m.noCopy, confirmOverwrite: m.confirmOverwrite, readCost: m.readCost, ...(m.site ? { site: m.site } : {}) } });
    }
  }

  // Members taken out of the spec leave the set (with a bitmap per policy).
  for (const e of eng.members) {
    if (known.has(e.id) || !isWritableState(e.state)) continue;
    const name = o.previous.members?.find((x) => x.id === e.id)?.name ?? e.id;
    ask({ kind: 'engineRemove', member: name, engineId: e.id, policy: spec.minicopyPolicy, detach: false });
  }
  // Member servers no longer needed.
  for (const [name, p] of Object.entries(o.memberServers)) {
    const m = spec.members.find((x) => x.name === name);
    if (!m || !m.claimName || attached.has(name)) actions.push({ kind: 'deleteMemberServer', member: name, name: p.name });
  }

  // WriteBitmap resources mirror the engine's bitmaps.
  const nameOfId = (id: string) => o.previous.members?.find((x) => x.id === id)?.name ?? spec.members.find((m) => engineMemberFor(m, o, eng)?.id === id)?.name ?? id.slice(0, 8);
  const crName = (memberName: string, bitmapId: string) => `${o.name}-${memberName}-${bitmapId.slice(0, 8)}`.toLowerCase().replace(/[^a-z0-9-]/g, '-');
  for (const b of eng.bitmaps) {
    const member = nameOfId(b.member);
    actions.push({
      kind: 'applyBitmapCr', name: crName(member, b.id), spec: { shadowSet: o.name, bitmapId: b.id, member },
      status: {
        id: b.id, member, chunkSize: b.chunkSize, coveredBytes: b.coveredBytes, dirtyBytes: b.dirtyBytes,
        percentPopulated: `${b.percentPopulated}%`, masterNode: b.masterNode, created: b.createdAt,
      },
    });
  }
  for (const cr of o.bitmapCrs) {
    if (!eng.bitmaps.some((b) => b.id === cr.bitmapId) && !cr.deleting) actions.push({ kind: 'deleteBitmapCr', name: cr.name });
  }

  // A member server mounts the set's Secret: make sure it is there (it could have been deleted).
  if (actions.some((a) => a.kind === 'createMemberServer')) actions.unshift({ kind: 'ensureSecrets', secrets: setSecrets(owner, o.keys) });

  const status = buildStatus(o, eng, problem, actions);
  const transient = eng.state !== 'Steady' || actions.some((a) => a.kind.startsWith('engine') || a.kind === 'createMemberServer');
  return { actions, status, requeueAfterMs: transient ? 1000 : 5000 };
}

/** Nodes that hold the claims of two or more members, said in one sentence (null: none). */
export function sharedNodes(members: MemberSpec[], nodeOf: (m: MemberSpec) => string | null): string | null {
  const byNode = new Map<string, string[]>();
  for (const m of members) {
    const n = nodeOf(m);
    if (n) byNode.set(n, [...(byNode.get(n) ?? []), m.name]);
  }
  const shared = [...byNode].filter(([, ms]) => ms.length > 1);
  if (shared.length === 0) return null;
  const each = shared.map(([n, ms]) => `members ${ms.join(', ')} are all on node ${n}`).join('; ');
  return `${each}: losing that node loses every copy they hold (give members claims bound to different nodes)`;
}
