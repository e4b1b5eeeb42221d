// kind mode (E2E_CLUSTER=kind): the same scenarios on a kind cluster with real kubelets, scheduler and
// controller-manager. The project image is built here and loaded into the nodes, the Helm chart installed,
// and local PVs made on loop devices created inside the kind node containers (they share this machine's
// kernel, so the test process reads the same devices through `docker exec`). Pod IPs are not reachable
// from the host, so the engine's NBD and HTTP ports are reached through a small relay pod and
// `kubectl port-forward`. Node failures are done to the node containers (see kind-nodes.ts). See
// e2e/README.md ("kind mode").
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ManagedProcess, waitFor, repoRoot, DOCKER, ensureKindToolchain } from '@shadowset/e2e';
import { ensureTools } from '@shadowset/testkit/cluster/tools';
import { available, run, runBytes } from '../support/exec.js';
import { BaseEnv, type Device } from './base-env.js';
import type { EngineEndpoint, NodeFailure } from './cluster-env.js';
import { KindNodes } from './kind-nodes.js';
import { deviceDir, openKindSession, type KindSession } from './kind-session.js';

const IMAGE_REPO = 'ghcr.io/shadowset/shadowset';
const IMAGE_TAG = 'e2e';
export const IMAGE = `${IMAGE_REPO}:${IMAGE_TAG}`;
const RELEASE = 'shadowset';
const RELEASE_NS = 'shadowset-system';
const HOST_TOOLS = ['losetup', 'mount', 'umount', 'mkfs.ext4', 'e2fsck', 'qemu-storage-daemon', 'fusermount3'];

// Forwards the engine's NBD and HTTP ports from the relay pod (reached by port-forward) to the engine pod.
// It writes /tmp/ready once both ports listen, and its readiness probe waits for that file: a container that
// has merely started may not listen yet, and a port-forward connection made then is closed at once.
const RELAY_JS = `const net=require('net'),fs=require('fs');let n=0;for(const p of [10809,8080]){net.createServer((c)=>{const u=net.connect(p,process.env.TARGET);c.pipe(u);u.pipe(c);c.on('error',()=>u.destroy());u.on('error',()=>c.destroy());c.on('close',()=>u.destroy());u.on('close',()=>c.destroy());}).listen(p,'127.0.0.1',()=>{if(++n===2)fs.writeFileSync('/tmp/ready','');});}`;

const sh = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** The project image, built by scripts/build-image.mjs (no pull, no network in the build). */
export async function buildImage(tag: string, labels: string[] = []): Promise<void> {
  await run(process.execPath, [join(repoRoot, 'scripts', 'build-image.mjs'), '--tag', tag, ...labels.flatMap((l) => ['--label', l])], { timeoutMs: 1_800_000 });
}

export class KindEnv extends BaseEnv {
  readonly mode = 'kind' as const;
  nodes: readonly [string, string] = ['', ''];
  private controlPlaneNode = '';
  private readonly namespaces: string[] = [];
  private readonly nodeOps = new KindNodes((args, o) => this.kubectl(args, o));
  private upgrades = 0;

  private session: KindSession | undefined;

  private constructor(
    workDir: string,
    private readonly cluster: string,
    private readonly say?: (line: string) => void,
    /** the chart's csi values (csi.enabled is implied); the sidecar images built here are loaded first */
    private readonly csi?: Record<string, unknown>,
    /** more images built here (never pulled) to `kind load` into the nodes, e.g. a workload's */
    private readonly images: readonly string[] = [],
  ) {
    super(workDir);
  }

