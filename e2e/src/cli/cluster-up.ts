// `npm run cluster:up [-- --nodes node-a,node-b]`: a local control plane and simulated nodes to poke at
// with kubectl, until Ctrl-C. Everything is removed on exit.
import { startControlPlane } from '../cluster/control-plane.js';
import { NodeSimulator } from '../sim/node-simulator.js';

const i = process.argv.indexOf('--nodes');
const nodes = (i >= 0 ? (process.argv[i + 1] ?? '') : 'node-a,node-b,node-c').split(',').filter(Boolean);

const cp = await startControlPlane();
const sim = await NodeSimulator.start({ kubeConfig: cp.kubeConfig, nodes, podKubeconfig: cp.kubeconfigPath, echoOutput: true });
process.stdout.write(`\nexport KUBECONFIG=${cp.kubeconfigPath}\n# nodes: ${nodes.join(', ')}; Ctrl-C to stop\n`);

let stopping = false;
const stop = async (): Promise<void> => {
  if (stopping) return;
  stopping = true;
  await sim.stop();
  await cp.stop();
  process.exit(0);
};
process.on('SIGINT', () => void stop());
process.on('SIGTERM', () => void stop());
