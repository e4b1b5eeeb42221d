/**
 * `shadow-engine serve-device`: serve one raw device over NBD, byte for byte (metadata header included),
 * for an engine on another node to use as a member — the manual's MSCP server.
 */
import { parseArgs } from 'node:util';
import type { Logger } from 'pino';
import { NbdServer } from '../adapters/nbd/server.js';
import { EngineError } from '../core/errors.js';
import { openBackend } from '../runtime/open-backend.js';
import { parseHostPort } from './args.js';

export const SERVE_DEVICE_USAGE = 'usage: shadow-engine serve-device --device <file|block-device> --listen <host:port> [--export-name member]';

export async function serveDevice(argv: string[], log: Logger): Promise<() => Promise<void>> {
  const { values } = parseArgs({
    args: argv,
    options: { device: { type: 'string' }, listen: { type: 'string' }, 'export-name': { type: 'string', default: 'member' }, 'log-level': { type: 'string' } },
    strict: true,
  });
  if (!values.device || !values.listen) throw new EngineError('ENG_INVALID_ARGUMENT', '--device and --listen are required');
  const listen = parseHostPort(values.listen, '--listen');
  const dev = await openBackend(values.device);
  const server = new NbdServer({
    exportName: values['export-name']!,
    description: `member device ${values.device}`,
    log,
    multiConn: true,
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
  const a = await server.listenTcp(listen.host, listen.port);
  log.info({ event: 'DeviceServing', device: values.device, listen: `${a.address}:${a.port}`, size: dev.size }, 'serving device over NBD');
  return async () => {
    await server.close();
    await dev.flush().catch(() => undefined);
    await dev.close();
  };
}
