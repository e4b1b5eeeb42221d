/**
 * close() of a file member with requests in flight: a descriptor number must not be closed while a
 * request on the I/O thread or the thread pool may still use it, or the next file opened gets that
 * number and the request's write lands there. And members opened and closed again and again, with
 * requests in flight each time, must not leave descriptors or threads behind.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { isEngineError } from '../../core/errors.js';
import { RingBackend } from './ring-backend.js';

const MiB = 1024 * 1024;
const SIZE = 80 * MiB;

async function tempFiles(t: { after(fn: () => Promise<void>): void }, ...names: string[]): Promise<string[]> {
  const dir = await mkdtemp(join(tmpdir(), 'ring-close-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return Promise.all(names.map(async (n) => {
    const p = join(dir, n);
    await writeFile(p, '');
    await truncate(p, SIZE); // sparse
    return p;
  }));
}

/** Descriptor numbers of this process that refer to `path`. */
function fdsOf(path: string): number[] {
  return fs.readdirSync('/proc/self/fd').map(Number).filter((fd) => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`) === path;
    } catch {
      return false; // closed meanwhile (the directory's own descriptor)
    }
  });
}

async function serving(b: RingBackend): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<string>((r) => (timer = setTimeout(() => r('not serving after 10 s'), 10_000)));
  assert.equal(await Promise.race([b.ready().then(() => 'serving'), late]), 'serving');
  clearTimeout(timer);
}

/** Ring-sized and thread-pool-sized writes at distinct places, with the data each should leave. */
function load(b: RingBackend, base: number): { writes: Promise<void>[]; expect: [number, Buffer][] } {
  const expect: [number, Buffer][] = [];
  const writes: Promise<void>[] = [];
  for (let i = 0; i < 64; i++) {
    const data = randomBytes(i % 3 === 0 ? 1 * MiB : 96 * 1024); // 128 KiB and below take the ring
    const at = base + i * MiB;
    expect.push([at, data]);
    writes.push(b.write(data, at, i % 5 === 0));
  }
  writes.push(b.flush());
  return { writes, expect };
}

test('close() with requests in flight on the ring and the thread pool closes the descriptors only after they settle', async (t) => {
  const [a, other] = await tempFiles(t, 'a.img', 'other.img');
  const b = await RingBackend.open(a!);
  await serving(b);
  const mine = fdsOf(a!);
  assert.equal(mine.length, 2, 'a member has two descriptors');
  const { writes, expect } = load(b, 0);
  let settled = 0;
  const stillMine: string[] = [];
  for (const w of writes) {
    void w.finally(() => {
      settled++;
      // Whatever a request did, its descriptors were still this member's file when it finished.
      for (const fd of mine) if (!fdsOf(a!).includes(fd)) stillMine.push(`fd ${fd} gone before a request settled`);
    }).catch(() => undefined);
  }
  let settledAtClose = -1;
  const closing = b.close().then(() => (settledAtClose = settled));
  await assert.rejects(b.write(Buffer.alloc(4096), 0, false), (e: unknown) => isEngineError(e, 'ENG_IO'), 'a request after close() fails');
  await closing;
  // Take whatever numbers were freed, as the next member opened would.
  const grabbed = [fs.openSync(other!, 'r+'), fs.openSync(other!, 'r+'), fs.openSync(other!, 'r+')];
  t.after(async () => grabbed.forEach((fd) => fs.closeSync(fd)));
  const results = await Promise.allSettled(writes);
  assert.equal(settledAtClose, writes.length, `${writes.length - settledAtClose} request(s) still running when close() resolved`);
  assert.deepEqual(stillMine, []);
  assert.deepEqual(results.filter((r) => r.status === 'rejected'), [], 'requests issued before close() complete');
  assert.deepEqual(fdsOf(a!), [], 'the member\'s descriptors are closed');
  const img = fs.readFileSync(a!);
  for (const [at, data] of expect) assert.ok(img.subarray(at, at + data.length).equals(data), `write at ${at} landed`);
  assert.ok(fs.readFileSync(other!).equals(Buffer.alloc(SIZE)), 'no write landed in the file opened afterwards');
  await b.close(); // idempotent
});

function threads(): number {
  return fs.readdirSync('/proc/self/task').length;
}

test('open and close again and again with requests in flight leaves no descriptors or threads behind', async (t) => {
  const [a] = await tempFiles(t, 'a.img');
  // One round first: the thread pool and the shared I/O thread exist from then on.
  const first = await RingBackend.open(a!);
  await serving(first);
  await Promise.all(load(first, 0).writes);
  await first.close();
  const before = { fds: fs.readdirSync('/proc/self/fd').length, threads: threads() };
  const closes: Promise<void>[] = [];
  const requests: Promise<void>[] = [];
  for (let round = 0; round < 16; round++) {
    const b = await RingBackend.open(a!);
    if (round % 2 === 0) await serving(b); // half on the ring, half while the thread still starts
    requests.push(...load(b, 0).writes);
    // The runtime closes a faulted member without waiting for it.
    closes.push(b.close());
  }
  await Promise.all(closes);
  const results = await Promise.allSettled(requests);
  assert.deepEqual(results.filter((r) => r.status === 'rejected'), [], 'requests issued before close() complete');
  // A thread that ended releases its event loop's descriptors a moment after it is gone: give such asynchronous clean-up up to 2 s before counting what is left.
  const settled = () => ({ fds: fs.readdirSync('/proc/self/fd').length, threads: threads() });
  let now = settled();
  for (let i = 0; i < 40 && now.fds > before.fds + 8 * Math.max(0, now.threads - before.threads); i++) {
    await new Promise((r) => setTimeout(r, 50));
    now = settled();
  }
  t.diagnostic(`descriptors ${before.fds} → ${now.fds}, threads ${before.threads} → ${now.threads}`);
  assert.deepEqual(fdsOf(a!), [], 'no descriptor of the member is left');
  // The members shared the thread started in the first round. A further one may still be there (the
  // group adds one when a ring's requests wait untaken, as on a loaded machine, and it leaves after 5 s
  // idle), with the few descriptors of its own event loop; each leaked thread would add as much again.
  const extraThreads = now.threads - before.threads;
  assert.ok(extraThreads <= 1, `threads ${before.threads} → ${now.threads}`);
  assert.ok(now.fds <= before.fds + 8 * Math.max(0, extraThreads), `descriptors ${before.fds} → ${now.fds}`);
});
