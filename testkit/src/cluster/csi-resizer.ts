/**
 * STAND-IN for **external-resizer** (v2, run with `--handle-volume-inuse-error=false` as the chart runs it) for
 * the local control plane, in the style of csi-controllers.ts: it calls the driver's real gRPC API over its Unix
 * socket with what the real sidecar sends, and writes what it writes. Nothing about the driver is faked.
 *
 * For a bound claim of the driver's PV whose `spec.resources.requests.storage` is above its `status.capacity`:
 * the `Resizing` condition and event, then ControllerExpandVolume (the PV's handle, the request as the required
 * bytes, the PV's capability). A refusal (FailedPrecondition while a pod holds the volume, Unavailable while
 * members or the set still grow, anything else) is a `VolumeResizeFailed` event on the claim and a retry after a
 * back-off that doubles from 1 s up to 8 s (the real one goes on to 5 min). Success: the PV's `spec.capacity`
 * patched; if the driver answers `node_expansion_required`, the claim gets `FileSystemResizePending` (the
 * kubelet finishes: NodeExpandVolume at the next stage, then the claim's capacity — csi-kubelet.ts), else its
 * `status.capacity` is the new size at once. A claim whose PV already has the size and that waits for its node
 * step is not asked again.
 */
import type { Logger } from 'pino';
import { CSI_DRIVER, R, type Kube } from '@shadowset/operator/kube';
import type { CsiClient } from './csi-client.js';
import { capabilityOf, quantityBytes, sizeOf, type Pv, type Pvc } from './csi-controllers.js';
import { Events, Loop } from './stand-in.js';

export const FS_RESIZE_PENDING = 'FileSystemResizePending';
const FIRST_RETRY_MS = 1000;
const MAX_RETRY_MS = 8000;

type Condition = NonNullable<NonNullable<Pvc['status']>['conditions']>[number];

export class ExternalResizer {
  private readonly loop: Loop;
  private readonly events: Events;
  /** By claim uid: when it may be tried again, and the back-off after that. */
  private readonly backoff = new Map<string, { next: number; delayMs: number }>();
  /** ControllerExpandVolume calls made, and how many were refused (what a test reports). */
  readonly calls = { made: 0, refused: 0 };

  constructor(private readonly kube: Kube, private readonly controller: CsiClient, private readonly log: Logger) {
    this.loop = new Loop(() => this.pass(), log, 'external-resizer');
    this.events = new Events(() => kube, `external-resizer ${CSI_DRIVER} (stand-in)`);
  }

  start(): void {
    this.loop.watch(this.kube, [R.pvcs, R.pvs]);
    this.loop.kick();
  }

  async stop(): Promise<void> {
    await this.loop.stop();
  }

  private async pass(): Promise<boolean> {
    let more = false;
    for (const pvc of (await this.kube.list<Pvc>(R.pvcs)).items) {
      if (pvc.metadata.deletionTimestamp || pvc.status?.phase !== 'Bound' || !pvc.spec.volumeName) continue;
      const want = quantityBytes(pvc.spec.resources?.requests?.storage ?? '0');
      if (want <= quantityBytes(pvc.status.capacity?.storage ?? '0')) {
        this.backoff.delete(pvc.metadata.uid!);
        continue;
      }
      const pv = await this.kube.get<Pv>(R.pvs, undefined, pvc.spec.volumeName);
      if (pv?.spec.csi?.driver !== CSI_DRIVER || !pv.spec.csi.volumeHandle) continue;
      const conditions = pvc.status.conditions ?? [];
      // Done on the controller's side: the kubelet's part is left (the next stage of the volume).
      if (conditions.some((c) => c.type === FS_RESIZE_PENDING) && quantityBytes(pv.spec.capacity?.storage ?? '0') >= want) continue;
      const b = this.backoff.get(pvc.metadata.uid!);
      if (b && Date.now() < b.next) {
        more = true;
        continue;
      }
      more = (await this.expand(pvc, pv, want, conditions)) || more;
    }
    return more;
  }

  /** One ControllerExpandVolume; answers whether it must be tried again. */
  private async expand(pvc: Pvc, pv: Pv, want: number, conditions: Condition[]): Promise<boolean> {
    const { namespace: ns, name, uid } = pvc.metadata;
    const keep = conditions.filter((c) => c.type !== 'Resizing' && c.type !== FS_RESIZE_PENDING);
    const now = new Date().toISOString();
    if (!conditions.some((c) => c.type === 'Resizing')) {
      await this.kube.mergePatch(R.pvcs, ns, name, { status: { conditions: [...keep, { type: 'Resizing', status: 'True', lastTransitionTime: now }] } }, 'status');
    }
    await this.events.post(pvc, 'PersistentVolumeClaim', 'Normal', 'Resizing', `External resizer is resizing volume ${pv.metadata.name}`);
    let res: { capacity_bytes?: string; node_expansion_required?: boolean };
    this.calls.made++;
    try {
      res = await this.controller.call('Controller', 'ControllerExpandVolume', {
        volume_id: pv.spec.csi!.volumeHandle, capacity_range: { required_bytes: String(want), limit_bytes: '0' }, secrets: {}, volume_capability: capabilityOf(pv),
      });
    } catch (e) {
      this.calls.refused++;
      const delayMs = Math.min(MAX_RETRY_MS, (this.backoff.get(uid!)?.delayMs ?? FIRST_RETRY_MS / 2) * 2);
      this.backoff.set(uid!, { next: Date.now() + delayMs, delayMs });
      this.log.debug({ claim: `${ns}/${name}`, err: (e as Error).message, retryMs: delayMs }, 'ControllerExpandVolume refused; retrying');
      await this.events.post(pvc, 'PersistentVolumeClaim', 'Warning', 'VolumeResizeFailed', `resize volume "${pv.metadata.name}" by resizer "${CSI_DRIVER}" failed: ${(e as Error).message}`);
      return true;
    }
    this.backoff.delete(uid!);
    const size = sizeOf(Math.max(want, Number(res.capacity_bytes ?? 0)));
    await this.kube.mergePatch(R.pvs, undefined, pv.metadata.name, { spec: { capacity: { storage: size } } });
    if (res.node_expansion_required) {
      const pending = { type: FS_RESIZE_PENDING, status: 'True', lastTransitionTime: new Date().toISOString(), message: 'Waiting for user to (re-)start a pod to finish file system resize of volume on node.' };
      await this.kube.mergePatch(R.pvcs, ns, name, { status: { conditions: [...keep, pending] } }, 'status');
      await this.events.post(pvc, 'PersistentVolumeClaim', 'Normal', 'FileSystemResizeRequired', 'Require file system resize of volume on node');
    } else {
      await this.kube.mergePatch(R.pvcs, ns, name, { status: { capacity: { storage: size }, conditions: keep } }, 'status');
      await this.events.post(pvc, 'PersistentVolumeClaim', 'Normal', 'VolumeResizeSuccessful', 'Resize volume succeeded');
    }
    return false;
  }
}
