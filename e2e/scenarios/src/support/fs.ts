// A real Linux filesystem on the virtual unit: qemu-storage-daemon connects to the engine's NBD export and
// exports it as a FUSE file; a loop device over that file takes mkfs.ext4, mount and e2fsck. Every object
// is undone by the Cleanup even when a step fails (a FUSE mount left by a dead daemon is unmounted lazily).
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ManagedProcess, waitFor } from '@shadowset/e2e';
import type { Cleanup } from './cleanup.js';
import { run } from './exec.js';

export interface FuseExport {
  file: string;
  stop(): Promise<void>;
}

/** Export an NBD server (host:port, export name; TLS with the PSK in pskDir/keys.psk) as a FUSE file under dir. */
export async function fuseExport(cleanup: Cleanup, dir: string, ep: { host: string; port: number; exportName: string; pskDir: string; psk: { identity: string } }): Promise<FuseExport> {
  const { host, port, exportName } = ep;
  const file = join(dir, `fuse-${Date.now()}`);
  await writeFile(file, '');
  const pidFile = `${file}.pid`;
  let out = '';
  const unmount = cleanup.defer(`unmount FUSE export ${file}`, () => run('fusermount3', ['-u', '-z', file], { allowFail: true }));
  const qsd = await ManagedProcess.start({
    command: 'qemu-storage-daemon',
    args: [
      '--object', `tls-creds-psk,id=tls0,endpoint=client,dir=${ep.pskDir},username=${ep.psk.identity}`,
      '--blockdev', `driver=nbd,node-name=unit,server.type=inet,server.host=${host},server.port=${port},export=${exportName},tls-creds=tls0`,
      '--export', `type=fuse,id=fuse0,node-name=unit,mountpoint=${file},writable=on`,
      '--pidfile', pidFile,
    ],
    output: (c) => (out += c.toString('utf8')),
  });
  const stopDaemon = cleanup.defer('stop qemu-storage-daemon', () => qsd.stop(10_000));
  await waitFor('qemu-storage-daemon to export the unit', async () => {
    if (!qsd.running) throw new Error(`qemu-storage-daemon exited: ${out}`);
    return (await run('test', ['-s', pidFile], { allowFail: true })).code === 0;
  }, { timeoutMs: 30_000 });
  return {
    file,
    stop: async () => {
      await stopDaemon();
      await unmount();
    },
  };
}

// One loop-device helper for every test: the testkit's (detach now, or at cleanup; idempotent).
export { attachLoop, type Loop } from '@shadowset/testkit/engine/daemons';

export async function mountOn(cleanup: Cleanup, dev: string, dir: string, opts: string[] = []): Promise<{ unmount(): Promise<void> }> {
  await mkdir(dir, { recursive: true });
  await run('mount', [...opts, dev, dir]);
  let mounted = true;
  const lazy = cleanup.defer(`unmount ${dir}`, async () => {
    if (mounted) await run('umount', ['-l', dir]);
  });
  return {
    unmount: async () => {
      await run('umount', [dir]);
      mounted = false;
      await lazy();
    },
  };
}

/** e2fsck -f -n: the exit code and what it printed (0 = clean). */
export async function fsck(dev: string): Promise<{ code: number | null; output: string }> {
  const r = await run('e2fsck', ['-f', '-n', dev], { allowFail: true });
  return { code: r.code, output: r.stdout + r.stderr };
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A few large files and a directory of small ones; returns relative path → sha256. */
export async function writeFiles(root: string, scale = 1): Promise<Map<string, string>> {
  const sums = new Map<string, string>();
  const put = async (rel: string, data: Buffer) => {
    await writeFile(join(root, rel), data);
    sums.set(rel, sha256(data));
  };
  for (let i = 0; i < 3; i++) await put(`big-${i}.bin`, randomBytes(Math.round(scale * 4 * 1024 * 1024) + i * 4099));
  await mkdir(join(root, 'small'));
  for (let i = 0; i < 150; i++) await put(join('small', `f${i}`), randomBytes(1 + ((i * 7919) % 12000)));
  return sums;
}

/** Files whose checksum differs from `sums` (empty: all match). */
export async function differingFiles(root: string, sums: Map<string, string>): Promise<string[]> {
  const bad: string[] = [];
  for (const [rel, sum] of sums) {
    const got = await readFile(join(root, rel)).then(sha256, (e: Error) => `unreadable: ${e.message}`);
    if (got !== sum) bad.push(rel);
  }
  return bad;
}
