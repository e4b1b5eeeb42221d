// Local mode: a control plane built from Go modules, two simulated nodes running the real engine as pod
// processes, loop-device local PVs, and the operator in this process (as the chart would run it).
import { randomBytes } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino, destination } from 'pino';
import { startControlPlane, NodeSimulator, createBackingDevice, waitFor, PROJECT_IMAGE, repoRoot, type ControlPlane } from '@shadowset/e2e';
import { Operator } from '@shadowset/operator';
import { available } from '../support/exec.js';
import { BaseEnv, type Device } from './base-env.js';
import type { EngineEndpoint, NodeFailure } from './cluster-env.js';

const NODES = ['node-a', 'node-b'] as const;
const HOST_TOOLS = ['losetup', 'mount', 'umount', 'mkfs.ext4', 'e2fsck', 'qemu-storage-daemon', 'fusermount3'];
const NO_RELEASE = 'the local mode runs the operator in the test process: there is no Helm release to upgrade';

export class LocalEnv extends BaseEnv {
  readonly mode = 'local' as const;
  readonly nodes = NODES;
  private cp: ControlPlane | undefined;
  private sim: NodeSimulator | undefined;
  private op: Operator | undefined;
  private readonly operatorLog: string;

  private constructor(workDir: string) {
    super(workDir);
    this.operatorLog = join(workDir, 'operator.log');
  }

  static async start(name: string): Promise<LocalEnv> {
    if (process.getuid?.() !== 0) throw new Error('the e2e tier needs root: loop devices, FUSE exports and mounts');
    for (const t of HOST_TOOLS) {
      if (!(await available('sh', ['-c', `command -v ${t}`]))) throw new Error(`the e2e tier needs ${t} (Debian: qemu-system-common fuse3 e2fsprogs util-linux mount)`);
    }
    return BaseEnv.booted(new LocalEnv(await BaseEnv.makeWorkDir(name)));
  }

  protected async boot(): Promise<void> {
    this.cp = await startControlPlane();
    this.connect(this.cp.kubeconfigPath);
    // The generated CRDs, as a user would install them.
    await this.kubectl(['apply', '--server-side', '-f', join(repoRoot, 'crds')]);
    await this.kubectl(['wait', '--for=condition=Established', '--timeout=60s', 'crd/shadowsets.shadowset.dev', 'crd/writebitmaps.shadowset.dev']);
    await this.forgetDiscovery();
    this.sim = await NodeSimulator.start({ kubeConfig: this.cp.kubeConfig, nodes: [...NODES] });
    this.op = new Operator({
      kubeConfig: this.cp.kubeConfig,
      log: pino({ level: process.env.OPERATOR_LOG ?? 'info', base: { component: 'operator' } }, destination({ dest: this.operatorLog, sync: true })),
      engineImage: `${PROJECT_IMAGE}:dev`,
      leaderElection: { namespace: 'default', identity: 'e2e' },
      // Loopback only, so unauthenticated metrics are allowed (nothing here scrapes them).
      metrics: { address: '127.0.0.1:0', auth: 'none' }, healthAddress: '127.0.0.1:0',
      // As the chart's Secret would give it: random, once per cluster.
      key: randomBytes(32),
      operatorPods: { namespace: 'default', labels: { 'app.kubernetes.io/name': 'shadowset-e2e' } },
    });
    await this.op.start();
  }

  protected async allocateDevice(_node: string, bytes: number): Promise<Device> {
    // Both simulated nodes are this machine: the node only decides the PV's affinity.
    const d = await createBackingDevice(bytes);
    if (d.kind !== 'loop') {
      await d.release();
      throw new Error('losetup did not give a loop device');
    }
    return { path: d.path, release: () => d.release() };
  }

  protected async readDevice(_node: string, path: string, offset: number, length: number): Promise<Buffer> {
    const fh = await open(path, 'r');
    try {
      const buf = Buffer.alloc(length);
      const { bytesRead } = await fh.read(buf, 0, length, offset);
      if (bytesRead !== length) throw new Error(`short read of ${path}: ${bytesRead} of ${length} at ${offset}`);
      return buf;
    } finally {
      await fh.close();
    }
  }

  protected async writeDevice(_node: string, path: string, offset: number, data: Buffer): Promise<void> {
    const fh = await open(path, 'r+');
    try {
      await fh.write(data, 0, data.length, offset);
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  private async enginePodIP(ns: string, set: string): Promise<string> {
    return waitFor(`engine pod of ${ns}/${set} to have an IP`, async () => {
      const p = await this.get(ns, 'pods', `${set}-engine`);
      return ((p?.status ?? {}) as { podIP?: string }).podIP;
    }, { timeoutMs: 60_000, intervalMs: 200 });
  }

  async engine(ns: string, set: string): Promise<EngineEndpoint> {
    // Pod IPs are loopback addresses of this machine: reachable directly.
    const ip = await this.enginePodIP(ns, set);
    return {
      host: ip, port: 10809, exportName: 'shadow', uri: `nbds://${ip}:10809/shadow`, http: `http://${ip}:8080`,
      ...(await this.credentials(ns, set)), close: async () => undefined,
    };
  }

  async killEngine(ns: string, set: string): Promise<void> {
    const pid = this.sim!.pids(ns, `${set}-engine`).engine;
    if (!pid) throw new Error(`engine of ${ns}/${set} is not running`);
    process.kill(pid, 'SIGKILL');
  }

  async failNode(node: string, how: NodeFailure = 'freeze'): Promise<void> {
    // Simulated nodes share this machine's network: processes that die here close their connections, and
    // peers would see that at once. A power loss, where peers see silence, needs kind.
    if (how !== 'freeze') throw new Error(`the local mode cannot ${how} a node: its processes' peers would see their connections close`);
    // Frozen, not killed: a lost node's peers see silence (and time out), not closed connections.
    await this.sim!.failNode(node, { freeze: true });
  }

  async recoverNode(node: string): Promise<void> {
    await this.sim!.recoverNode(node);
  }

  prepareUpgrade(): Promise<string> {
    return Promise.reject(new Error(NO_RELEASE));
  }

  upgradeRelease(): Promise<{ from: string; to: string }> {
    return Promise.reject(new Error(NO_RELEASE));
  }

  async logs(ns: string, pod: string, container: string): Promise<string> {
    return this.sim?.logs(ns, pod, container) ?? '';
  }

  protected async operatorLogTail(): Promise<string> {
    const text = await readFile(this.operatorLog, 'utf8').catch(() => '');
    return text.split('\n').slice(-60).join('\n');
  }

  override async stop(): Promise<void> {
    const errors: string[] = [];
    const step = async (f: () => Promise<unknown>) => {
      try {
        await f();
      } catch (e) {
        errors.push((e as Error).message);
      }
    };
    // The operator first (it would recreate pods), then the pods' processes, then devices, then the API.
    await step(async () => this.op?.stop());
    await step(async () => this.sim?.stop());
    await step(() => this.cleanup.runAll());
    await step(async () => this.cp?.stop());
    await step(() => super.stop());
    if (errors.length > 0) throw new Error(`stopping the local cluster: ${errors.join('; ')}`);
  }
}
