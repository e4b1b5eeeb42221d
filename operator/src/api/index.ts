export * from './group.js';
export * from './shadowset.js';
export * from './writebitmap.js';
export * from './conditions.js';
