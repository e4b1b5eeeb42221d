export * from './status.js';
export * from './control.js';
export * from './answers.js';
// Type only (erased): the codes an engine error answer carries, for clients that map them.
export type { EngineErrorCode } from '../core/errors.js';
// How a member is laid out, for clients that size members for a virtual unit (the CSI controller): the
// unit starts HEADER_BYTES into each member, its size is a multiple of SECTOR, and a set has at most
// MAX_MEMBERS members.
export { HEADER_BYTES, SECTOR, MAX_MEMBERS } from '../core/geometry.js';
// How to start the engine's process (its V8 heap flag), for whoever launches it (the operator).
export * from './process-env.js';
