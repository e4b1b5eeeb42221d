/** What a reconcile observed, and what it decided: the planners' inputs and outputs (plain data). */
import type { AddMemberBody, EngineStatus, MinicopyPolicy, SettingsBody } from '@shadowset/engine/api';
import type { ShadowSetSpec, ShadowSetStatus } from '../api/shadowset.js';
import type { SetKeys } from '../security/keys.js';
import type { OperatorPods } from './set-objects.js';

export interface EngineDefaults {
  memberTimeoutSeconds: number;
  maxCopies: number;
}

export const DEFAULTS: EngineDefaults = { memberTimeoutSeconds: 120, maxCopies: 4 };

export interface ClaimInfo {
  name: string;
  exists: boolean;
  volumeMode?: string;
  bound: boolean;
  pvName?: string;
  /** Node the PV is bound to by node affinity (null: reachable from any node). */
  node: string | null;
  /** Another ShadowSet (older) that already uses this claim. */
  ownedBy?: string;
}

export interface PodInfo {
  name: string;
  phase: string;
  ready: boolean;
  podIP?: string;
  node?: string;
  deleting: boolean;
  /** Members attached to this engine pod as devices (annotation), or the member a member server serves. */
  attached: string[];
  restarts: number;
  /** When the pod was created (ms since the epoch). */
  createdMs: number;
  /** Why its first container waits (reason: message), e.g. a Secret key missing. */
  waiting?: string;
  /** Engine pod: its configuration hash and record (annotations; absent on pods of older operators). */
  configHash?: string;
  config?: string;
  /** Engine pod: the locations of its `--member` arguments, options stripped. */
  memberLocations: string[];
  /** Engine pod: the claim attached for each member name. */
  claims: Record<string, string>;
}

/** A VolumeAttachment of the CSI driver that attaches this set's volume to a node. */
export interface AttachmentInfo {
  name: string;
  node: string;
  /** When it was created (ms since the epoch): of two live ones, the older is followed. */
  createdMs: number;
  /** Being deleted (the consumer left the node): no longer followed. */
  deleting: boolean;
  attached: boolean;
}

/** A pod a freeze/thaw hook names: the sets it declares itself a consumer of (null: no such pod). */
export type HookPod = { consumerOf: string[] } | null;

/** An engine refusal remembered until the world changes (see planner `fingerprint`). */
export interface HeldRefusal {
  fingerprint: string;
  reason: string;
  message: string;
}

export type EngineView =
  | { kind: 'none' } // no pod, or not running yet
  | { kind: 'ok'; status: EngineStatus }
  | { kind: 'refused'; code: string; message: string } // the engine refused to start
  | { kind: 'unreachable'; message: string };

export interface BitmapCr {
  name: string;
  bitmapId: string;
  member: string;
  deleting: boolean;
}

export interface Observed {
  name: string;
  namespace: string;
  uid: string;
  generation: number;
  deleting: boolean;
  spec: ShadowSetSpec | { invalid: string };
  claims: Record<string, ClaimInfo>;
  enginePod: PodInfo | null;
  memberServers: Record<string, PodInfo>;
  engine: EngineView;
  bitmapCrs: BitmapCr[];
  previous: ShadowSetStatus;
  engineImage: string;
  /** Pods named by the spec's hooks, by name. */
  hookPods: Record<string, HookPod>;
  /** topology.kubernetes.io/zone of the nodes an engine may run on (null: no zone label). */
  nodeZones: Record<string, string | null>;
  /**
   * Nodes of member claims that are down, with why (not Ready, tainted out-of-service, gone); read with
   * nodeZones, only when the engine pod is to be made. A member there is not waited for.
   */
  nodesDown: Record<string, string>;
  /** The export Service as it is (null: none). */
  service: { type: string; port: number } | null;
  /** The set's NetworkPolicy as it is (see policyFingerprint), or null: none. */
  networkPolicyFingerprint: string | null;
  /** The set's keys, derived from the operator's key (never read from its Secrets). */
  keys: SetKeys;
  /** The operator's pods, the only peers of the engine's HTTP API. */
  operatorPods: OperatorPods;
  /** Since when the engine pod has existed without serving (ms since the epoch), or null. */
  engineDownSinceMs: number | null;
  /** Engine refusals by action (`kind:member`), not retried while the world is unchanged. */
  refusals: Record<string, HeldRefusal>;
  /** Site-wide defaults for what a spec leaves unset. */
  defaults: EngineDefaults;
  now: string;
  /** Last time a faulted member was offered back (by member name), for pacing. */
  lastReturnAttempt: Record<string, number>;
  nowMs: number;
  /** The CSI driver's VolumeAttachments of this set's volume (empty when none, or not consumed through CSI). */
  attachments: AttachmentInfo[];
  /**
   * Host directory under which engines serve the virtual unit on a node-local socket for the CSI node
   * plugin (`<dir>/<namespace>/<set>/nbd.sock`), or null: no unit sockets.
   */
  unitSocketDir: string | null;
  /**
   * The CSI driver made this set (it carries the driver's volume-name annotation): its members are meant to
   * be on different nodes, so members found sharing one are warned about.
   */
  madeByDriver: boolean;
}

export type Action =
  | { kind: 'createEnginePod'; pod: Record<string, unknown> }
  | { kind: 'deleteEnginePod'; reason: string }
  | { kind: 'createMemberServer'; member: string; pod: Record<string, unknown> }
  | { kind: 'deleteMemberServer'; member: string; name: string }
  | { kind: 'applyService'; service: Record<string, unknown> }
  | { kind: 'applyNetworkPolicy'; policy: Record<string, unknown> }
  /** Create the set's Secrets where missing (an existing one is left as is). */
  | { kind: 'ensureSecrets'; secrets: Record<string, unknown>[] }
  | { kind: 'engineAdd'; member: string; body: AddMemberBody }
  | { kind: 'engineRemove'; member: string; engineId: string; policy: MinicopyPolicy; detach: boolean }
  | { kind: 'engineReturn'; member: string; engineId: string; minicopy: 'Required' | 'Optional'; location?: string }
  | { kind: 'engineSettings'; body: SettingsBody }
  | { kind: 'engineResize'; from: number; size: number }
  | { kind: 'applyBitmapCr'; name: string; spec: { shadowSet: string; bitmapId: string; member: string }; status: Record<string, unknown> }
  | { kind: 'deleteBitmapCr'; name: string }
  | { kind: 'event'; type: 'Normal' | 'Warning'; reason: string; message: string };

export interface Plan {
  actions: Action[];
  status: ShadowSetStatus;
  requeueAfterMs: number;
}
