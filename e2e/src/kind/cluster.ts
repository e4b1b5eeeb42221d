// kind clusters from the node image built on this machine (`npm run cluster:build -- --kind`).
//
// A cluster lives on an *internal* Docker network: its nodes have no route off this machine, so nothing in
// it can reach or pull from anywhere, and the host talks to the API server at the control-plane container's
// address. kind's default CNI (kindnet) is not built here; the cluster is created with `disableDefaultCNI`
// and the repo's own pod-network agent (e2e/kind/shadownet.yaml) is applied instead. CoreDNS's `forward`
// to the node's resolver is removed, so a lookup of an outside name ends in the cluster.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { e2eRoot, repoRoot } from '../paths.js';
import { DOCKER, docker, ensureDockerd, type DockerEngine } from './docker.js';

export interface KindToolchain {
  kubernetesVersion: string;
  kindVersion: string;
  kind: string;
  kubectl: string;
  docker: string;
  /** the runc wrapper dockerd needs here to start privileged containers (e2e/kind/cmd/runc-caps) */
  runcCaps: string;
  /** the node image, tagged with a hash of its inputs */
  nodeImage: string;
  /** shadowset.local/kind-node:<k8s version>: the newest node image built */
  nodeImageAlias: string;
  /** the pod-network agent's image (Debian with iptables, iproute2, perl-base) */
  netImage: string;
  /** every image preloaded into the node image's containerd */
  preloaded: string[];
  /** the CSI sidecars' images (shadowset.local/csi-provisioner:v6.4.0, …), built here, not preloaded */
  csiSidecars: string[];
  /** PostgreSQL from Debian's packages (e2e/scripts/lib/pg-image.mjs), built here, not preloaded */
  postgres?: { ref: string; tag: string; uid: number; gid: number };
}

export const POD_SUBNET = '10.244.0.0/16';
export const SERVICE_SUBNET = '10.96.0.0/16';
/** The Docker network kind's nodes are put on; made `--internal` when missing. */
export const KIND_NETWORK = 'shadowset-kind';

type Log = (line: string) => void;
const stderrLog: Log = (l) => process.stderr.write(`${l}\n`);

