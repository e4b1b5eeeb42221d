/**
 * The ring backend on a real file: requests work before its I/O thread serves (thread pool) and after
 * (ring), ready() says when the thread serves, and a thread reused member after member (the spare)
 * carries no listeners over from the members before.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { RingBackend } from './ring-backend.js';

const SIZE = 4 * 1024 * 1024;

async function tempFile(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ring-backend-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'member.img');
  await writeFile(path, Buffer.alloc(SIZE));
  return path;
}

/** Write a small and a large block (ring-sized and thread-pool-sized) and read both back. */
async function roundTrip(b: RingBackend, at: number): Promise<void> {
  const small = randomBytes(4096);
  const large = randomBytes(512 * 1024);
  await Promise.all([b.write(small, at, false), b.write(large, at + 64 * 1024, true)]);
  const gotSmall = Buffer.alloc(small.length);
  const gotLarge = Buffer.alloc(large.length);
  await Promise.all([b.read(gotSmall, at), b.read(gotLarge, at + 64 * 1024)]);
  assert.ok(gotSmall.equals(small), `4 KiB at ${at} read back`);
  assert.ok(gotLarge.equals(large), `512 KiB at ${at + 64 * 1024} read back`);
}

test('requests work before and after the I/O thread serves; ready() resolves', async (t) => {
  const path = await tempFile(t);
  const b = await RingBackend.open(path);
  try {
    // Straight after open: the thread may not serve yet, and nothing may wait for it.
    await roundTrip(b, 0);
    // The worker handle is unref'd while idle: the timer keeps the test alive and bounds the wait.
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<string>((r) => (timer = setTimeout(() => r('not serving after 10 s'), 10_000)));
    assert.equal(await Promise.race([b.ready().then(() => 'serving'), late]), 'serving');
    clearTimeout(timer);
    await roundTrip(b, 1024 * 1024);
    await b.flush();
  } finally {
    await b.close();
  }
});

test('a thread reused by member after member keeps no listeners from the ones before', async (t) => {
  const path = await tempFile(t);
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
  process.on('warning', onWarning);
  t.after(() => void process.off('warning', onWarning));
  for (let i = 0; i < 15; i++) {
    const b = await RingBackend.open(path);
    try {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<string>((r) => (timer = setTimeout(() => r('not serving after 10 s'), 10_000)));
      assert.equal(await Promise.race([b.ready().then(() => 'serving'), late]), 'serving', `member ${i}`);
      clearTimeout(timer);
      await roundTrip(b, (i % 4) * 1024 * 1024);
    } finally {
      await b.close();
    }
  }
  // Warnings are emitted on the next tick.
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(warnings.filter((w) => w.includes('MaxListeners')), []);
});
