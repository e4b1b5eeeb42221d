/**
 * Request validation for the transmission phase. Pure: a request header and the export's facts in,
 * null (valid) or the NBD errno to answer out. Nothing reaches a member unless this returns null.
 */
import {
  CMD_BLOCK_STATUS, CMD_DISC, CMD_FLAG_FUA, CMD_FLAG_NO_HOLE, CMD_FLAG_REQ_ONE, CMD_FLUSH, CMD_READ, CMD_TRIM, CMD_WRITE,
  CMD_WRITE_ZEROES, NBD_EINVAL, NBD_ENOSPC,
} from './protocol.js';

export interface RequestHeader {
  flags: number;
  type: number;
  handle: bigint;
  offset: bigint;
  length: number;
}

export interface ExportFacts {
  size: number;
  /** Largest READ or WRITE payload accepted. */
  maxPayload: number;
  readOnly: boolean;
  /** The connection selected base:allocation, so BLOCK_STATUS may be asked. */
  blockStatus: boolean;
}

const allowedFlags: Record<number, number> = {
  [CMD_READ]: 0,
  [CMD_WRITE]: CMD_FLAG_FUA,
  [CMD_FLUSH]: 0,
  [CMD_TRIM]: CMD_FLAG_FUA,
  [CMD_WRITE_ZEROES]: CMD_FLAG_FUA | CMD_FLAG_NO_HOLE,
  [CMD_DISC]: 0,
  [CMD_BLOCK_STATUS]: CMD_FLAG_REQ_ONE,
};

/** Returns null when the request may run, else the errno to reply with. */
export function validateRequest(req: RequestHeader, facts: ExportFacts): number | null {
  const allowed = allowedFlags[req.type];
  if (allowed === undefined) return NBD_EINVAL; // CACHE and unknown commands are not offered
  if ((req.flags & ~allowed) !== 0) return NBD_EINVAL;
  if (req.type === CMD_DISC) return null;
  if (req.type === CMD_BLOCK_STATUS && !facts.blockStatus) return NBD_EINVAL; // no context was selected
  if (req.type === CMD_FLUSH) return req.offset === 0n && req.length === 0 ? null : NBD_EINVAL;
  const writes = req.type !== CMD_READ && req.type !== CMD_BLOCK_STATUS;
  if (writes && facts.readOnly) return 1; // EPERM
  if (req.length === 0) return NBD_EINVAL;
  if ((req.type === CMD_READ || req.type === CMD_WRITE) && req.length > facts.maxPayload) return NBD_EINVAL;
  const end = req.offset + BigInt(req.length);
  if (end > BigInt(facts.size)) {
    return req.type === CMD_WRITE || req.type === CMD_WRITE_ZEROES ? NBD_ENOSPC : NBD_EINVAL;
  }
  return null;
}
