/**
 * One NBD connection: its socket (plain or TLS), the handshake (handshake.ts), then the transmission
 * phase — requests validated before anything runs, run concurrently, answered as they complete — and
 * the memory it holds (see server.ts for the budget and backpressure).
 *
 * Why one file of ~380 lines: the request loop, the socket's pause/resume and the memory accounting
 * share a handful of counters (requests in flight, held and unsent bytes, the stall) that must change
 * together at every step; split across files, that invariant would have no single place to be read.
 * The handshake and the reply encoders, which touch none of it, live apart.
 */
import type net from 'node:net';
import type { Logger } from 'pino';
import { ByteQueue } from './byte-queue.js';
import { errnoFor } from './errno.js';
import { Handshake, type HandshakeHost } from './handshake.js';
import { BASE_ALLOCATION_ID, describeRange, MAX_DESCRIPTORS } from './block-status.js';
import { blockStatusChunk, readChunkHeader, simpleReply, structuredError } from './replies.js';
import * as P from './protocol.js';
import type { NbdServerOptions, NbdServerStats } from './server-options.js';
import { acceptTls } from './tls.js';
import { validateRequest, type RequestHeader } from './validate.js';

const DEFAULT_NEGOTIATION_MS = 30_000;

/** What a connection needs of its server: options, limits, counters and the shared memory budget. */
export interface ConnectionHost {
  readonly opts: NbdServerOptions;
  readonly stats: NbdServerStats;
  readonly maxPayload: number;
  readonly maxInFlight: number;
  readonly maxConnectionBytes: number;
  readonly maxTotalBytes: number;
  count(type: number): void;
  adjustHeld(delta: number): void;
  waitForMemory(c: Connection, wait: boolean): void;
}

type Phase = 'negotiating' | 'transmission' | 'closed';

export class Connection implements HandshakeHost {
  private readonly q = new ByteQueue();
  private phase: Phase = 'negotiating';
  private readonly handshake: Handshake;
  private inFlight = 0;
  private skipping = 0; // payload bytes of a rejected WRITE still to drop
  private skipReply: { handle: bigint; errno: number } | null = null;
  /** The next request: parsed, validated (null: valid, else the errno), and whether it was admitted. */
  private pending: { req: RequestHeader; err: number | null; admitted: boolean } | null = null;
  // Memory this connection holds (see the top of server.ts).
  private active = 0; // write payloads and read buffers of requests in flight
  private unsent = 0; // reply bytes given to the socket and not yet written
  private reserved = 0; // length of an admitted WRITE whose payload is still arriving
  private held = 0; // the sum last reported to the server
  private stalled = false; // not taking requests until memory or requests in flight are released
  private disconnecting = false;
  private idle: (() => void) | null = null;
  private corked = false;
  private readonly log: Logger;

  private sock: net.Socket;
  tlsState: 'none' | 'handshaking' | 'secure' = 'none';
  /** Closes a connection that has not reached the transmission phase in time. */
  private negotiation: NodeJS.Timeout | null;

  constructor(private readonly server: ConnectionHost, sock: net.Socket, private readonly tls?: NbdServerOptions['tls']) {
    this.sock = sock;
    this.log = server.opts.log.child({ peer: sock.remoteAddress ?? 'unix' });
    const o = server.opts;
    this.handshake = new Handshake(
      { exportName: o.exportName, description: o.description, size: () => o.handler.size(), maxPayload: server.maxPayload, multiConn: o.multiConn, blockStatus: o.handler.dataExtents !== undefined },
      this,
      tls,
    );
    this.send(Handshake.greeting());
    this.attach(sock);
    const limit = o.negotiationTimeoutMs ?? DEFAULT_NEGOTIATION_MS;
    this.negotiation = setTimeout(() => {
      this.negotiation = null;
      if (this.phase !== 'negotiating') return;
      server.stats.negotiationTimeouts++;
      this.fail(`negotiation not finished within ${limit} ms`);
    }, limit);
    this.negotiation.unref();
  }

