/** `shadowset-csi`: the CSI driver's controller side (beside the operator) or node side (a DaemonSet). */
import { pino } from 'pino';
import { parseCsiArgs } from './args.js';
import { controllerService } from './controller/controller.js';
import { identityService } from './identity.js';
import { nodeService } from './node/node.js';
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
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  log.info({ event: 'Stopping' }, 'stopping: volumes stay attached');
  await server.close();
}
