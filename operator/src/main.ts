/** `shadow-operator`: run the operator against the cluster of the current kubeconfig (or in-cluster). */
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { KubeConfig } from './kube/client.js';
import { Operator } from './operator.js';
import { checkMetricsListener, parseMetricsAuthMode } from './runtime/metrics-auth.js';
import { readKeyFile } from './security/keys.js';

/** `k=v,k2=v2` → labels; refuses what is not a label pair. */
export function parseLabels(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of text.split(',').map((x) => x.trim()).filter(Boolean)) {
    const m = /^([A-Za-z0-9][-A-Za-z0-9_./]{0,252})=([-A-Za-z0-9_.]{0,63})$/.exec(pair);
    if (!m) throw new Error(`--operator-pod-labels: '${pair}' is not a label key=value`);
    out[m[1]!] = m[2]!;
  }
  return out;
}

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
      'metrics-auth': { type: 'string', default: 'kubernetes' },
      'log-level': { type: 'string', default: 'info' },
      'default-member-timeout': { type: 'string', default: '120' },
      'default-max-copies': { type: 'string', default: '4' },
      'key-file': { type: 'string' },
      'operator-pod-labels': { type: 'string', default: '' },
      // The CSI node plugin's --unit-socket-dir (the same default); '' serves no unit sockets.
      'unit-socket-dir': { type: 'string', default: '/run/shadowset/units' },
    },
    strict: true,
  });
  const memberTimeoutSeconds = Number(values['default-member-timeout']);
  const maxCopies = Number(values['default-max-copies']);
  if (!Number.isInteger(memberTimeoutSeconds) || memberTimeoutSeconds < 1) throw new Error('--default-member-timeout must be a whole number of seconds ≥ 1');
  if (!Number.isInteger(maxCopies) || maxCopies < 1 || maxCopies > 64) throw new Error('--default-max-copies must be 1..64');
  // Before anything else: a metrics listener that would be neither local nor authenticated stops the start.
  const metricsAddress = values['metrics-bind-address']!;
  const metricsAuth = parseMetricsAuthMode(values['metrics-auth']!);
  if (metricsAddress) checkMetricsListener(metricsAddress, metricsAuth);
  if (!values['key-file']) throw new Error('--key-file is required: a file of at least 32 random bytes (the chart makes one)');
  const key = readKeyFile(values['key-file']);
  const unitSocketDir = values['unit-socket-dir'] || null;
  if (unitSocketDir && (!unitSocketDir.startsWith('/') || unitSocketDir.split('/').some((p) => p === '..' || p === '.'))) {
    throw new Error('--unit-socket-dir must be an absolute path without . or .. components (or empty: no unit sockets)');
  }
  const operatorPods = { namespace: process.env.POD_NAMESPACE ?? 'default', labels: parseLabels(values['operator-pod-labels']!) };
  const log = pino({ level: values['log-level']!, base: { component: 'operator' } });
  const kc = new KubeConfig();
  kc.loadFromDefault();
  const op = new Operator({
    kubeConfig: kc, log, engineImage: values['engine-image']!, watchNamespace: values['watch-namespace']!,
    leaderElection: values['leader-elect'] ? { namespace: values['leader-election-namespace']! } : false,
    defaults: { memberTimeoutSeconds, maxCopies }, key, operatorPods, unitSocketDir,
    metrics: metricsAddress ? { address: metricsAddress, auth: metricsAuth } : undefined,
    healthAddress: values['health-bind-address'] || undefined,
  });
  await op.start();
  const stop = () => void op.stop().then(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