  /**
   * `cluster`: the kind cluster's name (made here unless the kind tier's runner made it); `hostTools`: whether
   * the scenarios' tools on this machine (mounts, FUSE) are needed too; `log`: progress lines (the cluster's
   * creation and each step after it).
   */
  static async start(name: string, o: { cluster?: string; hostTools?: boolean; log?: (line: string) => void; csi?: Record<string, unknown>; images?: string[] } = {}): Promise<KindEnv> {
    const missing: string[] = [];
    if (process.getuid?.() !== 0) missing.push('root (loop devices in the nodes; the filesystem scenario mounts on this machine)');
    if (!(await available(DOCKER, ['--version']))) missing.push('Debian\'s docker.io (npm run cluster:build -- --kind installs it)');
    if (o.hostTools !== false) for (const t of HOST_TOOLS) if (!(await available('sh', ['-c', `command -v ${t}`]))) missing.push(t);
    if (missing.length > 0) throw new Error(`E2E_CLUSTER=kind needs: ${missing.join(', ')}. Without them run the local mode (unset E2E_CLUSTER).`);
    return BaseEnv.booted(new KindEnv(await BaseEnv.makeWorkDir(name), o.cluster ?? process.env.E2E_KIND_CLUSTER ?? 'shadowset-e2e', o.log, o.csi, o.images));
  }

  protected async boot(): Promise<void> {
    this.session = await openKindSession({ name: this.cluster, ...(this.say ? { log: this.say } : {}) });
    const session = this.session;
    this.cleanup.defer(`kind cluster ${session.name}`, () => session.close());
    this.connect(session.kubeconfigPath);

    const nodes = JSON.parse((await this.kubectl(['get', 'nodes', '-o', 'json'])).stdout) as { items: { metadata: { name: string; labels?: Record<string, string> } }[] };
    const isCp = (n: { metadata: { labels?: Record<string, string> } }) => 'node-role.kubernetes.io/control-plane' in (n.metadata.labels ?? {});
    const workers = nodes.items.filter((n) => !isCp(n)).map((n) => n.metadata.name).sort();
    this.controlPlaneNode = nodes.items.find(isCp)?.metadata.name ?? '';
    if (workers.length < 2 || !this.controlPlaneNode) throw new Error(`kind cluster ${session.name} needs a control-plane node and two workers; it has ${nodes.items.map((n) => n.metadata.name).join(', ')}`);
    this.nodes = [workers[0]!, workers[1]!];

    if (process.env.E2E_KIND_SKIP_BUILD !== '1') {
      this.say?.(`building the image ${IMAGE} (scripts/build-image.mjs)…`);
      await buildImage(IMAGE);
    }
    this.say?.(`loading ${IMAGE} into the nodes (kind load docker-image)…`);
    await session.loadImage(IMAGE);
    if (this.csi) {
      // The CSI sidecars' images, built from their Go modules by the kind toolchain (never pulled).
      for (const ref of (await ensureKindToolchain(this.say)).csiSidecars) {
        this.say?.(`loading ${ref} into the nodes…`);
        await session.loadImage(ref);
      }
    }
    for (const ref of this.images) {
      this.say?.(`loading ${ref} into the nodes…`);
      await session.loadImage(ref);
    }
    this.say?.(`installing the chart (helm upgrade --install ${RELEASE} -n ${RELEASE_NS})…`);
    await this.installRelease();
  }

  /**
   * The chart, with the operator on the control-plane node: the scenarios stop and pause workers, and an
   * operator on one of them would wait out its eviction (minutes) before anything is reconciled. A release
   * that is already there (a shared cluster) is upgraded to these values and left installed.
   */
  private async installRelease(): Promise<void> {
    const values = join(this.workDir, 'values.yaml');
    await writeFile(values, JSON.stringify({
      image: { tag: IMAGE_TAG, pullPolicy: 'Never' },
      nodeSelector: { 'node-role.kubernetes.io/control-plane': '' },
      tolerations: [{ key: 'node-role.kubernetes.io/control-plane', operator: 'Exists', effect: 'NoSchedule' }],
      ...(this.csi ? { csi: { ...this.csi, enabled: true } } : {}),
    }));
    const existed = (await this.helm(['status', RELEASE, '-n', RELEASE_NS], { allowFail: true })).code === 0;
    await this.helm([
      'upgrade', '--install', RELEASE, join(repoRoot, 'charts', 'shadowset'), '-n', RELEASE_NS, '--create-namespace',
      '-f', values, '--wait', '--timeout', '300s',
    ], { timeoutMs: 360_000 });
    // Helm does not upgrade CRDs: apply the current ones (a reused cluster may hold older ones).
    await this.kubectl(['apply', '--server-side', '--force-conflicts', '-f', join(repoRoot, 'charts', 'shadowset', 'crds')]);
    await this.kubectl(['wait', '--for=condition=Established', '--timeout=60s', 'crd/shadowsets.shadowset.dev', 'crd/writebitmaps.shadowset.dev']);
    await this.forgetDiscovery();
    if (!existed) this.cleanup.defer(`helm uninstall ${RELEASE}`, () => this.helm(['uninstall', RELEASE, '-n', RELEASE_NS, '--wait'], { allowFail: true }));
  }

