// Loop devices and kind nodes. A member volume is a loop device made inside a node container, and the
// kubelet maps every block PV to a pod through a loop device of its own (AttachFileDevice, `losetup -f` over
// the device). Loop devices belong to this machine's kernel, not to a node, so two things need help:
//   - a container's /dev holds the device nodes that existed when it started: a loop device made later has
//     no node there and the kubelet's `losetup -f` fails (FailedMapVolume). ensureLoopNodes makes them.
//   - a node container that is stopped or deleted while pods use block volumes leaves the kubelet's loop
//     devices attached (a real machine would have rebooted and lost them), and they keep the member's loop
//     device busy; so does the CSI node plugin's loop device over its FUSE export of a staged unit (its
//     backing file is a FUSE mount point in the plugin's own mount namespace, so its path reads as `/`
//     elsewhere: the plugin's state file names it). kubeletLoops records both while the node runs;
//     detachSame detaches them afterwards, only if each is still the same device (its backing device and
//     inode) — or, for the plugin's, if its FUSE file is gone with the node (then nothing can be stat'ed:
//     the backing file reads as `/` with no device or inode, as a dead FUSE export leaves it).
import { spawnSync } from 'node:child_process';
import { DOCKER } from '@shadowset/e2e';

export interface LoopRef {
  name: string;
  back: string;
  /** Over a FUSE export (the CSI node plugin's): also detached once its backing file is gone. */
  fuse?: boolean;
}

const LOOP_NODES = 256;

interface Listed {
  name: string;
  'back-file': string | null;
  'back-maj:min': string | null;
  'back-ino': string | number | null;
}

/** `losetup --list`, run as `cmd` (losetup here, or in a node through docker exec). */
function list(cmd: [string, ...string[]]): Listed[] {
  const r = spawnSync(cmd[0], [...cmd.slice(1), '--list', '--json', '--output', 'NAME,BACK-FILE,BACK-MAJ:MIN,BACK-INO'], { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0 || !r.stdout.trim()) return [];
  return (JSON.parse(r.stdout) as { loopdevices: Listed[] }).loopdevices;
}

const identity = (d: Listed) => `${(d['back-maj:min'] ?? '').trim()}/${d['back-ino'] ?? ''}`;

/** Device nodes /dev/loop0… in a node container, for the loop devices made since it started. */
export function ensureLoopNodes(node: string): void {
  const script = `i=0; while [ $i -lt ${LOOP_NODES} ]; do [ -e /dev/loop$i ] || mknod -m 0660 /dev/loop$i b 7 $i; i=$((i+1)); done`;
  const r = spawnSync(DOCKER, ['exec', node, 'sh', '-c', script], { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`making loop device nodes in ${node} failed: ${r.stderr}`);
}

/** Where the chart's CSI node plugin keeps a staged unit's FUSE file (its --state-dir). */
const CSI_STATE_DIR = '/var/lib/shadowset-csi/';

/** The loop devices the CSI node plugin made in this node, as its per-volume state files name them. */
function pluginLoopNames(node: string): Set<string> {
  const script = `for f in ${CSI_STATE_DIR}*/state.json; do [ -f "$f" ] && cat "$f" && echo; done; true`;
  const r = spawnSync(DOCKER, ['exec', node, 'sh', '-c', script], { encoding: 'utf8', timeout: 30_000 });
  const names = new Set<string>();
  for (const line of r.status === 0 ? r.stdout.split('\n') : []) {
    try {
      const loop = (JSON.parse(line) as { loop?: unknown }).loop;
      if (typeof loop === 'string' && /^\/dev\/loop\d+$/.test(loop)) names.add(loop);
    } catch {
      // not a whole state file (one being written): its volume is left to the cluster's deletion
    }
  }
  return names;
}

/**
 * The loop devices attached in this node for block volumes: the kubelet's (seen from inside the node,
 * where their paths are its own), then the CSI node plugin's over its FUSE exports. The kubelet's come
 * first, so they are detached first: each holds the plugin's device open.
 */
export function kubeletLoops(node: string): LoopRef[] {
  const loops = list([DOCKER, 'exec', node, 'losetup']);
  const plugin = pluginLoopNames(node);
  return [
    ...loops.filter((d) => (d['back-file'] ?? '').startsWith('/var/lib/kubelet/')).map((d) => ({ name: d.name, back: identity(d) })),
    ...loops.filter((d) => plugin.has(d.name)).map((d) => ({ name: d.name, back: identity(d), fuse: true })),
  ];
}

/** Detach the recorded loop devices that are still attached to the same backing file; returns them. */
export function detachSame(refs: LoopRef[]): string[] {
  const listed = new Map(list(['losetup']).map((d) => [d.name, d]));
  const gone = (d: Listed) => d['back-file'] === '/' && !d['back-maj:min'] && !d['back-ino'];
  const same = refs.filter((r) => {
    const d = listed.get(r.name);
    return d !== undefined && (identity(d) === r.back || (r.fuse === true && gone(d)));
  }).map((r) => r.name);
  for (const dev of same) spawnSync('losetup', ['-d', dev], { stdio: 'ignore' });
  return same;
}
