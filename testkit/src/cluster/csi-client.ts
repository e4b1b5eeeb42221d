/**
 * A client of the CSI driver's gRPC API on its Unix socket, as the sidecars and the kubelet are: the spec's
 * own csi.proto (loaded by the driver's package), plain unary calls with a deadline. Errors read as the Go
 * sidecars print them (`rpc error: code = … desc = …`), which is what lands in events.
 */
import * as grpc from '@grpc/grpc-js';
import { loadCsi } from '@shadowset/csi';

type Service = 'Identity' | 'Controller' | 'Node';
type Unary = (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void;

export class CsiCallError extends Error {
  constructor(readonly code: string, readonly details: string, method: string) {
    super(`${method}: rpc error: code = ${code} desc = ${details}`);
  }
}

export class CsiClient {
  private readonly clients: Record<Service, grpc.Client>;

  constructor(readonly socket: string) {
    const csi = loadCsi();
    const address = `unix://${socket}`;
    const creds = grpc.credentials.createInsecure();
    this.clients = {
      Identity: new csi.Identity(address, creds),
      Controller: new csi.Controller(address, creds),
      Node: new csi.Node(address, creds),
    };
  }

  call<T = Record<string, unknown>>(service: Service, method: string, req: unknown, timeoutMs = 60_000): Promise<T> {
    const client = this.clients[service] as unknown as Record<string, Unary>;
    const fn = client[method];
    if (!fn) return Promise.reject(new Error(`no method ${service}.${method}`));
    return new Promise<T>((resolve, reject) => {
      fn.call(client, req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err) reject(new CsiCallError(grpc.status[err.code] ?? String(err.code), err.details, method));
        else resolve(res as T);
      });
    });
  }

  /** Until the driver answers Probe (its socket may not be there yet). */
  async ready(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        await this.call('Identity', 'Probe', {}, 2000);
        return;
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`CSI driver on ${this.socket} does not answer: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  close(): void {
    for (const c of Object.values(this.clients)) c.close();
  }
}
