/**
 * ShadowSet reconciler: get → finalize → gather → plan → act → status. Level-triggered: whatever woke
 * it, it looks at the world and moves it one step.
 */
import type { Logger } from 'pino';
import type { MemberAnswer, MemberState } from '@shadowset/engine/api';
import { API_VERSION, FIELD_MANAGER, FINALIZER, SET_LABEL } from '../api/group.js';
import { EventReason, Reason } from '../api/conditions.js';
import type { ShadowSetSpec, ShadowSetStatus } from '../api/shadowset.js';
import { refusalCode, unanswered, type EngineClient } from '../engine-client.js';
import { R, type Kube, type Obj } from '../kube/client.js';
import { isOperatorError } from '../kube/errors.js';
import { mergePatchFrom } from '../kube/merge-patch.js';
import { refusalReason } from '../reconcile/engine-refusal.js';
import { claimNamed, isVolumeOf } from '../reconcile/claim-events.js';
import { consumerOf } from '../reconcile/hooks-check.js';
import { engineBase } from '../reconcile/pods.js';
import { networkPolicyName, type OperatorPods } from '../reconcile/set-objects.js';
import { fingerprint, plan, refusalKey } from '../reconcile/planner.js';
import { withAnswers } from '../reconcile/status.js';
import { DEFAULTS, type Action, type EngineDefaults, type Observed } from '../reconcile/types.js';
import { gather, type SetMemory } from './gather.js';
import { BITMAP_FINALIZER } from './writebitmap-controller.js';
import type { Hooks } from './hooks.js';
import type { Metrics } from '../runtime/metrics.js';

export interface ControllerDeps {
  kube: Kube;
  engine: EngineClient;
  log: Logger;
  engineImage: string;
  hooks: Hooks;
  metrics: Metrics;
  defaults?: EngineDefaults;
  /** The operator's key (each set's token and PSKs derive from it). */
  key: Buffer;
  operatorPods: OperatorPods;
  unitSocketDir?: string | null;
}

export class ShadowSetController {
  private readonly memory = new Map<string, SetMemory>();

  constructor(private readonly d: ControllerDeps) {}

  async reconcile(key: string): Promise<{ requeueAfterMs?: number } | void> {
    const [ns, name] = key.split('/') as [string, string];
    const ss = await this.d.kube.get(R.shadowsets, ns, name);
    if (!ss) return; // gone: nothing to do
    if (ss.metadata.deletionTimestamp) return this.dissolve(ss);
    if (!ss.metadata.finalizers?.includes(FINALIZER)) {
      await this.d.kube.mergePatch(R.shadowsets, ns, name, { metadata: { finalizers: [...(ss.metadata.finalizers ?? []), FINALIZER], resourceVersion: ss.metadata.resourceVersion } });
      return { requeueAfterMs: 0 };
    }
    const memory = this.memory.get(key) ?? { lastReturnAttempt: {}, refusals: {}, downSinceMs: null };
    this.memory.set(key, memory);
    const o = await gather(this.d.kube, this.d.engine, ss, { engineImage: this.d.engineImage, defaults: this.d.defaults ?? DEFAULTS, memory, key: this.d.key, operatorPods: this.d.operatorPods, unitSocketDir: this.d.unitSocketDir ?? null });
    const p = plan(o);
    const { problem, created, answers, retry } = await this.act(ss, o, p.actions, memory);
    let status = withAnswers(p.status, answers);
    // Secrets this operator made (their uids): the only ones it deletes when the set is dissolved.
    if (created.length > 0) status = { ...status, secrets: [...(status.secrets ?? []).filter((x) => !created.some((c) => c.name === x.name)), ...created] };
    if (problem) {
      const ready = status.conditions?.find((c) => c.type === 'Ready');
      if (ready && (ready.status !== 'False' || ready.reason !== problem.reason)) {
        Object.assign(ready, { status: 'False', reason: problem.reason, message: problem.message, lastTransitionTime: o.now });
      }
    }
    if (JSON.stringify(status) !== JSON.stringify(ss.status ?? {})) {
      await this.d.kube.mergePatch(R.shadowsets, ns, name, { status: mergePatchFrom(ss.status ?? {}, status) }, 'status');
    }
    status = p.status;
    this.d.metrics.observe(key, status);
    if (retry) return { requeueAfterMs: 5000 };
    return p.requeueAfterMs >= 0 ? { requeueAfterMs: problem ? Math.max(p.requeueAfterMs, 5000) : p.requeueAfterMs } : undefined;
  }

