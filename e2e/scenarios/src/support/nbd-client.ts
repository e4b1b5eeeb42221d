// The scenarios' NBD client: the engine's own (NBD_OPT_GO, pipelined requests; when the connection drops,
// every request in flight fails, and the workload then counts its write as unknown), with the calls
// shaped the way the scenarios use them.
import { NbdClientBackend } from '@shadowset/engine/nbd-client';
import type { EngineEndpoint } from '../env/cluster-env.js';

export class NbdClient {
  private constructor(private readonly nbd: NbdClientBackend) {}

  /** Connect to the set's export: its nbds:// URI, with the PSK of the set's export Secret. */
  static async connect(ep: Pick<EngineEndpoint, 'uri' | 'psk'>, timeoutMs = 10_000): Promise<NbdClient> {
    return new NbdClient(await NbdClientBackend.open(ep.uri, timeoutMs, { psk: ep.psk }));
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length);
    await this.nbd.read(buf, offset);
    return buf;
  }

  write(offset: number, data: Buffer, fua = false): Promise<void> {
    return this.nbd.write(data, offset, fua);
  }

  flush(): Promise<void> {
    return this.nbd.flush();
  }

  /** Polite disconnect (NBD_CMD_DISC), then close. */
  close(): Promise<void> {
    return this.nbd.close();
  }
}

/** Read `length` bytes from offset 0 in requests the server accepts (at most 4 MiB each, a few at once). */
export async function readAll(c: NbdClient, length: number): Promise<Buffer> {
  const step = 4 * 1024 * 1024;
  const parts: Promise<Buffer>[] = [];
  for (let off = 0; off < length; off += step) parts.push(c.read(off, Math.min(step, length - off)));
  return Buffer.concat(await Promise.all(parts));
}
