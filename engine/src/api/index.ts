export * from './status.js';
export * from './control.js';
