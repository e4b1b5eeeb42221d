/**
 * STAND-INS for the cluster-side controllers a real cluster runs around a CSI driver, for the local control
 * plane (which has no kube-controller-manager and no sidecars). They call the driver's real gRPC API over its
 * Unix socket with what the real components send; nothing about the driver is faked. Simulated here:
 *
 * - `VolumeProvisioner` plays **external-provisioner** for the driver's classes (CreateVolume with the
 *   class's parameters and the `csi.storage.k8s.io/pvc/*`, `pv/name` keys; the PV; DeleteVolume when the
 *   claim is gone), a **local-volume provisioner** for the members' class (a file-backed device, a loop device
 *   with root, on the node the driver chose in `volume.kubernetes.io/selected-node`; the class allows expansion,
 *   so a bound claim whose request grows gets a longer device, then PV and claim capacity), and the parts of the
 *   **PV controller** (binding claim and volume) and of the **pvc-protection controller** (the finalizer let go
 *   once no pod uses the claim) that these need.
 * - `ExternalAttacher` plays **external-attacher**: ControllerPublishVolume for each VolumeAttachment of the
 *   driver (its finalizer first), the outcome in the attachment's status; ControllerUnpublishVolume when the
 *   attachment is deleted, then the finalizer off.
 * - external-resizer is in csi-resizer.ts.
 *
 * Each is level-triggered: an informer kicks a pass over everything, and a pass that left work (a retry)
 * kicks another a second later. One pass at a time.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { truncate } from 'node:fs/promises';
import { promisify } from 'node:util';
import type { Logger } from 'pino';
import { createBackingDevice, type BackingDevice } from '@shadowset/e2e';
import { CSI_DRIVER, R, type Kube, type Obj } from '@shadowset/operator/kube';
import type { CsiClient } from './csi-client.js';
import { Events, Loop } from './stand-in.js';

export const STORAGE_CLASSES = { group: 'storage.k8s.io', version: 'v1', plural: 'storageclasses', namespaced: false };
/** The provisioner name of the simulated local-volume class the members come from. */
export const LOCAL_PROVISIONER = 'local.sim.shadowset.dev';
const PROTECTION = 'kubernetes.io/pvc-protection';
const PV_PROTECTION = 'kubernetes.io/pv-protection';
const run = promisify(execFile);
const ATTACHER_FINALIZER = `external-attacher/${CSI_DRIVER.replace(/\./g, '-')}`;
const SELECTED_NODE = 'volume.kubernetes.io/selected-node';
export const PROVISIONED_BY = 'pv.kubernetes.io/provisioned-by';

export interface Pvc extends Obj {
  spec: { storageClassName?: string; volumeName?: string; volumeMode?: string; accessModes?: string[]; resources?: { requests?: { storage?: string } } };
  status?: { phase?: string; capacity?: { storage?: string }; conditions?: { type: string; status: string; message?: string }[] };
}
export interface Pv extends Obj {
  spec: { capacity?: { storage?: string }; csi?: { driver?: string; volumeHandle?: string; volumeAttributes?: Record<string, string> }; claimRef?: { namespace?: string; name?: string; uid?: string }; volumeMode?: string; accessModes?: string[]; persistentVolumeReclaimPolicy?: string; local?: { path?: string } };
  status?: { phase?: string };
}
interface StorageClass extends Obj { provisioner?: string; parameters?: Record<string, string>; reclaimPolicy?: string }

/** Bytes of a quantity as the API writes storage sizes (plain, or Ki/Mi/Gi/Ti, k/M/G). */
export function quantityBytes(q: string): number {
  const m = /^(\d+)(Ki|Mi|Gi|Ti|k|M|G)?$/.exec(q.trim());
  if (!m) throw new Error(`cannot read storage quantity ${q}`);
  const unit = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9 }[m[2] ?? ''] ?? 1;
  return Number(m[1]) * unit;
}