  private helm(args: string[], o: { allowFail?: boolean; timeoutMs?: number } = {}) {
    return run(ensureTools().helm, ['--kubeconfig', this.kubeconfigPath, ...args], o);
  }

  private async releaseImage(): Promise<string> {
    const d = JSON.parse((await this.kubectl(['get', 'deployment', RELEASE, '-n', RELEASE_NS, '-o', 'json'])).stdout) as { spec: { template: { spec: { containers: { image: string }[] } } } };
    return d.spec.template.spec.containers[0]!.image;
  }

  async prepareUpgrade(): Promise<string> {
    this.upgrades++;
    const image = `${IMAGE_REPO}:${IMAGE_TAG}-upgrade-${this.upgrades}`;
    // Another image, not only another name for the same one: its configuration carries a label of its own.
    await buildImage(image, [`shadowset.dev/e2e-upgrade=${this.upgrades}`]);
    await this.session!.loadImage(image);
    return image;
  }

  async upgradeRelease(image: string): Promise<{ from: string; to: string }> {
    const from = await this.releaseImage();
    const tag = image.slice(image.lastIndexOf(':') + 1);
    if (`${IMAGE_REPO}:${tag}` !== image) throw new Error(`${image} is not an image of ${IMAGE_REPO}`);
    await this.helm(['upgrade', RELEASE, join(repoRoot, 'charts', 'shadowset'), '-n', RELEASE_NS, '--reuse-values', '--set', `image.tag=${tag}`, '--wait', '--timeout', '300s'], { timeoutMs: 360_000 });
    await this.kubectl(['rollout', 'status', `deployment/${RELEASE}`, '-n', RELEASE_NS, '--timeout=180s']);
    return { from, to: await this.releaseImage() };
  }

