export const GROUP = 'shadowset.dev';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const FIELD_MANAGER = 'shadowset-operator';
export const FINALIZER = `${GROUP}/dissolve`;
/** Label on every object the operator creates for a shadow set. */
export const SET_LABEL = `${GROUP}/shadowset`;
export const ROLE_LABEL = `${GROUP}/role`;
