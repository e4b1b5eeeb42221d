/**
 * STAND-IN for the kubelet's CSI volume manager and the attach/detach controller, plugged into the node
 * simulator (its PodVolumePlugin). For a pod bound to simulated node X that uses a claim of the driver's PV:
 *
 * 1. attach/detach controller: the VolumeAttachment `csi-<sha256(pv, driver, node)>` for X; then it waits
 *    (bounded) for external-attacher (ExternalAttacher, csi-controllers.ts) to mark it attached. An attach
 *    error becomes a `FailedAttachVolume` event on the pod and the container waits (ContainerCreating);
 * 2. kubelet: NodeStageVolume and NodePublishVolume on X's node plugin, over its Unix socket, with the
 *    kubelet's own paths under X's kubelet directory (Block: `plugins/kubernetes.io/csi/volumeDevices/…`;
 *    Filesystem: the `globalmount` and the pod's `volumes/kubernetes.io~csi/<pv>/mount`). The simulator links
 *    the published device node (or directory) into the pod's root at its devicePath (or mountPath);
 * 3. kubelet, expansion: a claim left `FileSystemResizePending` by external-resizer (csi-resizer.ts) gets
 *    NodeExpandVolume once staged and published, then its capacity (the PV's) and the condition cleared.
 *
 * When the pod goes: NodeUnpublishVolume; NodeUnstageVolume once no other pod on X publishes the volume; then
 * the VolumeAttachment, once no pod on X wants it (also one that never attached), is deleted and awaited
 * (external-attacher's ControllerUnpublishVolume lets it go).
 * The node plugin does everything on the host for real (qemu-storage-daemon → FUSE → loop, bind mounts).
 */
import { createHash } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { V1Pod } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { ContainerConfigError, waitFor, type PodVolumePlugin } from '@shadowset/e2e';
import { CSI_DRIVER, R, type Kube, type Obj } from '@shadowset/operator/kube';
import { CsiClient } from './csi-client.js';
import { attachmentName, capabilityOf, quantityBytes, type Pv, type Pvc } from './csi-controllers.js';
import { FS_RESIZE_PENDING } from './csi-resizer.js';
import { Events } from './stand-in.js';

interface Published {
  pv: string;
  handle: string;
  node: string;
  staging: string;
  target: string;
  capability: Record<string, unknown>;
}

export interface KubeletCsiOptions {
  kube: () => Kube;
  /** The node plugin's socket on a simulated node. */
  socketOf: (node: string) => string;
  /** The kubelet's directory of a simulated node (the node plugin's --kubelet-dir). */
  kubeletDirOf: (node: string) => string;
  log: Logger;
  /** How long a container start waits for the attachment before it is retried (default 20 s). */
  attachWaitMs?: number;
}

export class KubeletCsi implements PodVolumePlugin {
  private readonly clients = new Map<string, CsiClient>();
  /** By pod uid: what was published for it. */
  private readonly pods = new Map<string, Published[]>();
  /** By pod uid: the attachments made for it (`<pv> <node>`), published or not. */
  private readonly wanted = new Map<string, Set<string>>();
  private readonly events: Events;

  constructor(private readonly o: KubeletCsiOptions) {
    this.events = new Events(o.kube, 'kubelet (stand-in)');
  }

  private client(node: string): CsiClient {
    let c = this.clients.get(node);
    if (!c) this.clients.set(node, (c = new CsiClient(this.o.socketOf(node))));
    return c;
  }

