/** Observing the world for one ShadowSet: its claims, pods, engine status and bitmap resources. */
import { shadowSetSpecSchema, type ShadowSetStatus } from '../api/shadowset.js';
import { ROLE_LABEL, SET_LABEL } from '../api/group.js';
import type { EngineClient } from '../engine-client.js';
import { R, type Kube, type Obj } from '../kube/client.js';
import { ATTACHED_ANNOTATION, MEMBER_ANNOTATION, engineBase, engineName } from '../reconcile/pods.js';
import type { ClaimInfo, EngineDefaults, EngineView, Observed, PodInfo } from '../reconcile/types.js';

function podInfo(p: Obj, attachedFrom: string): PodInfo {
  const st = (p.status ?? {}) as { phase?: string; podIP?: string; conditions?: { type: string; status: string }[]; containerStatuses?: { restartCount?: number }[] };
  const spec = (p.spec ?? {}) as { nodeName?: string };
  const ann = p.metadata.annotations?.[attachedFrom] ?? '';
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

export async function gather(kube: Kube, engine: EngineClient, ss: Obj, engineImage: string, lastReturnAttempt: Record<string, number>, defaults: EngineDefaults): Promise<Observed> {
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

  let engineView: EngineView = { kind: 'none' };
  if (enginePod?.podIP && enginePod.phase === 'Running' && !enginePod.deleting) {
    const a = await engine.status(engineBase(enginePod.podIP));
    engineView = a.ok ? { kind: 'ok', status: a.status } : a.unreachable ? { kind: 'unreachable', message: a.message } : { kind: 'refused', code: a.code, message: a.message };
  }

  const bitmapCrs = (await kube.list(R.writebitmaps, ns)).items
    .filter((b) => (b.spec as { shadowSet?: string })?.shadowSet === name)
    .map((b) => ({
      name: b.metadata.name,
      bitmapId: String((b.spec as { bitmapId?: string }).bitmapId ?? ''),
      member: String((b.spec as { member?: string }).member ?? ''),
      deleting: !!b.metadata.deletionTimestamp,
    }));

  const now = new Date();
  return {
    name, namespace: ns, uid: ss.metadata.uid!, generation: ss.metadata.generation ?? 0,
    deleting: !!ss.metadata.deletionTimestamp, spec, claims, enginePod, memberServers, engine: engineView, bitmapCrs,
    previous: (ss.status ?? {}) as ShadowSetStatus, engineImage, defaults, now: now.toISOString(), nowMs: now.getTime(), lastReturnAttempt,
  };
}
