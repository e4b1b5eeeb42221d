// A test-only stand-in for kubelet (and for the bits of kube-scheduler and the node lifecycle controller
// that tests need). It registers Node objects, binds unscheduled pods to them, runs the containers of the
// project's image as local processes, reports pod status, restarts and kills containers, and can make a
// node fail and return. See e2e/README.md for the design decisions.
// Somewhat over 300 lines: the node's lifecycle (register, heartbeat, fail, return) and the pods bound to
// it share one informer and one state per node; binding (binder.ts), containers (container-runner.ts) and
// pod status (pod-runtime.ts) are already apart.
import { CoreV1Api, PatchStrategy, makeInformer, setHeaderOptions } from '@kubernetes/client-node';
import type { Informer, KubeConfig, ObjectCache, V1NodeCondition, V1Pod, V1PodStatus, V1Taint }
  from '@kubernetes/client-node';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { randomInt } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_COMMANDS } from './commands.js';
import type { CommandTable } from './commands.js';
import type { Backoff } from './container-runner.js';
import type { PodVolumePlugin } from './volumes.js';
import { PodRuntime } from './pod-runtime.js';
import { choose } from './binder.js';
import { forgetTempDir, registerTempDir } from '../cluster/processes.js';

export interface SimulatedNodeSpec {
  name: string;
  labels?: Record<string, string>;
}

export interface NodeSimulatorOptions {
  kubeConfig: KubeConfig;
  nodes: (string | SimulatedNodeSpec)[];
  /** entries added to (or replacing) DEFAULT_COMMANDS */
  commands?: CommandTable;
  /** restart back-off; shorter than kubelet's by default (1 s doubling to 30 s, reset after 60 s of running) */
  backoff?: Partial<Backoff>;
  /** pods' directories and logs; a fresh temporary directory by default */
  workDir?: string;
  /** bind pods that have no spec.nodeName (default true) */
  bindPods?: boolean;
  /** exported to pod processes as KUBECONFIG (there are no service-account tokens here) */
  podKubeconfig?: string;
  /** sets up the CSI volumes of pods (kubelet's CSI calls); without it a pod of a CSI PV waits */
  volumes?: PodVolumePlugin;
  log?: (line: string) => void;
  /** echo containers' output through log (default: SHADOWSET_SIM_VERBOSE=1) */
  echoOutput?: boolean;
}

interface SimNode {
  name: string;
  index: number;
  ip: string;
  labels: Record<string, string>;
  up: boolean;
  nextPod: number;
  /** Third octet of this simulator's addresses on the node (see freeAddressBlock). */
  block: number;
}

const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
const UNREACHABLE = 'node.kubernetes.io/unreachable';
const NOT_READY = 'node.kubernetes.io/not-ready';

function key(pod: V1Pod): string {
  return pod.metadata?.uid ?? `${pod.metadata?.namespace}/${pod.metadata?.name}`;
}

export class NodeSimulator {
  private readonly core: CoreV1Api;
  private readonly nodes = new Map<string, SimNode>();
  private readonly runtimes = new Map<string, PodRuntime>();
  /** pods that were removed, newest last, for their logs */
  private readonly finished: PodRuntime[] = [];
  private readonly latest = new Map<string, V1Pod | undefined>();
  private readonly chains = new Map<string, Promise<void>>();
  private readonly unschedulableSent = new Map<string, string>();
  private informer: (Informer<V1Pod> & ObjectCache<V1Pod>) | undefined;
  private stopped = false;
  private readonly log: (line: string) => void;
  private readonly backoff: Backoff;
  private readonly commands: CommandTable;

  private constructor(private readonly opts: NodeSimulatorOptions, readonly workDir: string) {
    this.core = opts.kubeConfig.makeApiClient(CoreV1Api);
    this.log = opts.log ?? ((l) => process.stderr.write(`sim: ${l}\n`));
    this.backoff = { initialMs: 1000, maxMs: 30_000, resetAfterMs: 60_000, ...opts.backoff };
    this.commands = { ...DEFAULT_COMMANDS, ...opts.commands };
  }

  static async start(opts: NodeSimulatorOptions): Promise<NodeSimulator> {
    const dir = opts.workDir ?? (await mkdtemp(join(tmpdir(), 'shadowset-sim-')));
    if (!opts.workDir && process.env.SHADOWSET_KEEP_CLUSTER !== '1') registerTempDir(dir);
    const sim = new NodeSimulator(opts, dir);
    const block = await freeAddressBlock(opts.nodes.length);
    let i = 0;
    for (const n of opts.nodes) {
      const spec = typeof n === 'string' ? { name: n } : n;
      i++;
      sim.nodes.set(spec.name, {
        name: spec.name,
        index: i,
        // each node owns 127.<10+i>.0.0/16; this simulator a block of it (freeAddressBlock): the node is
        // .<block>.1, its pods count up from .<block>.2
        ip: `127.${10 + i}.${block}.1`,
        block,
        labels: {
          'kubernetes.io/hostname': spec.name,
          'kubernetes.io/os': 'linux',
          'kubernetes.io/arch': 'amd64',
          ...spec.labels,
        },
        up: true,
        nextPod: 2,
      });
    }
    for (const node of sim.nodes.values()) await sim.register(node);
    await sim.startInformer();
    return sim;
  }

