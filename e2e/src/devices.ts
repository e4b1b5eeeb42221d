// Backing devices for test PVs: a loop device over a sparse file when losetup works (root), else the
// file itself. Either can be a local/hostPath PV's path for the node simulator.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const run = promisify(execFile);

export interface BackingDevice {
  path: string;
  kind: 'loop' | 'file';
  /** the sparse file behind it */
  file: string;
  sizeBytes: number;
  release(): Promise<void>;
}

/** A device of sizeBytes whose first bytes are `head` (if given). */
export async function createBackingDevice(sizeBytes: number, head?: string): Promise<BackingDevice> {
  const dir = await mkdtemp(join(tmpdir(), 'shadowset-dev-'));
  const file = join(dir, 'disk.img');
  const fh = await open(file, 'w');
  try {
    await fh.truncate(sizeBytes);
    if (head) await fh.write(Buffer.from(head, 'utf8'), 0, Buffer.byteLength(head), 0);
  } finally {
    await fh.close();
  }
  let loop: string | undefined;
  try {
    loop = (await run('losetup', ['--find', '--show', file])).stdout.trim();
  } catch {
    loop = undefined; // not root, or no loop support: the file will do
  }
  return {
    path: loop ?? file,
    kind: loop ? 'loop' : 'file',
    file,
    sizeBytes,
    async release() {
      if (loop) await run('losetup', ['-d', loop]).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
