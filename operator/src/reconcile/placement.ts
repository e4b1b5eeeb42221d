/**
 * Where a set's engine runs. The user may pin it (spec.engine.nodeName); otherwise it follows the set's
 * consumer, which the CSI attacher names in a VolumeAttachment (an object the product owns, so the user's
 * spec is never written); with no consumer it stays where it runs (no restart when the consumer goes away);
 * a set that never ran starts beside its first node-bound claim. Pure: the planner and status both use it.
 */
import type { MemberSpec, ShadowSetSpec } from '../api/shadowset.js';
import { olderFirst } from '../kube/attachments.js';
import type { AttachmentInfo, Observed } from './types.js';

export type PlacementSource = 'Pinned' | 'VolumeAttachment' | 'Running' | 'Claim' | 'Unplaced';

export interface Placement {
  node: string | null;
  source: PlacementSource;
  /** The VolumeAttachment followed (source VolumeAttachment). */
  attachment?: string;
  /** Several live attachments on different nodes: which were not followed, and why. */
  conflict?: string;
}

/** Live attachments, oldest first (by creation, then name, so the choice is stable). */
export function liveAttachments(attachments: AttachmentInfo[]): AttachmentInfo[] {
  return attachments.filter((a) => !a.deleting).sort(olderFirst);
}

export function placement(o: Observed, spec: ShadowSetSpec): Placement {
  const live = liveAttachments(o.attachments);
  const first = live[0];
  const others = live.filter((a) => first && a.node !== first.node);
  const conflict = first && others.length > 0
    ? `VolumeAttachment ${others.map((a) => `${a.name} (node ${a.node})`).join(', ')} also attaches this volume; only one node may hold it, the older attachment ${first.name} (node ${first.node}) is followed`
    : undefined;
  const withConflict = (p: Placement): Placement => (conflict ? { ...p, conflict } : p);
  if (spec.engine.nodeName) return withConflict({ node: spec.engine.nodeName, source: 'Pinned' });
  if (first) return withConflict({ node: first.node, source: 'VolumeAttachment', attachment: first.name });
  if (o.enginePod?.node) return { node: o.enginePod.node, source: 'Running' };
  const claimNode = (m: MemberSpec) => (m.claimName ? (o.claims[m.claimName]?.node ?? null) : null);
  // A node that is down would only have the engine pod evicted and made again: the first claim's node that is up.
  const nodes = spec.members.filter((m) => m.state === 'Active').map(claimNode).filter((n): n is string => n !== null);
  const node = nodes.find((n) => o.nodesDown[n] === undefined) ?? nodes[0] ?? null;
  return node ? { node, source: 'Claim' } : { node: null, source: 'Unplaced' };
}

/** Namespace and set names are DNS labels or subdomains: no '/', no '..' component. */
const NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

/**
 * The host directory of a set's unit socket, `<dir>/<namespace>/<set>`, or null when a name could lead the
 * path out of `dir` (the API server would not admit such names; checked anyway, the path is a hostPath).
 */
export function unitSocketHostDir(dir: string, namespace: string, name: string): string | null {
  if (!dir.startsWith('/') || dir.split('/').some((p) => p === '..' || p === '.')) return null;
  for (const n of [namespace, name]) if (n.length > 253 || !NAME.test(n) || n.split('.').some((p) => p === '')) return null;
  return `${dir.replace(/\/+$/, '')}/${namespace}/${name}`;
}

export const OUT_OF_SERVICE_TAINT = 'node.kubernetes.io/out-of-service';

/**
 * Why a node cannot run a member server now, or null: gone, tainted out-of-service (the administrator says it
 * is shut down: Kubernetes' non-graceful node shutdown) or not Ready. A member on such a node is not waited
 * for when an engine starts: a member server there would never run.
 */
export function nodeDown(node: { spec?: unknown; status?: unknown } | null): string | null {
  if (!node) return 'no such node';
  const taints = ((node.spec ?? {}) as { taints?: { key?: string }[] }).taints ?? [];
  if (taints.some((t) => t.key === OUT_OF_SERVICE_TAINT)) return `tainted ${OUT_OF_SERVICE_TAINT}`;
  const ready = ((node.status ?? {}) as { conditions?: { type?: string; status?: string }[] }).conditions?.find((c) => c.type === 'Ready');
  return ready?.status === 'True' ? null : `not Ready (${ready?.status ?? 'no Ready condition'})`;
}
