/**
 * A server's memory as the kernel sees it: VmRSS (resident now) and VmHWM (the most it was ever
 * resident) from /proc/<pid>/status, and a sampler that keeps the peak RSS over one load (VmHWM alone
 * cannot say which load of a long-lived process reached it).
 */
import fs from 'node:fs';

/** { rssMiB, hwmMiB } of process `pid`, or null where /proc is not available or the process is gone. */
export function memoryOf(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kib = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN);
    const rss = kib('VmRSS');
    const hwm = kib('VmHWM');
    return Number.isFinite(rss) ? { rssMiB: rss / 1024, hwmMiB: Number.isFinite(hwm) ? hwm / 1024 : null } : null;
  } catch {
    return null;
  }
}

/** Samples a process's VmRSS every `everyMs` until stop(), which returns the peak in MiB (null if never read). */
export class RssSampler {
  constructor(pid, everyMs = 100) {
    this.pid = pid;
    this.peak = null;
    this.sample();
    this.timer = setInterval(() => this.sample(), everyMs);
    this.timer.unref();
  }

  sample() {
    const m = memoryOf(this.pid);
    if (m && (this.peak === null || m.rssMiB > this.peak)) this.peak = m.rssMiB;
  }

  stop() {
    clearInterval(this.timer);
    this.sample();
    return this.peak;
  }
}

/** Runs `fn` while sampling `pid`: { value, peakRssMiB }. */
export async function withPeakRss(pid, fn) {
  const s = new RssSampler(pid);
  try {
    const value = await fn();
    return { value, peakRssMiB: s.stop() };
  } finally {
    s.stop();
  }
}
