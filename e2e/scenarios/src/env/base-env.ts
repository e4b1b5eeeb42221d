// The parts of a ClusterEnv that only need a kubeconfig: kubectl, reading objects, events, watches,
// namespaces and pre-bound local PVs. The modes differ in where devices live and how pods are reached.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, CustomObjectsApi, KubeConfig, Watch } from '@kubernetes/client-node';
import { ensureTools } from '@shadowset/testkit/cluster/tools';
import { Cleanup } from '../support/cleanup.js';
import { run, type RunResult } from '../support/exec.js';
import type { BlockVolume, ClusterEnv, EngineEndpoint, KubeEvent, NodeFailure, SetCredentials } from './cluster-env.js';

const GROUP = 'shadowset.dev';
const VERSION = 'v1alpha1';
type Json = Record<string, unknown>;

export interface Device {
  path: string;
  release(): Promise<void>;
}

const notFound = (e: unknown) => (e as { code?: number }).code === 404;

export abstract class BaseEnv implements ClusterEnv {
  abstract readonly mode: 'local' | 'kind';
  abstract readonly nodes: readonly [string, string];
  protected readonly cleanup = new Cleanup();
  protected kc!: KubeConfig;
  protected core!: CoreV1Api;
  protected custom!: CustomObjectsApi;
  kubeconfigPath = '';

  protected constructor(readonly workDir: string) {}

  protected static async makeWorkDir(name: string): Promise<string> {
    return mkdtemp(join(tmpdir(), `shadowset-e2e-${name}-`));
  }

  /**
   * The set's keys from its Secrets, as a consumer (the export PSK) and a cluster admin (the token) read
   * them; the PSK is written out for libnbd and qemu under workDir.
   */
  protected async credentials(ns: string, set: string): Promise<SetCredentials> {
    const data = async (name: string, key: string): Promise<string> => {
      const sec = await this.core.readNamespacedSecret({ name, namespace: ns });
      const v = sec.data?.[key];
      if (!v) throw new Error(`Secret ${ns}/${name} has no ${key}`);
      return Buffer.from(v, 'base64').toString('utf8').trim();
    };
    const line = await data(`${set}-shadowset-export`, 'psk');
    const [identity, hex] = line.split(':') as [string, string];
    const pskDir = join(this.workDir, 'psk', `${ns}-${set}`);
    await mkdir(pskDir, { recursive: true, mode: 0o700 });
    const pskFile = join(pskDir, 'keys.psk');
    await writeFile(pskFile, `${line}\n`, { mode: 0o600 });
    return { psk: { identity, key: Buffer.from(hex, 'hex') }, pskFile, pskDir, token: await data(`${set}-shadowset-internal`, 'control-token') };
  }

  /** Boot `env`; if that fails, undo whatever it had started before passing the error on. */
  protected static async booted<E extends BaseEnv>(env: E): Promise<E> {
    try {
      await env.boot();
    } catch (e) {
      await env.stop().catch(() => undefined);
      throw e;
    }
    return env;
  }

  protected abstract boot(): Promise<void>;

  /** Start using the cluster of `kubeconfigPath`. */
  protected connect(kubeconfigPath: string): void {
    this.kubeconfigPath = kubeconfigPath;
    this.kc = new KubeConfig();
    this.kc.loadFromFile(kubeconfigPath);
    this.core = this.kc.makeApiClient(CoreV1Api);
    this.custom = this.kc.makeApiClient(CustomObjectsApi);
  }

  /** The device behind a new volume, on `node`. */
  protected abstract allocateDevice(node: string, bytes: number, name: string): Promise<Device>;
  protected abstract readDevice(node: string, path: string, offset: number, length: number): Promise<Buffer>;
  protected abstract writeDevice(node: string, path: string, offset: number, data: Buffer): Promise<void>;
  abstract engine(ns: string, set: string): Promise<EngineEndpoint>;
  abstract killEngine(ns: string, set: string): Promise<void>;
  abstract failNode(node: string, how?: NodeFailure): Promise<void>;
  abstract recoverNode(node: string): Promise<void>;
  abstract prepareUpgrade(): Promise<string>;
  abstract upgradeRelease(image: string): Promise<{ from: string; to: string }>;
  abstract logs(ns: string, pod: string, container: string): Promise<string>;
  protected abstract operatorLogTail(): Promise<string>;

