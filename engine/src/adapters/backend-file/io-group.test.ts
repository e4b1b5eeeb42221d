/**
 * The shared I/O thread (io-group.ts): members share one thread; a member whose device hangs does not
 * hold up the others (a further thread takes them, and leaves again once the device answers); a
 * thread that fails fails what it held and leaves the members on the thread pool, losing nothing.
 *
 * The hanging device is a real one: a file exported through FUSE by nbdfuse from nbdkit with its delay
 * filter, so every write to it blocks its writer's system call for seconds.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { mkdir, mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { isEngineError } from '../../core/errors.js';
import { IoGroup } from './io-group.js';
import { RingBackend } from './ring-backend.js';

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;

async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'io-group-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function sparse(path: string): Promise<string> {
  await writeFile(path, '');
  await truncate(path, SIZE);
  return path;
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function threads(): number {
  return fs.readdirSync('/proc/self/task').length;
}

/**
 * `file` exported as `<dir>/mnt/slow.img` through FUSE, every write to it taking `delaySec` seconds.
 * Returns the path and what takes the export down (before the directory is removed).
 */
async function slowFuseFile(dir: string, file: string, delaySec: number): Promise<{ path: string; unmount: () => Promise<void> }> {
  const mnt = join(dir, 'mnt');
  await mkdir(mnt);
  const fuse = spawn('nbdfuse', [join(mnt, 'slow.img'), '--command', 'nbdkit', '-s', '--exit-with-parent', '--filter=delay', 'file', file, `wdelay=${delaySec}`], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  fuse.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const unmount = async (): Promise<void> => {
    spawnSync('fusermount3', ['-u', mnt]);
    if (fuse.exitCode === null) {
      fuse.kill();
      await new Promise((r) => fuse.once('exit', r));
    }
  };
  const path = join(mnt, 'slow.img');
  try {
    await until(() => fuse.exitCode !== null || (fs.existsSync(path) && fs.statSync(path).size === SIZE), 10_000, 'the FUSE export appears');
    assert.equal(fuse.exitCode, null, `nbdfuse exited: ${stderr}`);
  } catch (e) {
    await unmount();
    throw e;
  }
  return { path, unmount };
}

async function serving(...members: RingBackend[]): Promise<void> {
  await within(Promise.all(members.map((m) => m.ready())), 10_000, 'a thread serves the members');
}

test('two members share one I/O thread: a mirrored load on both lands, with one thread more in the process for both', async (t) => {
  const dir = await tempDir(t);
  const group = new IoGroup();
  const before = threads();
  const a = await RingBackend.open(await sparse(join(dir, 'a.img')), { group });
  const b = await RingBackend.open(await sparse(join(dir, 'b.img')), { group });
  t.after(async () => {
    await a.close();
    await b.close();
  });
  await serving(a, b);
  assert.equal(group.threadCount, 1, 'threads in the group');
  assert.equal(threads() - before, 1, 'threads the two members added to the process');
  const expected = Buffer.alloc(SIZE);
  for (let round = 0; round < 20; round++) {
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 32; i++) {
      const at = ((round * 32 + i) * 37 % (SIZE / 4096)) * 4096;
      const data = randomBytes(4096);
      data.copy(expected, at);
      writes.push(a.write(data, at, false), b.write(data, at, false));
    }
    await Promise.all(writes);
  }
  await Promise.all([a.flush(), b.flush()]);
  assert.ok(fs.readFileSync(join(dir, 'a.img')).equals(expected), 'member a holds every write');
  assert.ok(fs.readFileSync(join(dir, 'b.img')).equals(expected), 'member b holds every write');
  assert.equal(group.threadCount, 1, 'still one thread');
});

