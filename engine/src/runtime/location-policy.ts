/**
 * Which member locations the engine may open on request (control API, reconstruct from recorded paths):
 * the members it was started with, and locations under the prefixes it was given. Anything else is
 * refused before it is opened — the control API must not become a way to overwrite any disk of the host.
 */
import { posix } from 'node:path';
import { parseNbdUri } from '../core/nbd-uri.js';
import { EngineError } from '../core/errors.js';

const PRINTABLE = /^[\x21-\x7e]+$/;

function notAllowed(location: string, why: string): EngineError {
  return new EngineError('ENG_LOCATION_NOT_ALLOWED', `member location '${location.slice(0, 300)}' is not allowed: ${why}`);
}

function isUriLike(s: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(s);
}

/**
 * The form of a location that is compared and opened: a file path with `.`, `..` and repeated slashes
 * resolved (so `/dev/shadow/../sda` is `/dev/sda`); an NBD URI without user info, query or fragment
 * (nbd+unix: its socket path resolved the same way). Relative paths and other schemes are refused.
 */
export function normalizeLocation(location: string): string {
  if (location.startsWith('/')) return posix.normalize(location);
  if (!isUriLike(location)) throw notAllowed(location, 'a file location must be an absolute path');
  if (!PRINTABLE.test(location)) throw notAllowed(location, 'an NBD URI must be printable ASCII without spaces');
  let u: URL;
  try {
    u = new URL(location);
  } catch {
    throw notAllowed(location, 'not a valid URI');
  }
  if (u.username || u.password || u.hash) throw notAllowed(location, 'an NBD URI may not carry user info or a fragment');
  if (u.protocol === 'nbd:' || u.protocol === 'nbds:') {
    if (u.search) throw notAllowed(location, 'an nbd:// or nbds:// URI takes no query parameters');
    parseNbdUri(location); // host present, port valid
    return location;
  }
  if (u.protocol === 'nbd+unix:') {
    const sockets = u.searchParams.getAll('socket');
    if (sockets.length !== 1 || [...u.searchParams.keys()].length !== 1) throw notAllowed(location, 'nbd+unix:// takes exactly one parameter, socket');
    const socket = sockets[0]!;
    if (!socket.startsWith('/')) throw notAllowed(location, 'the socket must be an absolute path');
    const t = parseNbdUri(location);
    const path = posix.normalize(socket).split('/').map(encodeURIComponent).join('/');
    return `nbd+unix:///${encodeURIComponent(t.exportName)}?socket=${path}`;
  }
  throw notAllowed(location, `scheme ${u.protocol} is not a member location (nbd://, nbds://, nbd+unix:// or a path)`);
}

/** A prefix as given with --allow-location, in the form locations are compared in. */
export function normalizePrefix(prefix: string): string {
  if (prefix.startsWith('/')) {
    // normalize() keeps a trailing slash, which matters: /dev/shadow/ must not admit /dev/shadowX.
    return posix.normalize(prefix);
  }
  if (isUriLike(prefix) && PRINTABLE.test(prefix)) return prefix;
  throw new EngineError('ENG_INVALID_ARGUMENT', `--allow-location '${prefix}' must be an absolute path or an NBD URI prefix (e.g. /dev/shadow/ or nbds://)`);
}

export class LocationPolicy {
  private readonly exact = new Set<string>();
  private readonly prefixes: string[];

  /**
   * `members`: the locations given at start; `prefixes`: --allow-location. Both also admit a location
   * equal to them as given (an exact URI the operator named may carry what normal form refuses).
   */
  constructor(members: string[], prefixes: string[]) {
    for (const m of [...members, ...prefixes]) {
      this.exact.add(m);
      try {
        this.exact.add(normalizeLocation(m));
      } catch {
        // a relative path given at start is allowed as given, and only so
      }
    }
    this.prefixes = prefixes.map(normalizePrefix);
  }

  /** The location to open in place of `location`; throws ENG_LOCATION_NOT_ALLOWED if it may not be used. */
  check(location: string): string {
    if (this.exact.has(location)) return location;
    const n = normalizeLocation(location);
    if (this.exact.has(n) || this.prefixes.some((p) => n.startsWith(p))) return n;
    const where = n === location ? '' : ` (${n})`;
    throw notAllowed(location, `not a member given at start and not under an allowed prefix${where}`);
  }
}
