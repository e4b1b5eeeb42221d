export * from './api/index.js';
export { Operator, type OperatorOptions } from './operator.js';
export { plan } from './reconcile/planner.js';
// What running the operator in another process needs besides Operator (the local cluster of the tests and
// the demo): its CRDs, its Kubernetes client, the hook interface, and the keys it derives for a set.
export { buildCrds } from './api/crd.js';
export { Kube, R, type Obj } from './kube/client.js';
export { rawRequest } from './kube/raw.js';
export type { Hooks } from './controller/hooks.js';
export { deriveSetKeys, EXPORT_PSK_IDENTITY, type SetKeys } from './security/keys.js';
