/**
 * The objects a dynamic volume is made of: a ShadowSet (its spec checked by the operator's own schema) and
 * one block-mode claim of the member class per member, owned by the set so that they go when it goes.
 * Pure: the controller decides, these functions only shape.
 */
import { HEADER_BYTES } from '@shadowset/engine/api';
import { CLAIM_ANNOTATION, VOLUME_NAME_ANNOTATION, shadowSetSpecSchema } from '@shadowset/operator/api';
import type { Obj } from '@shadowset/operator/kube';
import { CsiError } from '../errors.js';
import { PVC_NAME_KEY, PVC_NAMESPACE_KEY, type Parameters } from './params.js';

export const MANAGED_BY = { 'app.kubernetes.io/managed-by': 'shadowset-csi' } as const;
/** On the set and its member claims: which set (by name) they make up. */
export const VOLUME_LABEL = 'csi.shadowset.dev/volume';
export const MEMBER_LABEL = 'csi.shadowset.dev/member';
/** On the set: the CO's name for the volume, the claim it was made for, its capacity, and its parameters. */
export { CLAIM_ANNOTATION, VOLUME_NAME_ANNOTATION };
export const CAPACITY_ANNOTATION = 'csi.shadowset.dev/capacity-bytes';
export const PARAMETERS_ANNOTATION = 'csi.shadowset.dev/parameters';
export const SELECTED_NODE_ANNOTATION = 'volume.kubernetes.io/selected-node';

export interface VolumePlan {
  namespace: string;
  setName: string;
  volumeName: string;
  capacityBytes: number;
  params: Parameters;
  /** One node per member for WaitForFirstConsumer member classes; null for Immediate ones. */
  nodes: (string | null)[];
}

export const memberName = (i: number): string => `m${i + 1}`;
export const memberClaimName = (setName: string, i: number): string => `${setName}-${memberName(i)}`;

/** What the set's record of its parameters holds: the ones that shape the volume, in a fixed order. */
export function parametersRecord(p: Parameters): string {
  const { memberClass, members, minicopyPolicy, memberTimeoutSeconds, copyBytesPerSecond, mergeBytesPerSecond, maxCopies } = p;
  return JSON.stringify({ memberClass, members, minicopyPolicy, memberTimeoutSeconds, copyBytesPerSecond, mergeBytesPerSecond, maxCopies });
}

export function shadowSetFor(v: VolumePlan): Obj {
  const p = v.params;
  const spec = {
    // The unit is the size asked for, whatever the member class gives (it may round up, or bind bigger PVs).
    size: v.capacityBytes,
    members: Array.from({ length: p.members }, (_, i) => ({ name: memberName(i), claimName: memberClaimName(v.setName, i) })),
    ...(p.minicopyPolicy ? { minicopyPolicy: p.minicopyPolicy } : {}),
    ...(p.memberTimeoutSeconds !== undefined ? { memberTimeoutSeconds: p.memberTimeoutSeconds } : {}),
    throttle: {
      ...(p.copyBytesPerSecond !== undefined ? { copyBytesPerSecond: p.copyBytesPerSecond } : {}),
      ...(p.mergeBytesPerSecond !== undefined ? { mergeBytesPerSecond: p.mergeBytesPerSecond } : {}),
      ...(p.maxCopies !== undefined ? { maxCopies: p.maxCopies } : {}),
    },
  };
  // The parameters were checked against the same bounds; a spec the CRD would refuse is our bug.
  const checked = shadowSetSpecSchema.safeParse(spec);
  if (!checked.success) throw new CsiError('Internal', `the ShadowSet spec built from the parameters is invalid: ${checked.error.message}`);
  return {
    apiVersion: 'shadowset.dev/v1alpha1',
    kind: 'ShadowSet',
    metadata: {
      name: v.setName,
      namespace: v.namespace,
      labels: { ...MANAGED_BY, [VOLUME_LABEL]: v.setName },
      annotations: {
        [VOLUME_NAME_ANNOTATION]: v.volumeName,
        // Only when the set lives beside the claim: the operator looks for it in the set's namespace.
        ...(p[PVC_NAME_KEY] && p[PVC_NAMESPACE_KEY] === v.namespace ? { [CLAIM_ANNOTATION]: p[PVC_NAME_KEY] } : {}),
        [CAPACITY_ANNOTATION]: String(v.capacityBytes),
        [PARAMETERS_ANNOTATION]: parametersRecord(p),
      },
    },
    spec,
  };
}

/** A member claim: the unit's capacity plus the engine's metadata header. */
export function memberClaimFor(v: VolumePlan, i: number, owner: { name: string; uid: string }) {
  const node = v.nodes[i] ?? null;
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: {
      name: memberClaimName(v.setName, i),
      namespace: v.namespace,
      labels: { ...MANAGED_BY, [VOLUME_LABEL]: v.setName, [MEMBER_LABEL]: memberName(i) },
      ...(node ? { annotations: { [SELECTED_NODE_ANNOTATION]: node } } : {}),
      ownerReferences: [{ apiVersion: 'shadowset.dev/v1alpha1', kind: 'ShadowSet', name: owner.name, uid: owner.uid, controller: true, blockOwnerDeletion: true }],
    },
    spec: {
      accessModes: ['ReadWriteOnce'],
      volumeMode: 'Block',
      storageClassName: v.params.memberClass,
      resources: { requests: { storage: String(v.capacityBytes + HEADER_BYTES) } },
    },
  };
}
