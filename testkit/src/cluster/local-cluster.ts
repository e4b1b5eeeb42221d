/**
 * The operator on a local control plane, in this process: what the operator's control-plane tests and the
 * demo both set up. etcd + kube-apiserver (e2e), the generated CRDs (established before anything uses
 * them), the node simulator running pods as processes, local block PVs on loop devices (or plain files
 * without root) with pre-bound claims, and the operator with its listeners on loopback.
 *
 * `stop()` undoes whatever `start()` got to, so a start cut short (a failure, or Ctrl-C in the demo)
 * leaves nothing running.
 */
import { randomBytes } from 'node:crypto';
import { pino, type Logger } from 'pino';
import { startControlPlane, NodeSimulator, createBackingDevice, waitFor, PROJECT_IMAGE, type ControlPlane, type BackingDevice, type CommandTable, type PodVolumePlugin, type SimulatedNodeSpec } from '@shadowset/e2e';
import { buildCrds, Kube, Operator, R, rawRequest, type Hooks } from '@shadowset/operator';

/**
 * The CRDs as the operator generates them, posted as raw JSON (a typed client would drop their defaults
 * and x-kubernetes-* extensions). Returns once each is Established and its resources can be listed: an
 * Established CRD's storage may still be initializing, and a watch started then fails (429) and relists.
 */
export async function installCrds(cp: ControlPlane): Promise<void> {
  const kube = new Kube(cp.kubeConfig);
  for (const { object } of buildCrds()) {
    await rawRequest(cp.kubeConfig, { method: 'POST', path: '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', body: object });
  }
  for (const { object } of buildCrds()) {
    const crd = object as { metadata: { name: string }; spec: { group: string; names: { plural: string }; versions: { name: string; storage: boolean }[] } };
    const name = crd.metadata.name;
    await waitFor(`CRD ${name} established`, async () => {
      const c = await kube.get({ group: 'apiextensions.k8s.io', version: 'v1', plural: 'customresourcedefinitions', namespaced: false }, undefined, name);
      return ((c?.status as { conditions?: { type: string; status: string }[] })?.conditions ?? []).some((x) => x.type === 'Established' && x.status === 'True');
    });
    const version = crd.spec.versions.find((v) => v.storage)!.name;
    await waitFor(`${name} served`, async () => {
      await kube.list({ group: crd.spec.group, version, plural: crd.spec.names.plural, namespaced: true }, 'default');
      return true;
    });
  }
}

export interface LocalClusterOptions {
  /** Names the operator's leader-election identity and the label its pods would carry (`shadowset-<name>`). */
  name: string;
  /** The operator's log (default: silent, or the level in OPERATOR_LOG). */
  log?: Logger;
  /** Runs the pre-freeze and post-thaw hooks of a split (default: the operator's own, exec in the pod). */
  hooks?: Hooks;
  /** The operator's unit-socket directory (engines of attached sets serve their unit there); unset: none. */
  unitSocketDir?: string;
}

export class LocalCluster {
  cp!: ControlPlane;
  sim!: NodeSimulator;
  kube!: Kube;
  op!: Operator;
  /** The operator's key, as the chart's Secret would hold it: every set's token and PSKs derive from it. */
  readonly key = randomBytes(32);
  readonly operatorPods: { namespace: string; labels: Record<string, string> };
  /** The devices behind the PVs, by `namespace/claim`. */
  readonly disks = new Map<string, BackingDevice>();

  constructor(private readonly opts: LocalClusterOptions) {
    this.operatorPods = { namespace: 'default', labels: { 'app.kubernetes.io/name': `shadowset-${opts.name}` } };
  }

  /**
   * Control plane, CRDs, simulated nodes, then the operator. `volumes` sets up pods' CSI volumes (the
   * kubelet's part), `commands` adds programs pods may run, `simWorkDir` holds the pods' directories.
   */
  async start(nodes: (string | SimulatedNodeSpec)[], o: { podKubeconfig?: boolean; volumes?: PodVolumePlugin; commands?: CommandTable; simWorkDir?: string } = {}): Promise<void> {
    this.cp = await startControlPlane();
    this.kube = new Kube(this.cp.kubeConfig);
    await installCrds(this.cp);
    this.sim = await NodeSimulator.start({
      kubeConfig: this.cp.kubeConfig, nodes, ...(o.podKubeconfig ? { podKubeconfig: this.cp.kubeconfigPath } : {}),
      ...(o.volumes ? { volumes: o.volumes } : {}), ...(o.commands ? { commands: o.commands } : {}), ...(o.simWorkDir ? { workDir: o.simWorkDir } : {}),
    });
    this.op = new Operator({
      kubeConfig: this.cp.kubeConfig, log: this.opts.log ?? pino({ level: process.env.OPERATOR_LOG ?? 'silent' }), engineImage: `${PROJECT_IMAGE}:dev`,
      leaderElection: { namespace: 'default', identity: this.opts.name },
      // Loopback only, so unauthenticated metrics are allowed (nothing here scrapes them).
      metrics: { address: '127.0.0.1:0', auth: 'none' }, healthAddress: '127.0.0.1:0',
      ...(this.opts.hooks ? { hooks: this.opts.hooks } : {}),
      key: this.key, operatorPods: this.operatorPods,
      ...(this.opts.unitSocketDir ? { unitSocketDir: this.opts.unitSocketDir } : {}),
    });
    await this.op.start();
  }

  /** Every step runs even if one before it failed; the first failure is thrown at the end. */
  async stop(): Promise<void> {
    const errors: unknown[] = [];
    const step = async (f: () => Promise<unknown> | undefined) => {
      try {
        await f();
      } catch (e) {
        errors.push(e);
      }
    };
    await step(() => this.op?.stop());
    await step(() => this.sim?.stop());
    await step(() => this.cp?.stop());
    for (const d of this.disks.values()) await d.release().catch(() => undefined);
    if (errors.length > 0) throw errors[0];
  }

  async namespace(ns: string): Promise<void> {
    await this.kube.create({ group: '', version: 'v1', plural: 'namespaces', namespaced: false }, undefined, { metadata: { name: ns } });
  }

  /** A local PV `pv-<ns>-<name>` on `node` over a fresh zeroed device, pre-bound to a claim `name`. */
  async blockClaim(ns: string, name: string, node: string, mib = 48, mode: 'Block' | 'Filesystem' = 'Block'): Promise<BackingDevice> {
    const disk = await createBackingDevice(mib * 1024 * 1024);
    this.disks.set(`${ns}/${name}`, disk);
    await this.kube.create(R.pvs, undefined, {
      metadata: { name: `pv-${ns}-${name}` },
      spec: {
        capacity: { storage: `${mib}Mi` }, accessModes: ['ReadWriteOnce'], volumeMode: mode, storageClassName: 'local',
        local: { path: disk.path },
        nodeAffinity: { required: { nodeSelectorTerms: [{ matchExpressions: [{ key: 'kubernetes.io/hostname', operator: 'In', values: [node] }] }] } },
        claimRef: { namespace: ns, name },
      },
    });
    await this.kube.create(R.pvcs, ns, {
      metadata: { name },
      spec: { accessModes: ['ReadWriteOnce'], volumeMode: mode, storageClassName: 'local', volumeName: `pv-${ns}-${name}`, resources: { requests: { storage: `${mib}Mi` } } },
    });
    return disk;
  }
}
