/**
 * For tests only: the client side of the NBD wire, byte by byte, so a test can do what a real client
 * would not (pipeline without reading replies, send garbage) and still check every reply it gets.
 */
import { ByteQueue } from './byte-queue.js';
import * as P from './protocol.js';

/** Client flags, optionally STRUCTURED_REPLY, then OPT_GO for the default export with no info requests. */
export function handshake(structured: boolean): Buffer {
  const parts: Buffer[] = [];
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(P.CLIENT_FLAG_FIXED_NEWSTYLE | P.CLIENT_FLAG_NO_ZEROES);
  parts.push(flags);
  if (structured) parts.push(option(P.OPT_STRUCTURED_REPLY, Buffer.alloc(0)));
  parts.push(option(P.OPT_GO, Buffer.alloc(6))); // empty name, no info requests
  return Buffer.concat(parts);
}

export function option(opt: number, data: Buffer): Buffer {
  const h = Buffer.alloc(16);
  h.writeBigUInt64BE(P.IHAVEOPT, 0);
  h.writeUInt32BE(opt, 8);
  h.writeUInt32BE(data.length, 12);
  return Buffer.concat([h, data]);
}

export function requestHeader(r: { type: number; flags?: number; handle: bigint; offset: bigint | number; length: number; magic?: number }): Buffer {
  const h = Buffer.alloc(28);
  h.writeUInt32BE(r.magic ?? P.REQUEST_MAGIC, 0);
  h.writeUInt16BE(r.flags ?? 0, 4);
  h.writeUInt16BE(r.type, 6);
  h.writeBigUInt64BE(r.handle, 8);
  h.writeBigUInt64BE(BigInt(r.offset), 16);
  h.writeUInt32BE(r.length, 24);
  return h;
}

export interface OptionReply {
  opt: number;
  type: number;
  data: Buffer;
}

export interface Reply {
  handle: bigint;
  /** 0 or the NBD errno. */
  error: number;
  /** Data of a successful READ. */
  data: Buffer | null;
  structured: boolean;
}

/**
 * Parses what a server sends: the greeting, option replies up to the final one of OPT_GO, then replies.
 * `readLength` says how many data bytes follow a successful simple reply (the length of a READ).
 */
export class ServerStream {
  private readonly q = new ByteQueue();
  private stage: 'hello' | 'options' | 'replies' = 'hello';
  /** A header taken from the queue whose body has not fully arrived. */
  private head: { bytes: Buffer; body: number } | null = null;
  readonly options: OptionReply[] = [];
  /** Set when the server sent something that is no greeting, option reply or reply: a protocol violation. */
  garbage: string | null = null;

  constructor(private readonly readLength: (handle: bigint) => number | null) {}

  push(b: Buffer): Reply[] {
    this.q.push(b);
    const out: Reply[] = [];
    while (this.garbage === null) {
      if (this.stage === 'hello') {
        if (this.q.length < 18) break;
        if (this.q.take(18).readBigUInt64BE(0) !== P.NBDMAGIC) this.garbage = 'bad greeting';
        this.stage = 'options';
        continue;
      }
      if (!this.head) {
        const size = this.stage === 'options' ? 20 : 16;
        if (this.q.length < size) break;
        const bytes = Buffer.from(this.q.take(size));
        this.head = { bytes, body: this.bodyLength(bytes) };
        continue;
      }
      if (this.head.body < 0) {
        // A structured reply: the first 16 bytes are in, its length field is in the next 4.
        if (this.q.length < 4) break;
        const bytes = Buffer.concat([this.head.bytes, this.q.take(4)]);
        this.head = { bytes, body: bytes.readUInt32BE(16) };
        continue;
      }
      if (this.q.length < this.head.body) break;
      const { bytes, body } = this.head;
      this.head = null;
      const data = Buffer.from(this.q.take(body));
      if (this.stage === 'options') {
        const r = { opt: bytes.readUInt32BE(8), type: bytes.readUInt32BE(12), data };
        this.options.push(r);
        if (r.opt === P.OPT_GO && (r.type === P.REP_ACK || r.type >= 0x80000000)) this.stage = 'replies';
        continue;
      }
      const r = this.reply(bytes, data);
      if (r) out.push(r);
    }
    return out;
  }

  /** Bytes that follow a header; -1: a structured reply whose length is still to come. */
  private bodyLength(h: Buffer): number {
    if (this.stage === 'options') {
      if (h.readBigUInt64BE(0) !== P.OPTION_REPLY_MAGIC) this.garbage = 'bad option reply magic';
      return h.readUInt32BE(16);
    }
    const magic = h.readUInt32BE(0);
    if (magic === P.STRUCTURED_REPLY_MAGIC) return -1;
    if (magic !== P.SIMPLE_REPLY_MAGIC) {
      this.garbage = `bad reply magic 0x${magic.toString(16)}`;
      return 0;
    }
    return h.readUInt32BE(4) === 0 ? this.readLength(h.readBigUInt64BE(8)) ?? 0 : 0;
  }

  private reply(h: Buffer, body: Buffer): Reply | null {
    const handle = h.readBigUInt64BE(8);
    if (h.readUInt32BE(0) === P.SIMPLE_REPLY_MAGIC) {
      return { handle, error: h.readUInt32BE(4), data: body.length > 0 ? body : null, structured: false };
    }
    if ((h.readUInt16BE(4) & P.REPLY_FLAG_DONE) === 0) this.garbage = `structured chunk without DONE for handle ${handle}`;
    const type = h.readUInt16BE(6);
    if (type === P.REPLY_TYPE_OFFSET_DATA) return { handle, error: 0, data: body.subarray(8), structured: true };
    if (type === P.REPLY_TYPE_ERROR) return { handle, error: body.readUInt32BE(0), data: null, structured: true };
    if (type === P.REPLY_TYPE_BLOCK_STATUS) return { handle, error: 0, data: body, structured: true }; // the context id, then descriptors
    this.garbage = `unexpected structured chunk type ${type}`;
    return null;
  }
}
