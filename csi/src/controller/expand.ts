/**
 * ControllerExpandVolume, offline: the unit reaches a node through qemu-storage-daemon's NBD client, a
 * FUSE export and a loop device, and none of them learns a bigger size while attached (qemu's NBD driver
 * cannot grow a node, and the size is the one the connection was told), so a volume grows only while no
 * node holds it. The order: the member claims' requests (unit + HEADER_BYTES; a claim whose capacity already
 * covers that is left alone, so a member class without expansion serves while its volumes are big enough),
 * their capacity, the set's spec.size (the operator asks the engine to grow), the set's status.size. Each call does what it can and
 * answers Unavailable while something is still growing: external-resizer calls again.
 */
import { HEADER_BYTES } from '@shadowset/engine/api';
import { attachedHandle, type Obj, type VolumeAttachment } from '@shadowset/operator/kube';
import { parseCapability, requireField, type RawCapability } from '../capabilities.js';
import { CsiError, invalid } from '../errors.js';
import type { VolumeLocks } from '../locks.js';
import { parseVolumeId } from '../volume-id.js';
import { capacityFor } from './capacity.js';
import { RES, type KubePort } from './kube-port.js';
import { CAPACITY_ANNOTATION, MANAGED_BY, PARAMETERS_ANNOTATION, VOLUME_LABEL, VOLUME_NAME_ANNOTATION } from './objects.js';
import { bytesOfQuantity } from './quantity.js';

interface ExpandRequest {
  volume_id?: string;
  capacity_range?: { required_bytes?: string; limit_bytes?: string } | null;
  volume_capability?: RawCapability | null;
}

interface Claim extends Obj {
  spec?: { resources?: { requests?: { storage?: string } } };
  status?: { phase?: string; capacity?: { storage?: string } };
}

