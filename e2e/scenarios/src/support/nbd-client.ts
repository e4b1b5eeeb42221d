// A small NBD client over TCP for the scenarios' workloads: fixed newstyle handshake with NBD_OPT_GO,
// simple replies, READ, WRITE (optionally FUA), FLUSH and DISC, many requests in flight. When the
// connection drops, every request in flight fails (the workload then treats its write as unknown).
import { connect, type Socket } from 'node:net';

const NBDMAGIC = Buffer.from('NBDMAGIC');
const IHAVEOPT = 0x49484156454f5054n;
const OPT_REPLY_MAGIC = 0x3e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const FLAG_FIXED_NEWSTYLE = 1;
const FLAG_NO_ZEROES = 2;
const OPT_GO = 7;
const REP_ACK = 1;
const REP_INFO = 3;
const INFO_EXPORT = 0;
const CMD = { read: 0, write: 1, disc: 2, flush: 3 } as const;
const CMD_FLAG_FUA = 1;

interface Pending {
  resolve: (data: Buffer | null) => void;
  reject: (e: Error) => void;
  /** bytes of payload a READ reply carries */
  readLength: number;
}

/** Reads exactly n bytes from a socket during the handshake. */
class Reader {
  private buf = Buffer.alloc(0);
  private want: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private failed: Error | null = null;

  constructor(private readonly sock: Socket) {
    sock.on('data', this.onData);
    sock.on('error', (e) => this.fail(e));
    sock.on('close', () => this.fail(new Error('connection closed during the NBD handshake')));
  }

  private readonly onData = (b: Buffer): void => {
    this.buf = Buffer.concat([this.buf, b]);
    this.serve();
  };

  private fail(e: Error): void {
    this.failed ??= e;
    if (this.want) {
      const w = this.want;
      this.want = null;
      w.reject(this.failed);
    }
  }

  private serve(): void {
    if (this.want && this.buf.length >= this.want.n) {
      const w = this.want;
      this.want = null;
      const out = this.buf.subarray(0, w.n);
      this.buf = this.buf.subarray(w.n);
      w.resolve(Buffer.from(out));
    }
  }

  read(n: number): Promise<Buffer> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      this.want = { n, resolve, reject };
      this.serve();
    });
  }

  /** Stop reading for the handshake; returns what arrived beyond it. */
  detach(): Buffer {
    this.sock.off('data', this.onData);
    this.sock.removeAllListeners('error');
    this.sock.removeAllListeners('close');
    return this.buf;
  }
}

export class NbdClient {
  private nextHandle = 1n;
  private readonly pending = new Map<bigint, Pending>();
  private rx: Buffer = Buffer.alloc(0);
  private closedWith: Error | null = null;

  private constructor(private readonly sock: Socket, readonly size: number) {}

