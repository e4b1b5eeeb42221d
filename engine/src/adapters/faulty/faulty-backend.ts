/**
 * Wraps a backend and injects faults on demand: I/O errors on reads or writes (optionally only in a
 * byte range), or a hang (operations never complete). For tests.
 */
import { EngineError } from '../../core/errors.js';
import type { BlockBackend } from '../../ports/block-backend.js';

export interface FaultPlan {
  readErrors?: { from: number; to: number } | 'all';
  writeErrors?: boolean;
  flushErrors?: boolean;
  hang?: boolean;
}

export class FaultyBackend implements BlockBackend {
  plan: FaultPlan = {};
  constructor(readonly inner: BlockBackend) {}
  get location(): string {
    return this.inner.location;
  }
  get size(): number {
    return this.inner.size;
  }
  private gate(): Promise<void> | null {
    return this.plan.hang ? new Promise<void>(() => undefined) : null;
  }
  private eio(op: string): EngineError {
    return new EngineError('ENG_IO', `injected ${op} error on ${this.location}`);
  }
  read(buf: Buffer, offset: number): Promise<void> {
    const r = this.plan.readErrors;
    if (r === 'all' || (r && offset < r.to && r.from < offset + buf.length)) return Promise.reject(this.eio('read'));
    return this.gate() ?? this.inner.read(buf, offset);
  }
  write(buf: Buffer, offset: number, fua: boolean): Promise<void> {
    if (this.plan.writeErrors) return Promise.reject(this.eio('write'));
    return this.gate() ?? this.inner.write(buf, offset, fua);
  }
  flush(): Promise<void> {
    if (this.plan.flushErrors) return Promise.reject(this.eio('flush'));
    return this.gate() ?? this.inner.flush();
  }
  discard(offset: number, length: number): Promise<void> {
    return this.gate() ?? this.inner.discard(offset, length);
  }
  writeZeroes(offset: number, length: number, fua: boolean): Promise<void> {
    if (this.plan.writeErrors) return Promise.reject(this.eio('write'));
    return this.gate() ?? this.inner.writeZeroes(offset, length, fua);
  }
  refreshSize(): Promise<number> {
    return this.inner.refreshSize?.() ?? Promise.resolve(this.inner.size);
  }
  ready(): Promise<void> {
    return this.inner.ready?.() ?? Promise.resolve();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
