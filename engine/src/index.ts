export * from './api/index.js';
export { EngineError, type EngineErrorCode } from './core/errors.js';