  /**
   * Carry out the plan. Returns an engine refusal to show in the Ready condition, if any, the Secrets
   * created (name and uid), and the engine's answers to adds and returns (by member name).
   */
  private async act(ss: Obj, o: Observed, actions: Action[], memory: SetMemory): Promise<{
    problem: { reason: string; message: string } | null; created: { name: string; uid: string }[]; answers: Record<string, MemberAnswer>; retry: boolean;
  }> {
    const created: { name: string; uid: string }[] = [];
    const answers: Record<string, MemberAnswer> = {};
    const k = this.d.kube;
    const ns = o.namespace;
    const base = { base: o.enginePod?.podIP ? engineBase(o.enginePod.podIP) : '', token: o.keys.controlToken };
    let problem: { reason: string; message: string } | null = null;
    let retry = false;
    const event = (type: 'Normal' | 'Warning', reason: string, message: string) => this.event(ss, type, reason, message);
    for (const a of actions) {
      try {
        switch (a.kind) {
          case 'createEnginePod':
          case 'createMemberServer':
            await k.create(R.pods, ns, a.pod).catch((e: unknown) => {
              if (!isOperatorError(e, 'OP_CONFLICT')) throw e;
            });
            break;
          case 'deleteEnginePod':
            await k.delete(R.pods, ns, `${o.name}-engine`);
            break;
          case 'ensureSecrets':
            for (const secret of a.secrets) {
              // Create only: an existing Secret is left as is (the operator may not read it).
              const made = await k.create(R.secrets, ns, secret).catch((e: unknown) => {
                if (isOperatorError(e, 'OP_CONFLICT')) return null;
                throw e;
              });
              if (made?.metadata.uid) created.push({ name: made.metadata.name, uid: made.metadata.uid });
            }
            break;
          case 'applyNetworkPolicy': {
            const np = a.policy as { metadata: { name: string } };
            await k.apply(R.networkpolicies, ns, np.metadata.name, a.policy, FIELD_MANAGER);
            break;
          }
          case 'deleteMemberServer':
            await k.delete(R.pods, ns, a.name);
            break;
          case 'applyService': {
            const svc = a.service as { metadata: { name: string } };
            await k.apply(R.services, ns, svc.metadata.name, a.service, FIELD_MANAGER);
            break;
          }
          case 'engineAdd':
            {
              const r = await this.d.engine.add(base, a.body);
              answers[a.member] = r;
              await event('Normal', EventReason.MemberAdded, `member ${a.member} added from ${a.body.location}${a.body.noCopy ? ' without copy (noCopy)' : ''}`);
              await this.copyStarted(ss, a.member, r.state);
            }
            break;
          case 'engineReturn':
            memory.lastReturnAttempt[a.member] = o.nowMs;
            {
              const r = await this.d.engine.return(base, { member: a.engineId, ...(a.location ? { location: a.location } : {}), minicopy: a.minicopy });
              answers[a.member] = r;
              await event('Normal', EventReason.MemberReturned, `member ${a.member} returned to the set`);
              await this.copyStarted(ss, a.member, r.state);
            }
            break;
          case 'engineRemove': {
            const spec = o.spec as ShadowSetSpec;
            if (a.detach) {
              // Checked again just before the exec: the pod may have changed since it was read.
              const refused = await this.hookPodsRefused(ns, o.name, spec);
              if (refused) {
                problem = { reason: Reason.HookRefused, message: `member ${a.member} not detached: ${refused}` };
                await event('Warning', EventReason.HookRefused, problem.message);
                break;
              }
            }
            if (a.detach && spec.hooks?.freeze) await this.d.hooks.run(ns, spec.hooks.freeze, 'freeze');
            try {
              const r = await this.d.engine.remove(base, { member: a.engineId, minicopy: a.policy, reason: a.detach ? 'detached for backup' : 'removed from spec' });
              await event('Normal', a.detach ? EventReason.MemberDetached : EventReason.MemberRemoved,
                `member ${a.member} ${a.detach ? 'detached for backup' : 'removed'}${r.bitmap ? ` with write bitmap ${r.bitmap}` : ' without a write bitmap'}`);
              if (r.bitmap) await event('Normal', EventReason.BitmapCreated, `write bitmap ${r.bitmap} records writes for member ${a.member}`);
            } finally {
              if (a.detach && spec.hooks?.thaw) await this.d.hooks.run(ns, spec.hooks.thaw, 'thaw');
            }
            break;
          }
          case 'engineSettings':
            await this.d.engine.settings(base, a.body);
            break;
          case 'engineResize': {
            const r = await this.d.engine.resize(base, { size: a.size });
            delete memory.resizePending;
            if (r.grown) await event('Normal', EventReason.Resized, `virtual unit grown from ${r.from} to ${r.size} bytes`);
            break;
          }
          case 'applyBitmapCr':
            await this.applyBitmap(ss, a);
            break;
          case 'deleteBitmapCr':
            await k.delete(R.writebitmaps, ns, a.name);
            break;
          case 'event':
            await event(a.type, a.reason, a.message);
            break;
        }
        if (a.kind === 'engineAdd' || a.kind === 'engineRemove' || a.kind === 'engineReturn') delete memory.refusals[refusalKey(a)];
      } catch (e) {
        if (unanswered(e) && (a.kind === 'engineAdd' || a.kind === 'engineReturn' || a.kind === 'engineSettings')) {
          // No answer (e.g. a returning member whose node is silent holds the call past its timeout): what the
          // engine already said — a member Faulted, say — still reaches status now instead of after the
          // retry; the call is made again at a later reconcile (returns wait for their backoff).
          this.d.log.warn({ event: 'EngineCallUnanswered', set: o.name, action: a.kind, err: (e as Error).message }, 'engine call unanswered; will retry');
          retry = true;
          continue;
        }
        const code = refusalCode(e);
        if (!code) throw e;
        if (a.kind === 'engineResize' && (code === 'ENG_MEMBER_TOO_SMALL' || code === 'ENG_CONFLICT')) {
          // Not a fault: the members grow (their claims are being expanded) or a resync ends, and the
          // next reconcile asks again. Reported once per distinct reason.
          const message = `growing to ${a.size} bytes waits: ${(e as Error).message}`;
          if (memory.resizePending !== message) await event('Normal', EventReason.ResizePending, message);
          memory.resizePending = message;
          continue;
        }
        problem = { reason: refusalReason(code, 'change'), message: `${'member' in a ? `member ${a.member}: ` : ''}${(e as Error).message}` };
        this.d.log.warn({ event: 'EngineRefused', set: o.name, action: a.kind, code, err: (e as Error).message }, 'engine refused a change');
        await event('Warning', EventReason.Refused, problem.message);
        // Not asked again until the spec or the engine's membership changes: a refusal would only repeat.
        if ((a.kind === 'engineAdd' || a.kind === 'engineRemove' || a.kind === 'engineReturn') && o.engine.kind === 'ok') {
          memory.refusals[refusalKey(a)] = { fingerprint: fingerprint(o, o.engine.status), ...problem };
        }
      }
    }
    return { problem, created, answers, retry };
  }