/** A size as the API shows it: whole MiB as `<n>Mi`, else bytes. */
export function sizeOf(bytes: number): string {
  return bytes % 2 ** 20 === 0 ? `${bytes / 2 ** 20}Mi` : String(bytes);
}

/** The CSI capability a PV asks for, as the sidecars and the kubelet derive it (the driver offers SINGLE_NODE_MULTI_WRITER). */
export function capabilityOf(pv: Pv): Record<string, unknown> {
  const mode = (pv.spec.accessModes ?? []).includes('ReadWriteOncePod') ? 'SINGLE_NODE_SINGLE_WRITER' : 'SINGLE_NODE_MULTI_WRITER';
  const fs = (pv.spec as { csi?: { fsType?: string } }).csi?.fsType ?? '';
  return pv.spec.volumeMode === 'Block'
    ? { block: {}, access_mode: { mode } }
    : { mount: { fs_type: fs, mount_flags: [] }, access_mode: { mode } };
}

export class VolumeProvisioner {
  /** The member volumes' devices, by PV name (tests read the members' bytes there). */
  readonly disks = new Map<string, BackingDevice>();
  /** The files behind every member device made, freed or not (what a leftover loop device would name). */
  readonly made: string[] = [];
  private readonly loop: Loop;
  private readonly events: Events;

  constructor(private readonly kube: Kube, private readonly controller: CsiClient, private readonly log: Logger) {
    this.loop = new Loop(() => this.pass(), log, 'external-provisioner');
    this.events = new Events(() => kube, `${CSI_DRIVER}_external-provisioner (stand-in)`);
  }

  start(): void {
    this.loop.watch(this.kube, [R.pvcs, R.pvs, R.pods, STORAGE_CLASSES]);
    this.loop.kick();
  }

  async stop(): Promise<void> {
    await this.loop.stop();
  }

  private async pass(): Promise<boolean> {
    const classes = new Map((await this.kube.list<StorageClass>(STORAGE_CLASSES)).items.map((c) => [c.metadata.name, c]));
    const claims = (await this.kube.list<Pvc>(R.pvcs)).items;
    let more = false;
    for (const pvc of claims) {
      if (pvc.metadata.deletionTimestamp) {
        more = (await this.release(pvc)) || more;
        continue;
      }
      const sc = classes.get(pvc.spec.storageClassName ?? '');
      if (pvc.spec.volumeName && sc?.provisioner === LOCAL_PROVISIONER && pvc.status?.phase === 'Bound') {
        more = (await this.growLocal(pvc).then(() => false, async (e: Error) => {
          await this.events.post(pvc, 'PersistentVolumeClaim', 'Warning', 'VolumeResizeFailed', `resize of ${pvc.spec.volumeName} failed: ${e.message}`);
          return true;
        })) || more;
      }
      if (pvc.spec.volumeName || !sc) continue;
      try {
        if (sc.provisioner === CSI_DRIVER) await this.provisionCsi(pvc, sc);
        else if (sc.provisioner === LOCAL_PROVISIONER && pvc.metadata.annotations?.[SELECTED_NODE]) await this.provisionLocal(pvc, pvc.metadata.annotations[SELECTED_NODE]);
      } catch (e) {
        more = true;
        await this.events.post(pvc, 'PersistentVolumeClaim', 'Warning', 'ProvisioningFailed', `failed to provision volume with StorageClass "${sc.metadata.name}": ${(e as Error).message}`);
      }
    }
    const uids = new Set(claims.map((c) => c.metadata.uid));
    for (const pv of (await this.kube.list<Pv>(R.pvs)).items) {
      const by = pv.metadata.annotations?.[PROVISIONED_BY];
      if ((by !== CSI_DRIVER && by !== LOCAL_PROVISIONER) || uids.has(pv.spec.claimRef?.uid)) continue;
      more = (await this.reclaim(pv)) || more;
    }
    return more;
  }

