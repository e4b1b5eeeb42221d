// A minimal scheduler so that pods without spec.nodeName land somewhere: it filters the simulated nodes
// that are up by nodeSelector, required node affinity and the node affinity of the local PVs the pod's
// claims are bound to, then picks the node with the fewest pods (ties by name). No resources, no taints
// beyond "node is down or cordoned", no preemption. The real kube-scheduler is not built (see README).
import type { CoreV1Api, V1Pod } from '@kubernetes/client-node';
import { matchNodeSelector, podFitsNode } from './selectors.js';
import type { Labels } from './selectors.js';

export interface Candidate {
  name: string;
  labels: Labels;
  podCount: number;
}

export type Placement = { node: string } | { unschedulable: string };

export async function choose(core: CoreV1Api, pod: V1Pod, nodes: Candidate[]): Promise<Placement> {
  const namespace = pod.metadata?.namespace ?? 'default';
  let fits = nodes.filter((n) => podFitsNode(pod, n.name, n.labels));
  if (fits.length === 0) return { unschedulable: `0/${nodes.length} nodes match the pod's node selector or affinity` };
  for (const v of pod.spec?.volumes ?? []) {
    const claim = v.persistentVolumeClaim?.claimName;
    if (!claim) continue;
    let volumeName: string | undefined;
    try {
      volumeName = (await core.readNamespacedPersistentVolumeClaim({ name: claim, namespace })).spec?.volumeName;
    } catch {
      return { unschedulable: `persistentvolumeclaim "${claim}" not found` };
    }
    if (!volumeName) return { unschedulable: 'pod has unbound immediate PersistentVolumeClaims' };
    const pv = await core.readPersistentVolume({ name: volumeName });
    const required = pv.spec?.nodeAffinity?.required;
    fits = fits.filter((n) => matchNodeSelector(required, n.name, n.labels));
    if (fits.length === 0) return { unschedulable: `no node up matches the node affinity of persistentvolume ${volumeName}` };
  }
  fits.sort((a, b) => a.podCount - b.podCount || a.name.localeCompare(b.name));
  return { node: fits[0]?.name ?? '' };
}
