/**
 * The Node service. Stage attaches the unit (unit.ts) and, for Filesystem volumes, makes a filesystem on
 * first use and mounts it at the staging path; publish bind-mounts the device node (Block) or the staged
 * filesystem (Filesystem) at the pod's target path. Unpublish and unstage undo exactly that, and answer OK
 * when there is nothing left to undo. Every path from the CO is checked first (paths.ts).
 */
import { mkdir, open, rm, rmdir, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { parseCapability, requireField, type RawCapability } from '../capabilities.js';
import { CsiError } from '../errors.js';
import { VolumeLocks } from '../locks.js';
import type { Handlers } from '../server.js';
import { parseVolumeId, type VolumeRef } from '../volume-id.js';
import { run } from './exec.js';
import { ensureFilesystem, growFilesystem } from './filesystem.js';
import { deviceNumber, mountsAt, mountsOf } from './mounts.js';
import { checkPath } from './paths.js';
import { usageOf } from './stats.js';
import { attach, attachedDevice, detach, type UnitOptions } from './unit.js';

export interface NodeOptions extends UnitOptions {
  nodeId: string;
  kubeletDir: string;
}

interface StageRequest {
  volume_id?: string;
  staging_target_path?: string;
  volume_capability?: RawCapability | null;
}
interface PublishRequest extends StageRequest {
  target_path?: string;
  readonly?: boolean;
}

function volumeRef(id: string | undefined): { id: string; ref: VolumeRef } {
  const volumeId = requireField(id, 'volume_id');
  const ref = parseVolumeId(volumeId);
  if (!ref) throw new CsiError('NotFound', `volume ${volumeId} is not a shadowset volume id (<namespace>/<set>)`);
  return { id: volumeId, ref };
}

/** Whether `path` is a mount of block device `dev` (a filesystem on it, or its device node bound there). */
async function holds(path: string, dev: string): Promise<boolean> {
  const want = await deviceNumber(dev);
  if ((await mountsAt(path)).some((m) => m.device === want)) return true;
  try {
    const s = await stat(path);
    return s.isBlockDevice() && (await deviceNumber(path)) === want;
  } catch {
    return false;
  }
}

/** Remove an unmounted target: a file, or an empty directory. Never recursively: it could be a pod's data. */
async function removeTarget(target: string): Promise<void> {
  const s = await stat(target).catch(() => null);
  if (!s) return;
  try {
    if (s.isDirectory()) await rmdir(target);
    else await rm(target);
  } catch (e) {
    throw new CsiError('FailedPrecondition', `cannot remove ${target} after unmounting it: ${(e as Error).message}`);
  }
}

export function nodeService(o: NodeOptions): Handlers {
  const locks = new VolumeLocks();

  async function stage(req: StageRequest) {
    requireField(req.volume_id, 'volume_id');
    const staging = await checkPath(req.staging_target_path, 'staging_target_path', o.kubeletDir);
    const cap = parseCapability(requireField(req.volume_capability, 'volume_capability'));
    const { id, ref } = volumeRef(req.volume_id);
    return locks.run(id, async () => {
      const dev = await attach(o, ref);
      if (cap.kind === 'block') return {};
      await mkdir(staging, { recursive: true });
      if (await holds(staging, dev)) return {};
      if ((await mountsAt(staging)).length > 0) throw new CsiError('FailedPrecondition', `${staging} already holds another mount`);
      const fs = await ensureFilesystem(dev, cap.fsType, cap.fsExplicit);
      const opts = cap.mountFlags.length ? ['-o', cap.mountFlags.join(',')] : [];
      await run('mount', ['-t', fs, ...opts, dev, staging]);
      return {};
    });
  }

  async function unstage(req: StageRequest) {
    requireField(req.volume_id, 'volume_id');
    const staging = await checkPath(req.staging_target_path, 'staging_target_path', o.kubeletDir);
    const { id, ref } = volumeRef(req.volume_id);
    return locks.run(id, async () => {
      const dev = await attachedDevice(o, ref);
      if (dev && (await holds(staging, dev))) await run('umount', [staging]);
      if (dev) {
        const users = await mountsOf(dev);
        if (users.length) throw new CsiError('FailedPrecondition', `volume ${id} is still mounted at ${users.join(', ')}; unpublish it first`);
      }
      await detach(o, ref);
      return {};
    });
  }

  async function publish(req: PublishRequest) {
    requireField(req.volume_id, 'volume_id');
    const staging = await checkPath(req.staging_target_path, 'staging_target_path', o.kubeletDir);
    const target = await checkPath(req.target_path, 'target_path', o.kubeletDir);
    const cap = parseCapability(requireField(req.volume_capability, 'volume_capability'));
    const { id, ref } = volumeRef(req.volume_id);
    const readOnly = req.readonly === true || cap.mode === 'SINGLE_NODE_READER_ONLY';
    return locks.run(id, async () => {
      const dev = await attachedDevice(o, ref);
      if (!dev) throw new CsiError('FailedPrecondition', `volume ${id} is not staged on this node`);
      if (await holds(target, dev)) return {};
      if (cap.mode === 'SINGLE_NODE_SINGLE_WRITER') {
        // ReadWriteOncePod: one pod, so one target path.
        const others = (await mountsOf(dev)).filter((m) => m !== staging && m !== target);
        if (others.length) throw new CsiError('FailedPrecondition', `volume ${id} is single-writer and already published at ${others.join(', ')}`);
      }
      if (cap.kind === 'block') {
        await mkdir(dirname(target), { recursive: true });
        await (await open(target, 'a')).close(); // a file to bind the device node onto
        await run('mount', ['--bind', dev, target]);
      } else {
        if (!(await holds(staging, dev))) throw new CsiError('FailedPrecondition', `volume ${id} is not mounted at its staging path ${staging}`);
        await mkdir(target, { recursive: true });
        await run('mount', ['--bind', staging, target]);
      }
      if (readOnly) await run('mount', ['-o', 'remount,bind,ro', target]);
      return {};
    });
  }

  async function unpublish(req: { volume_id?: string; target_path?: string }) {
    requireField(req.volume_id, 'volume_id');
    const target = await checkPath(req.target_path, 'target_path', o.kubeletDir);
    const { id } = volumeRef(req.volume_id);
    return locks.run(id, async () => {
      // Every mount stacked there (a repeated publish by hand, say), then the file or directory itself.
      while ((await mountsAt(target)).length > 0) await run('umount', [target]);
      await removeTarget(target);
      return {};
    });
  }

  /** Usage of a volume published at volume_path on this node; NotFound when it is not published there. */
  async function stats(req: { volume_id?: string; volume_path?: string }) {
    requireField(req.volume_id, 'volume_id');
    requireField(req.volume_path, 'volume_path');
    const { id, ref } = volumeRef(req.volume_id);
    // Volumes are published only under the kubelet's directory: a path that is not there (or not a clean
    // absolute path) cannot be where this one is, which the spec says is NotFound.
    const path = await checkPath(req.volume_path, 'volume_path', o.kubeletDir).catch((e: CsiError) => {
      throw new CsiError('NotFound', `volume ${id} is not published at ${req.volume_path}: ${e.message}`);
    });
    const dev = await attachedDevice(o, ref);
    if (!dev) throw new CsiError('NotFound', `volume ${id} is not staged on this node`);
    if (!(await holds(path, dev))) throw new CsiError('NotFound', `volume ${id} is not published at ${path}`);
    const s = await stat(path);
    return { usage: await usageOf(path, s.isBlockDevice() ? 'block' : 'filesystem', dev) };
  }

  /**
   * The unit grew (ControllerExpandVolume, offline): the device of a fresh stage already has the new size
   * (its NBD connection is new); `losetup -c` makes sure the loop device follows its file. A filesystem is
   * grown where it is mounted; a block volume needs nothing more. Answers the device's size.
   */
  async function expand(req: { volume_id?: string; volume_path?: string; staging_target_path?: string; volume_capability?: RawCapability | null }) {
    requireField(req.volume_id, 'volume_id');
    requireField(req.volume_path, 'volume_path');
    const { id, ref } = volumeRef(req.volume_id);
    // A volume this node does not hold is NotFound whatever the paths (the spec's order); then the paths.
    if (!(await attachedDevice(o, ref))) throw new CsiError('NotFound', `volume ${id} is not staged on this node`);
    const path = await checkPath(req.volume_path, 'volume_path', o.kubeletDir);
    const staging = req.staging_target_path ? await checkPath(req.staging_target_path, 'staging_target_path', o.kubeletDir) : null;
    const cap = req.volume_capability ? parseCapability(req.volume_capability) : null;
    return locks.run(id, async () => {
      const dev = await attachedDevice(o, ref);
      if (!dev) throw new CsiError('NotFound', `volume ${id} is not staged on this node`);
      await run('losetup', ['-c', dev]);
      const bytes = Number((await run('blockdev', ['--getsize64', dev])).stdout.trim());
      const isBlock = cap?.kind === 'block' || ((await stat(path).catch(() => null))?.isBlockDevice() ?? false);
      if (!isBlock) {
        const at = (await holds(path, dev)) ? path : staging && (await holds(staging, dev)) ? staging : null;
        if (!at) throw new CsiError('NotFound', `volume ${id} is not mounted at ${path}`);
        await growFilesystem(dev, at);
      } else if (!(await holds(path, dev))) {
        throw new CsiError('NotFound', `volume ${id} is not published at ${path}`);
      }
      return { capacity_bytes: String(bytes) };
    });
  }

  return {
    NodeStageVolume: stage,
    NodeExpandVolume: expand,
    NodeUnstageVolume: unstage,
    NodePublishVolume: publish,
    NodeUnpublishVolume: unpublish,
    NodeGetVolumeStats: stats,
    NodeGetCapabilities: async () => ({
      capabilities: [{ rpc: { type: 'STAGE_UNSTAGE_VOLUME' } }, { rpc: { type: 'SINGLE_NODE_MULTI_WRITER' } }, { rpc: { type: 'GET_VOLUME_STATS' } }, { rpc: { type: 'EXPAND_VOLUME' } }],
    }),
    NodeGetInfo: async () => ({ node_id: o.nodeId, max_volumes_per_node: '0', accessible_topology: null }),
  };
}