export function expandHandlers(o: { kube: KubePort; locks: VolumeLocks; waitMs?: number; pollMs?: number }) {
  const { kube } = o;
  // Like Publish, a call waits a bounded time for what it started (claims growing, the set growing)
  // before it answers Unavailable; the CO calls again after that.
  const waitMs = o.waitMs ?? 5000;
  const pollMs = o.pollMs ?? 250;
  /** Poll `probe` until it answers null (done) or the wait is over; answers its last complaint. */
  async function waitFor(deadline: number, probe: () => Promise<string | null>): Promise<string | null> {
    for (;;) {
      const why = await probe();
      if (why === null || Date.now() >= deadline) return why;
      await new Promise((r) => setTimeout(r, pollMs));
    }
  }

  async function controllerExpandVolume(req: ExpandRequest) {
    const id = requireField(req.volume_id, 'volume_id');
    if (!req.capacity_range) throw invalid('capacity_range is required');
    const size = capacityFor(req.capacity_range);
    // Filesystem volumes need the node's resize2fs / xfs_growfs; a block volume is done once the unit grew.
    const block = req.volume_capability ? parseCapability(req.volume_capability).kind === 'block' : false;
    const ref = parseVolumeId(id);
    const found = ref ? await kube.get(RES.shadowsets, ref.namespace, ref.name) : null;
    if (!ref || !found) throw new CsiError('NotFound', `volume ${id} not found`);
    return o.locks.run(id, async () => {
      const set = (await kube.get(RES.shadowsets, ref.namespace, ref.name)) ?? found;
      const a = set.metadata.annotations ?? {};
      if (set.metadata.labels?.[VOLUME_LABEL] !== ref.name || !a[VOLUME_NAME_ANNOTATION]) {
        throw new CsiError('FailedPrecondition', `ShadowSet ${id} was not made by this driver (a statically provisioned volume): grow its members and set its spec.size yourself`);
      }
      const have = Number(a[CAPACITY_ANNOTATION] ?? 0);
      const status = (set.status ?? {}) as { size?: number };
      const answer = (bytes: number) => ({ capacity_bytes: String(bytes), node_expansion_required: !block });
      // Already as big (a repeat, or a smaller ask): nothing to do once the set has grown.
      if (size <= have && (status.size === undefined || status.size >= have)) return answer(have);
      const target = Math.max(size, have);
      for (const va of (await kube.list<VolumeAttachment>(RES.volumeattachments)).items) {
        if ((await attachedHandle(kube, va)) === id) {
          throw new CsiError('FailedPrecondition', `volume ${id} is attached to node ${va.spec?.nodeName ?? '?'} (VolumeAttachment ${va.metadata.name}); it grows offline only: stop the pod that uses it`);
        }
      }
      const memberClass = (JSON.parse(a[PARAMETERS_ANNOTATION] ?? '{}') as { memberClass?: string }).memberClass ?? '';
      const claims = (await kube.list<Claim>(RES.pvcs, ref.namespace, `${VOLUME_LABEL}=${ref.name},app.kubernetes.io/managed-by=${MANAGED_BY['app.kubernetes.io/managed-by']}`)).items;
      const want = target + HEADER_BYTES;
      // A claim bound to a volume that already holds `want` bytes (a static PV bigger than asked, say) has
      // room: the engine reads each member's real size when the set grows, so only smaller ones must grow.
      const toGrow = claims.filter((c) => bytesOfQuantity(c.spec?.resources?.requests?.storage) < want
        && bytesOfQuantity(c.status?.capacity?.storage) < want);
      if (toGrow.length > 0) {
        // Checked before any claim is touched: a class that cannot expand changes nothing.
        const sc = await kube.get<Obj & { allowVolumeExpansion?: boolean }>(RES.storageclasses, undefined, memberClass);
        if (!sc) throw new CsiError('FailedPrecondition', `volume ${id}: its member StorageClass ${memberClass} does not exist`);
        if (sc.allowVolumeExpansion !== true) {
          throw new CsiError('FailedPrecondition', `volume ${id} cannot grow: its member StorageClass ${memberClass} does not allow volume expansion (allowVolumeExpansion is not true); nothing was changed`);
        }
        // Kubernetes lets a claim's request change only once it is bound; one not bound yet would be
        // provisioned at its old size, so the volume cannot grow before its members exist.
        const unbound = toGrow.filter((c) => c.status?.phase !== 'Bound');
        if (unbound.length > 0) {
          throw new CsiError('Unavailable', `volume ${id}: member claims not bound yet (${unbound.map((c) => c.metadata.name).join(', ')}); a claim can grow only once bound; retry`);
        }
        for (const c of toGrow) await kube.mergePatch(RES.pvcs, ref.namespace, c.metadata.name, { spec: { resources: { requests: { storage: String(want) } } } });
      }
      const deadline = Date.now() + waitMs;
      const claimsWhy = await waitFor(deadline, async () => {
        const now = await Promise.all(claims.map((c) => kube.get<Claim>(RES.pvcs, ref.namespace, c.metadata.name)));
        const small = now.filter((c): c is Claim => c !== null && bytesOfQuantity(c.status?.capacity?.storage) < want);
        return small.length ? `volume ${id}: member claims still growing to ${want} bytes: ${small.map((c) => `${c.metadata.name} (${c.status?.capacity?.storage ?? 'no capacity'})`).join(', ')}; retry` : null;
      });
      if (claimsWhy) throw new CsiError('Unavailable', claimsWhy);
      // A set already that big (one made at its members' size, before sets took the size asked for) is not
      // asked for less than it has: the operator would refuse that as a shrink.
      const grow = status.size === undefined || status.size < target;
      if (have !== target || (grow && (set.spec as { size?: number } | undefined)?.size !== target)) {
        await kube.mergePatch(RES.shadowsets, ref.namespace, ref.name, { metadata: { annotations: { [CAPACITY_ANNOTATION]: String(target) } }, ...(grow ? { spec: { size: target } } : {}) });
      }
      // A set whose engine ran reports its size: the filesystem may grow only once the unit has.
      if (status.size !== undefined) {
        const setWhy = await waitFor(deadline, async () => {
          const size = ((await kube.get(RES.shadowsets, ref.namespace, ref.name))?.status as { size?: number } | undefined)?.size ?? 0;
          return size < target ? `volume ${id}: the ShadowSet is growing to ${target} bytes (now ${size}); retry` : null;
        });
        if (setWhy) throw new CsiError('Unavailable', setWhy);
      }
      return answer(target);
    });
  }

  return { ControllerExpandVolume: controllerExpandVolume };
}
