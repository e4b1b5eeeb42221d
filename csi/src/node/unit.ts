/**
 * The set's virtual unit as a kernel block device on this node, without the nbd module:
 * qemu-storage-daemon's NBD client (on the engine's node-local Unix socket, reconnecting when the engine
 * restarts) → a FUSE export of the unit as a file → a loop device over that file. The daemon is started
 * detached (--daemonize): on a host a restart of this plugin leaves it running (in a container it lives as
 * long as the container: csi/README.md). What was made is kept in a state file per volume, so detaching
 * undoes exactly that and can be repeated.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CsiError } from '../errors.js';
import type { VolumeRef } from '../volume-id.js';
import { run } from './exec.js';
import { mountsAt } from './mounts.js';

export interface UnitOptions {
  /** Where the engines serving virtual units on this node put their sockets: <dir>/<namespace>/<set>/nbd.sock. */
  unitSocketDir: string;
  /** This plugin's own per-volume state (FUSE file, pid file, state file). */
  stateDir: string;
  exportName: string;
  /** Seconds the NBD client holds I/O while it reconnects to a restarted engine, before failing it. */
  reconnectDelaySeconds: number;
  /** Seconds NodeStage waits for the engine's socket to appear (the engine may be starting on this node). */
  socketWaitSeconds: number;
}

interface UnitState {
  loop: string;
  fuseFile: string;
  pidFile: string;
}

export const socketFor = (o: UnitOptions, v: VolumeRef): string => join(o.unitSocketDir, v.namespace, v.name, 'nbd.sock');
// '_' appears in neither a namespace nor a set name, so the directory names one volume only.
const dirFor = (o: UnitOptions, v: VolumeRef): string => join(o.stateDir, `${v.namespace}_${v.name}`);

async function readState(dir: string): Promise<UnitState | null> {
  try {
    return JSON.parse(await readFile(join(dir, 'state.json'), 'utf8')) as UnitState;
  } catch {
    return null;
  }
}

async function loopBacking(loop: string): Promise<string | null> {
  const name = loop.replace(/^\/dev\//, '');
  try {
    return (await readFile(`/sys/block/${name}/loop/backing_file`, 'utf8')).trim();
  } catch {
    return null;
  }
}

async function daemonPid(pidFile: string, fuseFile: string): Promise<number | null> {
  try {
    const pid = Number((await readFile(pidFile, 'utf8')).trim());
    if (!Number.isInteger(pid) || pid <= 1) return null;
    // The pid is ours only if that process is the daemon exporting this volume's file.
    const cmd = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
    return cmd.some((a) => a.includes('qemu-storage-daemon')) && cmd.some((a) => a.includes(`mountpoint=${fuseFile}`)) ? pid : null;
  } catch {
    return null;
  }
}

/** The loop device of a staged volume, or null when it is not (fully) attached. */
export async function attachedDevice(o: UnitOptions, v: VolumeRef): Promise<string | null> {
  const dir = dirFor(o, v);
  const s = await readState(dir);
  if (!s) return null;
  if ((await loopBacking(s.loop)) !== s.fuseFile) return null;
  if ((await daemonPid(s.pidFile, s.fuseFile)) === null) return null;
  return s.loop;
}

/** Attach the unit and answer its loop device; an attached unit answers the same device. */
export async function attach(o: UnitOptions, v: VolumeRef): Promise<string> {
  const have = await attachedDevice(o, v);
  if (have) return have;
  await detach(o, v); // whatever a failed or interrupted attach left
  const socket = socketFor(o, v);
  if (!(await appears(socket, o.socketWaitSeconds * 1000))) {
    throw new CsiError('Unavailable', `the virtual unit of ${v.namespace}/${v.name} is not served on this node (no engine socket at ${socket})`);
  }
  const dir = dirFor(o, v);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const fuseFile = join(dir, 'unit');
  const pidFile = join(dir, 'qsd.pid');
  await writeFile(fuseFile, '');
  await startDaemon(o, socket, fuseFile, pidFile);
  let loop: string;
  try {
    loop = await loopAttach(fuseFile);
  } catch (e) {
    await detach(o, v);
    throw e;
  }
  await writeFile(join(dir, 'state.json'), JSON.stringify({ loop, fuseFile, pidFile } satisfies UnitState));
  return loop;
}

/**
 * `losetup --find --show`, and where the free device's node is missing from /dev, make it first: in a
 * container whose /dev is a copy made at its start (a kind node, and a plugin mounting that node's /dev),
 * the kernel's new loop devices get no node, and losetup then fails. The device number comes from sysfs.
 * A few tries: another attach may take the same free device between the two steps.
 */
async function loopAttach(file: string): Promise<string> {
  const first = await run('losetup', ['--find', '--show', file], { allowFail: true });
  if (first.code === 0) return checkedLoop(first.stdout.trim());
  let last = first.stderr.trim();
  for (let i = 0; i < 5; i++) {
    const dev = checkedLoop((await run('losetup', ['--find'])).stdout.trim());
    if (!existsSync(dev)) {
      const numbers = (await readFile(`/sys/block/${dev.slice('/dev/'.length)}/dev`, 'utf8')).trim();
      const m = /^(\d+):(\d+)$/.exec(numbers);
      if (!m) throw new CsiError('Internal', `no device numbers for ${dev} in sysfs: ${JSON.stringify(numbers)}`);
      await run('mknod', ['-m', '0660', dev, 'b', m[1]!, m[2]!], { allowFail: true }); // another may have made it
    }
    const r = await run('losetup', [dev, file], { allowFail: true });
    if (r.code === 0) return dev;
    last = r.stderr.trim();
  }
  throw new CsiError('Internal', `cannot attach a loop device to ${file}: ${last}`);
}

function checkedLoop(dev: string): string {
  if (!/^\/dev\/loop[0-9]+$/.test(dev)) throw new CsiError('Internal', `losetup answered ${JSON.stringify(dev)}`);
  return dev;
}

function startDaemon(o: UnitOptions, socket: string, fuseFile: string, pidFile: string): Promise<void> {
  const args = [
    '--blockdev', `driver=nbd,node-name=unit,server.type=unix,server.path=${socket},export=${o.exportName},reconnect-delay=${o.reconnectDelaySeconds}`,
    '--export', `type=fuse,id=unit,node-name=unit,mountpoint=${fuseFile},writable=on`,
    '--pidfile', pidFile,
    '--daemonize',
  ];
  // With --daemonize the command returns once the export is set up (or failed): an event, not a poll.
  return new Promise((resolve, reject) => {
    const child = spawn('qemu-storage-daemon', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString('utf8')));
    child.on('error', (e) => reject(new CsiError('FailedPrecondition', `qemu-storage-daemon cannot run on this node: ${e.message}`)));
    child.on('close', (code) => {
      if (code === 0) resolve();
      else reject(new CsiError('Unavailable', `qemu-storage-daemon could not attach the unit at ${socket} (exit ${code}): ${err.trim()}`));
    });
  });
}

