/**
 * `shadow-engine serve-device`: serve one raw device over NBD, byte for byte (metadata header included),
 * for an engine on another node to use as a member — the manual's MSCP server. Read/write access to a
 * raw device is served only to a client that proves the set's key (TLS-PSK), or on loopback.
 */
import { parseArgs } from 'node:util';
import type { Logger } from 'pino';
import { NbdServer } from '../adapters/nbd/server.js';
import { pskServerTls, readPskFile } from '../adapters/nbd/tls.js';
import { EngineError } from '../core/errors.js';
import { openBackend } from './open-backend.js';
import { parseHostPort } from './args.js';
import { isLoopbackHost } from './security-args.js';

export const SERVE_DEVICE_USAGE = `usage: shadow-engine serve-device --device <file|block-device> --listen <host:port> [--export-name member] [--psk-file <path>]
  --psk-file: identity:hexkey lines; TLS 1.3 with one of these keys is then required. Without it, --listen must be loopback.`;

export async function serveDevice(argv: string[], log: Logger): Promise<() => Promise<void>> {
  const { values } = parseArgs({
    args: argv,
    options: {
      device: { type: 'string' }, listen: { type: 'string' }, 'export-name': { type: 'string', default: 'member' }, 'log-level': { type: 'string' },
      'psk-file': { type: 'string' },
    },
    strict: true,
  });
  if (!values.device || !values.listen) throw new EngineError('ENG_INVALID_ARGUMENT', '--device and --listen are required');
  const listen = parseHostPort(values.listen, '--listen');
  if (!values['psk-file'] && !isLoopbackHost(listen.host)) {
    throw new EngineError('ENG_INVALID_ARGUMENT', `--listen ${listen.host}:${listen.port} is not a loopback address: serving a device there needs --psk-file`);
  }
  // The key is read before the device is opened: a bad file must change nothing.
  const tls = values['psk-file'] ? pskServerTls(readPskFile(values['psk-file'], '--psk-file'), true) : undefined;
  const dev = await openBackend(values.device);
  const server = new NbdServer({
    exportName: values['export-name']!,
    description: `member device ${values.device}`,
    log,
    multiConn: true,
    ...(tls ? { tls } : {}),
    handler: {
      size: () => dev.size,
      read: async (off, len) => {
        const b = Buffer.allocUnsafe(len);
        await dev.read(b, off);
        return b;
      },
      write: (off, data, fua) => dev.write(data, off, fua),
      flush: () => dev.flush(),
      trim: async () => undefined,
      writeZeroes: (off, len, fua) => dev.writeZeroes(off, len, fua),
    },
  });
  let a;
  try {
    a = await server.listenTcp(listen.host, listen.port);
  } catch (e) {
    await dev.close();
    throw e;
  }
  log.info({ event: 'DeviceServing', device: values.device, listen: `${a.address}:${a.port}`, size: dev.size, tls: tls?.mode ?? null }, 'serving device over NBD');
  return async () => {
    await server.close();
    await dev.flush().catch(() => undefined);
    await dev.close();
  };
}