  private docker(node: string, script: string, input?: Buffer): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return run(DOCKER, ['exec', ...(input ? ['-i'] : []), node, 'sh', '-c', script], input ? { input } : {});
  }

  override async createNamespace(ns: string): Promise<void> {
    await super.createNamespace(ns);
    this.namespaces.push(ns);
  }

  /**
   * A local Block PV of `storageClass` on `node`, bound to no claim: for a provisioner's claims to bind to
   * (the PV controller picks it for a claim of that class). Returns the PV's name; it and its loop device are
   * removed at stop.
   */
  async offerBlockVolume(node: string, name: string, mib: number, storageClass: string): Promise<string> {
    const dev = await this.allocateDevice(node, mib * 1024 * 1024, `offer-${name}`);
    this.cleanup.defer(`release device of PV ${name}`, () => dev.release());
    await this.core.createPersistentVolume({
      body: {
        metadata: { name, labels: { 'shadowset.dev/e2e': 'true' } },
        spec: {
          capacity: { storage: `${mib}Mi` }, accessModes: ['ReadWriteOnce'], volumeMode: 'Block', storageClassName: storageClass,
          persistentVolumeReclaimPolicy: 'Retain', local: { path: dev.path },
          nodeAffinity: { required: { nodeSelectorTerms: [{ matchExpressions: [{ key: 'kubernetes.io/hostname', operator: 'In', values: [node] }] }] } },
        },
      },
    });
    this.cleanup.defer(`delete PV ${name}`, () => this.core.deletePersistentVolume({ name }).catch(() => undefined));
    return name;
  }

  protected async allocateDevice(node: string, bytes: number, name: string): Promise<Device> {
    const dir = deviceDir(this.cluster);
    const file = `${dir}/${name}.img`;
    // The node container's /dev is its own: make the loop device's node there if the kernel's is missing.
    const script = [
      'set -e', `mkdir -p ${dir}`, `rm -f ${sh(file)}`, `truncate -s ${bytes} ${sh(file)}`,
      'for i in 1 2 3 4 5; do',
      '  dev=$(losetup -f)', '  [ -b "$dev" ] || mknod "$dev" b 7 "${dev#/dev/loop}"',
      `  if losetup "$dev" ${sh(file)}; then echo "$dev"; exit 0; fi`,
      'done', 'exit 1',
    ].join('\n');
    const dev = (await this.docker(node, script)).stdout.trim();
    if (!/^\/dev\/loop\d+$/.test(dev)) throw new Error(`no loop device on ${node}: '${dev}'`);
    return { path: dev, release: () => this.docker(node, `losetup -d ${dev}; rm -f ${sh(file)}`).then(() => undefined) };
  }

  protected readDevice(node: string, path: string, offset: number, length: number): Promise<Buffer> {
    return runBytes(DOCKER, ['exec', node, 'dd', `if=${path}`, 'bs=1M', 'iflag=skip_bytes,count_bytes', `skip=${offset}`, `count=${length}`, 'status=none'], { timeoutMs: 300_000 });
  }

  protected async writeDevice(node: string, path: string, offset: number, data: Buffer): Promise<void> {
    await this.docker(node, `dd of=${path} bs=1M oflag=seek_bytes seek=${offset} conv=notrunc,fsync status=none`, data);
  }

  async engine(ns: string, set: string): Promise<EngineEndpoint> {
    const ip = await waitFor(`engine pod of ${ns}/${set} to have an IP`, async () => {
      const p = await this.get(ns, 'pods', `${set}-engine`);
      return ((p?.status ?? {}) as { podIP?: string }).podIP;
    }, { timeoutMs: 120_000, intervalMs: 500 });
    const relay = `e2e-relay-${createHash('sha256').update(`${set}/${ip}`).digest('hex').slice(0, 10)}`;
    if (!(await this.get(ns, 'pods', relay))) {
      await this.core.createNamespacedPod({
        namespace: ns,
        body: {
          metadata: { name: relay, labels: { 'shadowset.dev/e2e-relay': set } },
          spec: {
            nodeName: this.controlPlaneNode, // not on a worker that a scenario may stop
            tolerations: [{ key: 'node-role.kubernetes.io/control-plane', operator: 'Exists', effect: 'NoSchedule' }],
            restartPolicy: 'Always',
            containers: [{ name: 'relay', image: IMAGE, imagePullPolicy: 'Never', command: ['node', '-e', RELAY_JS], env: [{ name: 'TARGET', value: ip }],
              readinessProbe: { exec: { command: ['cat', '/tmp/ready'] }, periodSeconds: 1, failureThreshold: 120 } }],
          },
        },
      });
      // The set's NetworkPolicy admits its engine's HTTP API from the operator's pods only; policies add
      // up, so one more lets the relay in as well (the export port is open to all anyway).
      await this.apply(`relay-policy-${ns}-${set}.yaml`, JSON.stringify({
        apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy',
        metadata: { name: `e2e-relay-${set}`, namespace: ns },
        spec: {
          podSelector: { matchLabels: { 'shadowset.dev/shadowset': set, 'shadowset.dev/role': 'engine' } },
          policyTypes: ['Ingress'],
          ingress: [{ from: [{ podSelector: { matchLabels: { 'shadowset.dev/e2e-relay': set } } }], ports: [{ protocol: 'TCP', port: 8080 }] }],
        },
      }));
      // Relays live as long as the environment: several endpoints may share one.
      this.cleanup.defer(`delete relay ${relay}`, () => this.core.deleteNamespacedPod({ name: relay, namespace: ns, gracePeriodSeconds: 0 }).catch(() => undefined));
    }
    await this.kubectl(['wait', '-n', ns, '--for=condition=Ready', `pod/${relay}`, '--timeout=120s']);
    let out = '';
    const pf = await ManagedProcess.start({
      command: ensureTools().kubectl,
      args: ['--kubeconfig', this.kubeconfigPath, 'port-forward', '-n', ns, `pod/${relay}`, ':10809', ':8080'],
      output: (chunk) => (out += chunk.toString('utf8')),
    });
    const ports = await waitFor('kubectl port-forward to listen', () => {
      const nbd = /127\.0\.0\.1:(\d+) -> 10809/.exec(out)?.[1];
      const http = /127\.0\.0\.1:(\d+) -> 8080/.exec(out)?.[1];
      if (!pf.running) throw new Error(`kubectl port-forward exited: ${out}`);
      return nbd && http ? { nbd: Number(nbd), http: Number(http) } : undefined;
    }, { timeoutMs: 30_000 });
    const release = this.cleanup.defer(`stop port-forward to ${relay}`, () => pf.stop());
    return {
      host: '127.0.0.1', port: ports.nbd, exportName: 'shadow', uri: `nbds://127.0.0.1:${ports.nbd}/shadow`,
      http: `http://127.0.0.1:${ports.http}`, ...(await this.credentials(ns, set)), close: release,
    };
  }

  async killEngine(ns: string, set: string): Promise<void> {
    const p = (await this.get(ns, 'pods', `${set}-engine`)) as { spec?: { nodeName?: string }; status?: { containerStatuses?: { name: string; containerID?: string }[] } } | null;
    const id = p?.status?.containerStatuses?.find((c) => c.name === 'engine')?.containerID?.replace(/^[a-z]+:\/\//, '');
    const node = p?.spec?.nodeName;
    if (!id || !node) throw new Error(`engine of ${ns}/${set} is not running`);
    // The container's main process, by its id, as the node's runtime knows it.
    const pid = (await this.docker(node, `crictl inspect --output go-template --template '{{.info.pid}}' ${id}`)).stdout.trim();
    if (!/^\d+$/.test(pid)) throw new Error(`no pid for container ${id} on ${node}: '${pid}'`);
    await this.docker(node, `kill -9 ${pid}`);
  }

  failNode(node: string, how: NodeFailure = 'freeze'): Promise<void> {
    return this.nodeOps.fail(node, how);
  }

  recoverNode(node: string): Promise<void> {
    return this.nodeOps.recover(node);
  }

  async logs(ns: string, pod: string, container: string): Promise<string> {
    const prev = await this.kubectl(['logs', '-n', ns, pod, '-c', container, '--previous'], { allowFail: true });
    const cur = await this.kubectl(['logs', '-n', ns, pod, '-c', container], { allowFail: true });
    return (prev.code === 0 ? prev.stdout : '') + (cur.code === 0 ? cur.stdout : '');
  }

  protected async operatorLogTail(): Promise<string> {
    return (await this.kubectl(['logs', '-n', RELEASE_NS, `deployment/${RELEASE}`, '--tail=60'], { allowFail: true })).stdout;
  }

  override async stop(): Promise<void> {
    await this.nodeOps.recoverAll();
    // Dissolve the scenarios' sets while the operator still runs, so their namespaces can go.
    for (const ns of this.namespaces) {
      await this.kubectl(['delete', 'shadowsets', '--all', '-n', ns, '--wait', '--timeout=180s'], { allowFail: true });
    }
    await super.stop();
  }
}
