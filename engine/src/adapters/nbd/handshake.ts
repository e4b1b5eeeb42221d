/**
 * The NBD handshake (fixed newstyle): the greeting, the client's flags, and the option haggling up to
 * EXPORT_NAME or GO. It reads from the connection's byte queue and answers through its host; the socket,
 * TLS and memory accounting stay with the connection (connection.ts).
 */
import type { ByteQueue } from './byte-queue.js';
import { BASE_ALLOCATION_ID } from './block-status.js';
import * as P from './protocol.js';
import type { NbdServerTls } from './tls.js';

/** Largest option a client may send. */
const MAX_OPTION_BYTES = 64 * 1024;
/** Option replies a client may leave unread before the server stops reading its options. */
const MAX_OPTION_REPLY_BYTES = 64 * 1024;
export const PREFERRED_BLOCK = 4096;

/** What the handshake tells a client about the export. */
export interface ExportFacts {
  exportName: string;
  description: string;
  size(): number;
  maxPayload: number;
  multiConn: boolean;
  /** The device can say where it holds data: the base:allocation context is offered. */
  blockStatus: boolean;
}

/** What the handshake needs of its connection. */
export interface HandshakeHost {
  /** Write to the client (held as unsent until written). */
  send(b: Buffer): void;
  /** A protocol error: log it and close the connection. */
  fail(why: string): void;
  /** The client aborted (OPT_ABORT, acknowledged): end the connection. */
  abort(): void;
  /**
   * STARTTLS was acknowledged: speak TLS from the next byte on. False if the connection refused (the
   * client sent more before the TLS handshake) and is closed.
   */
  startTls(): boolean;
  /** TLS is established, or its handshake is under way. */
  readonly tlsState: 'none' | 'handshaking' | 'secure';
}

/** What `step` found: more bytes needed, too many unread replies, the transmission phase, or an end. */
export type HandshakeStep = 'wait' | 'stall' | 'transmission' | 'closed';

export class Handshake {
  /** The client asked for no zero padding after EXPORT_NAME. */
  noZeroes = false;
  /** The client asked for structured replies. */
  structured = false;
  /** The client selected base:allocation (OPT_SET_META_CONTEXT): it may send BLOCK_STATUS. */
  baseAllocation = false;
  private flagsRead = false;
  private over: 'transmission' | 'closed' | null = null;

  constructor(
    private readonly facts: ExportFacts,
    private readonly host: HandshakeHost,
    private readonly tls?: NbdServerTls,
  ) {}

  /** The server's first words: magic, IHAVEOPT, and the handshake flags it offers. */
  static greeting(): Buffer {
    const hello = Buffer.alloc(18);
    hello.writeBigUInt64BE(P.NBDMAGIC, 0);
    hello.writeBigUInt64BE(P.IHAVEOPT, 8);
    hello.writeUInt16BE(P.FLAG_FIXED_NEWSTYLE | P.FLAG_NO_ZEROES, 16);
    return hello;
  }

  /** Take flags and options from `q` while whole ones are there. `unsent`: reply bytes not yet written. */
  step(q: ByteQueue, unsent: number): HandshakeStep {
    while (this.over === null) {
      if (!this.flagsRead) {
        if (q.length < 4) return 'wait';
        const flags = q.take(4).readUInt32BE(0);
        if ((flags & P.CLIENT_FLAG_FIXED_NEWSTYLE) === 0 || (flags & ~3) !== 0) {
          return this.fail(`unsupported client flags 0x${flags.toString(16)}`);
        }
        this.noZeroes = (flags & P.CLIENT_FLAG_NO_ZEROES) !== 0;
        this.flagsRead = true;
        continue;
      }
      if (q.length < 16) return 'wait';
      // The client reads no replies: read no more options until it does.
      if (unsent > MAX_OPTION_REPLY_BYTES) return 'stall';
      const hdr = q.take(16);
      if (hdr.readBigUInt64BE(0) !== P.IHAVEOPT) return this.fail('bad option magic');
      const opt = hdr.readUInt32BE(8);
      const len = hdr.readUInt32BE(12);
      if (len > MAX_OPTION_BYTES) return this.fail(`option ${opt} of ${len} bytes is too large`);
      if (q.length < len) {
        // The rest of the option is still coming (rare): put the header back in front.
        const rest = q.take(q.length);
        q.push(Buffer.from(hdr));
        q.push(rest);
        return 'wait';
      }
      this.option(opt, q.take(len));
    }
    return this.over;
  }

