/**
 * NBD server: fixed newstyle negotiation and the transmission phase over TCP or a unix socket.
 * Requests are validated before anything runs, run concurrently, and answered as they complete.
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
import { unlink } from 'node:fs/promises';
import type { Logger } from 'pino';
import { EngineError } from '../../core/errors.js';
import { ByteQueue } from './byte-queue.js';
import { errnoFor } from './errno.js';
import * as P from './protocol.js';
import { acceptTls, type NbdServerTls } from './tls.js';
import { validateRequest, type RequestHeader } from './validate.js';

export interface NbdHandler {
  size(): number;
  read(offset: number, length: number): Promise<Buffer>;
  write(offset: number, data: Buffer, fua: boolean): Promise<void>;
  flush(): Promise<void>;
  trim(offset: number, length: number, fua: boolean): Promise<void>;
  writeZeroes(offset: number, length: number, fua: boolean): Promise<void>;
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

const MAX_OPTION_BYTES = 64 * 1024;
const DEFAULT_MAX_CONNECTIONS = 512;
const DEFAULT_NEGOTIATION_MS = 30_000;
/** Option replies a client may leave unread before the server stops reading its options. */
const MAX_OPTION_REPLY_BYTES = 64 * 1024;
const PREFERRED_BLOCK = 4096;

export class NbdServer {
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

type Phase = 'clientFlags' | 'options' | 'transmission' | 'closed';

class Connection {
  private readonly q = new ByteQueue();
  private phase: Phase = 'clientFlags';
  private noZeroes = false;
  private structured = false;
  private inFlight = 0;
  private skipping = 0; // payload bytes of a rejected WRITE still to drop
  private skipReply: { handle: bigint; errno: number } | null = null;
  /** The next request: parsed, validated (null: valid, else the errno), and whether it was admitted. */
  private pending: { req: RequestHeader; err: number | null; admitted: boolean } | null = null;
  // Memory this connection holds (see the top of this file).
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
  private secure = false;
  private handshaking = false;
  /** Closes a connection that has not reached the transmission phase in time. */
  private negotiation: NodeJS.Timeout | null;

