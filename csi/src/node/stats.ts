/**
 * NodeGetVolumeStats: the usage kubelet reports for a published volume (its volume_stats metrics and the
 * pod's ephemeral-storage accounting read these). A Filesystem volume gives bytes and inodes from statfs of
 * the published directory; a Block volume gives only its size, read from sysfs (a block device's stat
 * size is 0), as nothing on a raw device says what is in use.
 */
import { readFile, statfs } from 'node:fs/promises';
import { basename } from 'node:path';
import { CsiError } from '../errors.js';

export interface Usage {
  unit: 'BYTES' | 'INODES';
  total: string;
  available?: string;
  used?: string;
}

/** Bytes of a block device (sysfs counts 512-byte sectors whatever the device's own block size). */
export async function deviceBytes(dev: string): Promise<bigint> {
  try {
    return BigInt((await readFile(`/sys/class/block/${basename(dev)}/size`, 'utf8')).trim()) * 512n;
  } catch (e) {
    throw new CsiError('Internal', `cannot read the size of ${dev}: ${(e as Error).message}`);
  }
}

export async function usageOf(path: string, kind: 'block' | 'filesystem', dev: string): Promise<Usage[]> {
  if (kind === 'block') return [{ unit: 'BYTES', total: String(await deviceBytes(dev)) }];
  const s = await statfs(path, { bigint: true });
  return [
    { unit: 'BYTES', total: String(s.blocks * s.bsize), available: String(s.bavail * s.bsize), used: String((s.blocks - s.bfree) * s.bsize) },
    { unit: 'INODES', total: String(s.files), available: String(s.ffree), used: String(s.files - s.ffree) },
  ];
}
