/** Observing the world for one ShadowSet: its claims, pods, engine status and bitmap resources. */
import { shadowSetSpecSchema, type ShadowSetStatus } from '../api/shadowset.js';
import { ROLE_LABEL, SET_LABEL } from '../api/group.js';
import type { EngineClient } from '../engine-client.js';
import { R, type Kube, type Obj } from '../kube/client.js';
import { CONFIG_ANNOTATION, CONFIG_HASH_ANNOTATION } from '../reconcile/engine-config.js';
import { consumerOf, hookPodNames } from '../reconcile/hooks-check.js';
import { ATTACHED_ANNOTATION, MEMBER_ANNOTATION, engineBase, engineName, memberLocation } from '../reconcile/pods.js';
import { networkPolicyName, policyFingerprint, type OperatorPods } from '../reconcile/set-objects.js';
import type { ClaimInfo, EngineDefaults, EngineView, HeldRefusal, HookPod, Observed, PodInfo } from '../reconcile/types.js';
import { deriveSetKeys } from '../security/keys.js';
import { nodeDown } from '../reconcile/placement.js';
import { setAttachments } from './attachments.js';
import { VOLUME_NAME_ANNOTATION } from '../api/group.js';

/** What the controller remembers of a set between reconciles (lost on restart, which is harmless). */
export interface SetMemory {
  /** Last time a faulted member was offered back, by member name. */
  lastReturnAttempt: Record<string, number>;
  /** Engine refusals held until the world changes, by action key. */
  refusals: Record<string, HeldRefusal>;
  /** Since when the engine pod has not served (ms), or null. */
  downSinceMs: number | null;
  /** The last ResizePending message reported (the event is not repeated while it stays the same). */
  resizePending?: string;
}

export const ZONE_LABEL = 'topology.kubernetes.io/zone';

function podInfo(p: Obj, attachedFrom: string): PodInfo {
  const st = (p.status ?? {}) as {
    phase?: string; podIP?: string; conditions?: { type: string; status: string }[];
    containerStatuses?: { restartCount?: number; state?: { waiting?: { reason?: string; message?: string } } }[];
  };
  const waiting = st.containerStatuses?.[0]?.state?.waiting;
  const spec = (p.spec ?? {}) as {
    nodeName?: string;
    containers?: { args?: string[] }[];
    volumes?: { name: string; persistentVolumeClaim?: { claimName: string } }[];
  };
  const ann = p.metadata.annotations?.[attachedFrom] ?? '';
  const args = spec.containers?.[0]?.args ?? [];
  const claims: Record<string, string> = {};
  for (const v of spec.volumes ?? []) if (v.name.startsWith('m-') && v.persistentVolumeClaim) claims[v.name.slice(2)] = v.persistentVolumeClaim.claimName;
  const hash = p.metadata.annotations?.[CONFIG_HASH_ANNOTATION];
  const config = p.metadata.annotations?.[CONFIG_ANNOTATION];
  return {
    name: p.metadata.name,
    phase: st.phase ?? 'Pending',
    ready: st.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false,
    ...(st.podIP ? { podIP: st.podIP } : {}),
    ...(spec.nodeName ? { node: spec.nodeName } : {}),
    deleting: !!p.metadata.deletionTimestamp,
    attached: ann ? ann.split(',') : [],
    restarts: st.containerStatuses?.reduce((a, c) => a + (c.restartCount ?? 0), 0) ?? 0,
    createdMs: Date.parse(p.metadata.creationTimestamp ?? '') || 0,
    ...(waiting?.reason ? { waiting: `${waiting.reason}${waiting.message ? `: ${waiting.message}` : ''}` } : {}),
    ...(hash ? { configHash: hash } : {}),
    ...(config ? { config } : {}),
    memberLocations: args.flatMap((a, i) => (args[i - 1] === '--member' ? [memberLocation(a)] : [])),
    claims,
  };
}

function pvNode(pv: Obj | null): string | null {
  const terms = ((pv?.spec as { nodeAffinity?: { required?: { nodeSelectorTerms?: { matchExpressions?: { key: string; operator: string; values?: string[] }[] }[] } } } | undefined)
    ?.nodeAffinity?.required?.nodeSelectorTerms) ?? [];
  for (const t of terms) {
    for (const e of t.matchExpressions ?? []) {
      if (e.key === 'kubernetes.io/hostname' && e.operator === 'In' && e.values?.length) return e.values[0]!;
    }
  }
  return null;
}

export interface GatherOptions {
  engineImage: string;
  defaults: EngineDefaults;
  memory: SetMemory;
  /** The operator's key, from which each set's keys are derived. */
  key: Buffer;
  operatorPods: OperatorPods;
  /** Host directory of the engines' unit sockets for the CSI node plugin, or null. */
  unitSocketDir: string | null;
}

