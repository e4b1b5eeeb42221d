/** `shadowset-csi`: the CSI driver's controller side (beside the operator) or node side (a DaemonSet). */
import { pino } from 'pino';
import { parseCsiArgs } from './args.js';
import { controllerService } from './controller/controller.js';
import { identityService } from './identity.js';
import { nodeService } from './node/node.js';
import { startRegistration, type RunningRegistration } from './node/registration.js';
import { startServer } from './server.js';
import { loadCsi } from './spec.js';

export async function main(argv: string[]): Promise<number | void> {
  const a = parseCsiArgs(argv);
  const log = pino({ level: a.logLevel, base: { component: 'csi', mode: a.controller && a.node ? 'all' : a.controller ? 'controller' : 'node' } });
  const csi = loadCsi();
  let controller;
  if (a.controller) {
    // Loaded only here: the node side needs no API server access.
    const { Kube, KubeConfig } = await import('@shadowset/operator/kube');
    const kc = new KubeConfig();
    kc.loadFromDefault();
    controller = controllerService({ kube: new Kube(kc), namespace: a.namespace, log });
  }
  const node = a.node ? nodeService({ ...a, nodeId: a.nodeId }) : undefined;
  const server = await startServer({ endpoint: a.endpoint, csi, identity: identityService({ controller: a.controller }), controller, node, log });
  let rejected: string | undefined;
  let stop!: () => void;
  const stopped = new Promise<void>((resolve) => (stop = resolve));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  // After the CSI socket listens: the kubelet calls NodeGetInfo on it as soon as it has GetInfo's answer.
  let registration: RunningRegistration | undefined;
  try {
    if (a.node && a.kubeletRegistrationPath) {
      registration = await startRegistration({
        kubeletDir: a.kubeletDir,
        csiSocketOnHost: a.kubeletRegistrationPath,
        log,
        onRejected: (error) => {
          rejected = error;
          stop();
        },
      });
    }
  } catch (e) {
    await server.close();
    throw e;
  }
  await stopped;
  log.info({ event: 'Stopping' }, 'stopping: volumes stay attached');
  await registration?.close();
  await server.close();
  // Not registered, the plugin is of no use on this node: exit non-zero so the kubelet restarts the pod and
  // the registration is tried again.
  if (rejected !== undefined) {
    log.error({ event: 'NotRegistered', err: rejected }, 'exiting: the kubelet did not register the driver');
    return 1;
  }
}
