/**
 * The Controller service: CreateVolume makes a ShadowSet and its member claims from a StorageClass's
 * parameters, DeleteVolume dissolves the set and deletes the claims. Everything a request names is
 * checked before anything is created; a repeat of a request that succeeded answers the same volume.
 */
import { isOperatorError, type Obj } from '@shadowset/operator/kube';
import type { Logger } from 'pino';
import { capabilityProblem, parseCapabilities, requireField, type RawCapability } from '../capabilities.js';
import { CsiError, invalid } from '../errors.js';
import { VolumeLocks } from '../locks.js';
import type { Handlers } from '../server.js';
import { DRIVER_NAME } from '../spec.js';
import { formatVolumeId, parseVolumeId, setNameFor, type VolumeRef } from '../volume-id.js';
import { capacityFor, satisfies } from './capacity.js';
import { RES, type KubePort } from './kube-port.js';
import {
  CAPACITY_ANNOTATION, MANAGED_BY, PARAMETERS_ANNOTATION, SELECTED_NODE_ANNOTATION, VOLUME_LABEL, VOLUME_NAME_ANNOTATION,
  memberClaimFor, memberClaimName, parametersRecord, shadowSetFor, type VolumePlan,
} from './objects.js';
import { PVC_NAMESPACE_KEY, parseParameters, type Parameters } from './params.js';
import { chooseNodes, type TopologyTerm } from './placement.js';
import { publishHandlers } from './publish.js';
import { expandHandlers } from './expand.js';

/** Provisioners known to give filesystem volumes only: a member must be a block device. */
export const FILESYSTEM_ONLY_PROVISIONERS = [
  'rancher.io/local-path', 'nfs.csi.k8s.io', 'smb.csi.k8s.io', 'efs.csi.aws.com', 'file.csi.azure.com', 'filestore.csi.storage.gke.io',
];

export interface ControllerOptions {
  kube: KubePort;
  /** How long ControllerPublishVolume waits for the engine to serve on the node (default 5 s). */
  publishWaitMs?: number;
  /** How long ControllerExpandVolume waits for member claims and the set to grow (default 5 s). */
  expandWaitMs?: number;
  /** Where sets go when the CO does not say the claim's namespace (external-provisioner without --extra-create-metadata). */
  namespace: string;
  log: Logger;
}

interface StorageClass extends Obj {
  provisioner?: string;
  volumeBindingMode?: string;
  allowedTopologies?: TopologyTerm[];
}

interface CreateVolumeRequest {
  name?: string;
  capacity_range?: { required_bytes?: string; limit_bytes?: string } | null;
  volume_capabilities?: RawCapability[];
  parameters?: Record<string, string>;
  volume_content_source?: { type?: string } | null;
}

