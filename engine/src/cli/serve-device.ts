/**
 * `shadow-engine serve-device`: serve one raw device over NBD, byte for byte (metadata header included),
 * for an engine on another node to use as a member — the manual's MSCP server. Read/write access to a
 * raw device is served only to a client that proves the set's key (TLS-PSK), or on loopback.
 */
import type { Logger } from 'pino';
import { NbdServer } from '../adapters/nbd/server.js';
import { payloadPool } from '../core/payload-pool.js';
import { pskServerTls, readPskFile } from '../adapters/nbd/tls.js';
import { openBackend } from './open-backend.js';
import { parseServeDeviceArgs } from './args.js';

export const SERVE_DEVICE_USAGE = `usage: shadow-engine serve-device --device <file|block-device> --listen <host:port> [--export-name member] [--psk-file <path>]
  --psk-file: identity:hexkey lines; TLS 1.3 with one of these keys is then required. Without it, --listen must be loopback.`;

/** How often serve-device asks its device's size (a grown volume is served within this). */
const SIZE_POLL_MS = 2000;

export async function serveDevice(argv: string[], log: Logger): Promise<() => Promise<void>> {
  const a = parseServeDeviceArgs(argv);
  // The key is read before the device is opened: a bad file must change nothing.
  const tls = a.pskFile ? pskServerTls(readPskFile(a.pskFile, '--psk-file'), true) : undefined;
  const dev = await openBackend(a.device);
  const server = new NbdServer({
    exportName: a.exportName,
    description: `member device ${a.device}`,
    log,
    multiConn: true,
    // Large payloads are received into reusable buffers (core/payload-pool.ts); the write above holds them.
    payloadPool,
    ...(tls ? { tls } : {}),
    handler: {
      size: () => dev.size,
      read: async (off, len) => {
        const b = Buffer.allocUnsafe(len);
        await dev.read(b, off);
        return b;
      },
      // The payload may be a pooled buffer: it is reused only after the device returned, never after a failure.
      write: (off, data, fua) => payloadPool.writing(data, () => dev.write(data, off, fua)),
      flush: () => dev.flush(),
      trim: async () => undefined,
      writeZeroes: (off, len, fua) => dev.writeZeroes(off, len, fua),
      // base:allocation: where the device holds data (SEEK_DATA on a file), so that an engine's full copy
      // from this member leaves its holes unread; a block device answers "data" everywhere.
      ...(dev.dataExtents ? { dataExtents: () => dev.dataExtents!() } : {}),
    },
  });
  // The device may grow (a volume expansion): its size is asked again every few seconds, so a client
  // that connects later is told the new size, and requests up to it are served on every connection.
  const follow = setInterval(() => {
    dev.refreshSize?.().catch((e: unknown) => log.warn({ event: 'DeviceSizeUnknown', device: a.device, err: String(e) }, 'could not read the device size'));
  }, SIZE_POLL_MS);
  follow.unref();
  let bound;
  try {
    bound = await server.listenTcp(a.listen.host, a.listen.port);
  } catch (e) {
    clearInterval(follow);
    await dev.close();
    throw e;
  }
  log.info({ event: 'DeviceServing', device: a.device, listen: `${bound.address}:${bound.port}`, size: dev.size, tls: tls?.mode ?? null }, 'serving device over NBD');
  // Idle payload buffers go back to the system once large writes stop.
  const trim = setInterval(() => payloadPool.trim(), 5_000).unref();
  return async () => {
    clearInterval(trim);
    clearInterval(follow);
    await server.close();
    await dev.flush().catch(() => undefined);
    await dev.close();
  };
}
