/**
 * Kubelet plugin registration, done by the node plugin itself (node-driver-registrar is not served by the Go
 * module proxy, so it is not built here). The kubelet watches `<kubelet-dir>/plugins_registry/` for sockets;
 * on one it calls GetInfo (a CSI plugin: its name, the CSI socket as the kubelet sees it, the CSI versions),
 * registers the driver (NodeGetInfo on that socket, then the CSINode object) and reports the outcome with
 * NotifyRegistrationStatus. The service is the kubelet's own `pluginregistration` v1 api.proto, fetched from
 * the Go module k8s.io/kubelet by csi/scripts/csi-spec.mjs into csi/proto/pluginregistration/.
 */
import { existsSync } from 'node:fs';
import { chmod, mkdir, unlink } from 'node:fs/promises';
import { dirname, isAbsolute, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { Logger } from 'pino';
import { DRIVER_NAME, LOADER_OPTIONS, defaultProtoPath } from '../spec.js';

/** What the kubelet's CSI plugin handler accepts (it needs a 1.x version). */
export const SUPPORTED_VERSIONS = ['1.0.0'];
export const PLUGIN_TYPE = 'CSIPlugin';

/** Where the kubelet looks for the driver: `<kubelet-dir>/plugins_registry/<driver>-reg.sock`. */
export function registrationSocketPath(kubeletDir: string): string {
  return join(kubeletDir, 'plugins_registry', `${DRIVER_NAME}-reg.sock`);
}

export function loadRegistration(protoPath = join(dirname(defaultProtoPath()), 'pluginregistration', 'api.proto')): grpc.ServiceClientConstructor {
  if (!existsSync(protoPath)) {
    throw new Error(`the kubelet's plugin-registration proto is not at ${protoPath}: run \`node csi/scripts/csi-spec.mjs\` (npm run build does)`);
  }
  const def = protoLoader.loadSync(protoPath, LOADER_OPTIONS);
  const pkg = grpc.loadPackageDefinition(def) as unknown as { pluginregistration: { Registration: grpc.ServiceClientConstructor } };
  return pkg.pluginregistration.Registration;
}

export interface RegistrationOptions {
  kubeletDir: string;
  /** the CSI socket's path as the kubelet sees it on the host (the plugin's own mount may differ) */
  csiSocketOnHost: string;
  log: Logger;
  /** the kubelet said it could not register the driver: the caller exits non-zero so the pod restarts */
  onRejected: (error: string) => void;
}

export interface RunningRegistration {
  path: string;
  close(): Promise<void>;
}

export async function startRegistration(o: RegistrationOptions): Promise<RunningRegistration> {
  if (!isAbsolute(o.csiSocketOnHost)) throw new Error(`the CSI socket's path on the host must be absolute (got ${o.csiSocketOnHost})`);
  const path = registrationSocketPath(o.kubeletDir);
  const Registration = loadRegistration();
  const server = new grpc.Server();
  server.addService(Registration.service, {
    GetInfo: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      o.log.debug({ event: 'KubeletGetInfo' }, 'kubelet asked for the plugin info');
      cb(null, { type: PLUGIN_TYPE, name: DRIVER_NAME, endpoint: o.csiSocketOnHost, supported_versions: SUPPORTED_VERSIONS });
    },
    NotifyRegistrationStatus: (call: grpc.ServerUnaryCall<{ plugin_registered: boolean; error: string }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      const { plugin_registered: ok, error } = call.request;
      cb(null, {});
      if (ok) {
        o.log.info({ event: 'KubeletRegistered', driver: DRIVER_NAME, endpoint: o.csiSocketOnHost }, 'registered with the kubelet');
      } else {
        o.log.error({ event: 'KubeletRegistrationFailed', driver: DRIVER_NAME, err: error }, `the kubelet did not register the driver: ${error}`);
        o.onRejected(error || 'no reason given');
      }
    },
  });
  await mkdir(dirname(path), { recursive: true });
  // A socket left by an earlier run (a crash, a SIGKILL) would make bind fail; the kubelet re-registers on the new one.
  await unlink(path).catch(() => undefined);
  await new Promise<void>((resolve, reject) => {
    server.bindAsync(`unix://${path}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve()));
  });
  // The kubelet runs as root; nobody else needs it.
  await chmod(path, 0o660);
  o.log.info({ event: 'RegistrationListening', socket: path, endpoint: o.csiSocketOnHost }, 'waiting for the kubelet to register the driver');
  return {
    path,
    close: () => new Promise<void>((resolve) => {
      // Removed so the kubelet forgets a plugin that stopped; the next start binds a new one and is registered again.
      server.tryShutdown(() => void unlink(path).catch(() => undefined).then(() => resolve()));
    }),
  };
}