  /** The node's InternalIP (also the hostIP of its pods). */
  nodeIP(name: string): string {
    return this.must(name).ip;
  }

  private must(name: string): SimNode {
    const n = this.nodes.get(name);
    if (!n) throw new Error(`no simulated node ${name}`);
    return n;
  }

  private async register(node: SimNode): Promise<void> {
    try {
      await this.core.createNode({ body: { apiVersion: 'v1', kind: 'Node', metadata: { name: node.name, labels: node.labels } } });
    } catch (err) {
      if ((err as { code?: number }).code !== 409) throw err;
      await this.core.patchNode({ name: node.name, body: { metadata: { labels: node.labels } } }, mergePatch);
    }
    await this.reportNode(node, 'True');
  }

  private nodeConditions(ready: 'True' | 'False' | 'Unknown'): V1NodeCondition[] {
    const now = new Date();
    const healthy = ready === 'True';
    const reason = healthy ? 'KubeletReady' : ready === 'Unknown' ? 'NodeStatusUnknown' : 'KubeletNotReady';
    const message = healthy ? 'kubelet is posting ready status' : ready === 'Unknown'
      ? 'Kubelet stopped posting node status.' : 'container runtime is down';
    const pressure = (type: string, r: string): V1NodeCondition => ({
      type, status: ready === 'Unknown' ? 'Unknown' : 'False', reason: ready === 'Unknown' ? 'NodeStatusUnknown' : r,
      lastHeartbeatTime: now, lastTransitionTime: now,
    });
    return [
      { type: 'Ready', status: ready, reason, message, lastHeartbeatTime: now, lastTransitionTime: now },
      pressure('MemoryPressure', 'KubeletHasSufficientMemory'),
      pressure('DiskPressure', 'KubeletHasNoDiskPressure'),
      pressure('PIDPressure', 'KubeletHasSufficientPID'),
    ];
  }

  private async reportNode(node: SimNode, ready: 'True' | 'False' | 'Unknown'): Promise<void> {
    const capacity = { cpu: '4', memory: '8Gi', pods: '110', 'ephemeral-storage': '50Gi' };
    await this.core.patchNodeStatus({
      name: node.name,
      body: {
        status: {
          conditions: this.nodeConditions(ready),
          addresses: [{ type: 'InternalIP', address: node.ip }, { type: 'Hostname', address: node.name }],
          capacity,
          allocatable: capacity,
          nodeInfo: {
            architecture: 'amd64', operatingSystem: 'linux', osImage: 'shadowset node simulator',
            kernelVersion: '', kubeletVersion: 'v0.0.0-simulator', kubeProxyVersion: '',
            containerRuntimeVersion: 'simulator://1', machineID: '', systemUUID: '', bootID: `${node.name}-${Date.now()}`,
          },
        },
      },
    }, mergePatch);
    // the node lifecycle controller's taints for a node that is not ready
    const current = await this.core.readNode({ name: node.name });
    const others = (current.spec?.taints ?? []).filter((t) => t.key !== UNREACHABLE && t.key !== NOT_READY);
    const ours: V1Taint[] = ready === 'True' ? [] : [ready === 'Unknown' ? UNREACHABLE : NOT_READY]
      .flatMap((k) => [{ key: k, effect: 'NoSchedule' }, { key: k, effect: 'NoExecute', timeAdded: new Date() }]);
    await this.core.patchNode({ name: node.name, body: { spec: { taints: [...others, ...ours] } } }, mergePatch);
  }

  private async startInformer(): Promise<void> {
    const informer = makeInformer<V1Pod>(this.opts.kubeConfig, '/api/v1/pods', () => this.core.listPodForAllNamespaces());
    informer.on('add', (p) => this.observe(p));
    informer.on('update', (p) => this.observe(p));
    informer.on('delete', (p) => {
      this.latest.set(key(p), undefined);
      this.enqueue(key(p));
    });
    informer.on('error', (err) => {
      if (this.stopped) return;
      this.log(`pod watch failed (${String(err)}); restarting`);
      setTimeout(() => void informer.start().catch(() => undefined), 1000);
    });
    this.informer = informer;
    await informer.start();
  }

