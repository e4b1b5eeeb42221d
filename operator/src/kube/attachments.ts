/**
 * The CSI driver's VolumeAttachments, read by both sides that must agree on them: the operator (which node
 * a set's engine follows) and the driver's ControllerPublish (which node holds the volume). One reading of
 * which volume an attachment names, and one order among attachments (older first), so the two cannot drift.
 * Read-only: the attacher (external-attacher) owns these objects.
 */
import { R, type Obj, type Resource } from './client.js';

/** The driver's name: the attacher of its VolumeAttachments and the driver of its PVs. */
export const CSI_DRIVER = 'csi.shadowset.dev';

export interface VolumeAttachment extends Obj {
  spec?: {
    attacher?: string;
    nodeName?: string;
    source?: { persistentVolumeName?: string; inlineVolumeSpec?: { csi?: { driver?: string; volumeHandle?: string } } };
  };
  status?: { attached?: boolean };
}

/** The volume handle a VolumeAttachment of the driver attaches, or null (another driver, no node, no such PV). */
export async function attachedHandle(kube: { get(r: Resource, namespace: string | undefined, name: string): Promise<Obj | null> }, va: Obj): Promise<string | null> {
  const spec = (va as VolumeAttachment).spec;
  if (spec?.attacher !== CSI_DRIVER || !spec.nodeName) return null;
  const inline = spec.source?.inlineVolumeSpec?.csi;
  if (inline) return inline.driver === CSI_DRIVER ? (inline.volumeHandle ?? null) : null;
  const pvName = spec.source?.persistentVolumeName;
  if (!pvName) return null;
  const pv = await kube.get(R.pvs, undefined, pvName);
  const csi = (pv?.spec as { csi?: { driver?: string; volumeHandle?: string } } | undefined)?.csi;
  return csi?.driver === CSI_DRIVER ? (csi.volumeHandle ?? null) : null;
}

/** When it was created (ms; 0 when unknown). */
export const createdMs = (va: Obj): number => Date.parse(va.metadata.creationTimestamp ?? '') || 0;

/** Older first: by creation, then by name, so the choice is stable on both sides. */
export function olderFirst(a: { createdMs: number; name: string }, b: { createdMs: number; name: string }): number {
  return a.createdMs - b.createdMs || a.name.localeCompare(b.name);
}
