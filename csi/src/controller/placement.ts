/**
 * Where a new set's members go, for member classes that bind on first consumer (WaitForFirstConsumer).
 * PVCs have no anti-affinity; what such a class waits for is the node the scheduler would write into the
 * claim's `volume.kubernetes.io/selected-node` annotation. No pod will consume a member claim (the engine
 * and member servers come after the claims are bound), so the controller chooses one node per member and
 * writes the annotation itself: different nodes, spread over zones first, among nodes that can run pods
 * and that the class's allowedTopologies admit. Pure: nodes in, names out.
 */
import { createHash } from 'node:crypto';
import type { Obj } from '@shadowset/operator/kube';
import { CsiError } from '../errors.js';

export const ZONE_LABEL = 'topology.kubernetes.io/zone';

export interface TopologyTerm {
  matchLabelExpressions?: { key: string; values: string[] }[];
}

interface NodeLike extends Obj {
  spec?: { unschedulable?: boolean; taints?: { key: string; effect: string }[] };
  status?: { conditions?: { type: string; status: string }[] };
}

/** Why a node cannot hold a member, or null. */
export function nodeProblem(n: NodeLike, allowed: TopologyTerm[] | undefined): string | null {
  if (n.metadata.deletionTimestamp) return 'being deleted';
  if (n.spec?.unschedulable) return 'cordoned';
  const ready = n.status?.conditions?.find((c) => c.type === 'Ready');
  if (ready?.status !== 'True') return 'not Ready';
  const taint = n.spec?.taints?.find((t) => t.effect === 'NoSchedule' || t.effect === 'NoExecute');
  if (taint) return `tainted ${taint.key}:${taint.effect}`;
  if (allowed && allowed.length > 0) {
    const labels = n.metadata.labels ?? {};
    const admits = allowed.some((term) => (term.matchLabelExpressions ?? []).every((e) => e.values.includes(labels[e.key] ?? '\u0000')));
    if (!admits) return 'outside the class\'s allowedTopologies';
  }
  return null;
}

/**
 * `count` distinct nodes. Zones are taken in turn so members land in as many zones as there are; within a
 * zone, and among zones, the start rotates with the volume's name so that volumes spread over the cluster.
 */
export function chooseNodes(nodes: NodeLike[], count: number, volumeName: string, allowed?: TopologyTerm[]): string[] {
  const eligible = nodes.filter((n) => nodeProblem(n, allowed) === null);
  if (eligible.length < count) {
    const why = nodes.filter((n) => nodeProblem(n, allowed) !== null).map((n) => `${n.metadata.name}: ${nodeProblem(n, allowed)}`);
    throw new CsiError('ResourceExhausted',
      `${count} members need ${count} different nodes; ${eligible.length} can hold one${why.length ? ` (${why.join(', ')})` : ''}`);
  }
  const seed = createHash('sha256').update(volumeName).digest().readUInt32BE(0);
  const byZone = new Map<string, string[]>();
  for (const n of eligible) {
    const zone = n.metadata.labels?.[ZONE_LABEL] ?? '';
    byZone.set(zone, [...(byZone.get(zone) ?? []), n.metadata.name]);
  }
  const rotate = <T>(xs: T[], by: number): T[] => xs.map((_, i) => xs[(i + by) % xs.length]!);
  const zones = rotate([...byZone.keys()].sort(), seed % byZone.size).map((z) => rotate(byZone.get(z)!.sort(), seed % byZone.get(z)!.length));
  const out: string[] = [];
  for (let round = 0; out.length < count; round++) {
    for (const z of zones) if (round < z.length && out.length < count) out.push(z[round]!);
  }
  return out;
}