export function controllerService(o: ControllerOptions): Handlers {
  const locks = new VolumeLocks();
  const { kube } = o;

  async function memberClass(params: Parameters): Promise<StorageClass> {
    const sc = await kube.get<StorageClass>(RES.storageclasses, undefined, params.memberClass);
    if (!sc) throw invalid(`memberClass: StorageClass ${params.memberClass} not found`);
    if (sc.provisioner === DRIVER_NAME) throw invalid(`memberClass: StorageClass ${params.memberClass} is a shadowset class itself; members need a class of real block volumes`);
    if (sc.provisioner && FILESYSTEM_ONLY_PROVISIONERS.includes(sc.provisioner)) {
      throw invalid(`memberClass: StorageClass ${params.memberClass} (provisioner ${sc.provisioner}) cannot give Block volumes`);
    }
    return sc;
  }

  /** Nodes for the members whose claims do not exist yet (WaitForFirstConsumer classes only). */
  async function placement(sc: StorageClass, volumeName: string, count: number, taken: string[]): Promise<(string | null)[]> {
    if (sc.volumeBindingMode !== 'WaitForFirstConsumer') return Array.from({ length: count }, () => null);
    const nodes = (await kube.list(RES.nodes)).items.filter((n) => !taken.includes(n.metadata.name));
    return chooseNodes(nodes, count, volumeName, sc.allowedTopologies);
  }

  function sameVolume(set: Obj, volumeName: string, params: Parameters, range: CreateVolumeRequest['capacity_range']): string | null {
    const a = set.metadata.annotations ?? {};
    if (a[VOLUME_NAME_ANNOTATION] !== volumeName) return `ShadowSet ${set.metadata.namespace}/${set.metadata.name} exists and was not made for volume ${volumeName}`;
    if (a[PARAMETERS_ANNOTATION] !== parametersRecord(params)) return `volume ${volumeName} exists with other parameters (${a[PARAMETERS_ANNOTATION]})`;
    if (!satisfies(Number(a[CAPACITY_ANNOTATION] ?? 0), range)) return `volume ${volumeName} exists with ${a[CAPACITY_ANNOTATION]} bytes, outside the capacity range asked for`;
    return null;
  }

  /** The member claims that exist, each checked to belong to this set; a foreign one refuses. */
  async function existingClaims(ref: VolumeRef, count: number, ownerUid: string | null): Promise<(Obj | null)[]> {
    return Promise.all(Array.from({ length: count }, async (_, i) => {
      const name = memberClaimName(ref.name, i);
      const c = await kube.get(RES.pvcs, ref.namespace, name);
      if (!c) return null;
      const labelled = c.metadata.labels?.[VOLUME_LABEL] === ref.name;
      // With no set, a claim of ours is left from an earlier volume of this name (its delete is not done):
      // its device may hold that volume's data, so it is never taken into a new one.
      if (labelled && ownerUid === null) throw new CsiError('Aborted', `claim ${ref.namespace}/${name} of an earlier volume ${ref.name} is still there; retry once it is deleted`);
      if (!labelled || !(c.metadata.ownerReferences ?? []).some((r) => r.uid === ownerUid)) {
        throw new CsiError('AlreadyExists', `claim ${ref.namespace}/${name} exists and is not a member of volume ${ref.name}; nothing was created`);
      }
      return c;
    }));
  }

  async function createVolume(req: CreateVolumeRequest) {
    const volumeName = requireField(req.name, 'name');
    parseCapabilities(req.volume_capabilities);
    if (req.volume_content_source?.type) throw invalid('volume_content_source: creating a volume from a snapshot or another volume is not supported');
    const params = parseParameters(req.parameters);
    const capacityBytes = capacityFor(req.capacity_range);
    const ref = { namespace: params[PVC_NAMESPACE_KEY] ?? o.namespace, name: setNameFor(volumeName) };
    const id = formatVolumeId(ref);
    return locks.run(id, async () => {
      let set = await kube.get(RES.shadowsets, ref.namespace, ref.name);
      if (set?.metadata.deletionTimestamp) throw new CsiError('Aborted', `volume ${id} is being deleted; retry when it is gone`);
      if (set) {
        const why = sameVolume(set, volumeName, params, req.capacity_range);
        if (why) throw new CsiError('AlreadyExists', why);
      }
      const sc = await memberClass(params);
      const claims = await existingClaims(ref, params.members, set?.metadata.uid ?? null);
      const missing = claims.flatMap((c, i) => (c ? [] : [i]));
      const taken = claims.flatMap((c) => c?.metadata.annotations?.[SELECTED_NODE_ANNOTATION] ?? []);
      const nodesForMissing = await placement(sc, volumeName, missing.length, taken);
      const plan: VolumePlan = { ...ref, setName: ref.name, volumeName, capacityBytes, params, nodes: [] };
      missing.forEach((i, k) => (plan.nodes[i] = nodesForMissing[k] ?? null));
      if (!set) {
        set = await kube.create(RES.shadowsets, ref.namespace, shadowSetFor(plan));
        o.log.info({ event: 'VolumeCreated', volume: id, volumeName, members: params.members, memberClass: params.memberClass, nodes: plan.nodes }, 'ShadowSet created');
      }
      const owner = { name: set.metadata.name, uid: requireField(set.metadata.uid, 'ShadowSet uid') };
      for (const i of missing) {
        try {
          await kube.create(RES.pvcs, ref.namespace, memberClaimFor(plan, i, owner));
        } catch (e) {
          if (!isOperatorError(e, 'OP_CONFLICT')) throw e; // made by a concurrent try: checked on the next
        }
      }
      return { volume: { volume_id: id, capacity_bytes: String(capacityBytes), volume_context: {}, content_source: null, accessible_topology: [] } };
    });
  }

  async function deleteVolume(req: { volume_id?: string }) {
    const id = requireField(req.volume_id, 'volume_id');
    const ref = parseVolumeId(id);
    if (!ref) return {}; // names nothing this driver could have made: nothing to delete
    return locks.run(id, async () => {
      const set = await kube.get(RES.shadowsets, ref.namespace, ref.name);
      if (set) {
        if (set.metadata.labels?.[VOLUME_LABEL] !== ref.name || !set.metadata.annotations?.[VOLUME_NAME_ANNOTATION]) {
          throw new CsiError('FailedPrecondition', `ShadowSet ${id} was not made by this driver (a statically provisioned volume): delete it yourself`);
        }
        if (!set.metadata.deletionTimestamp) {
          await kube.delete(RES.shadowsets, ref.namespace, ref.name, { propagationPolicy: 'Background' });
          o.log.info({ event: 'VolumeDeleting', volume: id }, 'ShadowSet deleted: the operator dissolves it');
        }
        // The operator's finalizer stops the engine cleanly first; the claims go only after.
        if (await kube.get(RES.shadowsets, ref.namespace, ref.name)) {
          throw new CsiError('Unavailable', `ShadowSet ${id} is being dissolved (its engine stops cleanly first); retry`);
        }
      }
      const claims = await kube.list(RES.pvcs, ref.namespace, `${VOLUME_LABEL}=${ref.name},app.kubernetes.io/managed-by=${MANAGED_BY['app.kubernetes.io/managed-by']}`);
      for (const c of claims.items) await kube.delete(RES.pvcs, ref.namespace, c.metadata.name);
      if (set || claims.items.length) o.log.info({ event: 'VolumeDeleted', volume: id, claims: claims.items.map((c) => c.metadata.name) }, 'volume deleted');
      return {};
    });
  }

  async function validateVolumeCapabilities(req: { volume_id?: string; volume_capabilities?: RawCapability[]; volume_context?: Record<string, string>; parameters?: Record<string, string> }) {
    const id = requireField(req.volume_id, 'volume_id');
    if (!req.volume_capabilities?.length) throw invalid('volume_capabilities must not be empty');
    const ref = parseVolumeId(id);
    if (!ref || !(await kube.get(RES.shadowsets, ref.namespace, ref.name))) throw new CsiError('NotFound', `volume ${id} not found`);
    const problems = req.volume_capabilities.map(capabilityProblem).filter((p): p is string => p !== null);
    if (problems.length) return { confirmed: null, message: problems.join('; ') };
    return { confirmed: { volume_context: req.volume_context ?? {}, volume_capabilities: req.volume_capabilities, parameters: req.parameters ?? {}, mutable_parameters: {} }, message: '' };
  }

  return {
    CreateVolume: createVolume,
    ...publishHandlers({ kube, locks, ...(o.publishWaitMs !== undefined ? { readyWaitMs: o.publishWaitMs } : {}) }),
    ...expandHandlers({ kube, locks, ...(o.expandWaitMs !== undefined ? { waitMs: o.expandWaitMs } : {}) }),
    DeleteVolume: deleteVolume,
    ValidateVolumeCapabilities: validateVolumeCapabilities,
    // SINGLE_NODE_MULTI_WRITER here and on the node: Kubernetes then sends ReadWriteOncePod as SINGLE_NODE_SINGLE_WRITER.
    // PUBLISH_UNPUBLISH_VOLUME: attach is where one writer is enforced and the engine comes to the consumer.
    // EXPAND_VOLUME: offline (expand.ts says why); the plugin capability says so (identity.ts).
    ControllerGetCapabilities: async () => ({
      capabilities: [{ rpc: { type: 'CREATE_DELETE_VOLUME' } }, { rpc: { type: 'PUBLISH_UNPUBLISH_VOLUME' } }, { rpc: { type: 'SINGLE_NODE_MULTI_WRITER' } }, { rpc: { type: 'EXPAND_VOLUME' } }],
    }),
  };
}