  /** The pvc-protection controller: a deleted claim goes once no pod that is not finished uses it. */
  private async release(pvc: Pvc): Promise<boolean> {
    if (!(pvc.metadata.finalizers ?? []).includes(PROTECTION)) return false;
    const pods = (await this.kube.list(R.pods, pvc.metadata.namespace)).items;
    const users = pods.filter((p) => !['Succeeded', 'Failed'].includes(String((p.status as { phase?: string } | undefined)?.phase))
      && ((p.spec as { volumes?: { persistentVolumeClaim?: { claimName?: string } }[] }).volumes ?? []).some((v) => v.persistentVolumeClaim?.claimName === pvc.metadata.name));
    if (users.length) return true;
    await this.kube.mergePatch(R.pvcs, pvc.metadata.namespace, pvc.metadata.name, { metadata: { finalizers: (pvc.metadata.finalizers ?? []).filter((f) => f !== PROTECTION) } });
    return false;
  }

  /** external-provisioner: CreateVolume named after the claim's uid, with the class's parameters and the claim's keys. */
  private async provisionCsi(pvc: Pvc, sc: StorageClass): Promise<void> {
    const pvName = `pvc-${pvc.metadata.uid}`;
    const bytes = quantityBytes(pvc.spec.resources?.requests?.storage ?? '1Gi');
    const block = pvc.spec.volumeMode === 'Block';
    const mode = (pvc.spec.accessModes ?? []).includes('ReadWriteOncePod') ? 'SINGLE_NODE_SINGLE_WRITER' : 'SINGLE_NODE_MULTI_WRITER';
    const fsType = sc.parameters?.['csi.storage.k8s.io/fstype'] ?? '';
    const parameters = Object.fromEntries(Object.entries(sc.parameters ?? {}).filter(([k]) => !k.startsWith('csi.storage.k8s.io/')));
    await this.events.post(pvc, 'PersistentVolumeClaim', 'Normal', 'Provisioning', `External provisioner is provisioning volume for claim "${pvc.metadata.namespace}/${pvc.metadata.name}"`);
    const res = await this.controller.call<{ volume: { volume_id: string; capacity_bytes: string; volume_context: Record<string, string> } }>('Controller', 'CreateVolume', {
      name: pvName,
      capacity_range: { required_bytes: String(bytes), limit_bytes: '0' },
      volume_capabilities: [block ? { block: {}, access_mode: { mode } } : { mount: { fs_type: fsType, mount_flags: [] }, access_mode: { mode } }],
      parameters: { ...parameters, 'csi.storage.k8s.io/pvc/name': pvc.metadata.name, 'csi.storage.k8s.io/pvc/namespace': pvc.metadata.namespace, 'csi.storage.k8s.io/pv/name': pvName },
      secrets: {},
    });
    await this.createAndBind(pvc, pvName, Number(res.volume.capacity_bytes), CSI_DRIVER, sc.reclaimPolicy ?? 'Delete', {
      csi: { driver: CSI_DRIVER, volumeHandle: res.volume.volume_id, volumeAttributes: res.volume.volume_context ?? {}, ...(block ? {} : { fsType: fsType || 'ext4' }) },
    });
    await this.events.post(pvc, 'PersistentVolumeClaim', 'Normal', 'ProvisioningSucceeded', `Successfully provisioned volume ${pvName} (ShadowSet ${res.volume.volume_id})`);
  }

  /** The local-volume provisioner: a fresh zeroed device on the node the claim names. */
  private async provisionLocal(pvc: Pvc, node: string): Promise<void> {
    const pvName = `local-${pvc.metadata.uid}`;
    const bytes = quantityBytes(pvc.spec.resources?.requests?.storage ?? '0');
    const disk = this.disks.get(pvName) ?? (await createBackingDevice(bytes));
    this.disks.set(pvName, disk);
    if (!this.made.includes(disk.file)) this.made.push(disk.file);
    await this.createAndBind(pvc, pvName, bytes, LOCAL_PROVISIONER, 'Delete', {
      local: { path: disk.path },
      nodeAffinity: { required: { nodeSelectorTerms: [{ matchExpressions: [{ key: 'kubernetes.io/hostname', operator: 'In', values: [node] }] }] } },
    });
  }

