/**
 * ControllerPublishVolume / ControllerUnpublishVolume: attach is where one writer is enforced and where
 * the engine is brought beside its consumer. The CO's VolumeAttachment for node X is what the operator
 * follows (it moves the set's engine to X); Publish only checks that no other node holds the volume and
 * waits, a bounded time, for the engine to serve on X — the node plugin's NodeStage then finds the unit
 * socket there. Unpublish has nothing of its own to undo: the VolumeAttachment going away is the signal.
 */
import { attachedHandle, createdMs, olderFirst, type VolumeAttachment } from '@shadowset/operator/kube';
import { parseCapability, requireField, type RawCapability } from '../capabilities.js';
import { CsiError, invalid } from '../errors.js';
import type { VolumeLocks } from '../locks.js';
import { parseVolumeId } from '../volume-id.js';
import { RES, type KubePort } from './kube-port.js';

export interface PublishOptions {
  kube: KubePort;
  locks: VolumeLocks;
  /** How long Publish waits for the engine to serve on the node before answering Unavailable (the CO retries). */
  readyWaitMs?: number;
  /** How often the set's status is read meanwhile (the controller's API port has no watch). */
  pollMs?: number;
}

interface SetStatus {
  engineNode?: string;
  placement?: { node?: string };
  conditions?: { type: string; status: string; reason: string; message: string }[];
}

/**
 * VolumeAttachments that hold the volume on another node: attached (a detach not finished: its node plugin
 * may still have the unit in use), or live and older than this node's own attachment. The operator follows
 * the older of two live attachments too, so of two nodes asking at once exactly one can win; without an
 * attachment of its own (a CO calling directly), every live one on another node holds the volume.
 */
export async function otherHolders(kube: KubePort, volumeId: string, node: string): Promise<{ name: string; node: string }[]> {
  const mine: VolumeAttachment[] = [];
  const others: VolumeAttachment[] = [];
  for (const va of (await kube.list<VolumeAttachment>(RES.volumeattachments)).items) {
    if ((await attachedHandle(kube, va)) !== volumeId) continue;
    (va.spec!.nodeName === node ? mine : others).push(va);
  }
  // The operator's order among attachments: the one it follows is the one that may attach.
  const older = (a: VolumeAttachment, b: VolumeAttachment) => olderFirst({ createdMs: createdMs(a), name: a.metadata.name }, { createdMs: createdMs(b), name: b.metadata.name }) < 0;
  const own = mine.find((va) => !va.metadata.deletionTimestamp);
  return others
    .filter((va) => va.status?.attached === true || (!va.metadata.deletionTimestamp && (!own || older(va, own))))
    .map((va) => ({ name: va.metadata.name, node: va.spec!.nodeName! }));
}

const engineServesOn = (s: SetStatus, node: string): boolean =>
  s.engineNode === node && s.placement?.node === node && s.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;

export function publishHandlers(o: PublishOptions) {
  const { kube } = o;
  const waitMs = o.readyWaitMs ?? 5000;
  const pollMs = o.pollMs ?? 250;

  async function controllerPublishVolume(req: { volume_id?: string; node_id?: string; volume_capability?: RawCapability | null; readonly?: boolean }) {
    // The spec's order: missing fields first, then what does not exist.
    const id = requireField(req.volume_id, 'volume_id');
    const node = requireField(req.node_id, 'node_id');
    if (!req.volume_capability) throw invalid('volume_capability is required');
    parseCapability(req.volume_capability);
    const ref = parseVolumeId(id);
    const set = ref ? await kube.get(RES.shadowsets, ref.namespace, ref.name) : null;
    if (!ref || !set) throw new CsiError('NotFound', `volume ${id} not found`);
    if (!(await kube.get(RES.nodes, undefined, node))) throw new CsiError('NotFound', `node ${node} not found`);
    return o.locks.run(id, async () => {
      if (set.metadata.deletionTimestamp) throw new CsiError('FailedPrecondition', `volume ${id} is being deleted`);
      const pinned = (set.spec as { engine?: { nodeName?: string } } | undefined)?.engine?.nodeName;
      if (pinned && pinned !== node) {
        throw new CsiError('FailedPrecondition', `volume ${id}: its ShadowSet pins the engine to node ${pinned} (spec.engine.nodeName), so it can be used only there, not on ${node}`);
      }
      // One writer: ReadWriteOnce and ReadWriteOncePod alike (the attacher shows this in the pod's events).
      const held = await otherHolders(kube, id, node);
      if (held.length > 0) {
        throw new CsiError('FailedPrecondition', `volume ${id} is attached to node ${held[0]!.node} (VolumeAttachment ${held[0]!.name}); it can be attached to one node at a time`);
      }
      // The operator moves the engine here on seeing the VolumeAttachment; wait a little for it.
      const deadline = Date.now() + waitMs;
      let last: SetStatus = {};
      for (;;) {
        const now = await kube.get(RES.shadowsets, ref.namespace, ref.name);
        if (!now) throw new CsiError('NotFound', `volume ${id} not found`);
        last = (now.status ?? {}) as SetStatus;
        if (engineServesOn(last, node)) return { publish_context: {} };
        if (Date.now() >= deadline) break;
        await new Promise((r) => setTimeout(r, pollMs));
      }
      const ready = last.conditions?.find((c) => c.type === 'Ready');
      throw new CsiError('Unavailable', `the engine of volume ${id} does not serve on node ${node} yet (engine on ${last.engineNode ?? 'no node'}${ready ? `, Ready ${ready.status}: ${ready.message}` : ''}); retry`);
    });
  }

  async function controllerUnpublishVolume(req: { volume_id?: string; node_id?: string }) {
    requireField(req.volume_id, 'volume_id');
    // Nothing to undo here: the operator sees the VolumeAttachment go; the engine stays where it runs
    // until a consumer elsewhere needs it (no restart when the consumer merely leaves).
    return {};
  }

  return { ControllerPublishVolume: controllerPublishVolume, ControllerUnpublishVolume: controllerUnpublishVolume };
}
