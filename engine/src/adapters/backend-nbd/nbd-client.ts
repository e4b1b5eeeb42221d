/**
 * The engine's own NBD client: a member served by nbdkit, qemu-nbd or another engine.
 * Fixed newstyle with OPT_GO, simple replies, pipelined requests matched by handle. Where the member's
 * holes are asked for (a full copy from it), a second, short-lived connection negotiates structured
 * replies and the base:allocation context and asks BLOCK_STATUS; the data connection never changes.
 *
 * A member must take requests at any byte offset and length (the engine passes on what its own clients
 * send) and must offer FLUSH (without it, writes the set acknowledged as durable might not be): a server
 * that says otherwise, or whose block sizes break the protocol's rules, is refused at open.
 */
import net from 'node:net';
import { EngineError, errorMessage } from '../../core/errors.js';
import type { BlockBackend } from '../../ports/block-backend.js';
import { systemClock } from '../../ports/clock.js';
import { ByteQueue } from '../nbd/byte-queue.js';
import * as P from '../nbd/protocol.js';
import type { PskKey } from '../nbd/tls.js';
import { addDataRanges, readDescriptors, type Descriptor } from '../nbd/block-status.js';
import { maxBlockFrom } from './block-sizes.js';
import { parseNbdUri } from '../../core/nbd-uri.js';
import { clientStartTls } from './starttls.js';

/** The largest option reply read during negotiation (INFO replies and error strings are far smaller). */
const MAX_OPTION_REPLY_BYTES = 64 * 1024;
/** The range one BLOCK_STATUS asks about at most (its length is 32 bits; kept a multiple of 512). */
const MAX_STATUS_REQUEST = 0xfffffe00;
/** The largest structured chunk taken (a BLOCK_STATUS answer of 131,072 descriptors); more ends the connection. */
const MAX_CHUNK_PAYLOAD = 4 + 8 * 131072;
/** Data ranges in a map at most: a member more fragmented than this is read as before. */
const MAX_RANGES = 262_144;

interface Pending {
  resolve: (v: void) => void;
  reject: (e: Error) => void;
  readInto: Buffer | null;
  /** A BLOCK_STATUS request: the length asked about, and the answer (or the error) once its chunks came. */
  status?: { length: number; descriptors: Descriptor[] | null; error: Error | null };
}

/** The header of a structured reply chunk being read on a status connection. */
interface ChunkHeader {
  flags: number;
  type: number;
  handle: bigint;
  length: number;
}

/** One option as the client sends it: IHAVEOPT, the option, its length and data. */
function option(opt: number, data: Buffer): Buffer {
  const h = Buffer.alloc(16 + data.length);
  h.writeBigUInt64BE(P.IHAVEOPT, 0);
  h.writeUInt32BE(opt, 8);
  h.writeUInt32BE(data.length, 12);
  data.copy(h, 16);
  return h;
}

export class NbdClientBackend implements BlockBackend {
  private readonly q = new ByteQueue();
  private readonly pending = new Map<bigint, Pending>();
  private nextHandle = 1n;
  private dead: Error | null = null;
  private closed: Error | null = null;
  private closing: Promise<void> | null = null;
  /**
   * Opens another connection to the same export: refreshSize asks the export's size on it, dataExtents
   * (`status`) asks BLOCK_STATUS on it.
   */
  private reopen: ((status: boolean) => Promise<NbdClientBackend>) | null = null;
  /** Called when nothing is pending any more (or the connection died). */
  private idle: (() => void) | null = null;
  private waitingReply: { handle: bigint; error: number } | null = null;
  private waitingChunk: ChunkHeader | null = null;
  /** The base:allocation context id on a status connection (structured replies negotiated); else null. */
  private statusContext: number | null = null;
  /** How long close() waits for replies to requests in flight and for the server to hang up. */
  closeTimeoutMs = 5000;
  /** How long dataExtents may take in all (another connection, then one request per 4 GiB). */
  statusLimitMs = 20_000;

