/**
 * NBD_INFO_BLOCK_SIZE as the NBD protocol defines it, from the client's side: which servers the engine
 * can use as members, and the largest request to send them.
 */
/** The largest READ or WRITE sent when the server allows more (or says nothing): the protocol's advice. */
const DEFAULT_MAX_BLOCK = 32 * 1024 * 1024;

const isPowerOfTwo = (n: number): boolean => n > 0 && Number.isInteger(Math.log2(n));

/**
 * The largest request to send, from the server's NBD_INFO_BLOCK_SIZE (null: none sent). Throws on sizes
 * the NBD protocol forbids, and on a minimum above 1, which this client cannot honour.
 */
export function maxBlockFrom(info: Buffer | null): number {
  if (info === null) return DEFAULT_MAX_BLOCK;
  if (info.length !== 14) throw new Error(`NBD_INFO_BLOCK_SIZE of ${info.length} bytes (the protocol has 14)`);
  const min = info.readUInt32BE(2);
  const preferred = info.readUInt32BE(6);
  const max = info.readUInt32BE(10);
  const sizes = `block sizes minimum ${min}, preferred ${preferred}, maximum ${max}`;
  const bad = (rule: string) => new Error(`invalid ${sizes}: ${rule}`);
  if (!isPowerOfTwo(min) || min > 65536) throw bad('the minimum must be a power of two from 1 to 64 KiB');
  if (!isPowerOfTwo(preferred) || preferred < Math.max(512, min)) {
    throw bad('the preferred size must be a power of two, at least 512 and at least the minimum');
  }
  if (max !== 0xffffffff && (max % min !== 0 || max < preferred)) {
    throw bad('the maximum must be a multiple of the minimum and at least the preferred size, or 0xffffffff');
  }
  if (min > 1) {
    throw new Error(`${sizes}: the server needs requests aligned to ${min} bytes, but the engine sends requests at any byte offset and length its clients send (minimum 1 needed)`);
  }
  return Math.min(max, DEFAULT_MAX_BLOCK);
}
