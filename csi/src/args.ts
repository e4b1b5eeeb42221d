/** `shadowset-csi` arguments, checked before anything listens. */
import { isAbsolute } from 'node:path';
import { parseArgs } from 'node:util';
import { socketPathOf } from './server.js';

export const USAGE = `usage: shadowset-csi --endpoint unix:///path/csi.sock --mode controller|node|all
  [--node-id NAME] [--namespace NS] [--kubelet-dir /var/lib/kubelet] [--unit-socket-dir /run/shadowset/units]
  [--state-dir /var/lib/shadowset-csi] [--export-name shadow] [--reconnect-delay 120] [--socket-wait 15] [--log-level info]
  [--kubelet-registration-path /var/lib/kubelet/plugins/csi.shadowset.dev/csi.sock]`;

export interface CsiArgs {
  endpoint: string;
  controller: boolean;
  node: boolean;
  nodeId: string;
  namespace: string;
  kubeletDir: string;
  unitSocketDir: string;
  stateDir: string;
  exportName: string;
  reconnectDelaySeconds: number;
  socketWaitSeconds: number;
  logLevel: string;
  /** node mode: register with the kubelet, naming this path (the CSI socket as the kubelet sees it) */
  kubeletRegistrationPath?: string;
}

export function parseCsiArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): CsiArgs {
  const { values } = parseArgs({
    args: argv,
    options: {
      endpoint: { type: 'string', default: env.CSI_ENDPOINT },
      mode: { type: 'string' },
      'node-id': { type: 'string', default: env.NODE_NAME },
      namespace: { type: 'string', default: env.POD_NAMESPACE ?? 'default' },
      'kubelet-dir': { type: 'string', default: '/var/lib/kubelet' },
      'unit-socket-dir': { type: 'string', default: '/run/shadowset/units' },
      'state-dir': { type: 'string', default: '/var/lib/shadowset-csi' },
      'export-name': { type: 'string', default: 'shadow' },
      'reconnect-delay': { type: 'string', default: '120' },
      'socket-wait': { type: 'string', default: '15' },
      'log-level': { type: 'string', default: 'info' },
      'kubelet-registration-path': { type: 'string' },
    },
    strict: true,
  });
  if (!values.endpoint) throw new Error(`--endpoint (or CSI_ENDPOINT) is required\n${USAGE}`);
  socketPathOf(values.endpoint);
  const mode = values.mode;
  if (mode !== 'controller' && mode !== 'node' && mode !== 'all') throw new Error(`--mode must be controller, node or all\n${USAGE}`);
  const node = mode !== 'controller';
  if (node && !values['node-id']) throw new Error('--node-id (or NODE_NAME) is required for the node service');
  for (const k of ['kubelet-dir', 'unit-socket-dir', 'state-dir'] as const) {
    if (!isAbsolute(values[k]!)) throw new Error(`--${k} must be an absolute path`);
  }
  const reg = values['kubelet-registration-path'];
  if (reg !== undefined) {
    if (!node) throw new Error('--kubelet-registration-path is for the node service (--mode node or all)');
    if (!isAbsolute(reg) || !reg.endsWith('.sock')) throw new Error('--kubelet-registration-path must be the absolute path of the CSI socket (…/csi.sock) on the host');
  }
  const delay = Number(values['reconnect-delay']);
  if (!Number.isInteger(delay) || delay < 0 || delay > 3600) throw new Error('--reconnect-delay must be 0..3600 seconds');
  const socketWait = Number(values['socket-wait']);
  if (!Number.isInteger(socketWait) || socketWait < 0 || socketWait > 600) throw new Error('--socket-wait must be 0..600 seconds');
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(values['export-name']!)) throw new Error('--export-name must be a plain name');
  return {
    endpoint: values.endpoint,
    controller: mode !== 'node',
    node,
    nodeId: values['node-id'] ?? '',
    namespace: values.namespace!,
    kubeletDir: values['kubelet-dir']!,
    unitSocketDir: values['unit-socket-dir']!,
    stateDir: values['state-dir']!,
    exportName: values['export-name']!,
    reconnectDelaySeconds: delay,
    socketWaitSeconds: socketWait,
    logLevel: values['log-level']!,
    ...(reg !== undefined ? { kubeletRegistrationPath: reg } : {}),
  };
}
