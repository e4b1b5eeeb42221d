/**
 * The client's OPT_STARTTLS for nbds:// members: ask, insist on an ACK, then a TLS 1.3 handshake with the
 * set's pre-shared key. Any other answer ends the attach: a member that will not do TLS is never used
 * in plain.
 */
import type net from 'node:net';
import type tls from 'node:tls';
import * as P from '../nbd/protocol.js';
import { connectPsk, type PskKey } from '../nbd/tls.js';

const MAX_REPLY_BYTES = 64 * 1024;

/**
 * `read(n)` yields the next n bytes the server sent; `handOver()` is called between the ACK and the
 * handshake, for the caller to stop reading the plain socket (and to check nothing else arrived).
 */
export async function clientStartTls(
  raw: net.Socket, read: (n: number) => Promise<Buffer>, psk: PskKey, handOver: () => void, timeoutMs: number,
): Promise<tls.TLSSocket> {
  const opt = Buffer.alloc(16);
  opt.writeBigUInt64BE(P.IHAVEOPT, 0);
  opt.writeUInt32BE(P.OPT_STARTTLS, 8);
  opt.writeUInt32BE(0, 12);
  raw.write(opt);
  const h = await read(20);
  if (h.readBigUInt64BE(0) !== P.OPTION_REPLY_MAGIC || h.readUInt32BE(8) !== P.OPT_STARTTLS) throw new Error('bad reply to STARTTLS');
  const type = h.readUInt32BE(12);
  const len = h.readUInt32BE(16);
  if (len > MAX_REPLY_BYTES) throw new Error(`STARTTLS reply of ${len} bytes`);
  const body = await read(len);
  if (type !== P.REP_ACK) {
    const why = type >= 0x80000000 ? `error ${type - 0x80000000}: ${body.toString('utf8').slice(0, 200)}` : `reply type ${type}`;
    throw new Error(`server refused STARTTLS (${why}); an nbds:// member is never used without TLS`);
  }
  if (len !== 0) throw new Error('STARTTLS acknowledged with data');
  handOver();
  return connectPsk(raw, psk, timeoutMs);
}