  /** Connect to host:port and open `exportName`. */
  static async connect(host: string, port: number, exportName: string, timeoutMs = 10_000): Promise<NbdClient> {
    const sock = connect({ host, port });
    sock.setNoDelay(true);
    const timer = setTimeout(() => sock.destroy(new Error(`NBD handshake with ${host}:${port} timed out`)), timeoutMs);
    try {
      await new Promise<void>((resolve, reject) => {
        sock.once('connect', resolve);
        sock.once('error', reject);
      });
      const r = new Reader(sock);
      const hello = await r.read(18);
      if (!hello.subarray(0, 8).equals(NBDMAGIC) || hello.readBigUInt64BE(8) !== IHAVEOPT) throw new Error('not a newstyle NBD server');
      const serverFlags = hello.readUInt16BE(16);
      if (!(serverFlags & FLAG_FIXED_NEWSTYLE)) throw new Error('server does not do fixed newstyle negotiation');
      const clientFlags = Buffer.alloc(4);
      clientFlags.writeUInt32BE(FLAG_FIXED_NEWSTYLE | (serverFlags & FLAG_NO_ZEROES));
      const name = Buffer.from(exportName, 'utf8');
      const data = Buffer.alloc(4 + name.length + 2);
      data.writeUInt32BE(name.length, 0);
      name.copy(data, 4);
      data.writeUInt16BE(0, 4 + name.length); // no information requests: NBD_INFO_EXPORT comes anyway
      const opt = Buffer.alloc(16);
      opt.writeBigUInt64BE(IHAVEOPT, 0);
      opt.writeUInt32BE(OPT_GO, 8);
      opt.writeUInt32BE(data.length, 12);
      sock.write(Buffer.concat([clientFlags, opt, data]));
      let size = -1;
      for (;;) {
        const h = await r.read(20);
        if (h.readBigUInt64BE(0) !== OPT_REPLY_MAGIC) throw new Error('bad option reply magic');
        const type = h.readUInt32BE(12);
        const len = h.readUInt32BE(16);
        const body = len > 0 ? await r.read(len) : Buffer.alloc(0);
        if (type >= 0x80000000) throw new Error(`server refused export '${exportName}' (reply ${type - 0x80000000}): ${body.toString('utf8')}`);
        if (type === REP_INFO && body.length >= 12 && body.readUInt16BE(0) === INFO_EXPORT) size = Number(body.readBigUInt64BE(2));
        if (type === REP_ACK) break;
      }
      if (size < 0) throw new Error('server sent no export size');
      const rest = r.detach();
      const c = new NbdClient(sock, size);
      c.attach(rest);
      return c;
    } catch (e) {
      sock.destroy();
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  private attach(initial: Buffer): void {
    this.rx = initial;
    this.sock.on('data', (b: Buffer) => {
      this.rx = this.rx.length === 0 ? b : Buffer.concat([this.rx, b]);
      this.drain();
    });
    this.sock.on('error', (e) => this.closeAll(e));
    this.sock.on('close', () => this.closeAll(new Error('NBD connection closed')));
    this.drain();
  }

  private drain(): void {
    while (this.rx.length >= 16) {
      if (this.rx.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) {
        this.sock.destroy(new Error('bad reply magic'));
        return;
      }
      const error = this.rx.readUInt32BE(4);
      const handle = this.rx.readBigUInt64BE(8);
      const p = this.pending.get(handle);
      if (!p) {
        this.sock.destroy(new Error(`reply for unknown handle ${handle}`));
        return;
      }
      const payload = error === 0 ? p.readLength : 0;
      if (this.rx.length < 16 + payload) return;
      const data = payload > 0 ? Buffer.from(this.rx.subarray(16, 16 + payload)) : null;
      this.rx = this.rx.subarray(16 + payload);
      this.pending.delete(handle);
      if (error !== 0) p.reject(new Error(`NBD error ${error}`));
      else p.resolve(data);
    }
  }

  private closeAll(e: Error): void {
    this.closedWith ??= e;
    for (const p of this.pending.values()) p.reject(this.closedWith);
    this.pending.clear();
  }

  private request(type: number, flags: number, offset: number, length: number, data?: Buffer): Promise<Buffer | null> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const handle = this.nextHandle++;
    const h = Buffer.alloc(28);
    h.writeUInt32BE(REQUEST_MAGIC, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(handle, 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    return new Promise((resolve, reject) => {
      this.pending.set(handle, { resolve, reject, readLength: type === CMD.read ? length : 0 });
      this.sock.write(data ? Buffer.concat([h, data]) : h);
    });
  }

  async read(offset: number, length: number): Promise<Buffer> {
    return (await this.request(CMD.read, 0, offset, length))!;
  }

  async write(offset: number, data: Buffer, fua = false): Promise<void> {
    await this.request(CMD.write, fua ? CMD_FLAG_FUA : 0, offset, data.length, data);
  }

  async flush(): Promise<void> {
    await this.request(CMD.flush, 0, 0, 0);
  }

  /** Polite disconnect (NBD_CMD_DISC), then close. */
  async close(): Promise<void> {
    if (!this.closedWith && !this.sock.destroyed) {
      const h = Buffer.alloc(28);
      h.writeUInt32BE(REQUEST_MAGIC, 0);
      h.writeUInt16BE(CMD.disc, 6);
      await new Promise<void>((resolve) => this.sock.end(h, () => resolve()));
    }
    this.sock.destroy();
  }
}

/** Read `length` bytes from offset 0 in requests the server accepts (at most 4 MiB each, a few at once). */
export async function readAll(c: NbdClient, length: number): Promise<Buffer> {
  const step = 4 * 1024 * 1024;
  const parts: Promise<Buffer>[] = [];
  for (let off = 0; off < length; off += step) parts.push(c.read(off, Math.min(step, length - off)));
  return Buffer.concat(await Promise.all(parts));
}
