/**
 * The PVC path on the local control plane: what `npm run demo` shows and `csi/src/itest/pvc-demo.ctest.ts`
 * tests, one code path for both (`resize.ctest.ts` grows volumes on it). Real: the control plane, the
 * operator, the engine and member servers (as the simulator's pods), and the CSI driver `shadowset-csi` as
 * processes — a controller, and a node plugin per simulated node doing stage and publish for real on this
 * host (qemu-storage-daemon → FUSE → loop, bind mounts; root). Simulated: the nodes (e2e's node simulator),
 * and the roles of external-provisioner, external-attacher, the PV controller, a local-volume provisioner
 * for the members (csi-controllers.ts), external-resizer (csi-resizer.ts) and of the kubelet's CSI calls
 * with the attach/detach controller (csi-kubelet.ts), each calling the driver's gRPC API as the real
 * component does.
 */
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import yaml from 'js-yaml';
import { pino, type Logger } from 'pino';
import { ManagedProcess, PROJECT_IMAGE, repoRoot, waitFor } from '@shadowset/e2e';
import { CSI_DRIVER, R, type Obj } from '@shadowset/operator/kube';
import { CsiClient } from './csi-client.js';
import { ExternalAttacher, LOCAL_PROVISIONER, STORAGE_CLASSES, VolumeProvisioner } from './csi-controllers.js';
import { KubeletCsi } from './csi-kubelet.js';
import { ExternalResizer } from './csi-resizer.js';
import { LocalCluster } from './local-cluster.js';
import { leftovers, undoAll } from './node-cleanup.js';

export const PVC_DEMO = { ns: 'demo', claim: 'data', pod: 'writer', shadowClass: 'shadowset', memberClass: 'sim-local', nodes: ['node-a', 'node-b'] } as const;
const WRITER = 'shadowset-demo-writer';
/** The command of a pod that writes, checks and sizes files on a Filesystem volume (fs-probe.ts). */
export const FS_PROBE = 'shadowset-fs-probe';

/** Why the PVC path cannot run here (it needs root, loop devices, FUSE and qemu-storage-daemon), or null. */
export function pvcPathUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'not running as root (the node plugin makes loop devices and FUSE mounts)';
  for (const [tool, args] of [['qemu-storage-daemon', ['--version']], ['losetup', ['--version']], ['fusermount3', ['--version']]] as const) {
    if (spawnSync(tool, [...args], { stdio: 'ignore' }).status !== 0) return `${tool} is missing (Debian: qemu-system-common, util-linux, fuse3)`;
  }
  return null;
}

export interface DemoVolume {
  pvName: string;
  /** The ShadowSet that is the volume (`<namespace>/<name>` is the volume handle). */
  setName: string;
}

export class PvcPath {
  readonly cluster: LocalCluster;
  readonly kubelet: KubeletCsi;
  provisioner!: VolumeProvisioner;
  attacher!: ExternalAttacher;
  resizer!: ExternalResizer;
  private controller: CsiClient | undefined;
  private readonly drivers: ManagedProcess[] = [];

  private constructor(readonly dir: string, readonly log: Logger) {
    this.cluster = new LocalCluster({ name: 'demo', log, unitSocketDir: join(dir, 'units') });
    this.kubelet = new KubeletCsi({ kube: () => this.cluster.kube, socketOf: (n) => this.socketOf(n), kubeletDirOf: (n) => this.kubeletDirOf(n), log });
  }

  socketOf(node: string): string {
    return join(this.dir, 'nodes', node, 'csi.sock');
  }
  kubeletDirOf(node: string): string {
    return join(this.dir, 'nodes', node, 'kubelet');
  }
  get simDir(): string {
    return join(this.dir, 'sim');
  }

  /** Everything up: cluster (two simulated nodes), driver processes, stand-ins, the two StorageClasses. */
  static async start(o: { log?: Logger } = {}): Promise<PvcPath> {
    const env = new PvcPath(await mkdtemp(join(tmpdir(), 'shadowset-pvc-')), o.log ?? pino({ level: 'silent' }));
    try {
      await env.up();
      return env;
    } catch (e) {
      await env.stop();
      throw e;
    }
  }

