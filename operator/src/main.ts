/** `shadow-operator`: run the operator against the cluster of the current kubeconfig (or in-cluster). */
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { KubeConfig } from '@kubernetes/client-node';
import { Operator } from './operator.js';

export async function main(argv: string[]): Promise<number | void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      'engine-image': { type: 'string', default: 'ghcr.io/shadowset/shadowset:0.1.0' },
      'watch-namespace': { type: 'string', default: '' },
      'leader-elect': { type: 'boolean', default: false },
      'leader-election-namespace': { type: 'string', default: process.env.POD_NAMESPACE ?? 'default' },
      'metrics-bind-address': { type: 'string', default: ':8081' },
      'health-bind-address': { type: 'string', default: ':8082' },
      'log-level': { type: 'string', default: 'info' },
      'default-member-timeout': { type: 'string', default: '120' },
      'default-max-copies': { type: 'string', default: '4' },
    },
    strict: true,
  });
  const memberTimeoutSeconds = Number(values['default-member-timeout']);
  const maxCopies = Number(values['default-max-copies']);
  if (!Number.isInteger(memberTimeoutSeconds) || memberTimeoutSeconds < 1) throw new Error('--default-member-timeout must be a whole number of seconds ≥ 1');
  if (!Number.isInteger(maxCopies) || maxCopies < 1 || maxCopies > 64) throw new Error('--default-max-copies must be 1..64');
  const log = pino({ level: values['log-level']!, base: { component: 'operator' } });
  const kc = new KubeConfig();
  kc.loadFromDefault();
  const op = new Operator({
    kubeConfig: kc, log, engineImage: values['engine-image']!, watchNamespace: values['watch-namespace']!,
    leaderElection: values['leader-elect'] ? { namespace: values['leader-election-namespace']! } : false,
    defaults: { memberTimeoutSeconds, maxCopies },
    httpAddresses: [values['metrics-bind-address']!, values['health-bind-address']!].filter(Boolean),
  });
  await op.start();
  const stop = () => void op.stop().then(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
