/**
 * Keys, certificates and a member server for the TLS tests: PSK files in the nbdkit/psktool format,
 * a throw-away CA with server and client certificates (and a second, untrusted CA) made with the openssl
 * CLI, client directories laid out as libnbd and qemu read them, and `shadow-engine serve-device`.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import tls from 'node:tls';
import { join } from 'node:path';
import { ENGINE_BIN } from './engine-process.js';
import { run, terminate, until, type Scope } from './support.js';

/** A PSK file with one line; the key is random unless given (hex). */
export async function pskFile(dir: string, name: string, identity: string, keyHex = randomBytes(32).toString('hex')): Promise<{ file: string; keyHex: string }> {
  // qemu's tls-creds-psk reads <dir>/keys.psk: each file gets a directory of its own.
  const d = join(dir, `psk-${name}`);
  await mkdir(d, { recursive: true });
  const file = join(d, 'keys.psk');
  await writeFile(file, `${identity}:${keyHex}\n`, { mode: 0o600 });
  return { file, keyHex };
}

async function openssl(args: string[]): Promise<void> {
  await run('openssl', args);
}

async function issue(dir: string, name: string, ca: { cert: string; key: string }, ext: string): Promise<{ cert: string; key: string }> {
  const key = join(dir, `${name}-key.pem`);
  const cert = join(dir, `${name}-cert.pem`);
  const csr = join(dir, `${name}.csr`);
  const extFile = join(dir, `${name}.ext`);
  await writeFile(extFile, `${ext}\n`);
  await openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${name}`]);
  await openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', '1', '-out', cert, '-extfile', extFile]);
  return { cert, key };
}

async function newCa(dir: string, name: string): Promise<{ cert: string; key: string }> {
  const ca = { cert: join(dir, `${name}-cert.pem`), key: join(dir, `${name}-key.pem`) };
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-keyout', ca.key, '-out', ca.cert, '-subj', `/CN=${name}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
  return ca;
}

export interface Pki {
  ca: string;
  server: { cert: string; key: string };
  /** Client directories (ca-cert.pem, client-cert.pem, client-key.pem) for libnbd's tls-certificates and qemu's tls-creds-x509. */
  trusted: string;
  /** A client certificate from another CA. */
  rogue: string;
  /** Only the CA: no client certificate at all. */
  none: string;
}

export async function makePki(dir: string): Promise<Pki> {
  const d = join(dir, 'pki');
  await mkdir(d, { recursive: true });
  const ca = await newCa(d, 'ca');
  const other = await newCa(d, 'other-ca');
  const server = await issue(d, 'server', ca, 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth');
  const clientExt = 'extendedKeyUsage=clientAuth';
  const clientDir = async (name: string, cert: { cert: string; key: string } | null) => {
    const c = join(dir, name);
    await mkdir(c, { recursive: true });
    await copyFile(ca.cert, join(c, 'ca-cert.pem'));
    if (cert) {
      await copyFile(cert.cert, join(c, 'client-cert.pem'));
      await copyFile(cert.key, join(c, 'client-key.pem'));
    }
    return c;
  };
  return {
    ca: ca.cert,
    server,
    trusted: await clientDir('client-trusted', await issue(d, 'client', ca, clientExt)),
    rogue: await clientDir('client-rogue', await issue(d, 'rogue', other, clientExt)),
    none: await clientDir('client-none', null),
  };
}

/** `shadow-engine serve-device` on loopback (port picked by the kernel), stopped by the scope. */
export async function serveDevice(scope: Scope, device: string, extraArgs: string[]): Promise<{ port: number; output: () => string }> {
  const proc = spawn(process.execPath, [ENGINE_BIN, 'serve-device', '--device', device, '--listen', '127.0.0.1:0', ...extraArgs], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  proc.stderr.setEncoding('utf8').on('data', (s: string) => (out += s));
  scope.defer('stop serve-device', () => terminate(proc, 3000));
  const port = await until('serve-device to listen', () => {
    if (proc.exitCode !== null) throw new Error(`serve-device exited (${proc.exitCode}): ${out}`);
    const m = /"event":"DeviceServing".*?"listen":"127\.0\.0\.1:(\d+)"/.exec(out);
    return m ? Number(m[1]) : undefined;
  });
  return { port, output: () => out };
}

/** A TCP port free right now on loopback (for servers that cannot report the one they were given). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/**
 * A client that says whatever it is given: NBD greeting, OPT_STARTTLS, a TLS handshake with `options`
 * (e.g. a client certificate from an untrusted CA, which libnbd would not even send), then OPT_LIST.
 * Resolves with how many bytes came back after the handshake: 0 means the server said nothing.
 */
export function starttlsProbe(port: number, options: tls.ConnectionOptions): Promise<{ bytesAfterHandshake: number }> {
  return new Promise((resolve, reject) => {
    const raw = connect(port, '127.0.0.1');
    const timer = setTimeout(() => {
      raw.destroy();
      reject(new Error('the probe got no answer within 10 s'));
    }, 10_000);
    let got = Buffer.alloc(0);
    const onData = (b: Buffer) => {
      got = Buffer.concat([got, b]);
      if (got.length < 18 + 20) return;
      raw.off('data', onData);
      const done = (bytesAfterHandshake: number) => {
        clearTimeout(timer);
        s.destroy();
        resolve({ bytesAfterHandshake });
      };
      const s = tls.connect({ socket: raw, checkServerIdentity: () => undefined, ...options });
      s.on('secureConnect', () => s.write(option(3)));
      s.on('data', (d: Buffer) => done(d.length));
      s.on('error', () => undefined);
      s.on('close', () => done(0));
    };
    raw.on('data', onData);
    raw.on('error', reject);
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(3); // fixed newstyle, no zeroes
    raw.write(Buffer.concat([flags, option(5)]));
  });
}

function option(opt: number): Buffer {
  const h = Buffer.alloc(16);
  h.write('IHAVEOPT', 0, 'latin1');
  h.writeUInt32BE(opt, 8);
  return h;
}