  private async up(): Promise<void> {
    await mkdir(join(this.dir, 'logs'), { recursive: true });
    await mkdir(this.simDir, { recursive: true });
    const here = fileURLToPath(new URL('.', import.meta.url));
    const commands = { [WRITER]: join(here, 'demo-writer.js'), [FS_PROBE]: join(here, 'fs-probe.js') };
    await this.cluster.start([...PVC_DEMO.nodes], { podKubeconfig: true, volumes: this.kubelet, commands, simWorkDir: this.simDir });
    const bin = join(repoRoot, 'csi', 'bin', 'shadowset-csi.js');
    const driver = async (name: string, args: string[]) => {
      this.drivers.push(await ManagedProcess.start({
        command: process.execPath, args: [bin, ...args, '--log-level', 'info'],
        env: { ...process.env, KUBECONFIG: this.cluster.cp.kubeconfigPath }, output: { file: join(this.dir, 'logs', `csi-${name}.log`) },
      }));
    };
    const controllerSocket = join(this.dir, 'controller', 'csi.sock');
    await driver('controller', ['--mode', 'controller', '--endpoint', `unix://${controllerSocket}`, '--namespace', 'default']);
    for (const node of PVC_DEMO.nodes) {
      await mkdir(this.kubeletDirOf(node), { recursive: true });
      await driver(node, ['--mode', 'node', '--endpoint', `unix://${this.socketOf(node)}`, '--node-id', node, '--kubelet-dir', this.kubeletDirOf(node),
        '--unit-socket-dir', join(this.dir, 'units'), '--state-dir', join(this.dir, 'nodes', node, 'state'), '--reconnect-delay', '30']);
    }
    this.controller = new CsiClient(controllerSocket);
    await this.controller.ready();
    for (const node of PVC_DEMO.nodes) {
      const c = new CsiClient(this.socketOf(node));
      await c.ready();
      c.close();
    }
    const { kube } = this.cluster;
    this.provisioner = new VolumeProvisioner(kube, this.controller, this.log);
    this.attacher = new ExternalAttacher(kube, this.controller, this.log);
    this.resizer = new ExternalResizer(kube, this.controller, this.log);
    this.provisioner.start();
    this.attacher.start();
    this.resizer.start();
    await kube.create(STORAGE_CLASSES, undefined, {
      apiVersion: 'storage.k8s.io/v1', kind: 'StorageClass', metadata: { name: PVC_DEMO.memberClass },
      provisioner: LOCAL_PROVISIONER, volumeBindingMode: 'WaitForFirstConsumer', reclaimPolicy: 'Delete', allowVolumeExpansion: true,
    });
    await kube.create(STORAGE_CLASSES, undefined, {
      apiVersion: 'storage.k8s.io/v1', kind: 'StorageClass', metadata: { name: PVC_DEMO.shadowClass },
      provisioner: CSI_DRIVER, parameters: { memberClass: PVC_DEMO.memberClass, members: '2' }, reclaimPolicy: 'Delete', volumeBindingMode: 'Immediate', allowVolumeExpansion: true,
    });
  }

  /** The demo's claim (Block, of the shadowset class unless told). */
  claimManifest(mib: number, o: { volumeMode?: 'Block' | 'Filesystem'; storageClassName?: string } = {}): Obj {
    return {
      apiVersion: 'v1', kind: 'PersistentVolumeClaim', metadata: { name: PVC_DEMO.claim, namespace: PVC_DEMO.ns },
      spec: { accessModes: ['ReadWriteOnce'], volumeMode: o.volumeMode ?? 'Block', storageClassName: o.storageClassName ?? PVC_DEMO.shadowClass, resources: { requests: { storage: `${mib}Mi` } } },
    };
  }

