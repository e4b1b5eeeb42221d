/**
 * The chunks a minicopy has to copy: which ones are written while a member is away (seeded, so a
 * seed names them), the writes themselves, and the bare copy of the same chunks with no engine at
 * all, the floor for that pattern on this machine.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';

import { importEngine } from '../lib/host.mjs';
import { KiB } from '../lib/run.mjs';

// The tests' seeded PRNG (mulberry32), so a seed names the chunks written.
export { prng } from '@shadowset/testkit/prng';

/** k consecutive chunk numbers from a random start. */
export function pickRegion(n, k, rand) {
  const first = Math.floor(rand() * (n - k + 1));
  return Array.from({ length: k }, (_, i) => first + i);
}

/** k distinct chunk numbers out of n, uniformly at random (partial Fisher-Yates), ascending. */
export function pickChunks(n, k, rand) {
  const idx = new Int32Array(n);
  for (let i = 0; i < n; i++) idx[i] = i;
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(rand() * (n - i));
    const t = idx[i]; idx[i] = idx[j]; idx[j] = t;
  }
  return Array.from(idx.subarray(0, k)).sort((a, b) => a - b);
}

/**
 * Writes one 4 KiB block of random data at a random 4 KiB-aligned offset inside each of `chunks`,
 * through the export at `uri` (the engine's own NBD client, 32 writes in flight), then a FLUSH.
 */
export async function writeOneBlockEach(uri, chunks, chunkSize, rand) {
  const { NbdClientBackend } = await importEngine('adapters/backend-nbd/nbd-client.js');
  const client = await NbdClientBackend.open(uri);
  try {
    let next = 0;
    const blocksPerChunk = chunkSize / (4 * KiB);
    const worker = async () => {
      while (next < chunks.length) {
        const c = chunks[next++];
        const off = c * chunkSize + Math.floor(rand() * blocksPerChunk) * 4 * KiB;
        await client.write(randomBytes(4 * KiB), off, false);
      }
    };
    await Promise.all(Array.from({ length: 32 }, worker));
    await client.flush();
  } finally {
    await client.close();
  }
}

/**
 * The least this machine needs to copy `chunks` (ascending chunk numbers) from one file's data area to
 * another's and have them on disk: synchronous pread/pwrite of each chunk through one reused buffer,
 * then one fdatasync — what a minicopy does minus everything the engine adds (API, metadata, locks,
 * threads). Returns { seconds, syncSeconds }, the latter the final fdatasync's share.
 */
export function bareCopy(src, dst, chunks, chunkSize, header) {
  const buf = Buffer.allocUnsafe(chunkSize);
  const t0 = performance.now();
  let t1 = t0;
  const s = fs.openSync(src, 'r');
  const d = fs.openSync(dst, 'r+');
  try {
    for (const c of chunks) {
      const off = header + c * chunkSize;
      let n = 0;
      while (n < chunkSize) {
        const got = fs.readSync(s, buf, n, chunkSize - n, off + n);
        if (got === 0) throw new Error(`bare copy: ${src} ends before chunk ${c}`);
        n += got;
      }
      for (let w = 0; w < chunkSize;) w += fs.writeSync(d, buf, w, chunkSize - w, off + w);
    }
    t1 = performance.now();
    fs.fdatasyncSync(d);
  } finally {
    fs.closeSync(s);
    fs.closeSync(d);
  }
  const t2 = performance.now();
  return { seconds: (t2 - t0) / 1000, syncSeconds: (t2 - t1) / 1000 };
}
