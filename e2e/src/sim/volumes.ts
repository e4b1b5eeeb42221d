// A pod's volumes, made visible to a process that runs without a mount namespace.
//
// Block volumes (volumeDevices) follow PVC → PV to a path on this machine: the PV's `local.path` or
// `hostPath.path`, a loop device or a regular file. The pod gets its own root directory, and each
// devicePath becomes a symlink under it pointing at that path: devicePath `/dev/xvda` is
// `<podRoot>/dev/xvda` → `/dev/loop3`. The process sees the pod-root paths, because every occurrence of a
// devicePath (or mountPath) in the container's command, args and env values is rewritten to the pod-root
// path, and SHADOWSET_SIM_POD_ROOT tells it the root for anything else.
// Filesystem volumes (volumeMounts): emptyDir becomes a directory (kept under the simulator's `v/`, linked
// from the pod root and from a short path given to the process), hostPath a symlink
// (its directory made first when the type is DirectoryOrCreate; paths in the command name the host path),
// secret a directory of files (one per key, or per `items` entry) written from the Secret when the container
// starts, with the mode of `items[].mode` or `defaultMode` (the API server defaults it to 0644; 0400 if unset). Other volume kinds (configMap, projected…) are not supported and fail
// the container.
// Claims bound to CSI PVs are set up by a PodVolumePlugin (what kubelet does with a CSI driver: stage and
// publish); the simulator only links the path the plugin answers into the pod root, like a local path.
import type { CoreV1Api, V1Container, V1PersistentVolume, V1Pod, V1SecretVolumeSource } from '@kubernetes/client-node';
import { chmod, mkdir, symlink, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { matchNodeSelector } from './selectors.js';
import type { Labels } from './selectors.js';

export interface PathMapping {
  /** the path the pod spec uses */
  containerPath: string;
  /** where it is under the pod root */
  localPath: string;
  /** what it points at, for block devices and hostPath */
  target?: string;
}

/**
 * kubelet's volume manager for volumes the simulator cannot follow to a local path (CSI PVs): `setUp` runs
 * before each container start (idempotent; it may wait a bounded time, or throw ContainerConfigError to be
 * retried with back-off) and answers, per claim it handles, the host path the pod gets (the published
 * device node or directory); `tearDown` runs once the pod's containers have stopped, before the pod is
 * removed from the API.
 */
export interface PodVolumePlugin {
  setUp(pod: V1Pod, node: string): Promise<Record<string, string>>;
  tearDown(pod: V1Pod, node: string): Promise<void>;
}

/** A container cannot start (yet): becomes a Waiting state with this reason and message. */
export class ContainerConfigError extends Error {
  constructor(readonly reason: string, message: string) {
    super(message);
  }
}

async function pvForClaim(core: CoreV1Api, namespace: string, claimName: string): Promise<V1PersistentVolume> {
  let volumeName: string | undefined;
  try {
    const pvc = await core.readNamespacedPersistentVolumeClaim({ name: claimName, namespace });
    volumeName = pvc.spec?.volumeName;
  } catch {
    throw new ContainerConfigError('CreateContainerConfigError', `persistentvolumeclaim "${claimName}" not found`);
  }
  if (!volumeName) {
    throw new ContainerConfigError('ContainerCreating', `persistentvolumeclaim "${claimName}" is not bound to a volume`);
  }
  try {
    return await core.readPersistentVolume({ name: volumeName });
  } catch {
    throw new ContainerConfigError('CreateContainerConfigError', `persistentvolume "${volumeName}" not found`);
  }
}

function localPathOf(root: string, containerPath: string): string {
  return join(root, containerPath);
}

/** Writes a secret volume's files into dir, as kubelet would project them (missing Secret: the pod waits). */
async function writeSecretVolume(core: CoreV1Api, namespace: string, src: V1SecretVolumeSource, dir: string): Promise<void> {
  const name = src.secretName ?? '';
  let data: Record<string, string> = {};
  try {
    data = (await core.readNamespacedSecret({ name, namespace })).data ?? {};
  } catch {
    if (!src.optional) throw new ContainerConfigError('CreateContainerConfigError', `secret "${name}" not found`);
  }
  const mode = src.defaultMode ?? 0o400;
  const files = src.items ?? Object.keys(data).map((key) => ({ key, path: key, mode: undefined as number | undefined }));
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true, mode: 0o700 });
  for (const item of files) {
    const value = data[item.key];
    if (value === undefined) {
      if (src.optional) continue;
      throw new ContainerConfigError('CreateContainerConfigError', `secret "${name}" has no key ${item.key}`);
    }
    if (item.path.split('/').includes('..') || item.path.startsWith('/')) {
      throw new ContainerConfigError('CreateContainerConfigError', `secret volume path ${item.path} leaves the volume`);
    }
    const file = join(dir, item.path);
    await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    await writeFile(file, Buffer.from(value, 'base64'), { mode: item.mode ?? mode });
    await chmod(file, item.mode ?? mode);
  }
}