  /** The consumer: the project image running the demo's writer on the claim's block device. */
  podManifest(name: string = PVC_DEMO.pod): Obj {
    return {
      apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: PVC_DEMO.ns },
      spec: {
        restartPolicy: 'Never', terminationGracePeriodSeconds: 10,
        containers: [{ name: 'writer', image: `${PROJECT_IMAGE}:dev`, command: [WRITER, '/dev/xvda'], volumeDevices: [{ name: 'data', devicePath: '/dev/xvda' }] }],
        volumes: [{ name: 'data', persistentVolumeClaim: { claimName: PVC_DEMO.claim } }],
      },
    };
  }

  /**
   * The manifests, as files for `kubectl apply -f`: `podOn` is the pod pinned to `node` (spec.nodeName),
   * `second` a second pod (`writer-2`) pinned there.
   */
  async writeManifests(mib: number, node: string): Promise<{ claim: string; pod: string; podOn: string; second: string }> {
    const files = { claim: join(this.dir, 'pvc.yaml'), pod: join(this.dir, 'pod.yaml'), podOn: join(this.dir, `pod-${node}.yaml`), second: join(this.dir, `pod-2-${node}.yaml`) };
    const pinned = (name: string) => {
      const p = this.podManifest(name);
      (p.spec as { nodeName?: string }).nodeName = node;
      return p;
    };
    await writeFile(files.claim, yaml.dump(this.claimManifest(mib)));
    await writeFile(files.pod, yaml.dump(this.podManifest()));
    await writeFile(files.podOn, yaml.dump(pinned(PVC_DEMO.pod)));
    await writeFile(files.second, yaml.dump(pinned(`${PVC_DEMO.pod}-2`)));
    return files;
  }

  /** The setup path: the claim (the demo's unless given), Bound; its ShadowSet Steady with both members. */
  async provision(mib: number, timeoutMs = 120_000, claim: Obj = this.claimManifest(mib)): Promise<DemoVolume> {
    const { kube } = this.cluster;
    // A second volume in the same run finds the namespace there.
    await this.cluster.namespace(PVC_DEMO.ns).catch((e: { code?: string }) => {
      if (e.code !== 'OP_CONFLICT') throw e;
    });
    await kube.create(R.pvcs, PVC_DEMO.ns, claim);
    const pvName = await waitFor('the PVC Bound', async () => {
      const c = await kube.get(R.pvcs, PVC_DEMO.ns, PVC_DEMO.claim);
      return (c?.status as { phase?: string } | undefined)?.phase === 'Bound' ? String((c?.spec as { volumeName?: string }).volumeName) : undefined;
    }, { timeoutMs, intervalMs: 250 });
    const pv = await kube.get(R.pvs, undefined, pvName);
    const handle = String((pv?.spec as { csi?: { volumeHandle?: string } }).csi?.volumeHandle);
    const setName = handle.slice(handle.indexOf('/') + 1);
    await this.setSteady(setName, timeoutMs);
    return { pvName, setName };
  }

  async setSteady(setName: string, timeoutMs = 120_000): Promise<Obj> {
    let last: unknown;
    try {
      return await waitFor(`ShadowSet ${setName} Steady with both members`, async () => {
        const s = await this.cluster.kube.get(R.shadowsets, PVC_DEMO.ns, setName);
        const st = (s?.status ?? {}) as { state?: string; membersInSync?: string; conditions?: { type: string; status: string }[] };
        last = st;
        return st.state === 'Steady' && st.membersInSync === '2/2' && st.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ? s! : undefined;
      }, { timeoutMs, intervalMs: 250 });
    } catch (e) {
      throw new Error(`${(e as Error).message}; last status: ${JSON.stringify(last)}`);
    }
  }

  /** Creates the pod and waits for its record written and read back (answers the pod). */
  async runWriter(name: string = PVC_DEMO.pod, timeoutMs = 120_000): Promise<{ pod: Obj; line: { record: { count: number; node: string; pod: string } } }> {
    const { kube, sim } = this.cluster;
    const created = await kube.create(R.pods, PVC_DEMO.ns, this.podManifest(name));
    // Running first: until this pod's containers run, the simulator's log of that name is an earlier pod's.
    await waitFor(`pod ${name} running`, async () => {
      const p = await kube.get(R.pods, PVC_DEMO.ns, name);
      return p?.metadata.uid === created.metadata.uid && (p?.status as { phase?: string } | undefined)?.phase === 'Running';
    }, { timeoutMs, intervalMs: 250 });
    const line = await waitFor(`pod ${name} wrote its record`, () => {
      const log = sim.logs(PVC_DEMO.ns, name, 'writer');
      if (/"event":"Failed"/.test(log)) throw new Error(`the writer failed: ${log}`);
      const l = log.split('\n').find((x) => x.includes('"event":"RecordWritten"'));
      return l ? (JSON.parse(l) as { record: { count: number; node: string; pod: string } }) : undefined;
    }, { timeoutMs, intervalMs: 250 });
    return { pod: (await kube.get(R.pods, PVC_DEMO.ns, name))!, line };
  }

  /** Deletes the pod and waits until it is gone (its volume unpublished, unstaged and detached first). */
  async deletePod(name: string = PVC_DEMO.pod, timeoutMs = 90_000): Promise<void> {
    const { kube } = this.cluster;
    await kube.delete(R.pods, PVC_DEMO.ns, name);
    await waitFor(`pod ${name} gone`, async () => (await kube.get(R.pods, PVC_DEMO.ns, name)) === null, { timeoutMs, intervalMs: 250 });
  }

  /** Deletes the claim and waits until its PV is gone (DeleteVolume: the set dissolved), then its member claims and their volumes. */
  async deleteClaim(pvName: string, timeoutMs = 120_000): Promise<void> {
    const { kube } = this.cluster;
    const pv = await kube.get(R.pvs, undefined, pvName);
    const handle = String((pv?.spec as { csi?: { volumeHandle?: string } } | undefined)?.csi?.volumeHandle ?? '');
    const set = handle ? await kube.get(R.shadowsets, PVC_DEMO.ns, handle.slice(handle.indexOf('/') + 1)) : null;
    const memberClaims = ((set?.spec as { members?: { claimName?: string }[] } | undefined)?.members ?? []).flatMap((m) => m.claimName ?? []);
    await kube.delete(R.pvcs, PVC_DEMO.ns, PVC_DEMO.claim);
    await waitFor(`PV ${pvName} deleted`, async () => (await kube.get(R.pvs, undefined, pvName)) === null, { timeoutMs, intervalMs: 250 });
    await waitFor('the member claims and their volumes deleted', async () => {
      for (const c of memberClaims) if (await kube.get(R.pvcs, PVC_DEMO.ns, c)) return false;
      const pvs = (await kube.list(R.pvs)).items;
      return !pvs.some((p) => memberClaims.includes(String((p.spec as { claimRef?: { name?: string } }).claimRef?.name)));
    }, { timeoutMs, intervalMs: 250 });
  }

  /** The pods that use the demo's claim, then the claim: what a clean Ctrl-C undoes through the API. */
  async tearDownVolumes(timeoutMs = 120_000): Promise<void> {
    const { kube } = this.cluster;
    const pods = (await kube.list(R.pods, PVC_DEMO.ns)).items.filter((p) => ((p.spec as { volumes?: { persistentVolumeClaim?: { claimName?: string } }[] }).volumes ?? []).some((v) => v.persistentVolumeClaim?.claimName === PVC_DEMO.claim));
    await Promise.all(pods.map((p) => this.deletePod(p.metadata.name, timeoutMs)));
    const claim = await kube.get(R.pvcs, PVC_DEMO.ns, PVC_DEMO.claim);
    const pvName = (claim?.spec as { volumeName?: string } | undefined)?.volumeName;
    if (claim && pvName) await this.deleteClaim(pvName, timeoutMs);
    else if (claim) await kube.delete(R.pvcs, PVC_DEMO.ns, PVC_DEMO.claim);
  }

  /** What is left on the host: under the work directory (leftovers), and loop devices over the member devices' files. */
  async leftovers(): Promise<string[]> {
    const loops = spawnSync('losetup', ['-a'], { encoding: 'utf8' }).stdout.split('\n');
    const made = this.provisioner?.made ?? [];
    return [...(await leftovers(this.dir)), ...loops.filter((l) => made.some((f) => l.includes(`(${f})`))).map((l) => `loop ${l}`)];
  }

  /** Stops everything and undoes whatever is left on the host (mounts, loop devices, daemons under dir; the member devices). */
  async stop(): Promise<void> {
    const errors: unknown[] = [];
    const step = async (f: () => Promise<unknown> | undefined) => {
      try {
        await f();
      } catch (e) {
        errors.push(e);
      }
    };
    await step(() => this.cluster.stop());
    await step(() => this.attacher?.stop());
    await step(() => this.resizer?.stop());
    await step(() => this.provisioner?.stop());
    this.kubelet.close();
    this.controller?.close();
    for (const d of this.drivers) await step(() => d.stop());
    await step(() => undoAll(this.dir));
    await step(() => this.provisioner?.releaseAll());
    if (process.env.SHADOWSET_KEEP_CLUSTER !== '1') await step(() => rm(this.dir, { recursive: true, force: true }));
    if (errors.length > 0) throw errors[0];
  }
}