  private observe(p: V1Pod): void {
    this.latest.set(key(p), p);
    this.enqueue(key(p));
  }

  /** One sync at a time per pod, in event order. */
  private enqueue(k: string): void {
    if (this.stopped) return;
    const prev = this.chains.get(k) ?? Promise.resolve();
    const next = prev
      .then(() => this.sync(k))
      .catch((err: unknown) => this.log(`sync ${k}: ${err instanceof Error ? err.message : String(err)}`));
    this.chains.set(k, next);
    void next.then(() => {
      if (this.chains.get(k) === next) this.chains.delete(k);
    });
  }

  private async sync(k: string): Promise<void> {
    if (this.stopped) return;
    const pod = this.latest.get(k);
    const rt = this.runtimes.get(k);
    if (pod === undefined) {
      // gone from the API (deleted with grace 0, or we deleted it): nothing may keep running
      this.latest.delete(k);
      if (rt) {
        this.retire(k, rt);
        await rt.terminate(0);
      }
      return;
    }
    const nodeName = pod.spec?.nodeName;
    if (!nodeName) {
      if (this.opts.bindPods !== false && !pod.metadata?.deletionTimestamp) await this.bind(pod);
      return;
    }
    const node = this.nodes.get(nodeName);
    if (!node || !node.up) return; // not ours, or its kubelet is down
    if (pod.metadata?.deletionTimestamp) {
      if (rt) {
        this.retire(k, rt);
        await rt.terminate(pod.metadata.deletionGracePeriodSeconds ?? 30);
      }
      // as kubelet does once the containers are gone; the API server reads DeleteOptions from the body
      // alone when there is one, so the grace period must be there, not in the query
      await this.core.deleteNamespacedPod({
        name: pod.metadata.name ?? '', namespace: pod.metadata.namespace ?? 'default',
        body: { gracePeriodSeconds: 0, preconditions: { uid: pod.metadata.uid ?? '' } },
      }).catch((err: { code?: number }) => {
        // gone already, or replaced by a new pod of the same name
        if (err.code !== 404 && err.code !== 409) throw err;
      });
      return;
    }
    if (rt) {
      rt.update(pod);
      return;
    }
    const phase = pod.status?.phase;
    if (phase === 'Succeeded' || phase === 'Failed') return;
    const n = node.nextPod++;
    const podIP = pod.spec?.hostNetwork ? node.ip : `127.${10 + node.index}.${node.block + (n >> 8)}.${n & 255}`;
    if ((n & 255) === 255) node.nextPod++;
    const dir = join(this.workDir, 'pods', `${pod.metadata?.namespace}_${pod.metadata?.name}_${(pod.metadata?.uid ?? '').slice(0, 8)}`);
    const runtime = new PodRuntime(pod, podIP, {
      core: this.core,
      commands: this.commands,
      backoff: this.backoff,
      node: { name: node.name, labels: node.labels, ip: node.ip },
      dir,
      emptyDirBase: join(this.workDir, 'v', (pod.metadata?.uid ?? '').slice(0, 8)),
      ...(this.opts.podKubeconfig ? { podKubeconfig: this.opts.podKubeconfig } : {}),
      ...(this.opts.volumes ? { volumes: this.opts.volumes } : {}),
      patchStatus: (namespace, name, status) => this.patchPodStatus(namespace, name, status),
      log: this.log,
      echoOutput: this.opts.echoOutput ?? process.env.SHADOWSET_SIM_VERBOSE === '1',
    });
    this.runtimes.set(k, runtime);
    await runtime.start();
  }

  private retire(k: string, rt: PodRuntime): void {
    this.runtimes.delete(k);
    this.finished.push(rt);
    if (this.finished.length > 200) this.finished.shift();
  }

  private async patchPodStatus(namespace: string, name: string, status: V1PodStatus): Promise<void> {
    await this.core.patchNamespacedPodStatus({ name, namespace, body: { status } }, mergePatch);
  }

  private async bind(pod: V1Pod): Promise<void> {
    const scheduler = pod.spec?.schedulerName;
    if (scheduler && scheduler !== 'default-scheduler') return;
    const candidates = [...this.nodes.values()].filter((n) => n.up).map((n) => ({
      name: n.name,
      labels: n.labels,
      podCount: [...this.runtimes.values()].filter((r) => r.runners.length > 0 && this.nodeOf(r) === n.name).length,
    }));
    const placement = await choose(this.core, pod, candidates);
    const namespace = pod.metadata?.namespace ?? 'default';
    const name = pod.metadata?.name ?? '';
    if ('node' in placement) {
      await this.core.createNamespacedPodBinding({
        name, namespace,
        body: { apiVersion: 'v1', kind: 'Binding', metadata: { name, namespace },
          target: { apiVersion: 'v1', kind: 'Node', name: placement.node } },
      });
      return;
    }
    if (this.unschedulableSent.get(key(pod)) === placement.unschedulable) return;
    this.unschedulableSent.set(key(pod), placement.unschedulable);
    await this.patchPodStatus(namespace, name, {
      phase: 'Pending',
      conditions: [{ type: 'PodScheduled', status: 'False', reason: 'Unschedulable', message: placement.unschedulable,
        lastTransitionTime: new Date() }],
    });
  }

