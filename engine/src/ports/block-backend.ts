/**
 * A member's raw device: a file, a block device, or a remote NBD export. Offsets are raw device bytes
 * (the runtime adds the metadata header). Implementations reject with EngineError('ENG_IO' | 'ENG_TIMEOUT').
 */
export interface BlockBackend {
  /** Human-readable location (path or URI). */
  readonly location: string;
  /** Raw size in bytes. */
  readonly size: number;
  read(buf: Buffer, offset: number): Promise<void>;
  write(buf: Buffer, offset: number, fua: boolean): Promise<void>;
  flush(): Promise<void>;
  /** Deallocate; afterwards the range reads as zeros. */
  discard(offset: number, length: number): Promise<void>;
  writeZeroes(offset: number, length: number, fua: boolean): Promise<void>;
  close(): Promise<void>;
  /**
   * Resolves once the backend runs at full speed (a file member's I/O thread has started); never
   * rejects. Requests work before that, only slower. Backends without a warm-up leave it out.
   */
  ready?(): Promise<void>;
}

export interface BackendOpener {
  open(location: string): Promise<BlockBackend>;
}