  private constructor(
    readonly location: string,
    private readonly sock: net.Socket,
    public size: number,
    private readonly flags: number,
    private readonly maxBlock: number,
  ) {
    sock.on('data', (b: Buffer) => {
      this.q.push(b);
      this.pump();
    });
    sock.on('error', (e) => this.die(e.message));
    sock.on('close', () => this.die('connection closed'));
  }

  /** The connection is unusable: everything pending fails with ENG_IO. */
  private die(why: string): void {
    if (this.dead) return;
    this.dead = new EngineError('ENG_IO', `NBD member ${this.location}: ${why}`);
    for (const p of this.pending.values()) p.reject(this.dead);
    this.pending.clear();
    this.idle?.();
  }

  /**
   * `o.psk`: the identity and key an nbds:// member must be reached with (TLS 1.3 PSK). `o.blockStatus`:
   * a connection for BLOCK_STATUS only (structured replies and base:allocation asked for; a server that
   * offers neither still gives a connection, on which dataExtents cannot be asked).
   */
  static async open(uri: string, timeoutMs = 30_000, o: { psk?: PskKey; blockStatus?: boolean } = {}): Promise<NbdClientBackend> {
    const t = parseNbdUri(uri);
    const tlsKey = t.kind === 'tcp' && t.tls ? o.psk : undefined;
    if (t.kind === 'tcp' && t.tls && !tlsKey) throw new EngineError('ENG_INVALID_ARGUMENT', `cannot attach NBD member ${uri}: nbds:// needs a pre-shared key (--member-psk-file)`);
    let sock: net.Socket = t.kind === 'tcp' ? net.connect(t.port, t.host) : net.connect(t.socket);
    sock.setNoDelay(true);
    const q = new ByteQueue();
    let wake: (() => void) | null = null;
    let failure: Error | null = null;
    const onData = (b: Buffer) => {
      q.push(b);
      wake?.();
    };
    const onErr = (e: Error) => {
      failure = e;
      wake?.();
    };
    const onClose = () => onErr(new Error('connection closed during negotiation'));
    sock.on('data', onData);
    sock.on('error', onErr);
    sock.on('close', onClose);
    const timer = setTimeout(() => onErr(new Error('negotiation timed out')), timeoutMs);
    const need = async (n: number): Promise<Buffer> => {
      while (q.length < n) {
        if (failure) throw failure;
        await new Promise<void>((r) => (wake = r));
        wake = null;
      }
      return q.take(n);
    };
    try {
      const hello = await need(18);
      if (hello.readBigUInt64BE(0) !== P.NBDMAGIC || hello.readBigUInt64BE(8) !== P.IHAVEOPT) {
        throw new Error('server does not speak newstyle NBD');
      }
      const hflags = hello.readUInt16BE(16);
      if ((hflags & P.FLAG_FIXED_NEWSTYLE) === 0) throw new Error('server is not fixed newstyle');
      let cflags = Buffer.alloc(4);
      cflags.writeUInt32BE(P.CLIENT_FLAG_FIXED_NEWSTYLE | (hflags & P.FLAG_NO_ZEROES ? P.CLIENT_FLAG_NO_ZEROES : 0));
      if (tlsKey) {
        sock.write(cflags);
        cflags = Buffer.alloc(0);
        const plain = sock;
        sock = await clientStartTls(plain, need, tlsKey, () => {
          if (q.length > 0) throw new Error('server sent data after accepting STARTTLS');
          // From here the TLS socket reports the connection's errors; the plain one must not crash us.
          plain.off('data', onData).off('error', onErr).off('close', onClose).on('error', () => undefined);
        }, timeoutMs);
        sock.on('data', onData).on('error', onErr).on('close', onClose);
      }
      const name = Buffer.from(t.exportName, 'utf8');
      /** The replies to option `want`, up to its ACK (null) or its error (the error's type and text). */
      const replies = async (want: number, each: (type: number, body: Buffer) => void): Promise<{ type: number; text: string } | null> => {
        for (;;) {
          const h = await need(20);
          if (h.readBigUInt64BE(0) !== P.OPTION_REPLY_MAGIC) throw new Error('bad option reply magic');
          const opt = h.readUInt32BE(8);
          if (opt !== want) throw new Error(`a reply to option ${opt} where option ${want}'s was due`);
          const type = h.readUInt32BE(12);
          const len = h.readUInt32BE(16);
          // A reply this client asked for is small; a server announcing more is not followed (memory).
          if (len > MAX_OPTION_REPLY_BYTES) throw new Error(`option reply of ${len} bytes is too large`);
          const body = await need(len);
          if (type === P.REP_ACK) return null;
          if (type >= 0x80000000) return { type: type - 0x80000000, text: body.toString('utf8') };
          each(type, body);
        }
      };
      const opts: Buffer[] = [cflags];
      if (o.blockStatus) {
        opts.push(option(P.OPT_STRUCTURED_REPLY, Buffer.alloc(0)));
        const query = Buffer.from(P.META_BASE_ALLOCATION, 'utf8');
        const meta = Buffer.alloc(4 + name.length + 4 + 4 + query.length);
        meta.writeUInt32BE(name.length, 0);
        name.copy(meta, 4);
        meta.writeUInt32BE(1, 4 + name.length);
        meta.writeUInt32BE(query.length, 8 + name.length);
        query.copy(meta, 12 + name.length);
        opts.push(option(P.OPT_SET_META_CONTEXT, meta));
      }
      const data = Buffer.alloc(4 + name.length + 2 + 2);
      data.writeUInt32BE(name.length, 0);
      name.copy(data, 4);
      data.writeUInt16BE(1, 4 + name.length);
      data.writeUInt16BE(P.INFO_BLOCK_SIZE, 6 + name.length);
      opts.push(option(P.OPT_GO, data));
      sock.write(Buffer.concat(opts));
      let context: number | null = null;
      if (o.blockStatus) {
        // Options are answered in order. A server without them refuses them, and the connection is still good.
        const structured = (await replies(P.OPT_STRUCTURED_REPLY, () => undefined)) === null;
        let id: number | null = null;
        const metaRefused = await replies(P.OPT_SET_META_CONTEXT, (type, body) => {
          if (type === P.REP_META_CONTEXT && body.length > 4 && body.subarray(4).toString('utf8') === P.META_BASE_ALLOCATION) id = body.readUInt32BE(0);
        });
        if (structured && metaRefused === null) context = id;
      }
      let size = -1;
      let tflags = 0;
      let blockSizes: Buffer | null = null;
      const refused = await replies(P.OPT_GO, (type, body) => {
        if (type !== P.REP_INFO || body.length < 2) return;
        const info = body.readUInt16BE(0);
        if (info === P.INFO_EXPORT && body.length >= 12) {
          size = Number(body.readBigUInt64BE(2));
          tflags = body.readUInt16BE(10);
        } else if (info === P.INFO_BLOCK_SIZE) {
          blockSizes = Buffer.from(body);
        }
      });
      if (refused) throw new Error(`server refused the export (${refused.type}): ${refused.text}`);
      if (size < 0) throw new Error('server sent no export size');
      if (tflags & P.TF_READ_ONLY) throw new Error('export is read-only');
      if ((tflags & P.TF_HAS_FLAGS) === 0 || (tflags & P.TF_SEND_FLUSH) === 0) {
        throw new Error('the server does not support FLUSH; writes acknowledged by the set could not be made durable on it');
      }
      const maxBlock = maxBlockFrom(blockSizes);
      // Only our own listeners: a TLS socket has some of its own.
      sock.off('data', onData).off('error', onErr).off('close', onClose);
      const b = new NbdClientBackend(uri, sock, size, tflags, maxBlock);
      b.statusContext = context;
      b.reopen = (status) => NbdClientBackend.open(uri, timeoutMs, { ...(o.psk ? { psk: o.psk } : {}), blockStatus: status });
      if (q.length > 0) b.q.push(q.take(q.length));
      return b;
    } catch (e) {
      sock.destroy();
      // ENG_IO: the member could not be reached or did not negotiate (a start goes on without it, see engine.ts).
      throw new EngineError('ENG_IO', `cannot attach NBD member ${uri}: ${errorMessage(e)}`, { cause: e });
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * The export's size now, asked on a connection of its own (a connection keeps the size it was told).
   * A larger export is used through this connection only if its server serves the new bytes on it: the
   * last block of the new size is read here first. Our member server (serve-device) does; a server that
   * holds a connection to the size it announced makes this fail, and the member must leave and return
   * (a minicopy) to be reached on a new connection.
   */
  async refreshSize(): Promise<number> {
    if (this.closed || this.dead) throw this.closed ?? this.dead!;
    const probe = await this.reopen!(false);
    const now = probe.size;
    await probe.close().catch(() => undefined);
    if (now < this.size) throw new EngineError('ENG_IO', `NBD member ${this.location} shrank from ${this.size} to ${now} bytes`);
    if (now > this.size) {
      const tail = Buffer.alloc(Math.min(4096, now));
      try {
        await this.read(tail, now - tail.length);
      } catch (e) {
        throw new EngineError('ENG_IO', `NBD member ${this.location} now exports ${now} bytes, but its server refuses requests past ${this.size} on the open connection (${errorMessage(e)}); remove the member and return it to reach it on a new connection`);
      }
      this.size = now;
    }
    return now;
  }

  private pump(): void {
    if (this.statusContext !== null) return this.pumpStatus();
    for (;;) {
      if (!this.waitingReply) {
        if (this.q.length < 16) return;
        const h = this.q.take(16);
        if (h.readUInt32BE(0) !== P.SIMPLE_REPLY_MAGIC) {
          this.sock.destroy(new Error('unexpected reply magic'));
          return;
        }
        this.waitingReply = { handle: h.readBigUInt64BE(8), error: h.readUInt32BE(4) };
      }
      const { handle, error } = this.waitingReply;
      const p = this.pending.get(handle);
      if (!p) {
        this.sock.destroy(new Error(`reply for unknown handle ${handle}`));
        return;
      }
      if (p.readInto && error === 0) {
        if (this.q.length < p.readInto.length) return;
        const data = this.q.take(p.readInto.length);
        data.copy(p.readInto);
      }
      this.waitingReply = null;
      this.pending.delete(handle);
      if (error === 0) p.resolve();
      else p.reject(new EngineError('ENG_IO', `NBD member ${this.location} answered error ${error}`));
      if (this.pending.size === 0) this.idle?.();
    }
  }

  /**
   * Replies on a status connection: structured chunks (or simple replies, which a server may send for
   * anything but a READ, and this connection sends no READ). Anything the protocol does not allow ends
   * the connection, and every request on it fails.
   */
  private pumpStatus(): void {
    const bad = (why: string) => void this.sock.destroy(new Error(`protocol error: ${why}`));
    for (;;) {
      if (!this.waitingChunk) {
        if (this.q.length < 4) return;
        const magic = this.q.peekUInt32BE();
        if (magic === P.SIMPLE_REPLY_MAGIC) {
          if (this.q.length < 16) return;
          const h = this.q.take(16);
          const handle = h.readBigUInt64BE(8);
          const p = this.pending.get(handle);
          if (!p) return bad(`reply for unknown handle ${handle}`);
          this.pending.delete(handle);
          const error = h.readUInt32BE(4);
          p.reject(new EngineError('ENG_IO', `NBD member ${this.location} answered ${error ? `error ${error}` : 'BLOCK_STATUS with no descriptors'}`));
          if (this.pending.size === 0) this.idle?.();
          continue;
        }
        if (magic !== P.STRUCTURED_REPLY_MAGIC) return bad('unexpected reply magic');
        if (this.q.length < 20) return;
        const h = this.q.take(20);
        const chunk = { flags: h.readUInt16BE(4), type: h.readUInt16BE(6), handle: h.readBigUInt64BE(8), length: h.readUInt32BE(16) };
        if (chunk.length > MAX_CHUNK_PAYLOAD) return bad(`reply chunk of ${chunk.length} bytes`);
        this.waitingChunk = chunk;
      }
      const c = this.waitingChunk;
      if (this.q.length < c.length) return;
      this.waitingChunk = null;
      const payload = this.q.take(c.length);
      const p = this.pending.get(c.handle);
      if (!p?.status) return bad(`reply for unknown handle ${c.handle}`);
      const st = p.status;
      if (c.type === P.REPLY_TYPE_BLOCK_STATUS) {
        if (st.descriptors) return bad('a second BLOCK_STATUS chunk for one context');
        try {
          st.descriptors = readDescriptors(payload, this.statusContext!, st.length);
        } catch (e) {
          return bad(errorMessage(e));
        }
      } else if (c.type & 0x8000) {
        const errno = payload.length >= 4 ? payload.readUInt32BE(0) : 0;
        const msgLen = payload.length >= 6 ? payload.readUInt16BE(4) : 0;
        const msg = payload.subarray(6, 6 + msgLen).toString('utf8');
        st.error ??= new EngineError('ENG_IO', `NBD member ${this.location} answered error ${errno}${msg ? `: ${msg}` : ''}`);
      } else if (c.type !== P.REPLY_TYPE_NONE) {
        return bad(`reply chunk of type ${c.type} to BLOCK_STATUS`);
      }
      if ((c.flags & P.REPLY_FLAG_DONE) === 0) continue;
      this.pending.delete(c.handle);
      if (st.error) p.reject(st.error);
      else if (!st.descriptors) p.reject(new EngineError('ENG_IO', `NBD member ${this.location} answered BLOCK_STATUS with no descriptors`));
      else p.resolve();
      if (this.pending.size === 0) this.idle?.();
    }
  }

  /** BLOCK_STATUS of base:allocation for [offset, offset + length), on a status connection. */
  private async blockStatus(offset: number, length: number): Promise<Descriptor[]> {
    const status: NonNullable<Pending['status']> = { length, descriptors: null, error: null };
    await this.send(P.CMD_BLOCK_STATUS, 0, offset, length, null, null, status);
    return status.descriptors!;
  }

  /**
   * Where the member may hold data, from the server's base:allocation (a range it calls zero reads as
   * zeros; everything else counts as data), asked on a connection of its own. Null when it cannot be
   * known: the server offers no base:allocation, its answer breaks the protocol or takes longer than
   * statusLimitMs, the map would be too large — or the server does not promise that its connections
   * see one another's completed writes (CAN_MULTI_CONN): the answer must reflect every write this
   * connection has completed before the question.
   */
  async dataExtents(): Promise<Array<[number, number]> | null> {
    if (this.closed || this.dead || !this.reopen || (this.flags & P.TF_CAN_MULTI_CONN) === 0) return null;
    let probe: NbdClientBackend | null = null;
    let late = false;
    let timer: NodeJS.Timeout | undefined;
    // Past the limit the connection is cut, which fails whatever it still waits for.
    const expired = new Promise<null>((resolve) => {
      timer = setTimeout(() => {
        late = true;
        probe?.sock.destroy();
        resolve(null);
      }, this.statusLimitMs);
    });
    try {
      const opening = this.reopen(true);
      probe = await Promise.race([opening, expired]);
      if (!probe) {
        opening.then((b) => b.close(), () => undefined).catch(() => undefined);
        return null;
      }
      if (late || probe.statusContext === null || probe.size < this.size) return null;
      const out: Array<[number, number]> = [];
      for (let at = 0; at < this.size; ) {
        at = addDataRanges(out, at, await probe.blockStatus(at, Math.min(this.size - at, MAX_STATUS_REQUEST)));
        if (out.length > MAX_RANGES || late) return null;
      }
      return out;
    } catch {
      return null;
    } finally {
      clearTimeout(timer);
      if (probe) await probe.close().catch(() => undefined);
    }
  }

  /** True when the member's server calls all of it zero (see dataExtents). */
  async holdsNoData(): Promise<boolean> {
    const extents = await this.dataExtents();
    return extents !== null && extents.length === 0;
  }

  private send(type: number, flags: number, offset: number, length: number, payload: Buffer | null, readInto: Buffer | null, status?: Pending['status']): Promise<void> {
    if (this.dead) return Promise.reject(this.dead);
    if (this.closed) return Promise.reject(this.closed);
    const handle = this.nextHandle++;
    const h = Buffer.allocUnsafe(28);
    h.writeUInt32BE(P.REQUEST_MAGIC, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(handle, 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    return new Promise<void>((resolve, reject) => {
      this.pending.set(handle, status ? { resolve, reject, readInto, status } : { resolve, reject, readInto });
      this.sock.cork();
      this.sock.write(h);
      if (payload) this.sock.write(payload);
      process.nextTick(() => this.sock.uncork());
    });
  }

  async read(buf: Buffer, offset: number): Promise<void> {
    const parts: Promise<void>[] = [];
    for (let done = 0; done < buf.length; done += this.maxBlock) {
      const n = Math.min(this.maxBlock, buf.length - done);
      parts.push(this.send(P.CMD_READ, 0, offset + done, n, null, buf.subarray(done, done + n)));
    }
    await Promise.all(parts);
  }

  async write(buf: Buffer, offset: number, fua: boolean): Promise<void> {
    const fuaFlag = fua && this.flags & P.TF_SEND_FUA ? P.CMD_FLAG_FUA : 0;
    const parts: Promise<void>[] = [];
    for (let done = 0; done < buf.length; done += this.maxBlock) {
      const n = Math.min(this.maxBlock, buf.length - done);
      parts.push(this.send(P.CMD_WRITE, fuaFlag, offset + done, n, buf.subarray(done, done + n), null));
    }
    await Promise.all(parts);
    if (fua && !fuaFlag) await this.flush();
  }

  flush(): Promise<void> {
    return this.send(P.CMD_FLUSH, 0, 0, 0, null, null); // every member offers it (checked at open)
  }

  async discard(offset: number, length: number): Promise<void> {
    return this.writeZeroes(offset, length, false);
  }

  async writeZeroes(offset: number, length: number, fua: boolean): Promise<void> {
    const step = 1 << 30;
    if (this.flags & P.TF_SEND_WRITE_ZEROES) {
      const parts: Promise<void>[] = [];
      for (let done = 0; done < length; done += step) {
        parts.push(this.send(P.CMD_WRITE_ZEROES, 0, offset + done, Math.min(step, length - done), null, null));
      }
      await Promise.all(parts);
    } else {
      const zero = Buffer.alloc(Math.min(length, 1 << 20));
      for (let done = 0; done < length; done += zero.length) {
        const n = Math.min(zero.length, length - done);
        await this.write(zero.subarray(0, n), offset + done, false);
      }
    }
    if (fua) await this.flush();
  }

  /**
   * Requests issued from now on fail; those in flight get their replies, then DISC is sent and the
   * server hangs up. A server that takes longer than closeTimeoutMs for all of that is cut off: what is
   * still pending fails with ENG_IO. Idempotent.
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.closed = new EngineError('ENG_IO', `NBD member ${this.location} is closed`);
    // A duration: the monotonic clock, so a wall-clock step cannot cut it short or stretch it.
    const deadline = systemClock.monotonic() + this.closeTimeoutMs;
    if (!this.dead && this.pending.size > 0) {
      await this.within(deadline, (done) => (this.idle = done));
      this.idle = null;
    }
    if (!this.dead && this.pending.size === 0) {
      const h = Buffer.alloc(28);
      h.writeUInt32BE(P.REQUEST_MAGIC, 0);
      h.writeUInt16BE(P.CMD_DISC, 6);
      this.sock.end(h);
      await this.within(deadline, (done) => this.sock.once('close', done));
    }
    this.die(`closed with ${this.pending.size} request(s) unanswered after ${this.closeTimeoutMs} ms`);
    if (!this.sock.closed) {
      const gone = new Promise<void>((r) => this.sock.once('close', () => r()));
      this.sock.destroy();
      await gone;
    }
  }

  /** Wait for `arm`'s callback or the deadline, whichever comes first. */
  private within(deadline: number, arm: (done: () => void) => void): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, Math.max(0, deadline - systemClock.monotonic()));
      arm(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
