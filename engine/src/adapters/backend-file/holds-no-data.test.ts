/**
 * FileBackend.holdsNoData: true only for a regular file with nothing allocated, or only preallocated
 * extents that hold no data (SEEK_DATA); a byte written a moment ago (not yet written back) makes it false. A full copy skips reading its
 * target on the strength of this answer, so a wrong "true" would leave stale data behind.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FileBackend } from './file-backend.js';

const MiB = 1024 * 1024;

test('holdsNoData: a fresh sparse file yes; after one unflushed write, or preallocated, no', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'holds-no-data-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const type = (await fs.promises.statfs(dir)).type;
  if (![0xef53, 0x58465342, 0x9123683e, 0x01021994].includes(type)) {
    t.skip(`temp directory on a file system (0x${type.toString(16)}) where the answer is always no`);
    return;
  }
  const sparse = path.join(dir, 'sparse.img');
  fs.writeFileSync(sparse, '');
  fs.truncateSync(sparse, 64 * MiB);
  const b = await FileBackend.open(sparse);
  try {
    assert.equal(await b.holdsNoData(), true, 'all holes');
    await b.write(Buffer.alloc(4096, 1), 40 * MiB, false); // no flush: still in the page cache
    assert.equal(await b.holdsNoData(), false, 'a write not yet written back counts');
  } finally {
    await b.close();
  }
  const pre = path.join(dir, 'fallocated.img');
  try {
    execFileSync('fallocate', ['-l', String(8 * MiB), pre]);
  } catch {
    return; // no fallocate here: the sparse case above is what matters
  }
  let hasXfsIo = true;
  try {
    execFileSync('xfs_io', ['-V'], { stdio: 'ignore' });
  } catch {
    hasXfsIo = false;
  }
  const p = await FileBackend.open(pre);
  try {
    // Its extents are unwritten: SEEK_DATA finds no data (where xfs_io can ask), so it reads as zeros.
    assert.equal(await p.holdsNoData(), hasXfsIo, 'preallocated and never written: empty, where the file system can say so');
    await p.write(Buffer.alloc(4096, 1), 5 * MiB, false); // no flush: only in the page cache
    assert.equal(await p.holdsNoData(), false, 'a write into a preallocated extent, not yet written back, counts');
  } finally {
    await p.close();
  }
});
