/**
 * A Linux ext4 filesystem on the virtual unit: qemu-storage-daemon attaches to the engine over NBD and
 * exports the unit as a FUSE file, a loop device on that file takes mkfs.ext4 and mount. After writing,
 * unmounting and a clean fsck, the files read back with their checksums through the engine, and then
 * from each member on its own (a read-only loop device over the member's data area).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { attachLoop, fuseExport, mount } from '@shadowset/testkit/engine/daemons';
import { startEngine } from '@shadowset/testkit/engine/engine-process';
import { HEADER_BYTES, memberDataDifference, MiB, run, sparseFile, testScope, type Scope } from '@shadowset/testkit/engine/support';

const MEMBER_BYTES = 192 * MiB;
const UNIT_BYTES = MEMBER_BYTES - HEADER_BYTES;

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Some large files and a directory of small ones; returns relative path → sha256. */
async function writeTree(root: string): Promise<Map<string, string>> {
  const sums = new Map<string, string>();
  const put = async (rel: string, data: Buffer) => {
    await writeFile(join(root, rel), data);
    sums.set(rel, sha(data));
  };
  for (let i = 0; i < 3; i++) await put(`big-${i}.bin`, randomBytes(8 * MiB + i * 4099));
  await mkdir(join(root, 'small'));
  for (let i = 0; i < 200; i++) await put(join('small', `f${i}`), randomBytes(1 + ((i * 7919) % 20000)));
  return sums;
}

async function checkTree(root: string, sums: Map<string, string>): Promise<void> {
  for (const [rel, sum] of sums) assert.equal(sha(await readFile(join(root, rel))), sum, `${rel} differs`);
}

async function fsckClean(dev: string): Promise<void> {
  const r = await run('fsck.ext4', ['-f', '-n', dev], { allowFail: true });
  assert.equal(r.code, 0, `fsck.ext4 -fn ${dev} is not clean:\n${r.stdout}${r.stderr}`);
}

/** Mount, check every file, unmount. */
async function verifyOn(scope: Scope, dev: string, mnt: string, sums: Map<string, string>, opts: string[]): Promise<void> {
  const m = await mount(scope, dev, mnt, opts);
  try {
    await checkTree(mnt, sums);
  } finally {
    await m.unmount();
  }
}

test('ext4 on the virtual unit through qemu-storage-daemon FUSE and a loop device', async (t) => {
  const { scope, dir } = await testScope(t);
  const a = await sparseFile(join(dir, 'a.img'), MEMBER_BYTES);
  const b = await sparseFile(join(dir, 'b.img'), MEMBER_BYTES);
  const engine = await startEngine(scope, { dir, members: [a, b] });
  const fuse = await fuseExport(scope, dir, engine.socket, 'shadow');
  const loop = await attachLoop(scope, fuse.file);

  await run('mkfs.ext4', ['-q', '-F', loop.dev]);
  const mnt = join(dir, 'mnt');
  const m = await mount(scope, loop.dev, mnt);
  const sums = await writeTree(mnt);
  await m.unmount();
  await fsckClean(loop.dev);
  await verifyOn(scope, loop.dev, mnt, sums, []);

  await loop.detach();
  await fuse.stop();
  const st = await engine.status();
  assert.deepEqual(st.members.map((x) => x.state), ['InSync', 'InSync']);
  assert.deepEqual(await engine.stop(), { code: 0, signal: null }, engine.tail());

  // Each member alone holds the whole filesystem.
  assert.equal(await memberDataDifference(a, b, UNIT_BYTES), null, 'member data areas differ');
  for (const member of [a, b]) {
    const ro = await attachLoop(scope, member, { offset: HEADER_BYTES, sizeLimit: UNIT_BYTES, readOnly: true });
    await fsckClean(ro.dev);
    await verifyOn(scope, ro.dev, mnt, sums, ['-o', 'ro,noload']);
    await ro.detach();
  }
});
