/**
 * Integration-test support: a cleanup scope per test, temp dirs, child processes with deadlines,
 * polling with deadlines, and byte-level helpers for member files (data area at HEADER_BYTES).
 * Everything a helper starts or attaches is undone by the scope, last first, even when the test fails.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { HEADER_BYTES, MiB } from '@shadowset/engine/core/geometry';

export { HEADER_BYTES, MiB };

type Cleanup = () => unknown;

/** Cleanups run last-registered first, each one even if an earlier one failed. */
export class Scope {
  private readonly fns: { what: string; fn: Cleanup }[] = [];

  defer(what: string, fn: Cleanup): void {
    this.fns.push({ what, fn });
  }

  async close(): Promise<void> {
    const errors: string[] = [];
    for (let c = this.fns.pop(); c; c = this.fns.pop()) {
      try {
        await c.fn();
      } catch (e) {
        errors.push(`${c.what}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    if (errors.length > 0) throw new Error(`cleanup failed: ${errors.join('; ')}`);
  }
}

/** A scope closed when the test ends, plus a fresh temp dir removed at the very end. */
export async function testScope(t: TestContext): Promise<{ scope: Scope; dir: string }> {
  const scope = new Scope();
  t.after(() => scope.close());
  const dir = await mkdtemp(join(tmpdir(), 'shadow-itest-'));
  scope.defer(`remove ${dir}`, () => rm(dir, { recursive: true, force: true }));
  return { scope, dir };
}

/** A sparse file of `bytes` (reads as zeros). */
export async function sparseFile(path: string, bytes: number): Promise<string> {
  await writeFile(path, '');
  await truncate(path, bytes);
  return path;
}

/** A file of pseudo-random bytes. */
export async function randomFile(path: string, bytes: number): Promise<Buffer> {
  const data = randomBytes(bytes);
  await writeFile(path, data);
  return data;
}

export async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Resolve instead of rejecting when the command exits non-zero. */
  allowFail?: boolean;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Aborting kills the command (SIGKILL). */
  signal?: AbortSignal;
}

/** Run a command to completion; rejects (with its stderr) on a non-zero exit unless allowFail. */
export function run(cmd: string, args: string[], o: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: o.env ?? process.env, cwd: o.cwd });
    const abort = () => p.kill('SIGKILL');
    if (o.signal?.aborted) abort();
    o.signal?.addEventListener('abort', abort, { once: true });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    p.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timeoutMs = o.timeoutMs ?? 60_000;
    const timer = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} did not finish within ${timeoutMs} ms\n${stderr}${stdout}`));
    }, timeoutMs);
    p.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    p.once('close', (code, signal) => {
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', abort);
      const r = { code, signal, stdout, stderr };
      if (code !== 0 && !o.allowFail) {
        reject(new Error(`${cmd} ${args.join(' ')} exited with ${code ?? signal}\n${stderr.slice(-4000)}${stdout.slice(-4000)}`));
      } else resolve(r);
    });
  });
}

/** Resolves with the exit of a child (immediately if it already exited). */
export function exitOf(p: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve({ code: p.exitCode, signal: p.signalCode });
  return new Promise((resolve) => p.once('exit', (code, signal) => resolve({ code, signal })));
}

/** Terminate a child we started: SIGTERM, then SIGKILL if it has not exited within graceMs. */
export async function terminate(p: ChildProcess, graceMs = 5000): Promise<void> {
  const done = exitOf(p);
  if (p.exitCode !== null || p.signalCode !== null) return;
  p.kill('SIGTERM');
  const timer = setTimeout(() => p.kill('SIGKILL'), graceMs);
  await done;
  clearTimeout(timer);
}

/** Poll `probe` until it returns a value other than undefined, or fail after `timeoutMs`. */
export async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000, everyMs = 25): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = undefined;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Read `length` bytes at `offset` of a file or block device. */
export async function readAt(path: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return buf;
  } finally {
    await fh.close();
  }
}

/** Bytes of the virtual unit as stored on a member (after the metadata header). */
export function readMemberData(member: string, offset: number, length: number): Promise<Buffer> {
  return readAt(member, HEADER_BYTES + offset, length);
}

/**
 * Compare two ranges of two files chunk by chunk. Returns null when identical, else the first differing
 * offset relative to the range start.
 */
export async function firstDifference(a: string, aOffset: number, b: string, bOffset: number, length: number): Promise<number | null> {
  const step = 4 * MiB;
  const [fa, fb] = [await open(a, 'r'), await open(b, 'r')];
  try {
    const ba = Buffer.alloc(step);
    const bb = Buffer.alloc(step);
    for (let done = 0; done < length; done += step) {
      const n = Math.min(step, length - done);
      ba.fill(0);
      bb.fill(0);
      await fa.read(ba, 0, n, aOffset + done);
      await fb.read(bb, 0, n, bOffset + done);
      if (ba.compare(bb, 0, n, 0, n) !== 0) {
        for (let i = 0; i < n; i++) if (ba[i] !== bb[i]) return done + i;
      }
    }
    return null;
  } finally {
    await fa.close();
    await fb.close();
  }
}

/** Null when the data areas of two members are byte-identical over the virtual unit's `size`. */
export function memberDataDifference(a: string, b: string, size: number): Promise<number | null> {
  return firstDifference(a, HEADER_BYTES, b, HEADER_BYTES, size);
}

/** A buffer filled with one byte value (qemu-io's -P patterns). */
export function pattern(byte: number, length: number): Buffer {
  return Buffer.alloc(length, byte);
}

/** SHA-256 of a whole file or device (to prove it was not touched). */
export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MiB })) h.update(chunk as Buffer);
  return h.digest('hex');
}
