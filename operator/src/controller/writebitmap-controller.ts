/**
 * WriteBitmap reconciler: deleting a WriteBitmap deletes the engine's bitmap (the manual's
 * DELETE/BITMAP), so that member's return will be a full copy.
 */
import type { Logger } from 'pino';
import { ROLE_LABEL, SET_LABEL } from '../api/group.js';
import { EventReason } from '../api/conditions.js';
import type { EngineClient } from '../engine-client.js';
import { R, type Kube, type Obj } from '../kube/client.js';
import { engineBase } from '../reconcile/pods.js';
import { deriveSetKeys } from '../security/keys.js';

export const BITMAP_FINALIZER = 'shadowset.dev/bitmap';

export class WriteBitmapController {
  constructor(private readonly kube: Kube, private readonly engine: EngineClient, private readonly log: Logger,
    private readonly event: (obj: Obj, type: 'Normal' | 'Warning', reason: string, message: string) => Promise<void>,
    /** The operator's key: the engine's token is derived from it and the owning set's uid. */
    private readonly key: Buffer) {}

  async reconcile(key: string): Promise<{ requeueAfterMs?: number } | void> {
    const [ns, name] = key.split('/') as [string, string];
    const wb = await this.kube.get(R.writebitmaps, ns, name);
    if (!wb || !wb.metadata.deletionTimestamp || !wb.metadata.finalizers?.includes(BITMAP_FINALIZER)) return;
    const spec = wb.spec as { shadowSet: string; bitmapId: string; member: string };
    const pods = (await this.kube.list(R.pods, ns, `${SET_LABEL}=${spec.shadowSet},${ROLE_LABEL}=engine`)).items;
    const ip = (pods[0]?.status as { podIP?: string } | undefined)?.podIP;
    // The set that owns the bitmap resource (and so its engine): its uid is in the owner reference.
    const setUid = wb.metadata.ownerReferences?.find((r) => r.kind === 'ShadowSet' && r.name === spec.shadowSet)?.uid;
    if (ip && setUid) {
      const target = { base: engineBase(ip), token: deriveSetKeys(this.key, { namespace: ns, name: spec.shadowSet, uid: setUid }).controlToken };
      const st = await this.engine.status(target);
      if (st.ok && st.status.bitmaps.some((b) => b.id === spec.bitmapId)) {
        await this.engine.deleteBitmap(target, spec.bitmapId);
        this.log.info({ event: 'BitmapDeleted', bitmap: spec.bitmapId, member: spec.member }, 'write bitmap deleted on request');
        const ss = await this.kube.get(R.shadowsets, ns, spec.shadowSet);
        if (ss) await this.event(ss, 'Normal', EventReason.BitmapDeleted, `write bitmap ${spec.bitmapId} of member ${spec.member} deleted: its return will be a full copy`);
      } else if (!st.ok && st.unreachable) {
        return { requeueAfterMs: 2000 }; // the engine holds the bitmap but cannot be asked now
      }
    }
    await this.kube.mergePatch(R.writebitmaps, ns, name, {
      metadata: { finalizers: wb.metadata.finalizers.filter((f) => f !== BITMAP_FINALIZER), resourceVersion: wb.metadata.resourceVersion },
    });
  }
}
