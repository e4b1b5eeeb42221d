/**
 * The security half of `serve`'s arguments: who may call the control API, which member locations it may
 * name, and how each TCP listener is authenticated. The rule: a listener is local (loopback, unix
 * socket) or authenticated; anything else is refused before the engine touches a member.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { EngineError } from '../core/errors.js';
import { normalizePrefix } from '../runtime/location-policy.js';

export type HostPort = { host: string; port: number };

export interface SecurityArgs {
  /** File holding the bearer token of the control API. */
  controlTokenFile: string | null;
  /** --allow-location prefixes (normalized). */
  allowLocations: string[];
  /** identity:hexkey file for nbds:// members (its first line is used). */
  memberPskFile: string | null;
  /** identity:hexkey file: TLS-PSK on the export's TCP listener. */
  exportPskFile: string | null;
  /** x509 on the export's TCP listener; with `ca`, a client certificate signed by it is required. */
  tls: { cert: string; key: string; ca: string | null; required: boolean } | null;
  /** --tls-optional: the export's TLS (either mode) may be skipped; loopback listeners only. */
  tlsOptional: boolean;
}

/** Option definitions for node:util parseArgs. */
export const SECURITY_OPTIONS = {
  'control-token-file': { type: 'string' },
  'allow-location': { type: 'string', multiple: true },
  'member-psk-file': { type: 'string' },
  'export-psk-file': { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'tls-ca': { type: 'string' },
  'tls-optional': { type: 'boolean', default: false },
} as const;

type Values = {
  'control-token-file'?: string;
  'allow-location'?: string[];
  'member-psk-file'?: string;
  'export-psk-file'?: string;
  'tls-cert'?: string;
  'tls-key'?: string;
  'tls-ca'?: string;
  'tls-optional'?: boolean;
};

const invalid = (msg: string) => new EngineError('ENG_INVALID_ARGUMENT', msg);

/** 127.0.0.0/8, ::1 (and IPv4-mapped 127.x) or the name localhost. */
export function isLoopbackHost(host: string): boolean {
  if (host.toLowerCase() === 'localhost') return true;
  if (net.isIPv4(host)) return host.startsWith('127.');
  if (!net.isIPv6(host)) return false;
  // The URL parser writes an IPv6 address in one canonical form (0:0::1 → ::1, ::ffff:127.0.0.1 → ::ffff:7f00:1).
  const canon = new URL(`http://[${host}]/`).hostname;
  return canon === '[::1]' || /^\[::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}\]$/.test(canon);
}

/** --listen and --http on one port of one address would make the second bind fail: refuse it up front. */
export function checkListenerClash(listen: HostPort | null, http: HostPort | null): void {
  if (!listen || !http || listen.port === 0 || listen.port !== http.port) return;
  const distinct = net.isIP(listen.host) && net.isIP(http.host) && listen.host !== http.host
    && !['0.0.0.0', '::'].includes(listen.host) && !['0.0.0.0', '::'].includes(http.host);
  if (!distinct) throw invalid(`--listen ${listen.host}:${listen.port} and --http ${http.host}:${http.port} use the same port`);
}

export function parseSecurityArgs(v: Values, listen: HostPort | null, http: HostPort | null): SecurityArgs {
  checkListenerClash(listen, http);
  if (!!v['tls-cert'] !== !!v['tls-key']) throw invalid('--tls-cert and --tls-key go together');
  if (v['tls-ca'] && !v['tls-cert']) throw invalid('--tls-ca needs --tls-cert and --tls-key (the server\'s own certificate)');
  if (v['export-psk-file'] && v['tls-cert']) throw invalid('--export-psk-file and --tls-cert are two TLS modes for the export; give one');
  const exportTls = !!v['export-psk-file'] || !!v['tls-cert'];
  if (http && !isLoopbackHost(http.host) && !v['control-token-file']) {
    throw invalid(`--http ${http.host}:${http.port} is not a loopback address: the control API there needs --control-token-file`);
  }
  if (listen && !isLoopbackHost(listen.host)) {
    if (!v['export-psk-file'] && !(v['tls-cert'] && v['tls-ca'])) {
      throw invalid(`--listen ${listen.host}:${listen.port} is not a loopback address: the export there needs --export-psk-file, or --tls-cert/--tls-key with --tls-ca (client certificates)`);
    }
    if (v['tls-optional']) throw invalid('--tls-optional is allowed only on a loopback --listen');
  }
  if (v['tls-optional'] && !exportTls) throw invalid('--tls-optional needs a TLS mode (--tls-cert/--tls-key or --export-psk-file)');
  return {
    controlTokenFile: v['control-token-file'] ?? null,
    allowLocations: (v['allow-location'] ?? []).map(normalizePrefix),
    memberPskFile: v['member-psk-file'] ?? null,
    exportPskFile: v['export-psk-file'] ?? null,
    tls: v['tls-cert'] && v['tls-key'] ? { cert: v['tls-cert'], key: v['tls-key'], ca: v['tls-ca'] ?? null, required: !v['tls-optional'] } : null,
    tlsOptional: !!v['tls-optional'],
  };
}

export const MIN_TOKEN_CHARS = 32;

/** The control token: the file's text, trimmed; at least 32 printable characters. */
export function readControlToken(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw invalid(`--control-token-file ${path} cannot be read: ${(e as Error).message}`);
  }
  const token = text.trim();
  if (token.length < MIN_TOKEN_CHARS) throw invalid(`--control-token-file ${path}: the token has ${token.length} characters; at least ${MIN_TOKEN_CHARS} are required`);
  if (!/^[\x21-\x7e]+$/.test(token)) throw invalid(`--control-token-file ${path}: the token must be printable ASCII without spaces (it is sent in an HTTP header)`);
  return token;
}
