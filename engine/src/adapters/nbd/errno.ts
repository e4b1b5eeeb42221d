import { isEngineError } from '../../core/errors.js';
import { NBD_EINVAL, NBD_EIO, NBD_ENOSPC, NBD_ENOTSUP, NBD_ESHUTDOWN } from './protocol.js';

/** Engine error codes to NBD errno: the one place this mapping is made. */
export function errnoFor(err: unknown): number {
  if (!isEngineError(err)) return NBD_EIO;
  switch (err.code) {
    case 'ENG_INVALID_ARGUMENT':
    case 'ENG_TOO_LARGE':
      return NBD_EINVAL;
    case 'ENG_OUT_OF_RANGE':
      return NBD_ENOSPC;
    case 'ENG_UNSUPPORTED':
      return NBD_ENOTSUP;
    case 'ENG_SHUTTING_DOWN':
      return NBD_ESHUTDOWN;
    default:
      return NBD_EIO;
  }
}
