// What a scenario may do to a cluster. Two implementations share every scenario:
//   local (default): kube-apiserver + etcd built from Go modules, the node simulator running the real
//                    engine as pod processes, loop-device local PVs, the operator in this process;
//   kind (E2E_CLUSTER=kind): a kind cluster, the image built and loaded, the Helm chart installed, local
//                    PVs on loop devices made inside the kind node containers.
import type { RunResult } from '../support/exec.js';

export interface BlockVolume {
  namespace: string;
  claim: string;
  node: string;
  sizeBytes: number;
  /** the device behind the PV, as its node sees it */
  devicePath: string;
}

/** The set's keys as a cluster admin reads them from its Secrets (the operator never does). */
export interface SetCredentials {
  /** The export's PSK, from the set's export Secret (what a consumer mounts). */
  psk: { identity: string; key: Buffer };
  /** That PSK as an identity:hexkey file (libnbd's tls-psk-file) ... */
  pskFile: string;
  /** ... and as keys.psk in a directory (qemu's tls-creds-psk dir). */
  pskDir: string;
  /** The engine's control token, from the set's internal Secret. */
  token: string;
}

/** Where the virtual unit of a running ShadowSet is reachable from the test process. */
export interface EngineEndpoint extends SetCredentials {
  host: string;
  port: number;
  exportName: string;
  /** nbds://host:port/export: the export takes TLS with the set's PSK only */
  uri: string;
  /** base URL of the engine's HTTP API (GET /v1/status, with the token) */
  http: string;
  /** release what made it reachable (a port-forward, in kind mode) */
  close(): Promise<void>;
}

export interface KubeEvent {
  type: string;
  reason: string;
  message: string;
  at: string;
}

export type NodeFailure = 'freeze' | 'poweroff';

export interface ClusterEnv {
  readonly mode: 'local' | 'kind';
  /** two schedulable nodes for members: nodes[0] holds the engine's members, nodes[1] a remote one */
  readonly nodes: readonly [string, string];
  /** a directory for manifests, copies of member data and logs; removed by stop() */
  readonly workDir: string;

  /** The real kubectl against this cluster; rejects on a non-zero exit unless allowFail. */
  /** (timeoutMs: 120 s unless given, e.g. for a long `kubectl exec`) */
  kubectl(args: string[], opts?: { input?: string; allowFail?: boolean; timeoutMs?: number }): Promise<RunResult>;
  /** `kubectl apply -f` of YAML text (saved under workDir as `name`). */
  apply(name: string, yamlText: string, opts?: { allowFail?: boolean }): Promise<RunResult>;
  createNamespace(ns: string): Promise<void>;
  /** A local PV on `node` backed by a fresh zeroed device of `mib` MiB, pre-bound to a new claim. */
  createBlockVolume(ns: string, claim: string, node: string, mib: number, volumeMode?: 'Block' | 'Filesystem'): Promise<BlockVolume>;
  /** Raw bytes of a volume's device (metadata header included). */
  readVolume(v: BlockVolume, offset: number, length: number): Promise<Buffer>;
  writeVolume(v: BlockVolume, offset: number, data: Buffer): Promise<void>;

  /** A custom resource or core object as JSON (null when absent). */
  get(ns: string, resource: 'shadowsets' | 'writebitmaps' | 'pods', name: string): Promise<Record<string, unknown> | null>;
  list(ns: string, resource: 'shadowsets' | 'writebitmaps' | 'pods', labelSelector?: string): Promise<Record<string, unknown>[]>;
  /** Events whose involved object is `name`, oldest first. */
  events(ns: string, name: string): Promise<KubeEvent[]>;
  /** Calls `onStatus` with the ShadowSet's status at every change (a watch); returns a stop function. */
  watchStatus(ns: string, name: string, onStatus: (status: Record<string, unknown>) => void): () => void;

  /** The engine pod's NBD export and HTTP API, reachable from this process. */
  engine(ns: string, set: string): Promise<EngineEndpoint>;
  /** SIGKILL the engine process of a set (its pod restarts it). */
  killEngine(ns: string, set: string): Promise<void>;
  /**
   * The node fails; pods stay. `freeze` (the default): its processes stop where they are and peers see
   * silence (a hung or partitioned node). `poweroff`: it is cut off and its processes die at once (no
   * goodbye reaches a peer), and it boots again on recovery (a lost node; kind only tells it for real).
   */
  failNode(node: string, how?: NodeFailure): Promise<void>;
  /** The node is back (thawed, or booted) and reported Ready. */
  recoverNode(node: string): Promise<void>;
  /**
   * A new image of the project under a new tag, built and loaded into the nodes but not used yet; returns
   * its reference. Only where the operator is a Helm release (kind).
   */
  prepareUpgrade(): Promise<string>;
  /** The operator's release upgraded to `image` (`helm upgrade`), waiting for its rollout; the images before and after. */
  upgradeRelease(image: string): Promise<{ from: string; to: string }>;
  /** A container's output across restarts ('' when unknown). */
  logs(ns: string, pod: string, container: string): Promise<string>;
  /** What to print when a scenario fails: pods, sets, bitmaps, events, operator log tail. */
  diagnostics(ns: string): Promise<string>;
  stop(): Promise<void>;
}
