export interface Clock {
  now(): number;
  iso(): string;
}
export const systemClock: Clock = { now: () => Date.now(), iso: () => new Date().toISOString() };