  /** Options are done: the transmission phase has no deadline. */
  private enterTransmission(): void {
    this.phase = 'transmission';
    if (this.negotiation) clearTimeout(this.negotiation);
    this.negotiation = null;
  }

  private attach(sock: net.Socket): void {
    sock.on('data', (b: Buffer) => {
      this.q.push(b);
      this.pump();
    });
    sock.on('error', (e) => this.log.debug({ event: 'NbdConnectionError', err: e.message }, 'connection error'));
    sock.on('close', () => {
      this.phase = 'closed';
      if (this.negotiation) clearTimeout(this.negotiation);
      this.q.skip(this.q.length);
      this.setStalled(false);
      this.account();
    });
  }

  /** Another connection released memory: try the request this one waits with. */
  retry(): void {
    if (this.stalled) this.pump();
  }

  /**
   * After STARTTLS's acknowledgement, speak TLS on the same connection from the next byte on. Nothing is
   * read until the handshake has authenticated the client as the listener's mode requires.
   */
  startTls(): boolean {
    if (this.q.length > 0) {
      this.fail('data sent before the TLS handshake');
      return false;
    }
    const raw = this.sock;
    raw.removeAllListeners('data');
    this.tlsState = 'handshaking';
    acceptTls(raw, this.tls!).then(
      (secured) => {
        if (this.phase === 'closed' || this.disconnecting) return void secured.destroy();
        secured.setNoDelay(true);
        this.sock = secured;
        this.tlsState = 'secure';
        this.attach(secured);
      },
      (e: unknown) => {
        this.tlsState = 'none';
        this.phase = 'closed';
        this.log.warn({ event: 'NbdTlsRefused', mode: this.tls?.mode, reason: (e as Error).message }, 'TLS handshake failed; connection closed');
      },
    );
    return true;
  }

  /** OPT_ABORT, acknowledged. */
  abort(): void {
    this.phase = 'closed';
    this.sock.end();
  }

  drainAndClose(): Promise<void> {
    return new Promise((resolve) => {
      // Stop taking requests: those already started complete and are answered; the rest were never
      // acknowledged, and the client sees the connection close.
      this.disconnecting = true;
      this.sock.pause();
      const done = () => {
        this.sock.end();
        this.sock.destroy();
        resolve();
      };
      if (this.inFlight === 0) done();
      else this.idle = done;
    });
  }

  fail(why: string): void {
    this.log.warn({ event: 'NbdProtocolError', reason: why }, 'closing NBD connection');
    this.phase = 'closed';
    this.sock.destroy();
  }

  /** Take what can be taken from the received bytes; then account for memory and read on or pause. */
  private pump(): void {
    this.setStalled(false);
    try {
      this.step();
    } catch (e) {
      this.fail(`protocol error: ${(e as Error).message}`);
    }
    this.account();
    const reading = this.phase !== 'closed' && !this.stalled && !this.disconnecting;
    if (reading && this.sock.isPaused()) this.sock.resume();
    else if (!reading && !this.sock.isPaused()) this.sock.pause();
  }

  private setStalled(on: boolean): void {
    if (on === this.stalled) return;
    this.stalled = on;
    this.server.stats.stalled += on ? 1 : -1;
    if (!on) this.server.waitForMemory(this, false);
  }

  /** Report what this connection holds; once its socket is gone, only requests still running hold memory. */
  private account(): void {
    const open = !this.sock.destroyed;
    const now = this.active + (open ? this.unsent + Math.max(this.q.length, this.reserved) : 0);
    if (now === this.held) return;
    this.server.adjustHeld(now - this.held);
    this.held = now;
  }