  /** Why the hooks may not run now (their pods are not declared consumers of the set), or null. */
  private async hookPodsRefused(ns: string, set: string, spec: ShadowSetSpec): Promise<string | null> {
    for (const hook of [spec.hooks?.freeze, spec.hooks?.thaw]) {
      if (!hook) continue;
      const pod = await this.d.kube.get(R.pods, ns, hook.pod);
      if (!pod) return `hook pod ${hook.pod} does not exist`;
      if (!consumerOf(pod.metadata.annotations).includes(set)) return `hook pod ${hook.pod} is not a consumer of ShadowSet ${set}`;
    }
    return null;
  }

  private async copyStarted(ss: Obj, member: string, state: MemberState): Promise<void> {
    if (state === 'Minicopy') await this.event(ss, 'Normal', EventReason.MinicopyStarted, `minicopy of member ${member} started (write bitmap)`);
    else if (state === 'FullCopy') await this.event(ss, 'Normal', EventReason.CopyStarted, `full copy of member ${member} started`);
  }

  private async applyBitmap(ss: Obj, a: Extract<Action, { kind: 'applyBitmapCr' }>): Promise<void> {
    const ns = ss.metadata.namespace!;
    const existing = await this.d.kube.get(R.writebitmaps, ns, a.name);
    if (!existing) {
      await this.d.kube.create(R.writebitmaps, ns, {
        apiVersion: API_VERSION, kind: 'WriteBitmap',
        metadata: {
          name: a.name, namespace: ns, labels: { [SET_LABEL]: ss.metadata.name }, finalizers: [BITMAP_FINALIZER],
          ownerReferences: [{ apiVersion: API_VERSION, kind: 'ShadowSet', name: ss.metadata.name, uid: ss.metadata.uid!, controller: true }],
        },
        spec: a.spec,
      });
    } else if (existing.metadata.deletionTimestamp) {
      return;
    }
    if (JSON.stringify(existing?.status ?? {}) !== JSON.stringify(a.status)) {
      await this.d.kube.mergePatch(R.writebitmaps, ns, a.name, { status: a.status }, 'status');
    }
  }

