/**
 * Other real servers and kernel objects the integration tests use: nbdkit and qemu-nbd serving members,
 * qemu-storage-daemon exporting the virtual unit as a FUSE file, loop devices and mounts. Each one is
 * registered with the test's scope so it is stopped, detached or unmounted even when the test fails.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { join } from 'node:path';
import { exists, run, sparseFile, terminate, until, type Scope } from './support.js';

export interface Daemon {
  proc: ChildProcess;
  /** NBD URI of what it serves (for NBD servers). */
  uri: string;
  output: () => string;
}

/** Spawn a server that writes `pidFile` once it is ready, and wait for that. */
async function startReady(scope: Scope, cmd: string, args: string[], pidFile: string): Promise<{ proc: ChildProcess; output: () => string }> {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
  proc.stderr!.setEncoding('utf8').on('data', (s: string) => (out += s));
  scope.defer(`stop ${cmd}`, () => terminate(proc, 3000));
  await until(`${cmd} to become ready`, async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`${cmd} exited early (${proc.exitCode ?? proc.signalCode}): ${out}`);
    }
    return (await exists(pidFile)) ? true : undefined;
  });
  return { proc, output: () => out };
}

/**
 * nbdkit serving a file over a unix socket, with optional filters and their parameters
 * (e.g. filters ['error'], params ['error-rate=100%', 'error-file=…']).
 */
export async function nbdkitFile(scope: Scope, dir: string, name: string, file: string, filters: string[] = [], params: string[] = []): Promise<Daemon> {
  const sock = join(dir, `${name}.nbdkit.sock`);
  const pid = join(dir, `${name}.nbdkit.pid`);
  const args = ['--foreground', '--unix', sock, '--pidfile', pid, ...filters.map((f) => `--filter=${f}`), 'file', `file=${file}`, ...params];
  const d = await startReady(scope, 'nbdkit', args, pid);
  return { ...d, uri: `nbd+unix:///?socket=${sock}` };
}

/** nbdkit serving a file on a loopback TCP port, TLS required with a pre-shared key file (--tls-psk). */
export async function nbdkitTlsPsk(scope: Scope, dir: string, name: string, file: string, pskFile: string, port: number): Promise<Daemon> {
  const pid = join(dir, `${name}.nbdkit.pid`);
  const args = ['--foreground', '--ip-addr', '127.0.0.1', '--port', String(port), '--pidfile', pid, '--tls=require', `--tls-psk=${pskFile}`, 'file', `file=${file}`];
  const d = await startReady(scope, 'nbdkit', args, pid);
  return { ...d, uri: `nbds://127.0.0.1:${port}/` };
}

/** qemu-nbd serving a raw file over a unix socket (persistent: survives the engine disconnecting). */
export async function qemuNbd(scope: Scope, dir: string, name: string, file: string): Promise<Daemon> {
  const sock = join(dir, `${name}.qemu-nbd.sock`);
  const pid = join(dir, `${name}.qemu-nbd.pid`);
  const d = await startReady(scope, 'qemu-nbd', ['--format=raw', '--persistent', `--socket=${sock}`, `--pid-file=${pid}`, '--cache=writeback', file], pid);
  return { ...d, uri: `nbd+unix:///?socket=${sock}` };
}

/** Talk to nbdkit's pause filter: 'p' pauses (answered 'P' once in-flight requests are done), 'r' resumes. */
export function pauseControl(sock: string, cmd: 'p' | 'r'): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = connect(sock);
    const timer = setTimeout(() => {
      c.destroy();
      reject(new Error(`pause filter did not acknowledge '${cmd}'`));
    }, 10_000);
    c.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    c.once('connect', () => c.write(cmd));
    c.on('data', (b: Buffer) => {
      if (b.toString().includes(cmd.toUpperCase())) {
        clearTimeout(timer);
        c.end();
        resolve();
      }
    });
  });
}

/**
 * qemu-storage-daemon attached to an NBD export and exporting it as a FUSE file: a plain file whose bytes
 * are the virtual unit, which a loop device can then take.
 */
export async function fuseExport(scope: Scope, dir: string, nbdSocket: string, exportName: string): Promise<{ file: string; stop: () => Promise<void> }> {
  const file = await sparseFile(join(dir, 'fuse-export'), 0);
  const pid = join(dir, 'qsd.pid');
  const args = [
    '--blockdev', `driver=nbd,node-name=vu,server.type=unix,server.path=${nbdSocket},export=${exportName}`,
    '--export', `type=fuse,id=fuse0,node-name=vu,mountpoint=${file},writable=on`,
    '--pidfile', pid,
  ];
  // If the daemon dies without unmounting, a lazy unmount frees the file (registered first, runs last).
  scope.defer('unmount FUSE export', () => run('fusermount3', ['-u', '-z', file], { allowFail: true }));
  const { proc } = await startReady(scope, 'qemu-storage-daemon', args, pid);
  return { file, stop: () => terminate(proc) };
}

export interface LoopOptions {
  offset?: number;
  sizeLimit?: number;
  readOnly?: boolean;
}

export interface Loop {
  dev: string;
  /** Detach now (idempotent); the scope detaches otherwise. */
  detach: () => Promise<void>;
}

/** Anything that runs deferred undo steps: the testkit's Scope, the scenarios' Cleanup. */
export interface Defers {
  defer(what: string, fn: () => Promise<void>): unknown;
}

/** Attach a loop device to a file; always detached by the scope. */
export async function attachLoop(scope: Defers, file: string, o: LoopOptions = {}): Promise<Loop> {
  const args = ['--find', '--show'];
  if (o.offset !== undefined) args.push('--offset', String(o.offset));
  if (o.sizeLimit !== undefined) args.push('--sizelimit', String(o.sizeLimit));
  if (o.readOnly) args.push('--read-only');
  const dev = (await run('losetup', [...args, file])).stdout.trim();
  if (!/^\/dev\/loop\d+$/.test(dev)) throw new Error(`losetup gave '${dev}'`);
  let attached = true;
  const detach = async () => {
    if (!attached) return;
    await run('losetup', ['--detach', dev]);
    attached = false;
  };
  scope.defer(`detach ${dev}`, detach);
  return { dev, detach };
}

/** Mount a device on a new directory under `dir`; unmounted by the scope unless already unmounted. */
export async function mount(scope: Scope, dev: string, mnt: string, opts: string[] = []): Promise<{ unmount: () => Promise<void> }> {
  await run('mkdir', ['-p', mnt]);
  await run('mount', [...opts, dev, mnt]);
  let mounted = true;
  const unmount = async () => {
    if (!mounted) return;
    await run('umount', [mnt]);
    mounted = false;
  };
  scope.defer(`unmount ${mnt}`, async () => {
    if (mounted) await run('umount', ['-l', mnt]);
  });
  return { unmount };
}
