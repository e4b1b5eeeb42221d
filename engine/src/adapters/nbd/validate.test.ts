import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as P from './protocol.js';
import { validateRequest } from './validate.js';

const facts = { size: 1 << 20, maxPayload: 65536, readOnly: false, blockStatus: false };
const req = (type: number, offset: number, length: number, flags = 0) => ({ type, flags, handle: 1n, offset: BigInt(offset), length });

test('in-range reads and writes are accepted', () => {
  assert.equal(validateRequest(req(P.CMD_READ, 0, 4096), facts), null);
  assert.equal(validateRequest(req(P.CMD_WRITE, (1 << 20) - 4096, 4096, P.CMD_FLAG_FUA), facts), null);
  assert.equal(validateRequest(req(P.CMD_FLUSH, 0, 0), facts), null);
  assert.equal(validateRequest(req(P.CMD_WRITE_ZEROES, 0, 1 << 20, P.CMD_FLAG_NO_HOLE), facts), null);
});

test('out-of-range requests get EINVAL (read, trim) or ENOSPC (write, zeroes)', () => {
  assert.equal(validateRequest(req(P.CMD_READ, 1 << 20, 1), facts), P.NBD_EINVAL);
  assert.equal(validateRequest(req(P.CMD_TRIM, (1 << 20) - 1, 2), facts), P.NBD_EINVAL);
  assert.equal(validateRequest(req(P.CMD_WRITE, (1 << 20) - 1, 2), facts), P.NBD_ENOSPC);
  assert.equal(validateRequest(req(P.CMD_WRITE_ZEROES, 1 << 20, 1), facts), P.NBD_ENOSPC);
  const huge = { type: P.CMD_READ, flags: 0, handle: 1n, offset: 0xffffffffffffff00n, length: 4096 };
  assert.equal(validateRequest(huge, facts), P.NBD_EINVAL);
});

test('unknown commands, unadvertised commands and unknown flags are refused', () => {
  assert.equal(validateRequest(req(99, 0, 1), facts), P.NBD_EINVAL);
  assert.equal(validateRequest(req(P.CMD_CACHE, 0, 1), facts), P.NBD_EINVAL);
  assert.equal(validateRequest(req(P.CMD_BLOCK_STATUS, 0, 1), facts), P.NBD_EINVAL, 'no context selected');
  assert.equal(validateRequest(req(P.CMD_READ, 0, 1, P.CMD_FLAG_DF), facts), P.NBD_EINVAL);
  assert.equal(validateRequest(req(P.CMD_WRITE, 0, 1, 1 << 9), facts), P.NBD_EINVAL);
  assert.equal(validateRequest(req(P.CMD_WRITE_ZEROES, 0, 1, P.CMD_FLAG_FAST_ZERO), facts), P.NBD_EINVAL);
});

test('payloads over the maximum, zero lengths and flushes with a range are refused', () => {
  assert.equal(validateRequest(req(P.CMD_WRITE, 0, 65537), facts), P.NBD_EINVAL);
  assert.equal(validateRequest(req(P.CMD_READ, 0, 65537), facts), P.NBD_EINVAL);
  assert.equal(validateRequest(req(P.CMD_READ, 0, 0), facts), P.NBD_EINVAL);
  assert.equal(validateRequest(req(P.CMD_FLUSH, 0, 4096), facts), P.NBD_EINVAL);
});

test('BLOCK_STATUS: only once base:allocation is selected, in range, not empty, with no flag but REQ_ONE; also on a read-only export', () => {
  const selected = { ...facts, blockStatus: true };
  assert.equal(validateRequest(req(P.CMD_BLOCK_STATUS, 0, 1 << 20), selected), null);
  assert.equal(validateRequest(req(P.CMD_BLOCK_STATUS, 4096, 4096, P.CMD_FLAG_REQ_ONE), selected), null);
  assert.equal(validateRequest(req(P.CMD_BLOCK_STATUS, 0, 4096), { ...selected, readOnly: true }), null);
  assert.equal(validateRequest(req(P.CMD_BLOCK_STATUS, 0, 0), selected), P.NBD_EINVAL);
  assert.equal(validateRequest(req(P.CMD_BLOCK_STATUS, (1 << 20) - 1, 2), selected), P.NBD_EINVAL);
  assert.equal(validateRequest(req(P.CMD_BLOCK_STATUS, 0, 4096, P.CMD_FLAG_FUA), selected), P.NBD_EINVAL);
  // Its length is not a payload: a range larger than the largest READ may be asked about.
  assert.equal(validateRequest(req(P.CMD_BLOCK_STATUS, 0, 1 << 20), { ...selected, maxPayload: 4096 }), null);
});