  private fail(why: string): 'closed' {
    this.over = 'closed';
    this.host.fail(why);
    return 'closed';
  }

  private reply(opt: number, type: number, data: Buffer = Buffer.alloc(0)): void {
    const h = Buffer.alloc(20);
    h.writeBigUInt64BE(P.OPTION_REPLY_MAGIC, 0);
    h.writeUInt32BE(opt, 8);
    h.writeUInt32BE(type >>> 0, 12);
    h.writeUInt32BE(data.length, 16);
    this.host.send(data.length ? Buffer.concat([h, data]) : h);
  }

  private error(opt: number, type: number, msg: string): void {
    this.reply(opt, type, Buffer.from(msg, 'utf8'));
  }

  private option(opt: number, data: Buffer): void {
    if (this.tls?.required && this.host.tlsState !== 'secure' && opt !== P.OPT_STARTTLS && opt !== P.OPT_ABORT) {
      if (opt === P.OPT_EXPORT_NAME) return void this.fail('TLS is required before EXPORT_NAME');
      return this.error(opt, P.REP_ERR_TLS_REQD, 'this server requires TLS (OPT_STARTTLS) first');
    }
    switch (opt) {
      case P.OPT_EXPORT_NAME: {
        const name = data.toString('utf8');
        if (!this.knownExport(name)) return void this.fail(`unknown export '${name}'`);
        const out = Buffer.alloc(10 + (this.noZeroes ? 0 : 124));
        out.writeBigUInt64BE(BigInt(this.facts.size()), 0);
        out.writeUInt16BE(this.transmissionFlags(), 8);
        this.host.send(out);
        this.over = 'transmission';
        return;
      }
      case P.OPT_ABORT:
        this.reply(opt, P.REP_ACK);
        this.over = 'closed';
        this.host.abort();
        return;
      case P.OPT_LIST: {
        if (data.length !== 0) return this.error(opt, P.REP_ERR_INVALID, 'LIST takes no data');
        const name = Buffer.from(this.facts.exportName, 'utf8');
        const body = Buffer.alloc(4 + name.length);
        body.writeUInt32BE(name.length, 0);
        name.copy(body, 4);
        this.reply(opt, P.REP_SERVER, body);
        this.reply(opt, P.REP_ACK);
        return;
      }
      case P.OPT_STRUCTURED_REPLY:
        if (data.length !== 0) return this.error(opt, P.REP_ERR_INVALID, 'STRUCTURED_REPLY takes no data');
        this.structured = true;
        this.reply(opt, P.REP_ACK);
        return;
      case P.OPT_INFO:
      case P.OPT_GO:
        return this.infoOrGo(opt, data);
      case P.OPT_LIST_META_CONTEXT:
      case P.OPT_SET_META_CONTEXT:
        if (!this.facts.blockStatus) return this.error(opt, P.REP_ERR_UNSUP, 'no metadata contexts are offered for this export');
        return this.metaContext(opt, data);
      case P.OPT_STARTTLS:
        if (!this.tls) return this.error(opt, P.REP_ERR_UNSUP, 'TLS is not offered on this listener');
        if (this.host.tlsState !== 'none' || data.length !== 0) return this.error(opt, P.REP_ERR_INVALID, 'STARTTLS takes no data and is done once');
        this.reply(opt, P.REP_ACK);
        if (!this.host.startTls()) this.over = 'closed';
        return;
      default:
        return this.error(opt, P.REP_ERR_UNSUP, `option ${opt} is not supported`);
    }
  }