  async setUp(pod: V1Pod, node: string): Promise<Record<string, string>> {
    const kube = this.o.kube();
    const ns = pod.metadata?.namespace ?? 'default';
    const uid = pod.metadata?.uid ?? '';
    const kubelet = this.o.kubeletDirOf(node);
    const out: Record<string, string> = {};
    const done = this.pods.get(uid) ?? [];
    for (const v of pod.spec?.volumes ?? []) {
      const claim = v.persistentVolumeClaim?.claimName;
      if (!claim) continue;
      const pvc = await kube.get(R.pvcs, ns, claim);
      const pvName = (pvc?.spec as { volumeName?: string } | undefined)?.volumeName;
      const pv = pvName ? await kube.get(R.pvs, undefined, pvName) : null;
      const csi = (pv?.spec as { csi?: { driver?: string; volumeHandle?: string; volumeAttributes?: Record<string, string> } } | undefined)?.csi;
      if (!pv || !pvName || csi?.driver !== CSI_DRIVER || !csi.volumeHandle) continue;
      const already = done.find((p) => p.pv === pvName);
      if (already) {
        out[claim] = already.target;
        continue;
      }
      this.wanted.set(uid, (this.wanted.get(uid) ?? new Set()).add(`${pvName} ${node}`));
      const context = await this.attach(pod as unknown as Obj, pvName, node);
      const block = (pv.spec as { volumeMode?: string }).volumeMode === 'Block';
      const handleHash = createHash('sha256').update(csi.volumeHandle).digest('hex');
      const p: Published = {
        pv: pvName, handle: csi.volumeHandle, node,
        capability: capabilityOf(pv as never),
        staging: block ? join(kubelet, 'plugins/kubernetes.io/csi/volumeDevices/staging', pvName) : join(kubelet, 'plugins/kubernetes.io/csi', CSI_DRIVER, handleHash, 'globalmount'),
        target: block ? join(kubelet, 'plugins/kubernetes.io/csi/volumeDevices/publish', pvName, uid) : join(kubelet, 'pods', uid, 'volumes/kubernetes.io~csi', pvName, 'mount'),
      };
      // As the kubelet does: the staging directory and the target's parent exist before the calls.
      await mkdir(p.staging, { recursive: true });
      await mkdir(dirname(p.target), { recursive: true });
      const common = { volume_id: p.handle, publish_context: context, volume_capability: p.capability, secrets: {}, volume_context: csi.volumeAttributes ?? {} };
      try {
        await this.client(node).call('Node', 'NodeStageVolume', { ...common, staging_target_path: p.staging });
        await this.client(node).call('Node', 'NodePublishVolume', { ...common, staging_target_path: p.staging, target_path: p.target, readonly: false });
        await this.finishResize(pod as unknown as Obj, ns, claim, pv as Pv, p);
      } catch (e) {
        if (e instanceof ContainerConfigError) throw e;
        const message = `MountVolume.SetUp failed for volume "${pvName}" : ${(e as Error).message}`;
        await this.events.post(pod as unknown as Obj, 'Pod', 'Warning', 'FailedMount', message);
        throw new ContainerConfigError('ContainerCreating', message);
      }
      done.push(p);
      this.pods.set(uid, done);
      out[claim] = p.target;
      this.o.log.info({ pod: `${ns}/${pod.metadata?.name}`, node, pv: pvName, target: p.target }, 'volume staged and published');
    }
    return out;
  }

  /**
   * The kubelet's part of an expansion: a claim that external-resizer left `FileSystemResizePending` gets
   * NodeExpandVolume once its volume is staged and published here, then the PV's capacity as its own and the
   * condition removed. A failure is a `FileSystemResizeFailed` event and the container waits (retried).
   */
  private async finishResize(pod: Obj, ns: string, claim: string, pv: Pv, p: Published): Promise<void> {
    const kube = this.o.kube();
    const pvc = await kube.get<Pvc>(R.pvcs, ns, claim);
    const conditions = pvc?.status?.conditions ?? [];
    if (!pvc || !conditions.some((c) => c.type === FS_RESIZE_PENDING)) return;
    const size = pv.spec.capacity?.storage ?? '0';
    try {
      await this.client(p.node).call('Node', 'NodeExpandVolume', {
        volume_id: p.handle, volume_path: p.target, staging_target_path: p.staging, volume_capability: p.capability,
        capacity_range: { required_bytes: String(quantityBytes(size)), limit_bytes: '0' }, secrets: {},
      });
    } catch (e) {
      const message = `MountVolume.NodeExpandVolume failed for volume "${pv.metadata.name}" : ${(e as Error).message}`;
      await this.events.post(pod, 'Pod', 'Warning', 'FileSystemResizeFailed', message);
      throw new ContainerConfigError('ContainerCreating', message);
    }
    await kube.mergePatch(R.pvcs, ns, claim, { status: { capacity: { storage: size }, conditions: conditions.filter((c) => c.type !== FS_RESIZE_PENDING) } }, 'status');
    await this.events.post(pod, 'Pod', 'Normal', 'FileSystemResizeSuccessful', `MountVolume.NodeExpandVolume succeeded for volume "${pv.metadata.name}" ${p.node}`);
  }

