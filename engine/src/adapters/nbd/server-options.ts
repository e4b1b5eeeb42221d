/**
 * What an NBD server is given (the export, its handler, limits, TLS) and what it counts.
 */
import type { Logger } from 'pino';
import type { PayloadPool } from '../../core/payload-pool.js';
import type { NbdServerTls } from './tls.js';

export interface NbdHandler {
  size(): number;
  read(offset: number, length: number): Promise<Buffer>;
  write(offset: number, data: Buffer, fua: boolean): Promise<void>;
  flush(): Promise<void>;
  trim(offset: number, length: number, fua: boolean): Promise<void>;
  writeZeroes(offset: number, length: number, fua: boolean): Promise<void>;
  /**
   * Where the device may hold data ([start, end) ranges, sorted and disjoint; null when it cannot say
   * now), as BlockBackend.dataExtents. With it the server offers the base:allocation context, and
   * BLOCK_STATUS answers from it (all data when null).
   */
  dataExtents?(): Promise<Array<[number, number]> | null>;
}

export interface NbdServerOptions {
  exportName: string;
  description: string;
  handler: NbdHandler;
  log: Logger;
  /** Largest READ/WRITE payload (advertised as the maximum block size). */
  maxPayload?: number;
  /** True when a FLUSH on one connection covers writes completed on every connection. */
  multiConn: boolean;
  /** Requests in flight per connection before the socket is paused. */
  maxInFlight?: number;
  /** Bytes one connection may hold (received requests, buffers of requests in flight, unsent replies). */
  maxConnectionBytes?: number;
  /** Bytes all connections together may hold. */
  maxTotalBytes?: number;
  /** NBD over TLS on the TCP listener (OPT_STARTTLS); `required`: nothing else is negotiated before it. */
  tls?: NbdServerTls;
  /**
   * Listen, but greet no client until `release()`: the engine binds its listeners before it opens any
   * member, and a client that comes early waits for the set instead of finding no listener.
   */
  held?: boolean;
  /**
   * Where large WRITE payloads are received into (core/payload-pool.ts). Only for a handler whose writes
   * reach their devices through `hold` (the engine's members): a buffer is released to the pool when its
   * request is answered, and reused only once every device request given it has returned.
   */
  payloadPool?: PayloadPool;
  /** Connections open at once (held ones included); more are closed at once. */
  maxConnections?: number;
  /** A client must reach the transmission phase within this (a silent client cannot hold a connection). */
  negotiationTimeoutMs?: number;
}

export interface NbdServerStats {
  connections: number;
  connectionsTotal: number;
  requests: Record<string, number>;
  errors: number;
  rejected: number;
  /** Bytes the connections hold now (gauge): received and not yet run, in flight, replies not yet sent. */
  heldBytes: number;
  /** Connections not taking requests now (gauge) until their replies are read or requests complete. */
  stalled: number;
  /** Connections closed at once because the server had maxConnections open. */
  refusedConnections: number;
  /** Connections closed because they did not finish negotiating in time. */
  negotiationTimeouts: number;
}