  private infoOrGo(opt: number, data: Buffer): void {
    if (data.length < 6) return this.error(opt, P.REP_ERR_INVALID, 'INFO/GO request too short');
    const nameLen = data.readUInt32BE(0);
    if (4 + nameLen + 2 > data.length) return this.error(opt, P.REP_ERR_INVALID, 'export name length out of range');
    const name = data.subarray(4, 4 + nameLen).toString('utf8');
    const nInfo = data.readUInt16BE(4 + nameLen);
    if (data.length !== 4 + nameLen + 2 + 2 * nInfo) {
      return this.error(opt, P.REP_ERR_INVALID, 'information request list length mismatch');
    }
    const wanted = new Set<number>();
    for (let i = 0; i < nInfo; i++) wanted.add(data.readUInt16BE(4 + nameLen + 2 + 2 * i));
    if (!this.knownExport(name)) return this.error(opt, P.REP_ERR_UNKNOWN, `unknown export '${name}'`);

    const exp = Buffer.alloc(12);
    exp.writeUInt16BE(P.INFO_EXPORT, 0);
    exp.writeBigUInt64BE(BigInt(this.facts.size()), 2);
    exp.writeUInt16BE(this.transmissionFlags(), 10);
    this.reply(opt, P.REP_INFO, exp);

    const bs = Buffer.alloc(14);
    bs.writeUInt16BE(P.INFO_BLOCK_SIZE, 0);
    bs.writeUInt32BE(1, 2);
    bs.writeUInt32BE(PREFERRED_BLOCK, 6);
    bs.writeUInt32BE(this.facts.maxPayload, 10);
    this.reply(opt, P.REP_INFO, bs);

    const textInfo = (type: number, text: string) => {
      const t = Buffer.from(text, 'utf8');
      const b = Buffer.alloc(2 + t.length);
      b.writeUInt16BE(type, 0);
      t.copy(b, 2);
      this.reply(opt, P.REP_INFO, b);
    };
    if (wanted.has(P.INFO_NAME)) textInfo(P.INFO_NAME, this.facts.exportName);
    if (wanted.has(P.INFO_DESCRIPTION)) textInfo(P.INFO_DESCRIPTION, this.facts.description);
    this.reply(opt, P.REP_ACK);
    if (opt === P.OPT_GO) this.over = 'transmission';
  }

  /**
   * LIST or SET_META_CONTEXT: an export name and queries. The one context offered is base:allocation;
   * LIST names it for no query, "base:" or its own name; SET selects it only by its full name, and
   * replaces what an earlier SET selected. SET needs structured replies (the answers to BLOCK_STATUS
   * are structured).
   */
  private metaContext(opt: number, data: Buffer): void {
    const set = opt === P.OPT_SET_META_CONTEXT;
    if (set) this.baseAllocation = false;
    if (set && !this.structured) return this.error(opt, P.REP_ERR_INVALID, 'SET_META_CONTEXT needs structured replies first');
    const bad = (why: string) => this.error(opt, P.REP_ERR_INVALID, why);
    if (data.length < 8) return bad('meta context request too short');
    const nameLen = data.readUInt32BE(0);
    if (nameLen > data.length - 8) return bad('export name length out of range');
    const name = data.subarray(4, 4 + nameLen).toString('utf8');
    const count = data.readUInt32BE(4 + nameLen);
    const queries: string[] = [];
    let at = 8 + nameLen;
    for (let i = 0; i < count; i++) {
      if (at + 4 > data.length) return bad('meta context query list shorter than its count');
      const n = data.readUInt32BE(at);
      if (n > data.length - at - 4) return bad('meta context query length out of range');
      queries.push(data.subarray(at + 4, at + 4 + n).toString('utf8'));
      at += 4 + n;
    }
    if (at !== data.length) return bad('meta context request longer than its queries');
    if (!this.knownExport(name)) return this.error(opt, P.REP_ERR_UNKNOWN, `unknown export '${name}'`);
    const named = set
      ? queries.includes(P.META_BASE_ALLOCATION)
      : queries.length === 0 || queries.some((q) => q === 'base:' || q === P.META_BASE_ALLOCATION);
    if (named) {
      const ctx = Buffer.from(P.META_BASE_ALLOCATION, 'utf8');
      const body = Buffer.alloc(4 + ctx.length);
      // LIST answers with id 0 (ids are given by SET only).
      body.writeUInt32BE(set ? BASE_ALLOCATION_ID : 0, 0);
      ctx.copy(body, 4);
      this.reply(opt, P.REP_META_CONTEXT, body);
    }
    if (set) this.baseAllocation = named;
    this.reply(opt, P.REP_ACK);
  }

  private knownExport(name: string): boolean {
    return name === '' || name === this.facts.exportName;
  }

  private transmissionFlags(): number {
    let f = P.TF_HAS_FLAGS | P.TF_SEND_FLUSH | P.TF_SEND_FUA | P.TF_SEND_TRIM | P.TF_SEND_WRITE_ZEROES;
    if (this.facts.multiConn) f |= P.TF_CAN_MULTI_CONN;
    return f;
  }
}