  /** The attach/detach controller's part: the attachment, and its status awaited. Answers its publish context. */
  private async attach(pod: Obj, pvName: string, node: string): Promise<Record<string, string>> {
    const kube = this.o.kube();
    const name = attachmentName(pvName, node);
    if (!(await kube.get(R.volumeattachments, undefined, name))) {
      await kube.create(R.volumeattachments, undefined, {
        apiVersion: 'storage.k8s.io/v1', kind: 'VolumeAttachment', metadata: { name },
        spec: { attacher: CSI_DRIVER, nodeName: node, source: { persistentVolumeName: pvName } },
      }).catch((e: { code?: string }) => {
        if (e.code !== 'OP_CONFLICT') throw e;
      });
    }
    let last: { attached?: boolean; attachError?: { message?: string }; attachmentMetadata?: Record<string, string> } = {};
    try {
      return await waitFor(`VolumeAttachment ${name} attached`, async () => {
        last = ((await kube.get(R.volumeattachments, undefined, name))?.status ?? {}) as typeof last;
        return last.attached ? (last.attachmentMetadata ?? {}) : undefined;
      }, { timeoutMs: this.o.attachWaitMs ?? 20_000, intervalMs: 250 });
    } catch {
      const why = last.attachError?.message ?? `VolumeAttachment ${name} is not attached yet`;
      const message = `AttachVolume.Attach failed for volume "${pvName}" : ${why}`;
      await this.events.post(pod, 'Pod', 'Warning', 'FailedAttachVolume', message);
      throw new ContainerConfigError('ContainerCreating', message);
    }
  }

  async tearDown(pod: V1Pod, node: string): Promise<void> {
    const uid = pod.metadata?.uid ?? '';
    const list = this.pods.get(uid) ?? [];
    for (const p of list) {
      await this.retry(`unpublish ${p.pv}`, () => this.client(node).call('Node', 'NodeUnpublishVolume', { volume_id: p.handle, target_path: p.target }));
      const othersHere = [...this.pods.entries()].some(([u, ps]) => u !== uid && ps.some((q) => q.pv === p.pv && q.node === node));
      if (othersHere) continue;
      await this.retry(`unstage ${p.pv}`, () => this.client(node).call('Node', 'NodeUnstageVolume', { volume_id: p.handle, staging_target_path: p.staging }));
      this.o.log.info({ pod: `${pod.metadata?.namespace}/${pod.metadata?.name}`, node, pv: p.pv }, 'volume unpublished and unstaged');
    }
    this.pods.delete(uid);
    // The attach/detach controller: an attachment no pod on the node needs any more is deleted (external-attacher
    // unpublishes and lets it go) — also one that never attached (refused: another node held the volume).
    const mine = this.wanted.get(uid) ?? new Set<string>();
    this.wanted.delete(uid);
    const kube = this.o.kube();
    for (const key of mine) {
      if ([...this.wanted.values()].some((w) => w.has(key))) continue;
      const [pv, on] = key.split(' ') as [string, string];
      const name = attachmentName(pv, on);
      await kube.delete(R.volumeattachments, undefined, name);
      await waitFor(`VolumeAttachment ${name} gone`, async () => (await kube.get(R.volumeattachments, undefined, name)) === null, { timeoutMs: 60_000, intervalMs: 250 });
    }
  }

  /** The kubelet retries a failed unmount; bounded here (30 s). */
  private async retry(what: string, f: () => Promise<unknown>): Promise<void> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        await f();
        return;
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`${what}: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}
