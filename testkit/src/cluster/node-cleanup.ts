// What the CSI node plugin makes on the host, undone and looked for: the node plugin's tests and the demo's
// PVC path use it so that one failure (or a Ctrl-C) does not leave loop devices, FUSE mounts or daemons behind
// on a shared machine.
import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';

/** After a failed test: whatever it left under `dir` (mounts, loop devices, its daemons) is undone. */
export async function undoAll(dir: string): Promise<void> {
  // The pods' and staging mounts first, then the loop devices (while their FUSE files still have a path),
  // then the daemons, then the FUSE mounts they leave.
  const mounts = async (fuse: boolean) => (await readFile('/proc/self/mountinfo', 'utf8')).split('\n')
    .filter((l) => l.split(' ')[4]?.startsWith(`${dir}/`) && l.includes(' - fuse') === fuse).map((l) => l.split(' ')[4]!);
  for (const m of (await mounts(false)).sort((a, b) => b.length - a.length)) spawnSync('umount', ['-l', m]);
  for (const l of spawnSync('losetup', ['-a'], { encoding: 'utf8' }).stdout.split('\n')) {
    if (l.includes(`(${dir}/`)) spawnSync('losetup', ['-d', l.slice(0, l.indexOf(':'))]);
  }
  const pids = spawnSync('pgrep', ['-f', `mountpoint=${dir}/`], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
  for (const pid of pids) spawnSync('kill', ['-KILL', pid]);
  for (const m of await mounts(true)) spawnSync('umount', ['-l', m]);
}

/** What is still there of the volumes staged under `dir`: mounts, loop devices, qemu-storage-daemons, and processes naming `dir`. */
export async function leftovers(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const l of (await readFile('/proc/self/mountinfo', 'utf8')).split('\n')) {
    const at = l.split(' ')[4];
    if (at?.startsWith(`${dir}/`)) out.push(`mount ${at}`);
  }
  for (const l of spawnSync('losetup', ['-a'], { encoding: 'utf8' }).stdout.split('\n')) if (l.includes(`(${dir}/`)) out.push(`loop ${l}`);
  for (const l of spawnSync('pgrep', ['-af', dir], { encoding: 'utf8' }).stdout.split('\n')) {
    if (l && !l.startsWith(`${process.pid} `)) out.push(`process ${l}`);
  }
  return out;
}
