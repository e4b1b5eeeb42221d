/** An in-memory member, for tests and simulation. */
import { EngineError } from '../../core/errors.js';
import type { BlockBackend } from '../../ports/block-backend.js';

export class MemoryBackend implements BlockBackend {
  readonly bytes: Buffer;
  flushes = 0;
  constructor(readonly location: string, readonly size: number) {
    this.bytes = Buffer.alloc(size);
  }
  private check(offset: number, length: number): void {
    if (offset < 0 || offset + length > this.size) {
      throw new EngineError('ENG_OUT_OF_RANGE', `${this.location}: ${offset}+${length} beyond ${this.size}`);
    }
  }
  async read(buf: Buffer, offset: number): Promise<void> {
    this.check(offset, buf.length);
    this.bytes.copy(buf, 0, offset, offset + buf.length);
  }
  async write(buf: Buffer, offset: number): Promise<void> {
    this.check(offset, buf.length);
    buf.copy(this.bytes, offset);
  }
  async flush(): Promise<void> {
    this.flushes++;
  }
  async discard(offset: number, length: number): Promise<void> {
    return this.writeZeroes(offset, length);
  }
  async writeZeroes(offset: number, length: number): Promise<void> {
    this.check(offset, length);
    this.bytes.fill(0, offset, offset + length);
  }
  async close(): Promise<void> {}
}
