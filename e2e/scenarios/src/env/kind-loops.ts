// Loop devices and kind nodes. A member volume is a loop device made inside a node container, and the
// kubelet maps every block PV to a pod through a loop device of its own (AttachFileDevice, `losetup -f` over
// the device). Loop devices belong to this machine's kernel, not to a node, so two things need help:
//   - a container's /dev holds the device nodes that existed when it started: a loop device made later has
//     no node there and the kubelet's `losetup -f` fails (FailedMapVolume). ensureLoopNodes makes them.
//   - a node container that is stopped or deleted while pods use block volumes leaves the kubelet's loop
//     devices attached (a real machine would have rebooted and lost them), and they keep the member's loop
//     device busy. kubeletLoops records them while the node runs; detachSame detaches them afterwards, only
//     if each is still the same device (its backing device and inode).
import { spawnSync } from 'node:child_process';
import { DOCKER } from '@shadowset/e2e';

export interface LoopRef {
  name: string;
  back: string;
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

/** The loop devices this node's kubelet attached for block volumes (seen from inside the node, where their paths are its own). */
export function kubeletLoops(node: string): LoopRef[] {
  return list([DOCKER, 'exec', node, 'losetup'])
    .filter((d) => (d['back-file'] ?? '').startsWith('/var/lib/kubelet/'))
    .map((d) => ({ name: d.name, back: identity(d) }));
}

/** Detach the recorded loop devices that are still attached to the same backing file; returns them. */
export function detachSame(refs: LoopRef[]): string[] {
  const now = new Map(list(['losetup']).map((d) => [d.name, identity(d)]));
  const same = refs.filter((r) => now.get(r.name) === r.back).map((r) => r.name);
  for (const dev of same) spawnSync('losetup', ['-d', dev], { stdio: 'ignore' });
  return same;
}
