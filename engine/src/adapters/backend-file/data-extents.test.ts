/**
 * The data extents of a file member: the parser of xfs_io's `seek -a -r` answer (anything it does not
 * understand is "unknown", never "empty"), and the real question put to a sparse file on this machine's
 * temp file system through a RingBackend.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseSeekOutput, probeDataExtents } from './data-extents.js';
import { RingBackend } from './ring-backend.js';

const MiB = 1024 * 1024;
let hasXfsIo = true;
try {
  execFileSync('xfs_io', ['-V'], { stdio: 'ignore' });
} catch {
  hasXfsIo = false;
}

test('seek output: data and holes become data extents clipped to the size', () => {
  const out = 'Whence\tResult\nHOLE\t0\nDATA\t3145728\nHOLE\t5242880\nDATA\t13107200\nHOLE\t13172736\n';
  assert.deepEqual(parseSeekOutput(out, 16 * MiB), [[3 * MiB, 5 * MiB], [13107200, 13172736]]);
  assert.deepEqual(parseSeekOutput('Whence\tResult\nDATA\t0\nHOLE\t1048576\n', 4 * MiB), [[0, MiB]]);
  assert.deepEqual(parseSeekOutput('Whence\tResult\nDATA\t0\n', 4 * MiB), [[0, 4 * MiB]], 'data with no hole after it runs to the end');
  assert.deepEqual(parseSeekOutput('Whence\tResult\nHOLE\t0\n', 4 * MiB), [], 'all holes: no data');
  assert.deepEqual(parseSeekOutput('Whence\tResult\nHOLE\t4096\n', 4 * MiB), [[0, 4096]], 'what precedes the first mark counts as data');
});

test('seek output that is not understood is unknown (null), never taken as holes', () => {
  for (const bad of [
    '',
    'Whence\tResult\n',
    'Whence\tResult\nERR\t0\tInvalid argument\n',
    'Whence\tResult\nDATA\tEOF\n',
    'Whence\tResult\nDATA\t0\nHOLE\t0\n', // not increasing
    'Whence\tResult\nHOLE\t0\nDATA\t99999999999999999999\n',
    'something else\nHOLE\t0\n',
    'Whence\tResult\nHOLE\t0\nDATA\t-5\n',
  ]) assert.equal(parseSeekOutput(bad, 4 * MiB), null, JSON.stringify(bad));
});

test('a sparse file member reports its data extents; a file with no blocks reports none', { skip: hasXfsIo ? false : 'xfs_io is not installed (Debian: xfsprogs)' }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'extents-'));
  try {
    const file = path.join(dir, 'm.img');
    fs.writeFileSync(file, '');
    fs.truncateSync(file, 16 * MiB);
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.alloc(2 * MiB, 0x11), 0, 2 * MiB, 4 * MiB);
    fs.writeSync(fd, Buffer.alloc(64 * 1024, 0x22), 0, 64 * 1024, 12 * MiB);
    fs.closeSync(fd);
    const b = await RingBackend.open(file);
    try {
      // Some file systems allocate in larger pieces than written: the extents cover the data, and the
      // untouched first 4 MiB and the last 3 MiB are holes.
      const ext = await b.dataExtents();
      assert.ok(ext, 'this machine\'s temp file system answers SEEK_DATA');
      const covered = (o: number) => ext.some(([s, e]) => s <= o && o < e);
      for (const o of [4 * MiB, 6 * MiB - 1, 12 * MiB, 12 * MiB + 65535]) assert.ok(covered(o), `byte ${o} is in a data extent`);
      for (const o of [0, 2 * MiB, 8 * MiB, 15 * MiB]) assert.ok(!covered(o), `byte ${o} is in a hole`);
      // A write through the member is in the answer as soon as it has completed.
      await b.write(Buffer.alloc(4096, 0x33), 15 * MiB, false);
      assert.ok((await b.dataExtents())!.some(([s, e]) => s <= 15 * MiB && 15 * MiB < e), 'a completed write shows as data');
    } finally {
      await b.close();
    }
    const empty = path.join(dir, 'e.img');
    fs.writeFileSync(empty, '');
    fs.truncateSync(empty, 4 * MiB);
    const e = await RingBackend.open(empty);
    try {
      assert.deepEqual(await e.dataExtents(), []);
    } finally {
      await e.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('without xfs_io the answer is unknown (null)', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'extents-'));
  const saved = process.env.PATH;
  try {
    const file = path.join(dir, 'm.img');
    fs.writeFileSync(file, Buffer.alloc(4096, 1));
    const fd = fs.openSync(file, 'r');
    process.env.PATH = dir; // an empty directory: no xfs_io on the path
    try {
      assert.equal(await probeDataExtents(fd, 4096), null);
    } finally {
      fs.closeSync(fd);
    }
  } finally {
    process.env.PATH = saved;
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
