// Test support for the node plugin's tests: what a failed test left attached is undone, so one failure does
// not leave loop devices, FUSE mounts or daemons behind on a shared machine.
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