function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number; log?: Log } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => {
      const text = c.toString('utf8');
      err += text;
      if (opts.log) for (const line of text.split('\n')) if (line.trim()) opts.log(line);
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} ${args.join(' ')} failed (${signal ?? `exit ${code}`}): ${(err || out).trim().slice(-3000)}`));
    });
    child.stdin.end(opts.input ?? '');
  });
}

let toolchain: Promise<KindToolchain> | undefined;

/** Builds the kind toolchain, or finds it current (the build script is a no-op then). */
export function ensureKindToolchain(log: Log = stderrLog): Promise<KindToolchain> {
  toolchain ??= run(process.execPath, [join(e2eRoot, 'scripts', 'build-cluster.mjs'), '--kind', '--json'], { log, timeoutMs: 90 * 60_000 }).then(
    (out) => (JSON.parse(out.trim().split('\n').pop() ?? '') as { kind: KindToolchain }).kind,
  );
  toolchain.catch(() => (toolchain = undefined));
  return toolchain;
}

/** kind's cluster config: one control plane and `workers` workers; `nodeExtra` is merged into each node. */
export function kindConfig(workers: number, nodeExtra: Record<string, unknown> = {}): string {
  const config = {
    kind: 'Cluster',
    apiVersion: 'kind.x-k8s.io/v1alpha4',
    networking: { disableDefaultCNI: true, podSubnet: POD_SUBNET, serviceSubnet: SERVICE_SUBNET },
    nodes: [{ role: 'control-plane', ...nodeExtra }, ...Array.from({ length: workers }, () => ({ role: 'worker', ...nodeExtra }))],
  };
  return JSON.stringify(config, null, 2); // JSON is YAML
}

export interface KindClusterOptions {
  name?: string;
  workers?: number;
  /** merged into every node of kind's config (e.g. extraMounts) */
  nodeExtra?: Record<string, unknown>;
  /** delete a cluster of the same name first (one left by a run that was killed) */
  replaceExisting?: boolean;
  log?: Log;
}

export class KindCluster {
  private constructor(
    readonly name: string,
    readonly toolchain: KindToolchain,
    readonly workDir: string,
    /** admin kubeconfig; its server is the control-plane container's address on the internal network */
    readonly kubeconfigPath: string,
    readonly apiServer: string,
    /** node container names, control plane first */
    readonly nodes: string[],
    readonly createMs: number,
    private readonly engine: DockerEngine,
  ) {}

  static async create(opts: KindClusterOptions = {}): Promise<KindCluster> {
    const log = opts.log ?? stderrLog;
    const name = opts.name ?? 'shadowset';
    const tc = await ensureKindToolchain(log);
    const workDir = mkdtempSync(join(tmpdir(), `kind-${name}-`));
    const engine = await ensureDockerd(join(repoRoot, '.cache', 'cluster', 'kind'), { runcCaps: tc.runcCaps });
    const t0 = Date.now();
    try {
      if (docker(['network', 'inspect', KIND_NETWORK], { allowFail: true }).status !== 0) {
        docker(['network', 'create', '--internal', KIND_NETWORK]);
      }
      allowWithinNetwork(true);
      if (opts.replaceExisting && (await run(tc.kind, ['get', 'clusters'], { env: kindEnv() })).split('\n').includes(name)) {
        log(`kind: deleting the cluster ${name} left from an earlier run`);
        await run(tc.kind, ['delete', 'cluster', '--name', name], { env: kindEnv(), timeoutMs: 5 * 60_000 });
      }
      const configPath = join(workDir, 'kind-config.yaml');
      writeFileSync(configPath, kindConfig(opts.workers ?? 2, opts.nodeExtra));
      log(`kind: creating cluster ${name} from ${tc.nodeImage}`);
      try {
        await run(tc.kind, ['create', 'cluster', '--name', name, '--image', tc.nodeImage, '--config', configPath, '--kubeconfig', join(workDir, 'kind-kubeconfig')], {
          env: kindEnv(),
          log: (l) => log(`kind: ${l}`),
          timeoutMs: 10 * 60_000,
        });
      } catch (err) {
        // kind's last step writes a kubeconfig for the API server's port published on the host; an internal
        // network publishes no ports, so that step fails after the cluster is up. Anything else is real.
        if (!String(err).includes('failed to get api server port')) throw err;
      }
      const kubeconfigPath = join(workDir, 'kubeconfig');
      writeFileSync(kubeconfigPath, await run(tc.kind, ['get', 'kubeconfig', '--internal', '--name', name], { env: kindEnv() }), { mode: 0o600 });
      const nodes = docker(['ps', '-a', '--filter', `label=io.x-k8s.kind.cluster=${name}`, '--format', '{{.Names}}']).stdout.split('\n').filter(Boolean);
      const cp = `${name}-control-plane`;
      nodes.sort((a, b) => (a === cp ? -1 : b === cp ? 1 : a.localeCompare(b)));
      const ip = docker(['inspect', '--format', `{{(index .NetworkSettings.Networks "${KIND_NETWORK}").IPAddress}}`, cp]).stdout.trim();
      const apiServer = `https://${ip}:6443`;
      await run(tc.kubectl, ['config', 'set-cluster', `kind-${name}`, `--server=${apiServer}`, `--kubeconfig=${kubeconfigPath}`]);
      const cluster = new KindCluster(name, tc, workDir, kubeconfigPath, apiServer, nodes, 0, engine);
      await cluster.installNetwork();
      await cluster.kubectl(['wait', '--for=condition=Ready', 'node', '--all', '--timeout=300s'], { timeoutMs: 310_000 });
      await cluster.closeDns();
      const ready = new KindCluster(name, tc, workDir, kubeconfigPath, apiServer, nodes, Date.now() - t0, engine);
      log(`kind: cluster ${name} ready in ${((Date.now() - t0) / 1000).toFixed(1)} s (${nodes.join(', ')})`);
      return ready;
    } catch (err) {
      await logState(tc, join(workDir, 'kubeconfig'), log);
      await run(tc.kind, ['delete', 'cluster', '--name', name], { env: kindEnv() }).catch(() => undefined);
      removeNetwork();
      rmSync(workDir, { recursive: true, force: true });
      await engine.stop();
      throw err;
    }
  }

  kubectl(args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<string> {
    return run(this.toolchain.kubectl, [`--kubeconfig=${this.kubeconfigPath}`, ...args], opts);
  }

  /** Runs a command in a node container. */
  nodeExec(node: string, args: string[], opts: { input?: string; allowFail?: boolean } = {}): { status: number; stdout: string; stderr: string } {
    return docker(['exec', ...(opts.input !== undefined ? ['-i'] : []), node, ...args], opts);
  }

  /** Copies an image from the Docker engine into every node's containerd (`kind load docker-image`). */
  async loadImage(ref: string): Promise<void> {
    await run(this.toolchain.kind, ['load', 'docker-image', '--name', this.name, ref], { env: kindEnv(), timeoutMs: 10 * 60_000 });
  }

  /** Image references in a node's containerd (the k8s.io namespace the kubelet uses). */
  nodeImages(node: string): string[] {
    return this.nodeExec(node, ['ctr', '-n', 'k8s.io', 'images', 'ls', '-q']).stdout.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('sha256:'));
  }

  /** Deletes the cluster, the network once no cluster is left on it, and the dockerd if it was started here. */
  async delete(): Promise<void> {
    await run(this.toolchain.kind, ['delete', 'cluster', '--name', this.name], { env: kindEnv(), timeoutMs: 5 * 60_000 });
    // the network is this harness's by name: removed with its rule once no cluster is left on it
    removeNetwork();
    rmSync(this.workDir, { recursive: true, force: true });
    await this.engine.stop();
  }

  /** true when this process started the dockerd the cluster runs on */
  get startedDockerd(): boolean {
    return this.engine.started;
  }

  private async installNetwork(): Promise<void> {
    const manifest = readFileSync(join(e2eRoot, 'kind', 'shadownet.yaml'), 'utf8')
      .replaceAll('${IMAGE}', this.toolchain.netImage)
      .replaceAll('${APISERVER}', this.apiServer)
      .replaceAll('${SERVICE_CIDR}', SERVICE_SUBNET);
    await this.kubectl(['apply', '-f', '-'], { input: manifest });
    await this.kubectl(['-n', 'kube-system', 'rollout', 'status', 'daemonset/shadownet', '--timeout=180s'], { timeoutMs: 190_000 });
  }

  // Pods get the node's resolv.conf through CoreDNS's `forward`, which leads to Docker's resolver and from
  // there off this machine. Without it, names outside the cluster fail at once.
  private async closeDns(): Promise<void> {
    const cm = JSON.parse(await this.kubectl(['-n', 'kube-system', 'get', 'configmap', 'coredns', '-o', 'json'])) as { data: { Corefile: string } };
    const before = cm.data.Corefile;
    cm.data.Corefile = before.replace(/^\s*forward\s[^\n]*\{[^}]*\}\s*\n/m, '').replace(/^\s*forward\s[^\n{]*\n/m, '');
    if (cm.data.Corefile !== before) {
      await this.kubectl(['replace', '-f', '-'], { input: JSON.stringify(cm) });
      await this.kubectl(['-n', 'kube-system', 'rollout', 'restart', 'deployment/coredns']);
    }
    await this.kubectl(['-n', 'kube-system', 'rollout', 'status', 'deployment/coredns', '--timeout=180s'], { timeoutMs: 190_000 });
  }
}