  constructor(private readonly server: NbdServer, sock: net.Socket, private readonly tls?: NbdServerOptions['tls']) {
    this.sock = sock;
    this.log = server.opts.log.child({ peer: sock.remoteAddress ?? 'unix' });
    const hello = Buffer.alloc(18);
    hello.writeBigUInt64BE(P.NBDMAGIC, 0);
    hello.writeBigUInt64BE(P.IHAVEOPT, 8);
    hello.writeUInt16BE(P.FLAG_FIXED_NEWSTYLE | P.FLAG_NO_ZEROES, 16);
    this.send(hello);
    this.attach(sock);
    const limit = server.opts.negotiationTimeoutMs ?? DEFAULT_NEGOTIATION_MS;
    this.negotiation = setTimeout(() => {
      this.negotiation = null;
      if (this.phase === 'transmission' || this.phase === 'closed') return;
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
   * OPT_STARTTLS: answer, then speak TLS on the same connection from the next byte on. Nothing is read
   * until the handshake has authenticated the client as the listener's mode requires.
   */
  private startTls(opt: number, data: Buffer): void {
    if (!this.tls) return this.optError(opt, P.REP_ERR_UNSUP, 'TLS is not offered on this listener');
    if (this.secure || this.handshaking || data.length !== 0) return this.optError(opt, P.REP_ERR_INVALID, 'STARTTLS takes no data and is done once');
    this.optReply(opt, P.REP_ACK);
    if (this.q.length > 0) return this.fail('data sent before the TLS handshake');
    const raw = this.sock;
    raw.removeAllListeners('data');
    this.handshaking = true;
    acceptTls(raw, this.tls).then(
      (secured) => {
        this.handshaking = false;
        if (this.phase === 'closed' || this.disconnecting) return void secured.destroy();
        secured.setNoDelay(true);
        this.sock = secured;
        this.secure = true;
        this.attach(secured);
      },
      (e: unknown) => {
        this.handshaking = false;
        this.phase = 'closed';
        this.log.warn({ event: 'NbdTlsRefused', mode: this.tls?.mode, reason: (e as Error).message }, 'TLS handshake failed; connection closed');
      },
    );
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

  private fail(why: string): void {
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
      if (this.phase === 'clientFlags') {
        if (this.q.length < 4) return;
        const flags = this.q.take(4).readUInt32BE(0);
        if ((flags & P.CLIENT_FLAG_FIXED_NEWSTYLE) === 0 || (flags & ~3) !== 0) {
          return this.fail(`unsupported client flags 0x${flags.toString(16)}`);
        }
        this.noZeroes = (flags & P.CLIENT_FLAG_NO_ZEROES) !== 0;
        this.phase = 'options';
        continue;
      }
      if (this.phase === 'options') {
        if (this.q.length < 16) return;
        if (this.unsent > MAX_OPTION_REPLY_BYTES) {
          this.setStalled(true); // the client reads no replies: read no more options until it does
          return;
        }
        const hdr = this.q.take(16);
        if (hdr.readBigUInt64BE(0) !== P.IHAVEOPT) return this.fail('bad option magic');
        const opt = hdr.readUInt32BE(8);
        const len = hdr.readUInt32BE(12);
        if (len > MAX_OPTION_BYTES) return this.fail(`option ${opt} of ${len} bytes is too large`);
        // Wait for the whole option; put the header back in front by re-queuing.
        if (this.q.length < len) {
          this.requeue(hdr);
          return;
        }
        this.option(opt, this.q.take(len));
        continue;
      }
      // transmission
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
        const facts = { size: this.server.opts.handler.size(), maxPayload: this.server.maxPayload, readOnly: false };
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

  private requeue(hdr: Buffer): void {
    // Rare path (option split across reads): rebuild the queue with the header in front.
    const rest = this.q.take(this.q.length);
    this.q.push(Buffer.from(hdr));
    this.q.push(rest);
  }

  // ---- negotiation ----

  private optReply(opt: number, type: number, data: Buffer = Buffer.alloc(0)): void {
    const h = Buffer.alloc(20);
    h.writeBigUInt64BE(P.OPTION_REPLY_MAGIC, 0);
    h.writeUInt32BE(opt, 8);
    h.writeUInt32BE(type >>> 0, 12);
    h.writeUInt32BE(data.length, 16);
    this.send(data.length ? Buffer.concat([h, data]) : h);
  }

  /**
   * Write to the socket, counting the bytes as held until the socket reports them written (the
   * callback comes for every write, with an error if the socket is gone); that is when a stalled
   * connection may take requests again.
   */
  private send(a: Buffer, b?: Buffer): void {
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

  private optError(opt: number, type: number, msg: string): void {
    this.optReply(opt, type, Buffer.from(msg, 'utf8'));
  }

  private option(opt: number, data: Buffer): void {
    const { exportName } = this.server.opts;
    if (this.tls?.required && !this.secure && opt !== P.OPT_STARTTLS && opt !== P.OPT_ABORT) {
      if (opt === P.OPT_EXPORT_NAME) return this.fail('TLS is required before EXPORT_NAME');
      return this.optError(opt, P.REP_ERR_TLS_REQD, 'this server requires TLS (OPT_STARTTLS) first');
    }
    switch (opt) {
      case P.OPT_EXPORT_NAME: {
        const name = data.toString('utf8');
        if (!this.knownExport(name)) return this.fail(`unknown export '${name}'`);
        const out = Buffer.alloc(10 + (this.noZeroes ? 0 : 124));
        out.writeBigUInt64BE(BigInt(this.server.opts.handler.size()), 0);
        out.writeUInt16BE(this.transmissionFlags(), 8);
        this.send(out);
        this.enterTransmission();
        return;
      }
      case P.OPT_ABORT:
        this.optReply(opt, P.REP_ACK);
        this.phase = 'closed';
        this.sock.end();
        return;
      case P.OPT_LIST: {
        if (data.length !== 0) return this.optError(opt, P.REP_ERR_INVALID, 'LIST takes no data');
        const name = Buffer.from(exportName, 'utf8');
        const body = Buffer.alloc(4 + name.length);
        body.writeUInt32BE(name.length, 0);
        name.copy(body, 4);
        this.optReply(opt, P.REP_SERVER, body);
        this.optReply(opt, P.REP_ACK);
        return;
      }
      case P.OPT_STRUCTURED_REPLY:
        if (data.length !== 0) return this.optError(opt, P.REP_ERR_INVALID, 'STRUCTURED_REPLY takes no data');
        this.structured = true;
        this.optReply(opt, P.REP_ACK);
        return;
      case P.OPT_INFO:
      case P.OPT_GO:
        return this.infoOrGo(opt, data);
      case P.OPT_STARTTLS:
        return this.startTls(opt, data);
      default:
        return this.optError(opt, P.REP_ERR_UNSUP, `option ${opt} is not supported`);
    }
  }

  private infoOrGo(opt: number, data: Buffer): void {
    if (data.length < 6) return this.optError(opt, P.REP_ERR_INVALID, 'INFO/GO request too short');
    const nameLen = data.readUInt32BE(0);
    if (4 + nameLen + 2 > data.length) return this.optError(opt, P.REP_ERR_INVALID, 'export name length out of range');
    const name = data.subarray(4, 4 + nameLen).toString('utf8');
    const nInfo = data.readUInt16BE(4 + nameLen);
    if (data.length !== 4 + nameLen + 2 + 2 * nInfo) {
      return this.optError(opt, P.REP_ERR_INVALID, 'information request list length mismatch');
    }
    const wanted = new Set<number>();
    for (let i = 0; i < nInfo; i++) wanted.add(data.readUInt16BE(4 + nameLen + 2 + 2 * i));
    if (!this.knownExport(name)) return this.optError(opt, P.REP_ERR_UNKNOWN, `unknown export '${name}'`);

    const exp = Buffer.alloc(12);
    exp.writeUInt16BE(P.INFO_EXPORT, 0);
    exp.writeBigUInt64BE(BigInt(this.server.opts.handler.size()), 2);
    exp.writeUInt16BE(this.transmissionFlags(), 10);
    this.optReply(opt, P.REP_INFO, exp);

    const bs = Buffer.alloc(14);
    bs.writeUInt16BE(P.INFO_BLOCK_SIZE, 0);
    bs.writeUInt32BE(1, 2);
    bs.writeUInt32BE(PREFERRED_BLOCK, 6);
    bs.writeUInt32BE(this.server.maxPayload, 10);
    this.optReply(opt, P.REP_INFO, bs);

    const textInfo = (type: number, text: string) => {
      const t = Buffer.from(text, 'utf8');
      const b = Buffer.alloc(2 + t.length);
      b.writeUInt16BE(type, 0);
      t.copy(b, 2);
      this.optReply(opt, P.REP_INFO, b);
    };
    if (wanted.has(P.INFO_NAME)) textInfo(P.INFO_NAME, this.server.opts.exportName);
    if (wanted.has(P.INFO_DESCRIPTION)) textInfo(P.INFO_DESCRIPTION, this.server.opts.description);
    this.optReply(opt, P.REP_ACK);
    if (opt === P.OPT_GO) this.enterTransmission();
  }

  private knownExport(name: string): boolean {
    return name === '' || name === this.server.opts.exportName;
  }

  private transmissionFlags(): number {
    let f = P.TF_HAS_FLAGS | P.TF_SEND_FLUSH | P.TF_SEND_FUA | P.TF_SEND_TRIM | P.TF_SEND_WRITE_ZEROES;
    if (this.server.opts.multiConn) f |= P.TF_CAN_MULTI_CONN;
    return f;
  }

  // ---- transmission ----

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
    try {
      switch (req.type) {
        case P.CMD_READ:
          p = h.read(off, req.length);
          break;
        case P.CMD_WRITE:
          p = h.write(off, this.q.take(req.length), fua);
          break;
        case P.CMD_FLUSH:
          p = h.flush();
          break;
        case P.CMD_TRIM:
          p = h.trim(off, req.length, fua);
          break;
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
    ).finally(() => this.settled(bytes));
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
    if (req.type === P.CMD_READ && this.structured) {
      const h = Buffer.allocUnsafe(28);
      h.writeUInt32BE(P.STRUCTURED_REPLY_MAGIC, 0);
      h.writeUInt16BE(P.REPLY_FLAG_DONE, 4);
      h.writeUInt16BE(P.REPLY_TYPE_OFFSET_DATA, 6);
      h.writeBigUInt64BE(req.handle, 8);
      h.writeUInt32BE(8 + req.length, 16);
      h.writeBigUInt64BE(req.offset, 20);
      this.send(h, data!);
      return;
    }
    const h = Buffer.allocUnsafe(16);
    h.writeUInt32BE(P.SIMPLE_REPLY_MAGIC, 0);
    h.writeUInt32BE(0, 4);
    h.writeBigUInt64BE(req.handle, 8);
    if (req.type === P.CMD_READ) this.send(h, data!);
    else this.send(h);
  }

  private replyError(handle: bigint, errno: number, message: string): void {
    if (this.sock.destroyed) return;
    this.cork();
    if (this.structured) {
      const msg = Buffer.from(message.slice(0, 200), 'utf8');
      const h = Buffer.alloc(20 + 6 + msg.length);
      h.writeUInt32BE(P.STRUCTURED_REPLY_MAGIC, 0);
      h.writeUInt16BE(P.REPLY_FLAG_DONE, 4);
      h.writeUInt16BE(P.REPLY_TYPE_ERROR, 6);
      h.writeBigUInt64BE(handle, 8);
      h.writeUInt32BE(6 + msg.length, 16);
      h.writeUInt32BE(errno, 20);
      h.writeUInt16BE(msg.length, 24);
      msg.copy(h, 26);
      this.send(h);
      return;
    }
    const h = Buffer.alloc(16);
    h.writeUInt32BE(P.SIMPLE_REPLY_MAGIC, 0);
    h.writeUInt32BE(errno, 4);
    h.writeBigUInt64BE(handle, 8);
    this.send(h);
  }
}
