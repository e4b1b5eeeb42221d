/**
 * Volume ids name a ShadowSet: `<namespace>/<name>`. Dynamic volumes get a set named after the CO's volume
 * name when that is a usable name, else a name derived from its hash (the same name every time, which is
 * what makes CreateVolume idempotent). A hand-made set is consumed by writing its id as the volume handle.
 */
import { createHash } from 'node:crypto';

export interface VolumeRef {
  namespace: string;
  name: string;
}

// A ShadowSet's name becomes a Service name (a DNS-1035 label) and prefixes its pods and member claims.
const SET_NAME = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
export const MAX_SET_NAME = 45;
const NAMESPACE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export function setNameFor(volumeName: string): string {
  if (volumeName.length <= MAX_SET_NAME && SET_NAME.test(volumeName)) return volumeName;
  return `csi-${createHash('sha256').update(volumeName).digest('hex').slice(0, 24)}`;
}

export function formatVolumeId(v: VolumeRef): string {
  return `${v.namespace}/${v.name}`;
}

/** The set a volume id names, or null when it cannot name one. */
export function parseVolumeId(id: string): VolumeRef | null {
  const parts = id.split('/');
  if (parts.length !== 2) return null;
  const [namespace, name] = parts as [string, string];
  if (namespace.length > 63 || !NAMESPACE.test(namespace)) return null;
  if (name.length > 63 || !SET_NAME.test(name)) return null;
  return { namespace, name };
}