  kubectl(args: string[], opts: { input?: string; allowFail?: boolean; timeoutMs?: number } = {}): Promise<RunResult> {
    return run(ensureTools().kubectl, ['--kubeconfig', this.kubeconfigPath, '--cache-dir', join(this.workDir, 'kubectl-cache'), ...args], { ...opts, timeoutMs: opts.timeoutMs ?? 120_000 });
  }

  /**
   * Drop kubectl's discovery cache: one taken before the CRDs were installed makes kubectl misread
   * `kubectl delete shadowset NAME` ("you must specify only one resource").
   */
  protected async forgetDiscovery(): Promise<void> {
    await rm(join(this.workDir, 'kubectl-cache'), { recursive: true, force: true });
  }

  async apply(name: string, yamlText: string, opts: { allowFail?: boolean } = {}): Promise<RunResult> {
    const file = join(this.workDir, name);
    await writeFile(file, yamlText);
    return this.kubectl(['apply', '-f', file], opts);
  }

  async createNamespace(ns: string): Promise<void> {
    await this.core.createNamespace({ body: { metadata: { name: ns } } });
    this.cleanup.defer(`delete namespace ${ns}`, () => this.core.deleteNamespace({ name: ns }).catch(() => undefined));
  }

  async createBlockVolume(ns: string, claim: string, node: string, mib: number, volumeMode: 'Block' | 'Filesystem' = 'Block'): Promise<BlockVolume> {
    const bytes = mib * 1024 * 1024;
    const dev = await this.allocateDevice(node, bytes, `${ns}-${claim}`);
    this.cleanup.defer(`release device of ${ns}/${claim}`, () => dev.release());
    const pv = `e2e-${ns}-${claim}`;
    await this.core.createPersistentVolume({
      body: {
        metadata: { name: pv, labels: { 'shadowset.dev/e2e': 'true' } },
        spec: {
          capacity: { storage: `${mib}Mi` }, accessModes: ['ReadWriteOnce'], volumeMode, storageClassName: 'shadowset-e2e',
          persistentVolumeReclaimPolicy: 'Retain',
          local: { path: dev.path },
          nodeAffinity: { required: { nodeSelectorTerms: [{ matchExpressions: [{ key: 'kubernetes.io/hostname', operator: 'In', values: [node] }] }] } },
          claimRef: { namespace: ns, name: claim },
        },
      },
    });
    // Removed before the device is released (cleanup runs newest first).
    this.cleanup.defer(`delete PV ${pv}`, () => this.core.deletePersistentVolume({ name: pv }).catch(() => undefined));
    await this.core.createNamespacedPersistentVolumeClaim({
      namespace: ns,
      body: {
        metadata: { name: claim },
        spec: { accessModes: ['ReadWriteOnce'], volumeMode, storageClassName: 'shadowset-e2e', volumeName: pv, resources: { requests: { storage: `${mib}Mi` } } },
      },
    });
    return { namespace: ns, claim, node, sizeBytes: bytes, devicePath: dev.path };
  }

  readVolume(v: BlockVolume, offset: number, length: number): Promise<Buffer> {
    if (offset < 0 || offset + length > v.sizeBytes) throw new Error(`read of ${length} at ${offset} is outside ${v.claim}`);
    return this.readDevice(v.node, v.devicePath, offset, length);
  }

  writeVolume(v: BlockVolume, offset: number, data: Buffer): Promise<void> {
    return this.writeDevice(v.node, v.devicePath, offset, data);
  }