/** What a cluster that did not come up looked like (pods, recent kube-system events), before it is deleted. */
async function logState(tc: KindToolchain, kubeconfigPath: string, log: Log): Promise<void> {
  if (!existsSync(kubeconfigPath)) return;
  for (const args of [['get', 'nodes,pods', '-A', '-o', 'wide'], ['get', 'events', '-n', 'kube-system', '--sort-by=.lastTimestamp']]) {
    const out = await run(tc.kubectl, [`--kubeconfig=${kubeconfigPath}`, ...args], { timeoutMs: 30_000 }).catch((e: Error) => e.message);
    for (const line of out.split('\n').slice(-40)) if (line.trim()) log(`kind: ${line}`);
  }
}

/** The host bridge of the kind network (Docker names it br-<first 12 characters of the network id>). */
function bridgeOf(network: string): string {
  const id = docker(['network', 'inspect', '--format', '{{.Id}}', network]).stdout.trim();
  return `br-${id.slice(0, 12)}`;
}

/**
 * Docker isolates an internal network by dropping forwarded packets whose source or destination is outside
 * its subnet. Pod addresses are outside it, and with bridge netfilter on (as here) even packets between two
 * nodes on the same bridge pass the host's FORWARD chain, so pod-to-pod traffic across nodes would be
 * dropped. This rule, in the chain Docker leaves to users, accepts what enters and leaves by the same
 * bridge, i.e. traffic between the network's own containers; everything else stays dropped.
 */
function allowWithinNetwork(on: boolean): void {
  const br = bridgeOf(KIND_NETWORK);
  const rule = ['DOCKER-USER', '-i', br, '-o', br, '-m', 'comment', '--comment', 'shadowset-kind', '-j', 'ACCEPT'];
  const present = spawnSync('iptables', ['-C', ...rule], { stdio: 'ignore' }).status === 0;
  if (on && !present) {
    const r = spawnSync('iptables', ['-I', ...rule], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`iptables -I ${rule.join(' ')} failed: ${r.stderr}`);
  } else if (!on && present) {
    spawnSync('iptables', ['-D', ...rule], { stdio: 'ignore' });
  }
}

/** Removes the kind network and its rule once no container is left on it. */
function removeNetwork(): void {
  const left = docker(['network', 'inspect', '--format', '{{len .Containers}}', KIND_NETWORK], { allowFail: true }).stdout.trim();
  if (left !== '0') return;
  allowWithinNetwork(false);
  docker(['network', 'rm', KIND_NETWORK], { allowFail: true });
}

// kind runs `docker` from PATH: make it Debian's CLI, which matches the engine; and put its nodes on the
// internal network.
function kindEnv(): NodeJS.ProcessEnv {
  const path = DOCKER.includes('/') ? `${dirname(DOCKER)}:${process.env.PATH ?? ''}` : process.env.PATH;
  return { ...process.env, PATH: path, KIND_EXPERIMENTAL_DOCKER_NETWORK: KIND_NETWORK };
}

export function createKindCluster(opts: KindClusterOptions = {}): Promise<KindCluster> {
  return KindCluster.create(opts);
}

