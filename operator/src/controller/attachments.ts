/**
 * The CSI driver's VolumeAttachments: which node the consumer of a set's volume is on. A VolumeAttachment
 * names a PersistentVolume (or carries an inline volume spec); the volume handle `<namespace>/<set>` names
 * the set. Read-only: the attacher (external-attacher) owns these objects.
 */
import { R, type Kube, type Obj } from '../kube/client.js';
import { ATTACHER } from '../reconcile/placement.js';
import type { AttachmentInfo } from '../reconcile/types.js';

interface VolumeAttachment extends Obj {
  spec?: {
    attacher?: string;
    nodeName?: string;
    source?: { persistentVolumeName?: string; inlineVolumeSpec?: { csi?: { driver?: string; volumeHandle?: string } } };
  };
  status?: { attached?: boolean };
}

/** The volume handle a VolumeAttachment of the driver attaches, or null (another driver, no such PV). */
export async function attachedHandle(kube: Pick<Kube, 'get'>, va: Obj): Promise<string | null> {
  const spec = (va as VolumeAttachment).spec;
  if (spec?.attacher !== ATTACHER || !spec.nodeName) return null;
  const inline = spec.source?.inlineVolumeSpec?.csi;
  if (inline) return inline.driver === ATTACHER ? (inline.volumeHandle ?? null) : null;
  const pvName = spec.source?.persistentVolumeName;
  if (!pvName) return null;
  const pv = await kube.get(R.pvs, undefined, pvName);
  const csi = (pv?.spec as { csi?: { driver?: string; volumeHandle?: string } } | undefined)?.csi;
  return csi?.driver === ATTACHER ? (csi.volumeHandle ?? null) : null;
}

/** The driver's VolumeAttachments of the set `<namespace>/<name>`. */
export async function setAttachments(kube: Pick<Kube, 'get' | 'list'>, namespace: string, name: string): Promise<AttachmentInfo[]> {
  const out: AttachmentInfo[] = [];
  for (const va of (await kube.list(R.volumeattachments)).items as VolumeAttachment[]) {
    if ((await attachedHandle(kube, va)) !== `${namespace}/${name}`) continue;
    out.push({
      name: va.metadata.name,
      node: va.spec!.nodeName!,
      createdMs: Date.parse(va.metadata.creationTimestamp ?? '') || 0,
      deleting: !!va.metadata.deletionTimestamp,
      attached: va.status?.attached === true,
    });
  }
  return out;
}
