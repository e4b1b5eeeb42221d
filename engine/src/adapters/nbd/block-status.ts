/**
 * NBD_CMD_BLOCK_STATUS for the base:allocation context, both sides, pure: what the server answers for a
 * range given where its device may hold data, and what the client makes of an answer. A range the
 * answer calls zero (STATE_ZERO) reads as zeros; everything else may hold data. Only STATE_ZERO counts:
 * a hole without it may read as something else (a backing file, say).
 */
import * as P from './protocol.js';

/** The context id this server gives base:allocation (any non-zero number would do). */
export const BASE_ALLOCATION_ID = 1;
/** Descriptors in one answer at most (8 bytes each): the client asks again from where the answer ends. */
export const MAX_DESCRIPTORS = 8192;

/** One descriptor: `length` bytes with the state `flags`. */
export type Descriptor = readonly [length: number, flags: number];

/**
 * The server's answer for [offset, offset + length): `extents` are the sorted, disjoint [start, end)
 * ranges that may hold data (null: unknown, so all of it may). At most `max` descriptors, covering a
 * prefix of the range when there are more.
 */
export function describeRange(extents: ReadonlyArray<readonly [number, number]> | null, offset: number, length: number, max = MAX_DESCRIPTORS): Descriptor[] {
  const end = offset + length;
  if (extents === null) return [[length, 0]];
  const out: Descriptor[] = [];
  let at = offset;
  const push = (to: number, flags: number) => {
    if (to <= at) return;
    const last = out[out.length - 1];
    if (last && last[1] === flags) out[out.length - 1] = [last[0] + (to - at), flags];
    else out.push([to - at, flags]);
    at = to;
  };
  for (const [s, e] of extents) {
    if (e <= at) continue;
    if (s >= end) break;
    push(Math.min(s, end), P.STATE_HOLE | P.STATE_ZERO);
    push(Math.min(e, end), 0);
    if (out.length > max) break;
    if (at >= end) break;
  }
  push(end, P.STATE_HOLE | P.STATE_ZERO);
  // Cut to `max` whole descriptors: the answer then covers less than was asked, which the protocol allows.
  return out.length > max ? out.slice(0, max) : out;
}

/**
 * The client's reading of one BLOCK_STATUS chunk's payload for a request of [offset, offset + length):
 * the descriptors clipped to the request. Throws on anything the protocol does not allow (another
 * context, no descriptors, a descriptor of no length, a payload that does not divide into descriptors,
 * a descriptor after one that already passed the request's end).
 */
export function readDescriptors(payload: Buffer, contextId: number, length: number): Descriptor[] {
  if (payload.length < 12 || (payload.length - 4) % 8 !== 0) throw new Error(`block status payload of ${payload.length} bytes`);
  const id = payload.readUInt32BE(0);
  if (id !== contextId) throw new Error(`block status for context ${id}, not the ${contextId} negotiated`);
  const out: Descriptor[] = [];
  let covered = 0;
  for (let i = 4; i < payload.length; i += 8) {
    if (covered >= length) throw new Error('block status descriptors past the end of the request');
    const n = payload.readUInt32BE(i);
    if (n === 0) throw new Error('block status descriptor of length 0');
    const take = Math.min(n, length - covered);
    out.push([take, payload.readUInt32BE(i + 4)]);
    covered += take;
  }
  return out;
}

/**
 * Adds the ranges that may hold data among `descriptors` (starting at `offset`) to `into`, merging with
 * its last range where they touch. Returns the offset where the descriptors end.
 */
export function addDataRanges(into: Array<[number, number]>, offset: number, descriptors: readonly Descriptor[]): number {
  let at = offset;
  for (const [n, flags] of descriptors) {
    if ((flags & P.STATE_ZERO) === 0) {
      const last = into[into.length - 1];
      if (last && last[1] === at) last[1] = at + n;
      else into.push([at, at + n]);
    }
    at += n;
  }
  return at;
}
