export interface Clock {
  /** Wall-clock milliseconds since the epoch: for timestamps people read, never for durations. */
  now(): number;
  iso(): string;
  /** Milliseconds from an arbitrary origin that never goes back: for timeouts and durations. */
  monotonic(): number;
}
export const systemClock: Clock = { now: () => Date.now(), iso: () => new Date().toISOString(), monotonic: () => performance.now() };