  private nodeOf(rt: PodRuntime): string | undefined {
    return this.latest.get(rt.uid)?.spec?.nodeName;
  }

  private runtimesOn(nodeName: string): PodRuntime[] {
    return [...this.runtimes.values()].filter((r) => this.nodeOf(r) === nodeName);
  }

  private resyncAll(): void {
    for (const k of this.latest.keys()) this.enqueue(k);
  }

  /**
   * The node fails: its processes are SIGKILLed, its kubelet stops (no more status, no deletions acted
   * on), the Node's Ready condition becomes Unknown (lost) or False (`ready: 'False'`: kubelet up but not
   * ready), and its pods are marked not Ready — what the node lifecycle controller does. Pods stay.
   * `freeze: true`: the processes are SIGSTOPped instead (a partition or a hung node: their peers see
   * silence, not closed connections) and go on where they stopped when the node recovers.
   */
  async failNode(name: string, opts: { ready?: 'Unknown' | 'False'; freeze?: boolean } = {}): Promise<void> {
    const node = this.must(name);
    node.up = false;
    await Promise.all(this.runtimesOn(name).map((r) => r.nodeFailed(opts.freeze ?? false)));
    await this.reportNode(node, opts.ready ?? 'Unknown');
  }

  /** The node returns: Ready again, and containers that died with it restart per their restartPolicy. */
  async recoverNode(name: string): Promise<void> {
    const node = this.must(name);
    await this.reportNode(node, 'True');
    node.up = true;
    for (const r of this.runtimesOn(name)) await r.nodeReturned();
    this.resyncAll();
  }

  private runtime(namespace: string, pod: string): PodRuntime | undefined {
    const match = (r: PodRuntime): boolean => r.namespace === namespace && r.name === pod;
    return [...this.runtimes.values()].find(match) ?? [...this.finished].reverse().find(match);
  }

  /** PIDs of the pod's running processes by container name (absent: not running). */
  pids(namespace: string, pod: string): Record<string, number> {
    const out: Record<string, number> = {};
    for (const r of this.runtime(namespace, pod)?.runners ?? []) if (r.pid !== undefined) out[r.spec.name] = r.pid;
    return out;
  }

  /** What a container printed, across restarts, also after the pod was removed ('' when unknown). */
  logs(namespace: string, pod: string, container: string): string {
    return this.runtime(namespace, pod)?.logs(container) ?? '';
  }

  /** Kills every process, stops watching. Node objects are left (the control plane goes away anyway). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.informer?.stop();
    await Promise.all([...this.runtimes.values()].map((r) => r.terminate(0)));
    this.runtimes.clear();
    if (!this.opts.workDir && process.env.SHADOWSET_KEEP_CLUSTER !== '1') {
      await rm(this.workDir, { recursive: true, force: true });
      forgetTempDir(this.workDir);
    }
  }
}

/**
 * Pod addresses are per simulator, but simulators of different processes (test files, a demo) share the host's
 * loopback: with fixed addresses one's engine could dial another's member server (a wrong-key TLS failure in
 * a test that ran beside another). Each simulator takes a random third octet, one whose addresses no TCP
 * socket on this host uses, with room for 4 × 256 pods per node.
 */
export async function freeAddressBlock(nodes: number): Promise<number> {
  const used = new Set<string>();
  for (const f of ['/proc/net/tcp']) {
    const text = await readFile(f, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const hex = line.trim().split(/\s+/)[1]?.split(':')[0];
      if (!hex || hex.length !== 8) continue;
      // little-endian IPv4: the last byte pair is the first octet
      const o = [6, 4, 2, 0].map((k) => parseInt(hex.slice(k, k + 2), 16));
      if (o[0] === 127) used.add(`${o[1]}.${o[2]}`);
    }
  }
  const free = (b: number) => Array.from({ length: nodes }, (_, i) => i + 1).every((i) => [0, 1, 2, 3].every((k) => !used.has(`${10 + i}.${b + k}`)));
  // From a random block on, every block once: two simulators starting together seldom pick the same one.
  const start = randomInt(0, 63);
  for (let k = 0; k < 63; k++) {
    const b = 4 * ((start + k) % 63);
    if (free(b)) return b;
  }
  throw new Error('no free block of loopback addresses for the node simulator (127.1x.y.z all in use)');
}