/** Lays out the container's volumes under podRoot and returns the path mappings. */
export async function prepareVolumes(
  core: CoreV1Api,
  pod: V1Pod,
  container: V1Container,
  podRoot: string,
  node: { name: string; labels: Labels },
  extra: {
    /** claim → host path from the PodVolumePlugin (CSI volumes) */
    pluginPaths?: Record<string, string>;
    /** where the pod's emptyDirs live (a short path), linked from the pod root */
    emptyDirBase?: string;
  } = {},
): Promise<PathMapping[]> {
  const pluginPaths = extra.pluginPaths ?? {};
  const namespace = pod.metadata?.namespace ?? 'default';
  const volumes = new Map((pod.spec?.volumes ?? []).map((v) => [v.name, v]));
  const out: PathMapping[] = [];
  for (const dev of container.volumeDevices ?? []) {
    const vol = volumes.get(dev.name);
    const claim = vol?.persistentVolumeClaim?.claimName;
    if (!claim) {
      throw new ContainerConfigError('CreateContainerConfigError', `volumeDevice ${dev.name} is not a persistentVolumeClaim`);
    }
    const pv = await pvForClaim(core, namespace, claim);
    const published = pv.spec?.csi ? pluginPaths[claim] : undefined;
    if (pv.spec?.csi && !published) {
      throw new ContainerConfigError('CreateContainerConfigError', `persistentvolume ${pv.metadata?.name} is a CSI volume and no volume plugin set it up`);
    }
    const target = published ?? pv.spec?.local?.path ?? pv.spec?.hostPath?.path;
    if (!target) {
      throw new ContainerConfigError('CreateContainerConfigError',
        `persistentvolume ${pv.metadata?.name} is neither local nor hostPath`);
    }
    // A local PV is only reachable on the nodes its affinity names; kubelet would fail the mount.
    if (!published && !matchNodeSelector(pv.spec?.nodeAffinity?.required, node.name, node.labels)) {
      throw new ContainerConfigError('CreateContainerConfigError',
        `persistentvolume ${pv.metadata?.name} is not reachable from node ${node.name} (node affinity)`);
    }
    const localPath = localPathOf(podRoot, dev.devicePath);
    await mkdir(dirname(localPath), { recursive: true });
    await rm(localPath, { force: true });
    await symlink(target, localPath);
    out.push({ containerPath: dev.devicePath, localPath, target });
  }
  for (const m of container.volumeMounts ?? []) {
    const vol = volumes.get(m.name);
    const localPath = localPathOf(podRoot, m.mountPath);
    if (vol?.emptyDir && extra.emptyDirBase) {
      // Kept outside the pod root and given to the process by that short path: a socket in it (the
      // engine's) must fit in 108 bytes, which a pod root's path (its pod's and namespace's names) may not.
      // The volume is one directory for all the pod's containers (`e/<volume>`); each mount is a link to it at
      // `m/<mountPath>`, the path the process is given, and one at its place in the pod root.
      const dir = join(extra.emptyDirBase, 'e', m.name);
      const alias = join(extra.emptyDirBase, 'm', m.mountPath);
      await mkdir(dir, { recursive: true });
      for (const link of [alias, localPath]) {
        await mkdir(dirname(link), { recursive: true });
        await rm(link, { force: true, recursive: false }).catch(() => undefined);
        await symlink(dir, link);
      }
      out.push({ containerPath: m.mountPath, localPath: alias, target: dir });
    } else if (vol?.emptyDir) {
      await mkdir(localPath, { recursive: true });
      out.push({ containerPath: m.mountPath, localPath });
    } else if (vol?.secret) {
      await writeSecretVolume(core, namespace, vol.secret, localPath);
      out.push({ containerPath: m.mountPath, localPath });
    } else if (vol?.persistentVolumeClaim && pluginPaths[vol.persistentVolumeClaim.claimName]) {
      // a Filesystem CSI volume: the directory the plugin published
      const target = pluginPaths[vol.persistentVolumeClaim.claimName]!;
      await mkdir(dirname(localPath), { recursive: true });
      await rm(localPath, { force: true, recursive: false }).catch(() => undefined);
      await symlink(target, localPath);
      out.push({ containerPath: m.mountPath, localPath, target });
    } else if (vol?.hostPath) {
      // As the kubelet does: DirectoryOrCreate makes the host directory (0755) when it is missing.
      if (vol.hostPath.type === 'DirectoryOrCreate') await mkdir(vol.hostPath.path, { recursive: true, mode: 0o755 });
      await mkdir(dirname(localPath), { recursive: true });
      await rm(localPath, { force: true, recursive: false }).catch(() => undefined);
      await symlink(vol.hostPath.path, localPath);
      // The process is given the host path itself, not the link: a socket's path must fit in 108 bytes,
      // which a pod root's path (its pod's and namespace's names in it) can exceed.
      out.push({ containerPath: m.mountPath, localPath: vol.hostPath.path, target: vol.hostPath.path });
    } else {
      throw new ContainerConfigError('CreateContainerConfigError',
        `volume ${m.name}: only emptyDir, hostPath, secret and CSI claim mounts are simulated`);
    }
  }
  return out;
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Rewrites each occurrence of a mapped path that stands as a path of its own (not a prefix of a longer
 *  name: `/dev/xvda` does not match `/dev/xvda1`, but does match `/dev/xvda/x` and `--dev=/dev/xvda`). */
export function rewritePaths(value: string, mappings: readonly PathMapping[]): string {
  let out = value;
  const sorted = [...mappings].sort((a, b) => b.containerPath.length - a.containerPath.length);
  for (const m of sorted) {
    const re = new RegExp(`(^|[^\\w./-])${escapeRe(m.containerPath)}(?=$|[^\\w.-])`, 'g');
    out = out.replace(re, (_all, pre: string) => `${pre}${m.localPath}`);
  }
  return out;
}
