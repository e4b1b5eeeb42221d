import { EngineError } from './errors.js';

export type NbdTarget =
  | { kind: 'tcp'; host: string; port: number; exportName: string; tls: boolean }
  | { kind: 'unix'; socket: string; exportName: string };

/**
 * Parse nbd://host[:port][/export], nbds://… (the same over TLS) and nbd+unix:///[export]?socket=PATH
 * (the NBD URI convention).
 */
export function parseNbdUri(uri: string): NbdTarget {
  let u: URL;
  try {
    u = new URL(uri);
  } catch {
    throw new EngineError('ENG_INVALID_ARGUMENT', `not a valid NBD URI: ${uri}`);
  }
  const exportName = decodeURIComponent(u.pathname.replace(/^\//, ''));
  if (u.protocol === 'nbd:' || u.protocol === 'nbds:') {
    if (!u.hostname) throw new EngineError('ENG_INVALID_ARGUMENT', `NBD URI ${uri} has no host`);
    const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
    return { kind: 'tcp', host, port: u.port ? Number(u.port) : 10809, exportName, tls: u.protocol === 'nbds:' };
  }
  if (u.protocol === 'nbd+unix:') {
    const socket = u.searchParams.get('socket');
    if (!socket) throw new EngineError('ENG_INVALID_ARGUMENT', `NBD URI ${uri} needs ?socket=PATH`);
    return { kind: 'unix', socket, exportName };
  }
  throw new EngineError('ENG_INVALID_ARGUMENT', `unsupported NBD URI scheme ${u.protocol} in ${uri} (nbd://, nbds:// or nbd+unix://)`);
}

export function isNbdUri(s: string): boolean {
  return /^nbds?:\/\//.test(s) || s.startsWith('nbd+unix://');
}
