import { RingBackend } from '../adapters/backend-file/ring-backend.js';
import { NbdClientBackend } from '../adapters/backend-nbd/nbd-client.js';
import { isNbdUri } from '../adapters/backend-nbd/nbd-uri.js';
import type { BlockBackend } from '../ports/block-backend.js';

/** A member location is a file, a block device, or an NBD URI. */
export function openBackend(location: string): Promise<BlockBackend> {
  return isNbdUri(location) ? NbdClientBackend.open(location) : RingBackend.open(location);
}