export async function gather(kube: Kube, engine: EngineClient, ss: Obj, g: GatherOptions): Promise<Observed> {
  const ns = ss.metadata.namespace!;
  const name = ss.metadata.name;
  const parsed = shadowSetSpecSchema.safeParse(ss.spec ?? {});
  const spec = parsed.success ? parsed.data : { invalid: parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ') };

  const claims: Record<string, ClaimInfo> = {};
  if (parsed.success) {
    const others = (await kube.list(R.shadowsets, ns)).items.filter((x) => x.metadata.uid !== ss.metadata.uid);
    for (const m of parsed.data.members) {
      if (!m.claimName) continue;
      const pvc = await kube.get(R.pvcs, ns, m.claimName);
      const pvcSpec = (pvc?.spec ?? {}) as { volumeMode?: string; volumeName?: string };
      const bound = ((pvc?.status ?? {}) as { phase?: string }).phase === 'Bound' || !!pvcSpec.volumeName;
      const pv = pvcSpec.volumeName ? await kube.get(R.pvs, undefined, pvcSpec.volumeName) : null;
      // The older set keeps a claim both name.
      const owner = others.find((x) => ((x.spec as { members?: { claimName?: string }[] })?.members ?? []).some((y) => y.claimName === m.claimName)
        && (x.metadata.creationTimestamp ?? '') <= (ss.metadata.creationTimestamp ?? '') && !x.metadata.deletionTimestamp);
      claims[m.claimName] = {
        name: m.claimName, exists: !!pvc, bound,
        ...(pvcSpec.volumeMode ? { volumeMode: pvcSpec.volumeMode } : {}),
        ...(pvcSpec.volumeName ? { pvName: pvcSpec.volumeName } : {}),
        node: pvNode(pv),
        ...(owner ? { ownedBy: owner.metadata.name } : {}),
      };
    }
  }

  const pods = (await kube.list(R.pods, ns, `${SET_LABEL}=${name}`)).items;
  const enginePodObj = pods.find((p) => p.metadata.name === engineName(name) && p.metadata.labels?.[ROLE_LABEL] === 'engine');
  const enginePod = enginePodObj ? podInfo(enginePodObj, ATTACHED_ANNOTATION) : null;
  const memberServers: Record<string, PodInfo> = {};
  for (const p of pods.filter((x) => x.metadata.labels?.[ROLE_LABEL] === 'member-server')) {
    const member = p.metadata.annotations?.[MEMBER_ANNOTATION];
    if (member) memberServers[member] = podInfo(p, MEMBER_ANNOTATION);
  }

  const keys = deriveSetKeys(g.key, { namespace: ns, name, uid: ss.metadata.uid! });
  let engineView: EngineView = { kind: 'none' };
  if (enginePod?.podIP && enginePod.phase === 'Running' && !enginePod.deleting) {
    const a = await engine.status({ base: engineBase(enginePod.podIP), token: keys.controlToken });
    engineView = a.ok ? { kind: 'ok', status: a.status } : a.unreachable ? { kind: 'unreachable', message: a.message } : { kind: 'refused', code: a.code, message: a.message };
  }
  const now = new Date();
  const nowMs = now.getTime();
  g.memory.downSinceMs = enginePod && !enginePod.deleting && engineView.kind !== 'ok' ? (g.memory.downSinceMs ?? nowMs) : null;

  const hookPods: Record<string, HookPod> = {};
  if (parsed.success && parsed.data.members.some((m) => m.state === 'Detached')) {
    for (const podName of hookPodNames(parsed.data)) {
      const p = await kube.get(R.pods, ns, podName);
      hookPods[podName] = p ? { consumerOf: consumerOf(p.metadata.annotations) } : null;
    }
  }
  // The engine's zone matters when its pod is made: only then are nodes read.
  const nodeZones: Record<string, string | null> = {};
  const nodesDown: Record<string, string> = {};
  if (parsed.success && !enginePod) {
    const names = new Set([parsed.data.engine.nodeName, ...Object.values(claims).map((c) => c.node)].filter((n): n is string => !!n));
    for (const n of names) {
      const node = await kube.get(R.nodes, undefined, n);
      nodeZones[n] = node?.metadata.labels?.[ZONE_LABEL] ?? null;
      const why = nodeDown(node);
      if (why) nodesDown[n] = why;
    }
  }
  const svc = await kube.get(R.services, ns, name);
  const svcSpec = (svc?.spec ?? {}) as { type?: string; ports?: { port?: number }[] };
  const service = svc ? { type: svcSpec.type ?? 'ClusterIP', port: svcSpec.ports?.[0]?.port ?? 0 } : null;
  const policy = await kube.get(R.networkpolicies, ns, networkPolicyName(name));

  const bitmapCrs = (await kube.list(R.writebitmaps, ns)).items
    .filter((b) => (b.spec as { shadowSet?: string })?.shadowSet === name)
    .map((b) => ({
      name: b.metadata.name,
      bitmapId: String((b.spec as { bitmapId?: string }).bitmapId ?? ''),
      member: String((b.spec as { member?: string }).member ?? ''),
      deleting: !!b.metadata.deletionTimestamp,
    }));

  return {
    name, namespace: ns, uid: ss.metadata.uid!, generation: ss.metadata.generation ?? 0,
    deleting: !!ss.metadata.deletionTimestamp, spec, claims, enginePod, memberServers, engine: engineView, bitmapCrs,
    previous: (ss.status ?? {}) as ShadowSetStatus, engineImage: g.engineImage, defaults: g.defaults,
    hookPods, nodeZones, nodesDown, service, networkPolicyFingerprint: policy ? policyFingerprint(policy as never) : null, keys, operatorPods: g.operatorPods, engineDownSinceMs: g.memory.downSinceMs, refusals: g.memory.refusals,
    now: now.toISOString(), nowMs, lastReturnAttempt: g.memory.lastReturnAttempt,
    attachments: parsed.success ? await setAttachments(kube, ns, name) : [], unitSocketDir: g.unitSocketDir,
    madeByDriver: !!ss.metadata.annotations?.[VOLUME_NAME_ANNOTATION],
  };
}
