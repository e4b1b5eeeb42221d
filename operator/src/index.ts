export * from './api/index.js';
export { Operator, type OperatorOptions } from './operator.js';
export { plan } from './reconcile/planner.js';
