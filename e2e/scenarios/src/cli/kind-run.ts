// The kind tier's scenario runner: one kind cluster (one control plane, two workers, from the node image built
// here) and one build of the project image for every scenario file, instead of a cluster per file. The files
// run one at a time under `node --test` with E2E_CLUSTER=kind; each installs the chart (or finds it) and undoes
// what it made. Ctrl-C or SIGTERM: the test run is stopped, then the cluster is deleted, the loop devices
// left in it are detached, and a dockerd started for it is stopped. Prints how long each part took.
// E2E_KEEP_CLUSTER=1 keeps the cluster (and its dockerd) after a run that was not interrupted.
//
// Usage: node e2e/scenarios/dist/cli/kind-run.js [--node-test-option ...] <test files...>
import { spawn } from 'node:child_process';
import { buildImage, IMAGE } from '../env/kind-env.js';
import { openKindSession, type KindSession } from '../env/kind-session.js';

const CLUSTER = process.env.E2E_KIND_CLUSTER ?? 'shadowset-e2e';
const args = process.argv.slice(2);
const testOptions = args.filter((a) => a.startsWith('--'));
const files = args.filter((a) => !a.startsWith('--'));
const say = (s: string) => process.stderr.write(`kind-run: ${s}\n`);
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

if (files.length === 0) {
  say('no scenario files given');
  process.exit(2);
}

let stopping = false;
let child: ReturnType<typeof spawn> | undefined;
const onSignal = (sig: NodeJS.Signals) => {
  if (stopping) return;
  stopping = true;
  say(`${sig}: stopping the scenarios, then deleting cluster ${CLUSTER}`);
  // A terminal's Ctrl-C has reached the test run already; a SIGTERM to this process has not.
  if (sig === 'SIGTERM') child?.kill('SIGTERM');
};
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

const times: [string, number][] = [];
const timed = async <T>(what: string, f: () => Promise<T>): Promise<T> => {
  const t = Date.now();
  try {
    return await f();
  } finally {
    times.push([what, Date.now() - t]);
  }
};

let session: KindSession | undefined;
let status = 1;
try {
  session = await timed('cluster up', () => openKindSession({ name: CLUSTER, log: (l) => say(l) }));
  if (!stopping) await timed('image build', () => buildImage(IMAGE));
  if (!stopping) await timed('image load', () => session!.loadImage(IMAGE));
  if (!stopping) {
    status = await timed('scenarios', () => new Promise<number>((resolve) => {
      child = spawn(process.execPath, ['--test', '--test-concurrency=1', ...testOptions, ...files], {
        stdio: 'inherit',
        env: {
          ...process.env, E2E_CLUSTER: 'kind', E2E_KIND_CLUSTER: session!.name, E2E_KIND_KUBECONFIG: session!.kubeconfigPath, E2E_KIND_SKIP_BUILD: '1',
        },
      });
      child.once('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0)));
    }));
  }
} catch (e) {
  say(`failed: ${(e as Error).message}`);
} finally {
  if (session && process.env.E2E_KEEP_CLUSTER === '1' && !stopping) {
    say(`E2E_KEEP_CLUSTER=1: cluster ${session.name} kept; KUBECONFIG=${session.kubeconfigPath}; delete it with kind delete cluster --name ${session.name}`);
  } else if (session) {
    await timed('cluster delete', () => session!.close()).catch((e: Error) => say(`deleting the cluster failed: ${e.message}`));
  }
  say(times.map(([w, ms]) => `${w} ${secs(ms)}`).join(', '));
}
process.exit(stopping ? 130 : status);