  async event(obj: Obj, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    this.d.log.info({ event: `K8sEvent${reason}`, object: `${obj.kind ?? 'ShadowSet'}/${obj.metadata.name}`, type, reason, message }, message);
    await this.record(obj, obj.apiVersion ?? API_VERSION, obj.kind ?? 'ShadowSet', type, reason, message);
    // A set the CSI driver made is a claim's volume: its warnings are shown on the claim as well.
    const claim = type === 'Warning' && (obj.kind ?? 'ShadowSet') === 'ShadowSet' ? claimNamed(obj) : null;
    if (!claim) return;
    const pvc = await this.d.kube.get(R.pvcs, obj.metadata.namespace, claim).catch(() => null);
    if (isVolumeOf(obj, pvc)) await this.record(pvc, 'v1', 'PersistentVolumeClaim', type, reason, `ShadowSet ${obj.metadata.name}: ${message}`);
  }

  private async record(obj: Obj, apiVersion: string, kind: string, type: string, reason: string, message: string): Promise<void> {
    const now = new Date().toISOString();
    await this.d.kube.create(R.events, obj.metadata.namespace, {
      apiVersion: 'v1', kind: 'Event',
      metadata: { generateName: `${obj.metadata.name}.`, namespace: obj.metadata.namespace },
      involvedObject: { apiVersion, kind, name: obj.metadata.name, namespace: obj.metadata.namespace, uid: obj.metadata.uid },
      reason, message, type, source: { component: FIELD_MANAGER }, firstTimestamp: now, lastTimestamp: now, count: 1,
      reportingComponent: FIELD_MANAGER, reportingInstance: FIELD_MANAGER,
    }).catch((e: unknown) => this.d.log.warn({ err: (e as Error).message }, 'could not record an event'));
  }

  /** Deleting a ShadowSet dissolves it: the engine stops cleanly (members keep data and clean metadata). */
  private async dissolve(ss: Obj): Promise<{ requeueAfterMs?: number } | void> {
    const k = this.d.kube;
    const ns = ss.metadata.namespace!;
    const name = ss.metadata.name;
    if (!ss.metadata.finalizers?.includes(FINALIZER)) return;
    const pods = (await k.list(R.pods, ns, `${SET_LABEL}=${name}`)).items;
    const engine = pods.find((p) => p.metadata.name === `${name}-engine`);
    if (engine) {
      // The engine first (SIGTERM → clean stop), member servers after it.
      if (!engine.metadata.deletionTimestamp) await k.delete(R.pods, ns, engine.metadata.name);
      return { requeueAfterMs: 500 };
    }
    for (const p of pods) if (!p.metadata.deletionTimestamp) await k.delete(R.pods, ns, p.metadata.name);
    if (pods.length > 0) return { requeueAfterMs: 500 };
    await k.delete(R.services, ns, name);
    await k.delete(R.networkpolicies, ns, networkPolicyName(name));
    // Only the Secrets this operator created, by uid: one made by someone else under that name stays.
    for (const sec of ((ss.status ?? {}) as ShadowSetStatus).secrets ?? []) {
      await k.delete(R.secrets, ns, sec.name, { apiVersion: 'v1', kind: 'DeleteOptions', preconditions: { uid: sec.uid } }).catch((e: unknown) => {
        if (!isOperatorError(e, 'OP_CONFLICT')) throw e; // replaced meanwhile: not ours any more
      });
    }
    for (const b of (await k.list(R.writebitmaps, ns, `${SET_LABEL}=${name}`)).items) {
      if (b.metadata.finalizers?.length) await k.mergePatch(R.writebitmaps, ns, b.metadata.name, { metadata: { finalizers: null } });
      await k.delete(R.writebitmaps, ns, b.metadata.name);
    }
    await this.event(ss, 'Normal', EventReason.Dissolved, 'shadow set dissolved: members keep their data and clean metadata');
    this.memory.delete(`${ns}/${name}`);
    await k.mergePatch(R.shadowsets, ns, name, { metadata: { finalizers: (ss.metadata.finalizers ?? []).filter((f) => f !== FINALIZER), resourceVersion: ss.metadata.resourceVersion } });
  }
}
