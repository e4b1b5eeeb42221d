/**
 * Encoders of transmission-phase replies: simple replies, and the structured ones a client that asked
 * for them gets (one OFFSET_DATA chunk per read, ERROR chunks with a message, one BLOCK_STATUS chunk per
 * block status request).
 */
import * as P from './protocol.js';

/** A simple reply header (a READ's data follows it). */
export function simpleReply(handle: bigint, errno: number): Buffer {
  const h = Buffer.allocUnsafe(16);
  h.writeUInt32BE(P.SIMPLE_REPLY_MAGIC, 0);
  h.writeUInt32BE(errno, 4);
  h.writeBigUInt64BE(handle, 8);
  return h;
}

/** The header of the one structured chunk that answers a READ of `length` bytes (the data follows it). */
export function readChunkHeader(handle: bigint, offset: bigint, length: number): Buffer {
  const h = Buffer.allocUnsafe(28);
  h.writeUInt32BE(P.STRUCTURED_REPLY_MAGIC, 0);
  h.writeUInt16BE(P.REPLY_FLAG_DONE, 4);
  h.writeUInt16BE(P.REPLY_TYPE_OFFSET_DATA, 6);
  h.writeBigUInt64BE(handle, 8);
  h.writeUInt32BE(8 + length, 16);
  h.writeBigUInt64BE(offset, 20);
  return h;
}

/** A final structured ERROR chunk; the message is cut to 200 characters. */
export function structuredError(handle: bigint, errno: number, message: string): Buffer {
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
  return h;
}

/** A final BLOCK_STATUS chunk: the context id, then each descriptor's length and state flags. */
export function blockStatusChunk(handle: bigint, contextId: number, descriptors: ReadonlyArray<readonly [number, number]>): Buffer {
  const h = Buffer.alloc(20 + 4 + 8 * descriptors.length);
  h.writeUInt32BE(P.STRUCTURED_REPLY_MAGIC, 0);
  h.writeUInt16BE(P.REPLY_FLAG_DONE, 4);
  h.writeUInt16BE(P.REPLY_TYPE_BLOCK_STATUS, 6);
  h.writeBigUInt64BE(handle, 8);
  h.writeUInt32BE(4 + 8 * descriptors.length, 16);
  h.writeUInt32BE(contextId, 20);
  let at = 24;
  for (const [n, flags] of descriptors) {
    h.writeUInt32BE(n, at);
    h.writeUInt32BE(flags, at + 4);
    at += 8;
  }
  return h;
}
