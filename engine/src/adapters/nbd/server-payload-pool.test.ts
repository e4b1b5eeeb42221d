// Large WRITE payloads received into the engine's payload pool, through a real socket and the NBD client:
// every acknowledged write reads back and is on both members, while the pool's buffers go round.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { MemoryBackend } from '../faulty/memory-backend.js';
import { HEADER_BYTES, MiB } from '../../core/geometry.js';
import { payloadPool } from '../../core/payload-pool.js';
import { systemClock } from '../../ports/clock.js';
import { startShadowSet } from '../../runtime/engine.js';
import { NbdClientBackend } from '../backend-nbd/nbd-client.js';
import { NbdServer } from './server.js';

const log = pino({ level: 'silent' });
const UNIT = 24 * MiB;

test('pipelined large writes through pooled payload buffers all land, on both members, and read back', async () => {
  const devs = [new MemoryBackend('pool0', HEADER_BYTES + UNIT), new MemoryBackend('pool1', HEADER_BYTES + UNIT)];
  const byLoc = new Map(devs.map((d) => [d.location, d]));
  const { set } = await startShadowSet({
    members: devs.map((d) => ({ location: d.location })), overwrite: false, memberTimeoutMs: 60_000, log, clock: systemClock,
    open: async (loc) => byLoc.get(loc)!,
  });
  const server = new NbdServer({
    exportName: 'x', description: 'pool', log, multiConn: true, payloadPool,
    handler: {
      size: () => set.size,
      read: (off, len) => set.read(off, len),
      write: (off, data, fua) => set.write(off, data, fua),
      flush: () => set.flush(),
      trim: (off, len, fua) => set.trim(off, len, fua),
      writeZeroes: (off, len, fua) => set.writeZeroes(off, len, fua),
    },
  });
  const { port } = await server.listenTcp('127.0.0.1', 0);
  const client = await NbdClientBackend.open(`nbd://127.0.0.1:${port}/x`, 5000);
  const model = Buffer.alloc(set.size);
  const before = { ...payloadPool.stats };
  const sizes = [MiB, 128 * 1024, 1536 * 1024, 3 * MiB + 4096, 512 * 1024, 4096, 8 * MiB + 512];
  let writes = 0;
  let pooled = 0;
  try {
    // 12 rounds of 8 writes in flight at once, each round over the same ranges with new bytes.
    for (let round = 0; round < 12; round++) {
      const batch: Promise<void>[] = [];
      let off = (round % 3) * 4096;
      for (let i = 0; i < 8; i++) {
        const len = sizes[(round + i) % sizes.length]!;
        if (off + len > set.size) break;
        const data = randomBytes(len);
        data.copy(model, off);
        batch.push(client.write(data, off, false));
        if (payloadPool.fits(len)) pooled++;
        writes++;
        off += len;
      }
      await Promise.all(batch);
    }
    await client.flush();
    const back = Buffer.alloc(set.size);
    await client.read(back, 0);
    assert.ok(back.equals(model), 'every acknowledged write reads back');
    for (const d of devs) assert.ok(d.bytes.subarray(HEADER_BYTES, HEADER_BYTES + set.size).equals(model), `${d.location} holds every write`);
    assert.ok(pooled > 40, `most writes were large (${pooled} of ${writes})`);
    const taken = payloadPool.stats.taken - before.taken;
    const reused = payloadPool.stats.reused - before.reused;
    // A payload that arrived in one socket chunk is used where it lies: not every large write takes a buffer.
    assert.ok(taken > 0 && taken <= pooled, `${taken} of ${pooled} large payloads took a pooled buffer`);
    assert.ok(reused > taken / 2, `buffers were reused (${reused} of ${taken})`);
    assert.equal(payloadPool.stats.poisoned, before.poisoned, 'no buffer poisoned: no device request failed');
  } finally {
    await client.close();
    await server.close();
    await set.stop();
  }
});
