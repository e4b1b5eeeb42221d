/**
 * One operation per volume at a time. The CSI spec asks a plugin to answer ABORTED when an operation is
 * already pending for the same volume (the CO retries), rather than run two at once.
 */
import { CsiError } from './errors.js';

export class VolumeLocks {
  private readonly busy = new Set<string>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    if (this.busy.has(key)) throw new CsiError('Aborted', `an operation is already pending for volume ${key}`);
    this.busy.add(key);
    try {
      return await fn();
    } finally {
      this.busy.delete(key);
    }
  }
}
