// Just enough of Kubernetes' node selection to place and check pods: nodeSelector and required
// node-affinity terms (matchExpressions on labels; matchFields on metadata.name).
import type { V1NodeSelector, V1NodeSelectorRequirement, V1Pod } from '@kubernetes/client-node';

export type Labels = Readonly<Record<string, string>>;

function matchRequirement(req: V1NodeSelectorRequirement, labels: Labels): boolean {
  const has = Object.prototype.hasOwnProperty.call(labels, req.key);
  const value = labels[req.key];
  const values = req.values ?? [];
  switch (req.operator) {
    case 'In':
      return has && values.includes(value ?? '');
    case 'NotIn':
      return !has || !values.includes(value ?? '');
    case 'Exists':
      return has;
    case 'DoesNotExist':
      return !has;
    case 'Gt':
    case 'Lt': {
      const n = Number(value);
      const bound = Number(values[0]);
      if (!has || !Number.isInteger(n) || !Number.isInteger(bound)) return false;
      return req.operator === 'Gt' ? n > bound : n < bound;
    }
    default:
      return false;
  }
}

/** A NodeSelector matches when any of its terms matches; a term when all its requirements match. */
export function matchNodeSelector(sel: V1NodeSelector | undefined, nodeName: string, labels: Labels): boolean {
  if (!sel) return true;
  const terms = sel.nodeSelectorTerms ?? [];
  if (terms.length === 0) return false;
  return terms.some((t) => {
    const exprs = t.matchExpressions ?? [];
    const fields = t.matchFields ?? [];
    if (exprs.length === 0 && fields.length === 0) return false;
    return (
      exprs.every((r) => matchRequirement(r, labels)) &&
      fields.every((r) => r.key === 'metadata.name' && matchRequirement({ ...r, key: 'name' }, { name: nodeName }))
    );
  });
}

/** Does the pod's own placement (nodeSelector, required node affinity) allow this node? */
export function podFitsNode(pod: V1Pod, nodeName: string, labels: Labels): boolean {
  const ns = pod.spec?.nodeSelector ?? {};
  for (const [k, v] of Object.entries(ns)) if (labels[k] !== v) return false;
  const required = pod.spec?.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution;
  return matchNodeSelector(required, nodeName, labels);
}
