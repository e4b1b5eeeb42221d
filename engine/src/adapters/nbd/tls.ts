/**
 * TLS for NBD (OPT_STARTTLS): the server's modes — x509, x509 requiring a client certificate from a CA,
 * or a pre-shared key (TLS 1.3 PSK, the per-set key of member servers) — and the key file they read.
 * The NBD framing stays in server.ts and the client; this file only turns a plain socket into an
 * authenticated TLS socket, or refuses it.
 */
import { readFileSync } from 'node:fs';
import type net from 'node:net';
import tls from 'node:tls';
import { EngineError } from '../../core/errors.js';

/** One identity and its key, as in nbdkit's --tls-psk file and GnuTLS psktool: `identity:hexkey`. */
export interface PskKey {
  identity: string;
  key: Buffer;
}

export interface NbdServerTls {
  /** Nothing but OPT_STARTTLS (and OPT_ABORT) is negotiated before the handshake. */
  required: boolean;
  /** What the handshake is made with (tls.createServer options). */
  options: tls.TlsOptions;
  /** Name of the mode, for logs and status: psk, x509, x509-client-cert. */
  mode: string;
}

export const MIN_PSK_BYTES = 16;
const MAX_PSK_BYTES = 256;
const HANDSHAKE_MS = 10_000;

/** Parse a PSK file's text. `what` names the file in errors; a key never appears in one. */
export function parsePskFile(text: string, what: string): PskKey[] {
  const keys: PskKey[] = [];
  const seen = new Set<string>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '') return;
    const at = `${what} line ${i + 1}`;
    const colon = line.indexOf(':');
    if (colon <= 0) throw new EngineError('ENG_INVALID_ARGUMENT', `${at}: expected identity:hexkey`);
    const identity = line.slice(0, colon);
    const hex = line.slice(colon + 1);
    if (!/^[\x21-\x7e]+$/.test(identity)) throw new EngineError('ENG_INVALID_ARGUMENT', `${at}: the identity must be printable ASCII without spaces`);
    if (!/^(?:[0-9a-fA-F]{2})+$/.test(hex)) throw new EngineError('ENG_INVALID_ARGUMENT', `${at}: the key must be an even number of hex digits`);
    const key = Buffer.from(hex, 'hex');
    if (key.length < MIN_PSK_BYTES || key.length > MAX_PSK_BYTES) {
      throw new EngineError('ENG_INVALID_ARGUMENT', `${at}: the key has ${key.length} bytes; it must have ${MIN_PSK_BYTES} to ${MAX_PSK_BYTES}`);
    }
    if (seen.has(identity)) throw new EngineError('ENG_INVALID_ARGUMENT', `${at}: identity ${identity} appears twice`);
    seen.add(identity);
    keys.push({ identity, key });
  });
  if (keys.length === 0) throw new EngineError('ENG_INVALID_ARGUMENT', `${what} holds no identity:hexkey line`);
  return keys;
}

export function readPskFile(path: string, flag: string): PskKey[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new EngineError('ENG_INVALID_ARGUMENT', `${flag} ${path} cannot be read: ${(e as Error).message}`);
  }
  return parsePskFile(text, `${flag} ${path}`);
}

/** TLS 1.3 with a pre-shared key: a client is accepted only if it proves one of `keys`. */
export function pskServerTls(keys: PskKey[], required: boolean): NbdServerTls {
  const byIdentity = new Map(keys.map((k) => [k.identity, k.key]));
  return {
    required,
    mode: 'psk',
    options: {
      minVersion: 'TLSv1.3',
      // An unknown identity gets no key: the handshake fails and the client learns nothing.
      pskCallback: (_socket, identity) => byIdentity.get(identity) ?? null,
    },
  };
}

/**
 * x509: the server's certificate and key; with `ca`, a client must present a certificate signed by it
 * (checked by node's tls.Server, which drops the connection otherwise).
 */
export function x509ServerTls(pem: { cert: string; key: string; ca?: string }, required: boolean): NbdServerTls {
  let options: tls.TlsOptions;
  try {
    const files = { cert: readFileSync(pem.cert), key: readFileSync(pem.key), ...(pem.ca ? { ca: readFileSync(pem.ca) } : {}) };
    options = { ...files, ...(pem.ca ? { requestCert: true, rejectUnauthorized: true } : {}) };
    tls.createSecureContext(options); // a bad PEM is found now, not at the first client
  } catch (e) {
    throw new EngineError('ENG_INVALID_ARGUMENT', `TLS certificate or key unusable: ${(e as Error).message}`);
  }
  return { required, mode: pem.ca ? 'x509-client-cert' : 'x509', options };
}

/**
 * The server side of the handshake on a socket that has just acknowledged OPT_STARTTLS. Resolves with
 * the TLS socket once the client is authenticated as the mode requires; rejects (and the socket is
 * gone) otherwise. The handshake runs in a tls.Server of its own, because only tls.Server enforces
 * `rejectUnauthorized` for client certificates — a bare TLSSocket would let an unverified one through.
 */
export function acceptTls(raw: net.Socket, t: NbdServerTls): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (f: () => void) => {
      if (settled) return;
      settled = true;
      f();
    };
    const srv = tls.createServer({ ...t.options, handshakeTimeout: HANDSHAKE_MS });
    srv.once('secureConnection', (s: tls.TLSSocket) => settle(() => resolve(s)));
    srv.once('tlsClientError', (e: Error) => settle(() => {
      raw.destroy();
      reject(e);
    }));
    raw.once('close', () => settle(() => reject(new Error('connection closed during the TLS handshake'))));
    srv.emit('connection', raw);
  });
}

/**
 * The client side: a TLS 1.3 handshake that proves `psk` and requires the server to prove it too.
 * A server that answers with a certificate instead is refused; there is no plain fallback.
 */
export function connectPsk(raw: net.Socket, psk: PskKey, timeoutMs = HANDSHAKE_MS): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({
      socket: raw,
      minVersion: 'TLSv1.3',
      pskCallback: () => ({ psk: psk.key, identity: psk.identity }),
      // Called only when the server sent a certificate: the member must be authenticated by the set's key.
      checkServerIdentity: () => new Error('the server presented a certificate instead of proving the pre-shared key'),
    });
    const timer = setTimeout(() => fail(new Error('TLS handshake timed out')), timeoutMs);
    const fail = (e: Error) => {
      clearTimeout(timer);
      s.destroy();
      reject(e);
    };
    const closed = () => fail(new Error('connection closed during the TLS handshake (wrong key or identity?)'));
    const failed = (e: Error) => fail(new Error(`TLS handshake failed (wrong key or identity?): ${e.message.trim()}`));
    s.once('error', failed);
    s.once('close', closed);
    s.once('secureConnect', () => {
      clearTimeout(timer);
      s.removeListener('close', closed);
      s.removeListener('error', failed);
      if (Object.keys(s.getPeerCertificate()).length > 0) return fail(new Error('the server authenticated with a certificate, not the pre-shared key'));
      resolve(s);
    });
  });
}