  private resource(resource: 'shadowsets' | 'writebitmaps' | 'pods') {
    return { group: GROUP, version: VERSION, plural: resource };
  }

  async get(ns: string, resource: 'shadowsets' | 'writebitmaps' | 'pods', name: string): Promise<Json | null> {
    try {
      if (resource === 'pods') return (await this.core.readNamespacedPod({ name, namespace: ns })) as unknown as Json;
      return (await this.custom.getNamespacedCustomObject({ ...this.resource(resource), namespace: ns, name })) as Json;
    } catch (e) {
      if (notFound(e)) return null;
      throw e;
    }
  }

  async list(ns: string, resource: 'shadowsets' | 'writebitmaps' | 'pods', labelSelector?: string): Promise<Json[]> {
    if (resource === 'pods') {
      const l = await this.core.listNamespacedPod({ namespace: ns, ...(labelSelector ? { labelSelector } : {}) });
      return l.items as unknown as Json[];
    }
    const l = (await this.custom.listNamespacedCustomObject({ ...this.resource(resource), namespace: ns, ...(labelSelector ? { labelSelector } : {}) })) as { items: Json[] };
    return l.items;
  }

  async events(ns: string, name: string): Promise<KubeEvent[]> {
    const l = await this.core.listNamespacedEvent({ namespace: ns, fieldSelector: `involvedObject.name=${name}` });
    return l.items
      .map((e) => ({
        type: e.type ?? '', reason: e.reason ?? '', message: e.message ?? '',
        at: String(e.lastTimestamp ?? e.eventTime ?? e.metadata?.creationTimestamp ?? ''),
      }))
      .sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
  }

  watchStatus(ns: string, name: string, onStatus: (status: Json) => void): () => void {
    let stopped = false;
    let abort: AbortController | undefined;
    let last = '';
    const path = `/apis/${GROUP}/${VERSION}/namespaces/${ns}/shadowsets`;
    const start = () => {
      if (stopped) return;
      void new Watch(this.kc).watch(path, { fieldSelector: `metadata.name=${name}` }, (_phase, obj: Json) => {
        const st = (obj.status ?? {}) as Json;
        const s = JSON.stringify(st);
        if (s !== last) {
          last = s;
          onStatus(st);
        }
      }, () => setTimeout(start, 200)).then((a) => {
        abort = a;
        if (stopped) a.abort();
      }, () => setTimeout(start, 500));
    };
    start();
    return () => {
      stopped = true;
      abort?.abort();
    };
  }

  async diagnostics(ns: string): Promise<string> {
    const part = async (title: string, f: () => Promise<string>) => {
      try {
        return `--- ${title}\n${await f()}`;
      } catch (e) {
        return `--- ${title}: ${(e as Error).message}`;
      }
    };
    const out = [
      await part('pods', async () => (await this.kubectl(['get', 'pods', '-n', ns, '-o', 'wide'], { allowFail: true })).stdout),
      await part('shadowsets, writebitmaps', async () => (await this.kubectl(['get', 'shadowsets,writebitmaps', '-n', ns, '-o', 'yaml'], { allowFail: true })).stdout),
      await part('events', async () => (await this.kubectl(['get', 'events', '-n', ns, '--sort-by=.lastTimestamp'], { allowFail: true })).stdout),
      await part('operator log (tail)', () => this.operatorLogTail()),
    ];
    for (const p of await this.list(ns, 'pods').catch(() => [])) {
      const name = String((p.metadata as Json).name);
      const container = String((((p.spec as Json).containers as Json[])[0] ?? {}).name ?? '');
      out.push(await part(`log ${name}/${container} (tail)`, async () => (await this.logs(ns, name, container)).split('\n').slice(-40).join('\n')));
    }
    return out.join('\n');
  }

  async stop(): Promise<void> {
    await this.cleanup.runAll();
    if (process.env.SHADOWSET_KEEP_CLUSTER !== '1') await rm(this.workDir, { recursive: true, force: true });
  }
}
