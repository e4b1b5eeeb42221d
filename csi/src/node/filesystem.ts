/**
 * A filesystem on the unit for Filesystem-mode pods: made only when the device holds nothing blkid knows
 * (a new volume), never over anything else; an existing filesystem is mounted as it is.
 */
import { CsiError } from '../errors.js';
import type { FsType } from '../capabilities.js';
import { run } from './exec.js';

export interface Probe {
  /** The filesystem (or other signature) blkid found, or null for a device that holds nothing it knows. */
  type: string | null;
  usage: string | null;
}

export async function probe(dev: string): Promise<Probe> {
  // -p: low-level probing (no cache); exit 2 means nothing was found.
  const r = await run('blkid', ['-p', '-o', 'export', dev], { allowFail: true });
  if (r.code === 2) return { type: null, usage: null };
  if (r.code !== 0) throw new CsiError('Internal', `blkid ${dev} failed (exit ${r.code}): ${r.stderr.trim()}`);
  const kv = Object.fromEntries(r.stdout.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  return { type: kv.TYPE ?? kv.PTTYPE ?? 'unknown', usage: kv.USAGE ?? (kv.PTTYPE ? 'partition table' : null) };
}

/**
 * Grow the filesystem mounted at `mountPath` from `dev` to the device's size: resize2fs for ext4 (online,
 * on the device), xfs_growfs for XFS (on the mount point). Anything else is refused.
 */
export async function growFilesystem(dev: string, mountPath: string): Promise<void> {
  const found = await probe(dev);
  if (found.type === 'ext4') await run('resize2fs', [dev], { timeoutMs: 600_000 });
  else if (found.type === 'xfs') await run('xfs_growfs', [mountPath], { timeoutMs: 600_000 });
  else throw new CsiError('FailedPrecondition', `${dev} holds ${found.type ?? 'no filesystem'}; only ext4 and xfs are grown`);
}

export async function mkfs(dev: string, fs: FsType): Promise<void> {
  // No discard: a new set reads zeros already, and discarding the whole unit through FUSE and NBD only costs time.
  if (fs === 'ext4') await run('mkfs.ext4', ['-q', '-F', '-E', 'nodiscard', dev], { timeoutMs: 600_000 });
  else await run('mkfs.xfs', ['-q', '-K', dev], { timeoutMs: 600_000 });
}

/**
 * Make sure `dev` holds a filesystem to mount and answer its type: the one asked for on a blank device;
 * the one there if the request left the type open or named the same; a refusal otherwise.
 */
export async function ensureFilesystem(dev: string, want: FsType, explicit: boolean): Promise<string> {
  const found = await probe(dev);
  if (found.type === null) {
    await mkfs(dev, want);
    return want;
  }
  if (found.usage !== 'filesystem') {
    throw new CsiError('FailedPrecondition', `the volume holds ${found.type} (${found.usage ?? 'not a filesystem'}); refusing to make a filesystem over it`);
  }
  if (explicit && found.type !== want) {
    throw new CsiError('FailedPrecondition', `the volume holds a ${found.type} filesystem, not the ${want} asked for; it is left as it is`);
  }
  return found.type;
}
