/**
 * The CSI driver's VolumeAttachments: which node the consumer of a set's volume is on. A VolumeAttachment
 * names a PersistentVolume (or carries an inline volume spec); the volume handle `<namespace>/<set>` names
 * the set. Read-only: the attacher (external-attacher) owns these objects.
 */
import { attachedHandle, createdMs, type VolumeAttachment } from '../kube/attachments.js';
import { R, type Kube } from '../kube/client.js';
import type { AttachmentInfo } from '../reconcile/types.js';

export { attachedHandle };

/** The driver's VolumeAttachments of the set `<namespace>/<name>`. */
export async function setAttachments(kube: Pick<Kube, 'get' | 'list'>, namespace: string, name: string): Promise<AttachmentInfo[]> {
  const out: AttachmentInfo[] = [];
  for (const va of (await kube.list(R.volumeattachments)).items as VolumeAttachment[]) {
    if ((await attachedHandle(kube, va)) !== `${namespace}/${name}`) continue;
    out.push({
      name: va.metadata.name,
      node: va.spec!.nodeName!,
      createdMs: createdMs(va),
      deleting: !!va.metadata.deletionTimestamp,
      attached: va.status?.attached === true,
    });
  }
  return out;
}
