/**
 * A token bucket in bytes per second (0 = unlimited), and the measured rate of what went through it.
 * `now` is a monotonic clock in milliseconds (the Clock port's).
 */
export class Throttle {
  private tokens = 0;
  private last: number;
  /** What went through, in 100 ms slices (one entry per slice, so a busy copy keeps ~30, not thousands). */
  private window: { slice: number; t: number; bytes: number; n: number }[] = [];

  constructor(public bytesPerSecond: number, private readonly now: () => number) {
    this.last = now();
  }

  /** Wait until `bytes` may go; stops waiting early (in steps of 100 ms) once `cancelled()` says so. */
  async take(bytes: number, cancelled: () => boolean = () => false): Promise<void> {
    this.note(bytes);
    if (this.bytesPerSecond <= 0) return;
    const now = this.now();
    this.tokens = Math.min(this.bytesPerSecond, this.tokens + ((now - this.last) / 1000) * this.bytesPerSecond);
    this.last = now;
    this.tokens -= bytes;
    if (this.tokens < 0) {
      const until = now + (-this.tokens / this.bytesPerSecond) * 1000;
      while (this.now() < until && !cancelled()) await new Promise((r) => setTimeout(r, Math.min(100, until - this.now())));
    }
  }

  private note(bytes: number): void {
    const now = this.now();
    const slice = Math.floor(now / 100);
    const last = this.window[this.window.length - 1];
    if (last?.slice === slice) {
      last.bytes += bytes;
      last.n++;
    } else this.window.push({ slice, t: now, bytes, n: 1 });
    this.prune(now);
  }

  private prune(now: number): void {
    while (this.window.length > 0 && now - this.window[0]!.t > 3000) this.window.shift();
  }

  /** Bytes per second over the last few seconds (0 until two transfers were seen). */
  rate(): number {
    const now = this.now();
    this.prune(now);
    if (this.window.reduce((a, w) => a + w.n, 0) < 2) return 0;
    const span = (now - this.window[0]!.t) / 1000;
    const bytes = this.window.reduce((a, w) => a + w.bytes, 0);
    return span > 0 ? Math.round(bytes / span) : 0;
  }
}
