export * from './status.js';
export * from './control.js';
export * from './answers.js';
// Type only (erased): the codes an engine error answer carries, for clients that map them.
export type { EngineErrorCode } from '../core/errors.js';
