/** An in-memory member, for tests and simulation. */
import { EngineError } from '../../core/errors.js';
import type { BlockBackend } from '../../ports/block-backend.js';

export class MemoryBackend implements BlockBackend {
  bytes: Buffer;
  flushes = 0;
  /** What refreshSize will find (a test grows the device with grow()). */
  private deviceBytes: number;
  constructor(readonly location: string, public size: number) {
    this.bytes = Buffer.alloc(size);
    this.deviceBytes = size;
  }
  /** The device grows (like a file after truncate); the backend sees it at its next refreshSize. */
  grow(size: number, fill = 0): void {
    const b = Buffer.alloc(size, fill);
    this.bytes.copy(b);
    this.bytes = b;
    this.deviceBytes = size;
  }
  async refreshSize(): Promise<number> {
    this.size = this.deviceBytes;
    return this.size;
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