test('a member whose device hangs in a write does not hold up the other: a further thread serves it, and leaves once the device answers', { timeout: 60_000 }, async (t) => {
  // One clean-up, in order: members closed, the export taken down, then the directory removed.
  const dir = await mkdtemp(join(tmpdir(), 'io-group-'));
  const done: (() => Promise<unknown>)[] = [() => rm(dir, { recursive: true, force: true })];
  t.after(async () => {
    for (const step of done) await step();
  });
  const fuse = await slowFuseFile(dir, await sparse(join(dir, 'backing.img')), 3);
  done.unshift(fuse.unmount);
  const group = new IoGroup({ stallMs: 50, retireMs: 500 });
  const slow = await RingBackend.open(fuse.path, { group });
  const fast = await RingBackend.open(await sparse(join(dir, 'fast.img')), { group });
  done.unshift(() => fast.close(), () => slow.close());
  await serving(slow, fast);
  assert.equal(group.threadCount, 1);

  // This write takes the thread into a system call that returns after 3 s.
  const hung = randomBytes(4096);
  let hungDone = false;
  const hungWrite = slow.write(hung, 8192, false).then(() => (hungDone = true));
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(hungDone, false, 'the write to the hung device is still in its system call');

  const started = Date.now();
  const expected = new Map<number, Buffer>();
  for (let round = 0; round < 8; round++) {
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 16; i++) {
      const at = (round * 16 + i) * 4096;
      const data = randomBytes(4096);
      expected.set(at, data);
      writes.push(fast.write(data, at, false));
    }
    await within(Promise.all(writes), 2000, `round ${round} on the healthy member`);
  }
  const took = Date.now() - started;
  t.diagnostic(`128 writes to the healthy member in ${took} ms while the other hung`);
  assert.equal(hungDone, false, 'the healthy member went on while the other was still hung');
  assert.ok(took < 2500, `the healthy member's writes took ${took} ms (the hang lasts 3000)`);
  assert.equal(group.threadCount, 2, 'a further thread took the healthy member');
  for (const [at, data] of expected) {
    const got = Buffer.alloc(4096);
    await fast.read(got, at);
    assert.ok(got.equals(data), `healthy member: 4 KiB at ${at}`);
  }

  await within(hungWrite, 10_000, 'the hung write completes once the device answers');
  const back = Buffer.alloc(4096);
  await slow.read(back, 8192);
  assert.ok(back.equals(hung), 'the hung write landed');
  await until(() => group.threadCount === 1, 10_000, 'the further thread leaves when idle');
  // And the one left serves both.
  const again = randomBytes(4096);
  await within(Promise.all([fast.write(again, 0, false), slow.write(again, 0, false)]), 10_000, 'both after the hang');
});

test('a thread that fails fails what it held with ENG_IO; later requests take the thread pool and land', { timeout: 30_000 }, async (t) => {
  const dir = await tempDir(t);
  const group = new IoGroup();
  const paths = [await sparse(join(dir, 'a.img')), await sparse(join(dir, 'b.img'))];
  const members = await Promise.all(paths.map((p) => RingBackend.open(p, { group })));
  t.after(async () => {
    for (const m of members) await m.close();
  });
  await serving(...members);
  const inFlight: Promise<void>[] = [];
  for (let i = 0; i < 64; i++) for (const m of members) inFlight.push(m.write(randomBytes(4096), i * 4096, false));
  const thread = [...(group as unknown as { threads: Map<{ terminate(): Promise<number> }, unknown> }).threads.keys()][0]!;
  await thread.terminate();
  const results = await within(Promise.allSettled(inFlight), 10_000, 'every request in flight settles');
  for (const r of results) {
    if (r.status === 'rejected') assert.ok(isEngineError(r.reason, 'ENG_IO'), `a failed request says ENG_IO: ${String(r.reason)}`);
  }
  assert.ok(group.failure, 'the group knows it failed');
  assert.equal(group.threadCount, 0);
  await within(group.stopped(), 5000, 'the failed group has stopped');
  // Later requests go through the thread pool, on both members.
  const data = randomBytes(64 * 1024);
  for (const m of members) await m.write(data, MiB, false);
  for (const m of members) await m.flush();
  for (const p of paths) assert.ok(fs.readFileSync(p).subarray(MiB, MiB + data.length).equals(data), `${p}: written after the failure`);
});
