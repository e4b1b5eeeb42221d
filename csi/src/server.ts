/**
 * The gRPC server: the CSI services on a Unix socket and nowhere else (the kubelet and the sidecars reach
 * the driver through a socket in a shared directory). Every call is logged with its outcome; a CsiError
 * becomes its gRPC code, anything else INTERNAL with the message.
 */
import { chmod, mkdir, unlink } from 'node:fs/promises';
import { dirname, isAbsolute } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { isCsiError } from './errors.js';
import type { CsiServices } from './spec.js';

/** A service implementation: method name → handler of the decoded request. */
export type Handlers = Record<string, (req: never) => Promise<unknown>>;

export interface ServerOptions {
  /** `unix:///path/csi.sock` or an absolute path. */
  endpoint: string;
  csi: CsiServices;
  identity: Handlers;
  controller?: Handlers;
  node?: Handlers;
  log: Logger;
}

export function socketPathOf(endpoint: string): string {
  const path = endpoint.startsWith('unix://') ? endpoint.slice('unix://'.length) : endpoint;
  if (!isAbsolute(path)) throw new Error(`--endpoint must be unix:///absolute/path (got ${endpoint}): the driver listens on a Unix socket only`);
  return path;
}

function wrap(log: Logger, service: string, name: string, fn: (req: never) => Promise<unknown>): grpc.handleUnaryCall<unknown, unknown> {
  return (call, callback) => {
    const start = process.hrtime.bigint();
    const ms = () => Number((process.hrtime.bigint() - start) / 1_000_000n);
    fn(call.request as never).then(
      (res) => {
        log.debug({ event: 'CsiCall', method: `${service}.${name}`, ms: ms() }, 'ok');
        callback(null, res);
      },
      (e: unknown) => {
        const code = isCsiError(e) ? e.grpcCode : grpc.status.INTERNAL;
        const message = e instanceof Error ? e.message : String(e);
        const level = isCsiError(e) && e.code !== 'Internal' ? 'info' : 'error';
        log[level]({ event: 'CsiCallFailed', method: `${service}.${name}`, code: grpc.status[code], ms: ms(), err: message }, message);
        callback({ code, details: message, name: 'CsiError', message });
      },
    );
  };
}

function implementation(log: Logger, service: string, handlers: Handlers): grpc.UntypedServiceImplementation {
  const impl: grpc.UntypedServiceImplementation = {};
  for (const [name, fn] of Object.entries(handlers)) impl[name] = wrap(log, service, name, fn);
  return impl;
}

export interface RunningServer {
  path: string;
  close(): Promise<void>;
}

export async function startServer(o: ServerOptions): Promise<RunningServer> {
  const path = socketPathOf(o.endpoint);
  const server = new grpc.Server();
  server.addService(o.csi.Identity.service, implementation(o.log, 'Identity', o.identity));
  if (o.controller) server.addService(o.csi.Controller.service, implementation(o.log, 'Controller', o.controller));
  if (o.node) server.addService(o.csi.Node.service, implementation(o.log, 'Node', o.node));
  await mkdir(dirname(path), { recursive: true });
  // A socket left by an earlier run of this plugin would make bind fail.
  await unlink(path).catch(() => undefined);
  await new Promise<void>((resolve, reject) => {
    server.bindAsync(`unix://${path}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve()));
  });
  // Only root (the kubelet, the sidecars in the pod) may talk to it.
  await chmod(path, 0o660);
  o.log.info({ event: 'Listening', socket: path, services: ['Identity', ...(o.controller ? ['Controller'] : []), ...(o.node ? ['Node'] : [])] }, 'CSI driver listening');
  return {
    path,
    close: () => new Promise<void>((resolve) => {
      server.tryShutdown(() => {
        void unlink(path).catch(() => undefined).then(() => resolve());
      });
    }),
  };
}