async function appears(path: string, timeoutMs: number): Promise<boolean> {
  // Made by another process (the engine), maybe in a directory that does not exist yet: look, bounded.
  for (let waited = 0; !existsSync(path); waited += 100) {
    if (waited >= timeoutMs) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}

async function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  // Not our child (it daemonized), so its exit cannot be awaited: look, bounded.
  for (let waited = 0; waited < timeoutMs; waited += 50) {
    if (!existsSync(`/proc/${pid}`)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return !existsSync(`/proc/${pid}`);
}

/** Undo attach: flush and free the loop device, stop the daemon (it flushes), unmount the FUSE file. */
export async function detach(o: UnitOptions, v: VolumeRef): Promise<void> {
  const dir = dirFor(o, v);
  const s = await readState(dir);
  const fuseFile = s?.fuseFile ?? join(dir, 'unit');
  const pidFile = s?.pidFile ?? join(dir, 'qsd.pid');
  if (s && (await loopBacking(s.loop)) === fuseFile) {
    await run('blockdev', ['--flushbufs', s.loop], { allowFail: true });
    await run('losetup', ['--detach', s.loop]);
  }
  const pid = await daemonPid(pidFile, fuseFile);
  if (pid !== null) {
    // SIGTERM lets it finish and flush what it holds. With the engine gone it waits out its reconnect
    // delay first; by then the loop device is flushed and detached, so every write a flush acknowledged
    // has reached the engine, and what is left is at most unflushed data: SIGKILL after a bound.
    process.kill(pid, 'SIGTERM');
    if (!(await waitGone(pid, 15_000))) {
      process.kill(pid, 'SIGKILL');
      if (!(await waitGone(pid, 5_000))) throw new CsiError('Internal', `qemu-storage-daemon ${pid} did not stop`);
    }
  }
  if ((await mountsAt(fuseFile)).length > 0) await run('fusermount3', ['-u', '-z', fuseFile]);
  await rm(dir, { recursive: true, force: true });
}
