export const GROUP = 'shadowset.dev';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const FIELD_MANAGER = 'shadowset-operator';
export const FINALIZER = `${GROUP}/dissolve`;
/** Label on every object the operator creates for a shadow set. */
export const SET_LABEL = `${GROUP}/shadowset`;
export const ROLE_LABEL = `${GROUP}/role`;
/**
 * On a ShadowSet the CSI driver made for a PersistentVolumeClaim: the claim's name (same namespace) and the
 * CO's volume name (`pvc-<claim uid>` from external-provisioner). The operator repeats the set's warnings on
 * that claim, so `kubectl describe pvc` shows why its volume is not ready.
 */
export const CLAIM_ANNOTATION = 'csi.shadowset.dev/claim';
export const VOLUME_NAME_ANNOTATION = 'csi.shadowset.dev/volume-name';
