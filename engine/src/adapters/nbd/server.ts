/**
 * NBD server: fixed newstyle negotiation and the transmission phase over TCP or a unix socket.
 * Requests are validated before anything runs, run concurrently, and answered as they complete.
 */
import net from 'node:net';
import { unlink } from 'node:fs/promises';
import type { Logger } from 'pino';
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
  /** NBD over TLS on the TCP listener (OPT_STARTTLS); `required`: nothing else is negotiated before it. */
  tls?: NbdServerTls;
  /**
   * Listen, but greet no client until `release()`: the engine binds its listeners before it opens any
   * member, and a client that comes early waits for the set instead of finding no listener.
   */
  held?: boolean;
}

export interface NbdServerStats {
  connections: number;
  connectionsTotal: number;
  requests: Record<string, number>;
  errors: number;
  rejected: number;
}

const MAX_OPTION_BYTES = 64 * 1024;
const PREFERRED_BLOCK = 4096;

export class NbdServer {
  private readonly servers: net.Server[] = [];
  private readonly conns = new Set<Connection>();
  readonly stats: NbdServerStats = { connections: 0, connectionsTotal: 0, requests: {}, errors: 0, rejected: 0 };
  readonly maxPayload: number;
  private closing = false;
  private held: Set<{ sock: net.Socket; tcp: boolean }> | null;

  constructor(readonly opts: NbdServerOptions) {
    this.maxPayload = opts.maxPayload ?? 32 * 1024 * 1024;
    this.held = opts.held ? new Set() : null;
  }

  /** Clients connected while held, not yet greeted. */
  get waiting(): number {
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
}

type Phase = 'clientFlags' | 'options' | 'transmission' | 'closed';

class Connection {
  private readonly q = new ByteQueue();
  private phase: Phase = 'clientFlags';
  private noZeroes = false;
  private structured = false;
  private inFlight = 0;
  private paused = false;
  private skipping = 0; // payload bytes of a rejected WRITE still to drop
  private skipReply: { handle: bigint; errno: number } | null = null;
  private pendingHeader: RequestHeader | null = null;
  private disconnecting = false;
  private idle: (() => void) | null = null;
  private corked = false;
  private readonly log: Logger;

  private sock: net.Socket;
  private secure = false;
  private handshaking = false;

  constructor(private readonly server: NbdServer, sock: net.Socket, private readonly tls?: NbdServerOptions['tls']) {
    this.sock = sock;
    this.log = server.opts.log.child({ peer: sock.remoteAddress ?? 'unix' });
    const hello = Buffer.alloc(18);
    hello.writeBigUInt64BE(P.NBDMAGIC, 0);
    hello.writeBigUInt64BE(P.IHAVEOPT, 8);
    hello.writeUInt16BE(P.FLAG_FIXED_NEWSTYLE | P.FLAG_NO_ZEROES, 16);
    sock.write(hello);
    this.attach(sock);
  }

  private attach(sock: net.Socket): void {
    sock.on('data', (b: Buffer) => {
      this.q.push(b);
      try {
        this.pump();
      } catch (e) {
        this.fail(`protocol error: ${(e as Error).message}`);
      }
    });
    sock.on('error', (e) => this.log.debug({ event: 'NbdConnectionError', err: e.message }, 'connection error'));
    sock.on('close', () => {
      this.phase = 'closed';
    });
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

  private pump(): void {
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
      if (this.paused || this.disconnecting) return;
      let req = this.pendingHeader;
      if (!req) {
        if (this.q.length < 28) return;
        const h = this.q.take(28);
        if (h.readUInt32BE(0) !== P.REQUEST_MAGIC) return this.fail('bad request magic');
        req = {
          flags: h.readUInt16BE(4),
          type: h.readUInt16BE(6),
          handle: h.readBigUInt64BE(8),
          offset: h.readBigUInt64BE(16),
          length: h.readUInt32BE(24),
        };
      }
      if (!this.request(req)) {
        this.pendingHeader = req; // waiting for the write payload
        return;
      }
      this.pendingHeader = null;
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
    this.sock.write(data.length ? Buffer.concat([h, data]) : h);
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
        this.sock.write(out);
        this.phase = 'transmission';
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
    if (opt === P.OPT_GO) this.phase = 'transmission';
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

  /** Start one request. Returns false when a WRITE's payload has not fully arrived yet. */
  private request(req: RequestHeader): boolean {
    const facts = { size: this.server.opts.handler.size(), maxPayload: this.server.maxPayload, readOnly: false };
    const err = validateRequest(req, facts);
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
    let p: Promise<Buffer | void>;
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
    this.inFlight++;
    if (this.inFlight >= (this.server.opts.maxInFlight ?? 128) && !this.paused) {
      this.paused = true;
      this.sock.pause();
    }
    p.then(
      (data) => this.replyOk(req, data ?? null),
      (e: unknown) => {
        this.server.stats.errors++;
        this.log.debug({ event: 'NbdRequestFailed', cmd: P.commandNames[req.type], err: (e as Error).message }, 'request failed');
        this.replyError(req.handle, errnoFor(e), (e as Error).message ?? 'error');
      },
    ).finally(() => this.settled());
    return true;
  }

  private settled(): void {
    this.inFlight--;
    if (this.paused && this.inFlight < (this.server.opts.maxInFlight ?? 128) / 2) {
      this.paused = false;
      this.sock.resume();
      this.pump();
    }
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
      this.sock.write(h);
      this.sock.write(data!);
      return;
    }
    const h = Buffer.allocUnsafe(16);
    h.writeUInt32BE(P.SIMPLE_REPLY_MAGIC, 0);
    h.writeUInt32BE(0, 4);
    h.writeBigUInt64BE(req.handle, 8);
    this.sock.write(h);
    if (req.type === P.CMD_READ) this.sock.write(data!);
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
      this.sock.write(h);
      return;
    }
    const h = Buffer.alloc(16);
    h.writeUInt32BE(P.SIMPLE_REPLY_MAGIC, 0);
    h.writeUInt32BE(errno, 4);
    h.writeBigUInt64BE(handle, 8);
    this.sock.write(h);
  }
}
