/**
 * Volume capabilities (access type and mode) as the CO sends them, checked once for the controller and the
 * node. One writer on one node: multi-node modes are refused. A mount asks for ext4 (the default) or xfs.
 */
import { CsiError, invalid } from './errors.js';

export interface RawCapability {
  access_type?: 'block' | 'mount';
  block?: object | null;
  mount?: { fs_type?: string; mount_flags?: string[]; volume_mount_group?: string } | null;
  access_mode?: { mode?: string } | null;
}

export type Capability =
  | { kind: 'block'; mode: AccessMode }
  | { kind: 'mount'; mode: AccessMode; fsType: FsType; fsExplicit: boolean; mountFlags: string[] };

export const SINGLE_NODE_MODES = ['SINGLE_NODE_WRITER', 'SINGLE_NODE_READER_ONLY', 'SINGLE_NODE_SINGLE_WRITER', 'SINGLE_NODE_MULTI_WRITER'] as const;
export type AccessMode = (typeof SINGLE_NODE_MODES)[number];
export const FS_TYPES = ['ext4', 'xfs'] as const;
export type FsType = (typeof FS_TYPES)[number];
export const DEFAULT_FS: FsType = 'ext4';

// A mount flag is one option word (no commas, no spaces): it goes to mount -o as it is.
const MOUNT_FLAG = /^[A-Za-z0-9_.=:/-]{1,128}$/;

/** Why a capability cannot be served, or null when it can. */
export function capabilityProblem(c: RawCapability): string | null {
  try {
    parseCapability(c);
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

export function parseCapability(c: RawCapability): Capability {
  const mode = c.access_mode?.mode ?? 'UNKNOWN';
  if (!(SINGLE_NODE_MODES as readonly string[]).includes(mode)) {
    throw invalid(`access mode ${mode} is not supported: a shadowed volume has one writer on one node (ReadWriteOnce or ReadWriteOncePod)`);
  }
  const m = mode as AccessMode;
  if (c.access_type === 'block' || (c.block && !c.mount)) return { kind: 'block', mode: m };
  if (c.access_type === 'mount' || c.mount) {
    const fs = c.mount?.fs_type ?? '';
    if (fs !== '' && !(FS_TYPES as readonly string[]).includes(fs)) {
      throw invalid(`fs_type ${JSON.stringify(fs)} is not supported (ext4 or xfs)`);
    }
    const flags = c.mount?.mount_flags ?? [];
    const bad = flags.find((f) => !MOUNT_FLAG.test(f));
    if (bad !== undefined) throw invalid(`mount flag ${JSON.stringify(bad)} is not one option word`);
    return { kind: 'mount', mode: m, fsType: (fs || DEFAULT_FS) as FsType, fsExplicit: fs !== '', mountFlags: flags };
  }
  throw invalid('volume capability has neither block nor mount access type');
}

export function parseCapabilities(list: RawCapability[] | undefined): Capability[] {
  if (!list || list.length === 0) throw invalid('volume_capabilities must not be empty');
  return list.map(parseCapability);
}

export function requireField<T>(value: T | undefined | null | '', name: string): T {
  if (value === undefined || value === null || value === '') throw new CsiError('InvalidArgument', `${name} is required`);
  return value;
}
