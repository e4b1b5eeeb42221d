/**
 * A keyed work queue: a key queued many times runs once; a key runs at most once at a time (if it is
 * queued again while running, it runs again afterwards); failures back off exponentially per key, and
 * a success may ask to run again after a delay.
 */
export interface QueueResult {
  requeueAfterMs?: number;
}

export interface WorkQueueOptions {
  baseBackoffMs?: number;
  maxBackoffMs?: number;
  /** Keys handled at once (different keys). */
  concurrency?: number;
  onError?: (key: string, err: unknown, attempt: number) => void;
}

export class WorkQueue {
  private readonly queued = new Set<string>();
  private readonly order: string[] = [];
  private readonly running = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private active = 0;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly handler: (key: string) => Promise<QueueResult | void>, private readonly o: WorkQueueOptions = {}) {}

  add(key: string): void {
    if (this.stopped) return;
    if (this.running.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.queued.has(key)) return;
    this.queued.add(key);
    this.order.push(key);
    this.pump();
  }

  addAfter(key: string, ms: number): void {
    if (this.stopped) return;
    const old = this.timers.get(key);
    if (old) clearTimeout(old);
    const t = setTimeout(() => {
      this.timers.delete(key);
      this.add(key);
    }, ms);
    t.unref();
    this.timers.set(key, t);
  }

  backoffFor(key: string): number {
    const n = this.failures.get(key) ?? 0;
    const base = this.o.baseBackoffMs ?? 500;
    return Math.min(this.o.maxBackoffMs ?? 60_000, base * 2 ** Math.max(0, n - 1));
  }

  get length(): number {
    return this.order.length;
  }

  private pump(): void {
    const limit = this.o.concurrency ?? 4;
    while (this.active < limit && this.order.length > 0) {
      const key = this.order.shift()!;
      this.queued.delete(key);
      this.running.add(key);
      this.active++;
      void this.run(key);
    }
    if (this.active === 0 && this.order.length === 0) {
      const w = this.idleWaiters;
      this.idleWaiters = [];
      for (const f of w) f();
    }
  }

  private async run(key: string): Promise<void> {
    try {
      const r = await this.handler(key);
      this.failures.delete(key);
      if (r?.requeueAfterMs !== undefined) this.addAfter(key, r.requeueAfterMs);
    } catch (e) {
      const n = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, n);
      this.o.onError?.(key, e, n);
      this.addAfter(key, this.backoffFor(key));
    } finally {
      this.running.delete(key);
      this.active--;
      if (this.dirty.delete(key)) this.add(key);
      this.pump();
    }
  }

  /** Resolves when nothing is queued or running (timers aside). */
  idle(): Promise<void> {
    if (this.active === 0 && this.order.length === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }
}
