// The member server receives large WRITE payloads into the payload pool too: pipelined writes from the
// engine's own NBD client land byte for byte on the served file while buffers go round.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { NbdClientBackend } from '../adapters/backend-nbd/nbd-client.js';
import { payloadPool } from '../core/payload-pool.js';
import { serveDevice } from './serve-device.js';

const MiB = 1024 * 1024;

test('serve-device: pipelined large writes through pooled payload buffers land on the device', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'serve-device-pool-'));
  const file = join(dir, 'dev.img');
  await writeFile(file, '');
  await truncate(file, 32 * MiB);
  let listen = '';
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) if (line.includes('"DeviceServing"')) listen = (JSON.parse(line) as { listen: string }).listen;
      cb();
    },
  });
  const stop = await serveDevice(['--device', file, '--listen', '127.0.0.1:0'], pino({ level: 'info' }, sink));
  const before = { ...payloadPool.stats };
  const model = Buffer.alloc(32 * MiB);
  try {
    assert.match(listen, /^127\.0\.0\.1:\d+$/);
    const client = await NbdClientBackend.open(`nbd://${listen}/member`, 5000);
    try {
      const sizes = [MiB, 256 * 1024, 2 * MiB + 4096, 768 * 1024];
      for (let round = 0; round < 10; round++) {
        const batch: Promise<void>[] = [];
        let off = (round % 4) * 4096;
        for (let i = 0; i < 6; i++) {
          const data = randomBytes(sizes[(round + i) % sizes.length]!);
          data.copy(model, off);
          batch.push(client.write(data, off, false));
          off += data.length;
        }
        await Promise.all(batch);
      }
      await client.flush();
    } finally {
      await client.close();
    }
  } finally {
    await stop();
  }
  assert.ok((await readFile(file)).equals(model), 'every acknowledged write is on the device');
  const taken = payloadPool.stats.taken - before.taken;
  assert.ok(taken > 0, 'payloads were received into pooled buffers');
  assert.ok(payloadPool.stats.reused - before.reused > taken / 2, 'and the buffers were reused');
  await rm(dir, { recursive: true, force: true });
});