  /**
   * The member class's resizer (the class has allowVolumeExpansion): a bound claim whose request is above its
   * capacity gets a larger device (its file made longer, `losetup -c` so the loop device follows), then the
   * PV's capacity and the claim's, as external-resizer and the PV controller write them.
   */
  private async growLocal(pvc: Pvc): Promise<void> {
    const want = quantityBytes(pvc.spec.resources?.requests?.storage ?? '0');
    if (want <= quantityBytes(pvc.status?.capacity?.storage ?? '0')) return;
    const pvName = pvc.spec.volumeName!;
    const disk = this.disks.get(pvName);
    if (!disk) throw new Error(`no device behind PV ${pvName}`);
    if (disk.sizeBytes < want) {
      await truncate(disk.file, want);
      if (disk.kind === 'loop') await run('losetup', ['-c', disk.path]);
      disk.sizeBytes = want;
    }
    await this.kube.mergePatch(R.pvs, undefined, pvName, { spec: { capacity: { storage: sizeOf(want) } } });
    await this.kube.mergePatch(R.pvcs, pvc.metadata.namespace, pvc.metadata.name, { status: { capacity: { storage: sizeOf(want) } } }, 'status');
    await this.events.post(pvc, 'PersistentVolumeClaim', 'Normal', 'VolumeResizeSuccessful', `device of ${pvName} grown to ${sizeOf(want)}`);
  }

  /** The PV, then the PV controller's binding of claim and volume. */
  private async createAndBind(pvc: Pvc, pvName: string, bytes: number, by: string, reclaim: string, source: Record<string, unknown>): Promise<void> {
    const ns = pvc.metadata.namespace!;
    const size = sizeOf(bytes);
    if (!(await this.kube.get(R.pvs, undefined, pvName))) {
      await this.kube.create(R.pvs, undefined, {
        metadata: { name: pvName, annotations: { [PROVISIONED_BY]: by } },
        spec: {
          capacity: { storage: size }, accessModes: pvc.spec.accessModes ?? ['ReadWriteOnce'], volumeMode: pvc.spec.volumeMode ?? 'Filesystem',
          storageClassName: pvc.spec.storageClassName, persistentVolumeReclaimPolicy: reclaim,
          claimRef: { kind: 'PersistentVolumeClaim', apiVersion: 'v1', namespace: ns, name: pvc.metadata.name, uid: pvc.metadata.uid },
          ...source,
        },
      });
    }
    await this.kube.mergePatch(R.pvs, undefined, pvName, { status: { phase: 'Bound' } }, 'status');
    await this.kube.mergePatch(R.pvcs, ns, pvc.metadata.name, {
      metadata: { annotations: { 'pv.kubernetes.io/bind-completed': 'yes', 'pv.kubernetes.io/bound-by-controller': 'yes' } },
      spec: { volumeName: pvName },
    });
    await this.kube.mergePatch(R.pvcs, ns, pvc.metadata.name, { status: { phase: 'Bound', accessModes: pvc.spec.accessModes, capacity: { storage: size } } }, 'status');
  }

  /** The claim is gone: DeleteVolume (retried while the set dissolves) or the device freed, then the PV. */
  private async reclaim(pv: Pv): Promise<boolean> {
    if (pv.status?.phase !== 'Released') await this.kube.mergePatch(R.pvs, undefined, pv.metadata.name, { status: { phase: 'Released' } }, 'status');
    if (pv.spec.persistentVolumeReclaimPolicy !== 'Delete') return false;
    if (pv.spec.csi?.volumeHandle) {
      try {
        await this.controller.call('Controller', 'DeleteVolume', { volume_id: pv.spec.csi.volumeHandle, secrets: {} });
      } catch (e) {
        this.log.debug({ pv: pv.metadata.name, err: (e as Error).message }, 'DeleteVolume: retrying');
        return true;
      }
    } else {
      await this.disks.get(pv.metadata.name)?.release();
      this.disks.delete(pv.metadata.name);
    }
    await this.kube.mergePatch(R.pvs, undefined, pv.metadata.name, { metadata: { finalizers: (pv.metadata.finalizers ?? []).filter((f) => f !== PV_PROTECTION) } });
    await this.kube.delete(R.pvs, undefined, pv.metadata.name);
    return false;
  }

