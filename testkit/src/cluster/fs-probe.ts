/**
 * A pod's program for Filesystem volumes on the PVC path (command `shadowset-fs-probe <dir> [op]…`, run by the
 * node simulator with `<dir>` the pod's mountPath): each op prints one JSON line, then `Done` with the
 * filesystem's size (statfs), then it holds the volume until SIGTERM (the pod's deletion) and exits 0.
 *
 * - `write:<name>:<MiB>`: that many MiB of pseudo-random bytes into `<dir>/<name>`, fsync, its SHA-256 kept in
 *   `<name>.sha256` beside it (fsynced too) and printed;
 * - `check:<name>`: reads `<name>` back and compares with its `.sha256` (a mismatch is a failure);
 * - `fill:<name>:<MiB>`: reserves the file's whole length with fallocate(1) (blocks, not data: cheap, and
 *   refused with ENOSPC by a filesystem that has fewer free bytes), then writes its last MiB with fresh bytes,
 *   fsync, reads them back. After a resize, a length above the old filesystem's free space shows that the
 *   new space is usable.
 * Not a library: nothing imports this file.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { open, readFile, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const MiB = 2 ** 20;
const [dir, ...ops] = process.argv.slice(2);
const say = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function size(): Promise<{ totalBytes: number; availBytes: number }> {
  const s = await statfs(dir!);
  return { totalBytes: s.blocks * s.bsize, availBytes: s.bavail * s.bsize };
}

async function write(name: string, mib: number): Promise<void> {
  const fh = await open(join(dir!, name), 'w');
  const h = createHash('sha256');
  try {
    for (let i = 0; i < mib; i++) {
      const chunk = randomBytes(MiB);
      h.update(chunk);
      await fh.write(chunk, 0, MiB, i * MiB);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
  const digest = h.digest('hex');
  const side = await open(join(dir!, `${name}.sha256`), 'w');
  await side.writeFile(`${digest}\n`);
  await side.sync();
  await side.close();
  say({ event: 'Wrote', name, bytes: mib * MiB, sha256: digest });
}

async function check(name: string): Promise<void> {
  const [data, want] = await Promise.all([readFile(join(dir!, name)), readFile(join(dir!, `${name}.sha256`), 'utf8')]);
  const got = sha(data);
  if (got !== want.trim()) throw new Error(`${name}: SHA-256 ${got}, ${want.trim()} when written`);
  say({ event: 'Checked', name, bytes: data.length, sha256: got });
}

async function fill(name: string, mib: number): Promise<void> {
  const path = join(dir!, name);
  execFileSync('fallocate', ['-l', `${mib}MiB`, path], { stdio: ['ignore', 'ignore', 'pipe'] });
  const tail = randomBytes(MiB);
  const fh = await open(path, 'r+');
  try {
    await fh.write(tail, 0, MiB, (mib - 1) * MiB);
    await fh.sync();
    const back = Buffer.alloc(MiB);
    await fh.read(back, 0, MiB, (mib - 1) * MiB);
    if (!back.equals(tail)) throw new Error(`${name}: its last MiB reads back different`);
  } finally {
    await fh.close();
  }
  await writeFile(join(dir!, `${name}.tail.sha256`), `${sha(tail)}\n`);
  say({ event: 'Filled', name, bytes: mib * MiB, tailSha256: sha(tail) });
}

async function main(): Promise<void> {
  if (!dir) throw new Error('usage: shadowset-fs-probe <dir> [write:<name>:<MiB> | check:<name> | fill:<name>:<MiB>]…');
  say({ event: 'Start', ...(await size()) });
  for (const op of ops) {
    const [kind, name, mib] = op.split(':');
    if (!name || !/^[\w.-]+$/.test(name)) throw new Error(`bad op ${op}`);
    if (kind === 'write') await write(name, Number(mib));
    else if (kind === 'check') await check(name);
    else if (kind === 'fill') await fill(name, Number(mib));
    else throw new Error(`bad op ${op}`);
  }
  say({ event: 'Done', ...(await size()) });
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
    setInterval(() => undefined, 1 << 30);
  });
  process.exit(0);
}

main().catch((e: unknown) => {
  say({ event: 'Failed', message: (e as Error).message });
  process.exit(1);
});