  /** Whether a request may start now; if not, the connection stalls until something is released. */
  private admit(req: RequestHeader, err: number | null): boolean {
    const s = this.server;
    if (this.inFlight >= s.maxInFlight) return false;
    // Nothing else held: always admitted (a request is at most maxPayload), so nothing can deadlock.
    if (this.active === 0 && this.unsent === 0) return true;
    const payload = err === null && (req.type === P.CMD_READ || req.type === P.CMD_WRITE) ? req.length : 0;
    // A WRITE's payload may already sit in the queue; a READ's buffer comes on top of it.
    const queued = req.type === P.CMD_WRITE ? Math.max(this.q.length, payload) : this.q.length + payload;
    const mine = this.active + this.unsent + queued;
    if (mine > s.maxConnectionBytes) return false;
    if (s.stats.heldBytes - this.held + mine > s.maxTotalBytes) {
      s.waitForMemory(this, true);
      return false;
    }
    return true;
  }

  private step(): void {
    for (;;) {
      if (this.phase === 'closed') return;
      if (this.phase === 'negotiating') {
        const r = this.handshake.step(this.q, this.unsent);
        if (r === 'stall') this.setStalled(true);
        if (r !== 'transmission') return;
        this.enterTransmission();
        continue;
      }
      if (this.skipping > 0) {
        this.skipping -= this.q.skip(this.skipping);
        if (this.skipping > 0) return;
        const r = this.skipReply!;
        this.skipReply = null;
        this.replyError(r.handle, r.errno, 'request rejected');
        continue;
      }
      if (this.disconnecting) return;
      if (!this.pending) {
        if (this.q.length < 28) return;
        const h = this.q.take(28);
        if (h.readUInt32BE(0) !== P.REQUEST_MAGIC) return this.fail('bad request magic');
        const req = {
          flags: h.readUInt16BE(4),
          type: h.readUInt16BE(6),
          handle: h.readBigUInt64BE(8),
          offset: h.readBigUInt64BE(16),
          length: h.readUInt32BE(24),
        };
        const facts = { size: this.server.opts.handler.size(), maxPayload: this.server.maxPayload, readOnly: false, blockStatus: this.handshake.baseAllocation };
        this.pending = { req, err: validateRequest(req, facts), admitted: false };
      }
      const p = this.pending;
      if (!p.admitted) {
        if (!this.admit(p.req, p.err)) {
          this.setStalled(true);
          return;
        }
        p.admitted = true;
        // Until it has arrived, an admitted WRITE's payload counts whole (it is read without a further check).
        if (p.err === null && p.req.type === P.CMD_WRITE) this.reserved = p.req.length;
      }
      if (!this.request(p.req, p.err)) return; // waiting for the write payload
      this.pending = null;
    }
  }

  /**
   * Write to the socket, counting the bytes as held until the socket reports them written (the
   * callback comes for every write, with an error if the socket is gone); that is when a stalled
   * connection may take requests again.
   */
  send(a: Buffer, b?: Buffer): void {
    const n = a.length + (b?.length ?? 0);
    this.unsent += n;
    const written = () => {
      this.unsent -= n;
      if (this.stalled) this.pump();
      else this.account();
    };
    if (b) {
      this.sock.write(a);
      this.sock.write(b, written);
    } else this.sock.write(a, written);
  }