  /** Frees every member device still held (after the cluster is gone). */
  async releaseAll(): Promise<void> {
    for (const d of this.disks.values()) await d.release().catch(() => undefined);
    this.disks.clear();
  }
}

/** The name the attach/detach controller gives a PV's attachment to a node. */
export function attachmentName(pvName: string, node: string): string {
  return `csi-${createHash('sha256').update(`${pvName}${CSI_DRIVER}${node}`).digest('hex')}`;
}

interface Va extends Obj {
  spec: { attacher?: string; nodeName?: string; source?: { persistentVolumeName?: string } };
  status?: { attached?: boolean; attachError?: { message?: string } };
}

export class ExternalAttacher {
  private readonly loop: Loop;

  constructor(private readonly kube: Kube, private readonly controller: CsiClient, log: Logger) {
    this.loop = new Loop(() => this.pass(), log, 'external-attacher');
  }

  start(): void {
    this.loop.watch(this.kube, [R.volumeattachments]);
    this.loop.kick();
  }

  async stop(): Promise<void> {
    await this.loop.stop();
  }

  private async pass(): Promise<boolean> {
    let more = false;
    for (const va of (await this.kube.list<Va>(R.volumeattachments)).items) {
      if (va.spec.attacher !== CSI_DRIVER) continue;
      const finalizers = va.metadata.finalizers ?? [];
      const pv = await this.kube.get<Pv>(R.pvs, undefined, va.spec.source?.persistentVolumeName ?? '');
      const handle = pv?.spec.csi?.volumeHandle;
      const req = { volume_id: handle, node_id: va.spec.nodeName, secrets: {} };
      try {
        if (va.metadata.deletionTimestamp) {
          if (!finalizers.includes(ATTACHER_FINALIZER)) continue;
          if (handle) await this.controller.call('Controller', 'ControllerUnpublishVolume', req);
          await this.kube.mergePatch(R.volumeattachments, undefined, va.metadata.name, { status: { attached: false } }, 'status');
          await this.kube.mergePatch(R.volumeattachments, undefined, va.metadata.name, { metadata: { finalizers: finalizers.filter((f) => f !== ATTACHER_FINALIZER) } });
          continue;
        }
        if (va.status?.attached || !pv || !handle) continue;
        if (!finalizers.includes(ATTACHER_FINALIZER)) {
          await this.kube.mergePatch(R.volumeattachments, undefined, va.metadata.name, { metadata: { finalizers: [...finalizers, ATTACHER_FINALIZER] } });
        }
        const res = await this.controller.call<{ publish_context?: Record<string, string> }>('Controller', 'ControllerPublishVolume', {
          ...req, volume_capability: capabilityOf(pv), readonly: false, volume_context: pv.spec.csi?.volumeAttributes ?? {},
        });
        await this.kube.mergePatch(R.volumeattachments, undefined, va.metadata.name, { status: { attached: true, attachmentMetadata: res.publish_context ?? {}, attachError: null } }, 'status');
      } catch (e) {
        more = true;
        const message = (e as Error).message;
        const status = va.metadata.deletionTimestamp ? { detachError: { time: new Date().toISOString(), message } } : { attached: false, attachError: { time: new Date().toISOString(), message } };
        await this.kube.mergePatch(R.volumeattachments, undefined, va.metadata.name, { status }, 'status').catch(() => undefined);
      }
    }
    return more;
  }
}
