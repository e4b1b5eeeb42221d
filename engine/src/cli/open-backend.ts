import { RingBackend } from '../adapters/backend-file/ring-backend.js';
import { NbdClientBackend } from '../adapters/backend-nbd/nbd-client.js';
import { isNbdUri } from '../core/nbd-uri.js';
import type { PskKey } from '../adapters/nbd/tls.js';
import type { BlockBackend } from '../ports/block-backend.js';

/** A member location is a file, a block device, or an NBD URI (nbds://: TLS with the key in `o.psk`). */
export function openBackend(location: string, o: { psk?: PskKey } = {}): Promise<BlockBackend> {
  return isNbdUri(location) ? NbdClientBackend.open(location, undefined, o) : RingBackend.open(location);
}
