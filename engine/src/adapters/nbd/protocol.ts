/** NBD protocol numbers (fixed newstyle negotiation, transmission phase). */
export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// Handshake flags (server) and client flags.
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;
export const CLIENT_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const CLIENT_FLAG_NO_ZEROES = 1 << 1;

// Options.
export const OPT_EXPORT_NAME = 1;
export const OPT_ABORT = 2;
export const OPT_LIST = 3;
export const OPT_STARTTLS = 5;
export const OPT_INFO = 6;
export const OPT_GO = 7;
export const OPT_STRUCTURED_REPLY = 8;
export const OPT_LIST_META_CONTEXT = 9;
export const OPT_SET_META_CONTEXT = 10;

// Option replies.
export const REP_ACK = 1;
export const REP_SERVER = 2;
export const REP_INFO = 3;
export const REP_META_CONTEXT = 4;
const REP_ERR = 0x80000000;
export const REP_ERR_UNSUP = REP_ERR + 1;
export const REP_ERR_POLICY = REP_ERR + 2;
export const REP_ERR_INVALID = REP_ERR + 3;
export const REP_ERR_PLATFORM = REP_ERR + 4;
export const REP_ERR_TLS_REQD = REP_ERR + 5;
export const REP_ERR_UNKNOWN = REP_ERR + 6;
export const REP_ERR_SHUTDOWN = REP_ERR + 7;
export const REP_ERR_TOO_BIG = REP_ERR + 9;

// Info types.
export const INFO_EXPORT = 0;
export const INFO_NAME = 1;
export const INFO_DESCRIPTION = 2;
export const INFO_BLOCK_SIZE = 3;

// Transmission flags.
export const TF_HAS_FLAGS = 1 << 0;
export const TF_READ_ONLY = 1 << 1;
export const TF_SEND_FLUSH = 1 << 2;
export const TF_SEND_FUA = 1 << 3;
export const TF_ROTATIONAL = 1 << 4;
export const TF_SEND_TRIM = 1 << 5;
export const TF_SEND_WRITE_ZEROES = 1 << 6;
export const TF_SEND_DF = 1 << 7;
export const TF_CAN_MULTI_CONN = 1 << 8;

// Commands.
export const CMD_READ = 0;
export const CMD_WRITE = 1;
export const CMD_DISC = 2;
export const CMD_FLUSH = 3;
export const CMD_TRIM = 4;
export const CMD_CACHE = 5;
export const CMD_WRITE_ZEROES = 6;
export const CMD_BLOCK_STATUS = 7;

// Command flags.
export const CMD_FLAG_FUA = 1 << 0;
export const CMD_FLAG_NO_HOLE = 1 << 1;
export const CMD_FLAG_DF = 1 << 2;
export const CMD_FLAG_REQ_ONE = 1 << 3;
export const CMD_FLAG_FAST_ZERO = 1 << 4;

// Structured reply chunk types and flags.
export const REPLY_FLAG_DONE = 1 << 0;
export const REPLY_TYPE_NONE = 0;
export const REPLY_TYPE_OFFSET_DATA = 1;
export const REPLY_TYPE_OFFSET_HOLE = 2;
export const REPLY_TYPE_BLOCK_STATUS = 5;
export const REPLY_TYPE_ERROR = (1 << 15) + 1;
export const REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2;

// The base:allocation metadata context (NBD_CMD_BLOCK_STATUS): its name and its state bits.
export const META_BASE_ALLOCATION = 'base:allocation';
/** Not allocated on the device (says nothing about what it reads as). */
export const STATE_HOLE = 1 << 0;
/** Reads as zeros. */
export const STATE_ZERO = 1 << 1;

// Errors (as sent on the wire; Linux values as the protocol requires).
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

export const commandNames: Record<number, string> = {
  [CMD_READ]: 'READ', [CMD_WRITE]: 'WRITE', [CMD_DISC]: 'DISC', [CMD_FLUSH]: 'FLUSH', [CMD_TRIM]: 'TRIM',
  [CMD_CACHE]: 'CACHE', [CMD_WRITE_ZEROES]: 'WRITE_ZEROES', [CMD_BLOCK_STATUS]: 'BLOCK_STATUS',
};
