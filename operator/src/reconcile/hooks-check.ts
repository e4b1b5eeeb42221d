/**
 * Freeze/thaw hooks exec a command in a pod with the operator's own rights, so a ShadowSet's author could
 * otherwise run anything in any pod of the namespace. A hook runs only in a pod that declares itself a
 * consumer of the set (annotation `shadowset.dev/consumer-of: <set>[,<set>…]`), set by whoever made the pod.
 */
import { Reason } from '../api/conditions.js';
import type { ShadowSetSpec } from '../api/shadowset.js';
import type { Observed } from './types.js';

export const CONSUMER_ANNOTATION = 'shadowset.dev/consumer-of';

/** The sets a pod's annotations declare it a consumer of. */
export function consumerOf(annotations: Record<string, string> | undefined): string[] {
  return (annotations?.[CONSUMER_ANNOTATION] ?? '').split(',').map((s) => s.trim()).filter(Boolean);
}

/** The pods the spec's hooks name. */
export function hookPodNames(spec: ShadowSetSpec): string[] {
  return [...new Set([spec.hooks?.freeze?.pod, spec.hooks?.thaw?.pod].filter((p): p is string => !!p))];
}

/** Why the spec's hooks may not run (Ready=False HookRefused), or null when every hook pod is a consumer. */
export function hookRefusal(o: Observed, spec: ShadowSetSpec): { reason: string; message: string } | null {
  for (const pod of hookPodNames(spec)) {
    const p = o.hookPods[pod];
    if (!p) return { reason: Reason.HookRefused, message: `hook pod ${pod} does not exist; no member is detached without its freeze and thaw` };
    if (!p.consumerOf.includes(o.name)) {
      return {
        reason: Reason.HookRefused,
        message: `hook pod ${pod} is not a consumer of ShadowSet ${o.name} (annotation ${CONSUMER_ANNOTATION}); hooks run only there, so no member is detached`,
      };
    }
  }
  return null;
}
