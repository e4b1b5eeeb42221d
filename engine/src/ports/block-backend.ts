/**
 * A member's raw device: a file, a block device, or a remote NBD export. Offsets are raw device bytes
 * (the runtime adds the metadata header). Implementations reject with EngineError('ENG_IO' | 'ENG_TIMEOUT').
 */
export interface BlockBackend {
  /** Human-readable location (path or URI). */
  readonly location: string;
  /** Raw size in bytes (as of opening, or of the last refreshSize). */
  readonly size: number;
  read(buf: Buffer, offset: number): Promise<void>;
  write(buf: Buffer, offset: number, fua: boolean): Promise<void>;
  flush(): Promise<void>;
  /** Deallocate; afterwards the range reads as zeros. */
  discard(offset: number, length: number): Promise<void>;
  writeZeroes(offset: number, length: number, fua: boolean): Promise<void>;
  /**
   * Safe to call at any time, also with requests in flight, and without awaiting it (the runtime
   * drops a faulted member that way). Idempotent: every call returns the same promise.
   * - Requests issued after close() reject with ENG_IO.
   * - Requests issued before it settle as they would have (or fail with ENG_IO where the backend gives
   *   up on them, as an NBD client does after its bounded wait); the promise resolves once all of them
   *   have settled and the resources (descriptors, socket, I/O thread, ring) are released.
   * - A descriptor is never closed while a system call may still use it: a request stuck on a hung
   *   device keeps the descriptors (and its thread) open for good, leaked on purpose, and the promise
   *   does not resolve. A closed number would be reused by the next file opened, and the stuck write
   *   would land there.
   */
  close(): Promise<void>;
  /**
   * Resolves once the backend runs at full speed (a file member's I/O thread has started); never
   * rejects. Requests work before that, only slower. Backends without a warm-up leave it out.
   */
  ready?(): Promise<void>;
  /**
   * True only when the device is known to hold no data at all, so every byte of it reads as zero (a
   * regular file with no blocks allocated: nothing but holes). False when unknown. Asked before the
   * engine writes anything to a new copy target: a full copy then need not read the target to learn
   * that a zero run of the source is already zero there. Backends that cannot tell leave it out.
   */
  holdsNoData?(): Promise<boolean>;
  /**
   * The byte ranges [start, end) of the raw device that may hold data, sorted and disjoint, as of the
   * moment of asking; every byte outside them reads as zero. Null when unknown (a block device, a
   * remote export, a file system that cannot say). Writes completed before the call are reflected; the
   * caller must account for writes issued after it. A full copy uses it to leave the source's holes
   * unread. Backends that cannot tell leave it out.
   */
  dataExtents?(): Promise<Array<[number, number]> | null>;
  /**
   * Ask the device its size again (a file grown with truncate, a block device after `losetup -c` or a
   * volume expansion, an NBD export that grew) and make requests up to it possible; resolves to the
   * size now in force (`size` follows). Rejects with ENG_IO when the size cannot be learnt, or when a
   * larger device cannot be used without reopening it. A backend without it cannot grow.
   */
  refreshSize?(): Promise<number>;
}

export interface BackendOpener {
  open(location: string): Promise<BlockBackend>;
}
