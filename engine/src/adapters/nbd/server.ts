/**
 * NBD server: the listeners (TCP or a unix socket), the connections they accept, and the memory budget
 * they share. A connection's handshake is in handshake.ts, its transmission phase in connection.ts.
 *
 * Memory is bounded per connection and in all: a connection holds the bytes it has received and not
 * yet run, the write payloads and read buffers of its requests in flight, and reply bytes the socket has
 * not yet sent. When a new request would take it over its budget (or the server over its total), the
 * connection stops taking requests and its socket stops reading, so a client that pipelines without
 * reading replies meets TCP backpressure instead of growing the engine; what was accepted still runs
 * and is answered. A request on a connection that holds nothing else is always admitted, so a request up
 * to the maximum payload never waits for other clients to read their replies.
 */
import net from 'node:net';
import { chmod, unlink } from 'node:fs/promises';
import { EngineError } from '../../core/errors.js';
import { Connection, type ConnectionHost } from './connection.js';
import { PREFERRED_BLOCK } from './handshake.js';
import * as P from './protocol.js';
import type { NbdServerOptions, NbdServerStats } from './server-options.js';

export type { NbdHandler, NbdServerOptions, NbdServerStats } from './server-options.js';

const DEFAULT_MAX_CONNECTIONS = 512;

export class NbdServer implements ConnectionHost {
  private readonly servers: net.Server[] = [];
  private readonly conns = new Set<Connection>();
  readonly stats: NbdServerStats = { connections: 0, connectionsTotal: 0, requests: {}, errors: 0, rejected: 0, heldBytes: 0, stalled: 0, refusedConnections: 0, negotiationTimeouts: 0 };
  readonly maxPayload: number;
  readonly maxInFlight: number;
  readonly maxConnectionBytes: number;
  readonly maxTotalBytes: number;
  /** Connections waiting for other connections to release memory. */
  private readonly waiting = new Set<Connection>();
  private wakeQueued = false;
  private closing = false;
  private held: Set<{ sock: net.Socket; tcp: boolean }> | null;

  constructor(readonly opts: NbdServerOptions) {
    // At least the preferred block size it advertises, as the protocol asks of the maximum.
    this.maxPayload = positive('maxPayload', opts.maxPayload ?? 32 * 1024 * 1024, 0xffffffff, PREFERRED_BLOCK);
    this.maxInFlight = positive('maxInFlight', opts.maxInFlight ?? 128);
    this.maxConnectionBytes = positive('maxConnectionBytes', opts.maxConnectionBytes ?? 64 * 1024 * 1024);
    this.maxTotalBytes = positive('maxTotalBytes', opts.maxTotalBytes ?? 256 * 1024 * 1024);
    this.held = opts.held ? new Set() : null;
  }

  /** Clients connected while held, not yet greeted. */
  get heldClients(): number {
    return this.held?.size ?? 0;
  }

  /** Greet the clients that waited (see `held`) and every later one. */
  release(): void {
    const waiting = this.held;
    this.held = null;
    for (const w of waiting ?? []) if (!w.sock.destroyed) this.accept(w.sock, w.tcp);
  }

  async listenTcp(host: string, port: number): Promise<net.AddressInfo> {
    const srv = this.makeServer(true);
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(port, host, () => resolve());
    });
    return srv.address() as net.AddressInfo;
  }

  async listenUnix(path: string): Promise<void> {
    await unlink(path).catch(() => undefined);
    const srv = this.makeServer();
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(path, () => resolve());
    });
    // Owner and group only (the CSI node plugin runs as root beside the engine); the umask's mode before
    // this is no wider (a socket without write permission cannot be connected to).
    await chmod(path, 0o660);
  }

  /** Stop accepting, let in-flight requests finish, then close every connection. */
  async close(): Promise<void> {
    this.closing = true;
    for (const w of this.held ?? []) w.sock.destroy();
    // net.Server.close() reports only once every connection has ended, so drain those at the same time.
    const listeners = Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    await Promise.all([...this.conns].map((c) => c.drainAndClose()));
    await listeners;
  }

  private makeServer(tcp = false): net.Server {
    const srv = net.createServer((sock) => {
      if (this.closing) {
        sock.destroy();
        return;
      }
      if (this.conns.size + (this.held?.size ?? 0) >= (this.opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS)) {
        // Each connection costs a descriptor and buffers: a flood of them must not exhaust the engine.
        if (this.stats.refusedConnections++ % 100 === 0) {
          this.opts.log.warn({ event: 'NbdConnectionRefused', open: this.conns.size, refused: this.stats.refusedConnections }, 'too many NBD connections; closing new ones');
        }
        sock.destroy();
        return;
      }
      const held = this.held;
      if (held) {
        const w = { sock, tcp };
        held.add(w);
        sock.once('close', () => held.delete(w));
        // A held socket is read (into its buffer) but has no Connection yet: a client that resets it
        // would otherwise raise an unhandled 'error' and end the engine.
        sock.on('error', () => undefined);
        return;
      }
      this.accept(sock, tcp);
    });
    this.servers.push(srv);
    return srv;
  }

  private accept(sock: net.Socket, tcp: boolean): void {
    sock.setNoDelay(true);
    const c = new Connection(this, sock, tcp ? this.opts.tls : undefined);
    this.conns.add(c);
    this.stats.connections++;
    this.stats.connectionsTotal++;
    sock.once('close', () => {
      this.conns.delete(c);
      this.stats.connections--;
    });
  }

  count(type: number): void {
    const name = P.commandNames[type] ?? 'UNKNOWN';
    this.stats.requests[name] = (this.stats.requests[name] ?? 0) + 1;
  }

  /** A connection's held bytes changed; memory released lets connections waiting on the total go on. */
  adjustHeld(delta: number): void {
    this.stats.heldBytes += delta;
    if (delta >= 0 || this.waiting.size === 0 || this.wakeQueued) return;
    this.wakeQueued = true;
    setImmediate(() => {
      this.wakeQueued = false;
      const waiting = [...this.waiting];
      this.waiting.clear();
      for (const c of waiting) c.retry();
    });
  }

  waitForMemory(c: Connection, wait: boolean): void {
    if (wait) this.waiting.add(c);
    else this.waiting.delete(c);
  }
}

function positive(name: string, v: number, max = Number.MAX_SAFE_INTEGER, min = 1): number {
  if (!Number.isSafeInteger(v) || v < min || v > max) throw new EngineError('ENG_INVALID_ARGUMENT', `NBD server option ${name} must be an integer from ${min} to ${max}, not ${v}`);
  return v;
}
