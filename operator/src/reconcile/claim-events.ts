/**
 * A ShadowSet the CSI driver made for a PersistentVolumeClaim is that claim's volume, so its warnings (a
 * member claim that is not a block device, a refusal, a member faulted) belong on the claim too: users of
 * a PVC look at `kubectl describe pvc`, not at an object they never made. The set's annotations name the
 * claim; the claim is trusted only if its uid gives the set's volume name (external-provisioner names a
 * volume `pvc-<claim uid>`), so a hand-made set cannot put events on someone else's claim.
 */
import { CLAIM_ANNOTATION, VOLUME_NAME_ANNOTATION } from '../api/group.js';
import type { Obj } from '../kube/client.js';

const claimName = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/** The claim's name to look up for this set's warnings, or null when the set names none (or nonsense). */
export function claimNamed(set: Obj): string | null {
  const name = set.metadata.annotations?.[CLAIM_ANNOTATION];
  return name && claimName.test(name) && set.metadata.annotations?.[VOLUME_NAME_ANNOTATION] ? name : null;
}

/** The claim the set is the volume of: same namespace, not being deleted, its uid gives the volume name. */
export function isVolumeOf(set: Obj, claim: Obj | null): claim is Obj {
  if (!claim?.metadata.uid || claim.metadata.deletionTimestamp) return false;
  if (claim.metadata.namespace !== set.metadata.namespace || claim.metadata.name !== claimNamed(set)) return false;
  return set.metadata.annotations?.[VOLUME_NAME_ANNOTATION] === `pvc-${claim.metadata.uid}`;
}