  /** Start one admitted request. Returns false when a WRITE's payload has not fully arrived yet. */
  private request(req: RequestHeader, err: number | null): boolean {
    if (err === null && req.type === P.CMD_WRITE && this.q.length < req.length) return false;
    this.server.count(req.type);
    if (err !== null) {
      this.server.stats.rejected++;
      if (req.type === P.CMD_WRITE) {
        // The payload follows the header whatever we think of it: drop it before answering.
        this.skipping = req.length - this.q.skip(req.length);
        if (this.skipping > 0) {
          this.skipReply = { handle: req.handle, errno: err };
          return true;
        }
      }
      this.replyError(req.handle, err, 'request rejected');
      return true;
    }
    if (req.type === P.CMD_DISC) {
      this.disconnecting = true;
      this.phase = 'closed';
      if (this.inFlight === 0) this.sock.end();
      else this.idle = () => this.sock.end();
      return true;
    }
    const h = this.server.opts.handler;
    const off = Number(req.offset);
    const fua = (req.flags & P.CMD_FLAG_FUA) !== 0;
    // The read buffer or write payload is held from here until the reply is handed to the socket.
    const bytes = req.type === P.CMD_READ || req.type === P.CMD_WRITE ? req.length : 0;
    this.active += bytes;
    this.reserved = 0;
    this.inFlight++;
    let p: Promise<Buffer | void>;
    let pooled: Buffer | null = null;
    try {
      switch (req.type) {
        case P.CMD_READ:
          p = h.read(off, req.length);
          break;
        case P.CMD_WRITE:
          {
            // A payload that spans received chunks is copied anyway: into a pooled buffer when there is a pool.
            const pool = this.server.opts.payloadPool;
            if (pool?.fits(req.length) && !this.q.contiguous(req.length)) pooled = this.q.takeInto(pool.take(req.length));
            p = h.write(off, pooled ?? this.q.take(req.length), fua);
          }
          break;
        case P.CMD_FLUSH:
          p = h.flush();
          break;
        case P.CMD_TRIM:
          p = h.trim(off, req.length, fua);
          break;
        case P.CMD_BLOCK_STATUS: {
          // Validated: only with base:allocation selected, which is offered only when the handler can say.
          // A question that fails is answered "may hold data" everywhere: true, only less useful.
          const max = req.flags & P.CMD_FLAG_REQ_ONE ? 1 : MAX_DESCRIPTORS;
          p = h.dataExtents!().catch(() => null).then((extents) => blockStatusChunk(req.handle, BASE_ALLOCATION_ID, describeRange(extents, off, req.length, max)));
          break;
        }
        default:
          p = h.writeZeroes(off, req.length, fua);
          break;
      }
    } catch (e) {
      p = Promise.reject(e); // a handler that throws instead of rejecting fails the request, not the connection
    }
    p.then(
      (data) => this.replyOk(req, data ?? null),
      (e: unknown) => {
        this.server.stats.errors++;
        this.log.debug({ event: 'NbdRequestFailed', cmd: P.commandNames[req.type], err: (e as Error).message }, 'request failed');
        this.replyError(req.handle, errnoFor(e), (e as Error).message ?? 'error');
      },
    ).finally(() => {
      if (pooled) this.server.opts.payloadPool!.release(pooled);
      this.settled(bytes);
    });
    return true;
  }

  private settled(bytes: number): void {
    this.inFlight--;
    this.active -= bytes;
    if (this.stalled) this.pump();
    else this.account();
    if (this.inFlight === 0 && this.idle) {
      const f = this.idle;
      this.idle = null;
      f();
    }
  }

  private cork(): void {
    if (this.corked) return;
    this.corked = true;
    this.sock.cork();
    // Uncork after the poll phase, not after this callback: replies for every request that completed in
    // this loop iteration leave in one writev instead of one system call each.
    setImmediate(() => {
      this.corked = false;
      this.sock.uncork();
    });
  }

  private replyOk(req: RequestHeader, data: Buffer | null): void {
    if (this.sock.destroyed) return;
    this.cork();
    if (req.type === P.CMD_BLOCK_STATUS) return this.send(data!);
    if (req.type !== P.CMD_READ) return this.send(simpleReply(req.handle, 0));
    this.send(this.handshake.structured ? readChunkHeader(req.handle, req.offset, req.length) : simpleReply(req.handle, 0), data!);
  }

  private replyError(handle: bigint, errno: number, message: string): void {
    if (this.sock.destroyed) return;
    this.cork();
    this.send(this.handshake.structured ? structuredError(handle, errno, message) : simpleReply(handle, errno));
  }
}

