// The engine's payload pool against its members: a pooled buffer is reused only once every device given
// it has returned. The danger it guards against: the member timeout fails a write to the runtime while
// the device is still reading the buffer (a hung pwrite, bytes queued on an NBD member's socket); reusing
// the buffer then would let the next request's bytes reach that device at the first request's offset.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { MemoryBackend } from '../adapters/faulty/memory-backend.js';
import { HEADER_BYTES, MiB } from '../core/geometry.js';
import { payloadPool } from '../core/payload-pool.js';
import { systemClock } from '../ports/clock.js';
import { startShadowSet } from './engine.js';

const log = pino({ level: 'silent' });
const RAW = HEADER_BYTES + 16 * MiB;

/**
 * A device that, while `holding`, keeps each data write's buffer and reads it only when told to finish
 * (writes to the header, the engine's metadata and write-intent log, go through).
 */
class HoldingBackend extends MemoryBackend {
  holding = false;
  failHeld = false;
  held: { buf: Buffer; offset: number; finish: () => void }[] = [];
  override write(buf: Buffer, offset: number): Promise<void> {
    if (!this.holding || offset < HEADER_BYTES) return super.write(buf, offset);
    return new Promise<void>((resolve, reject) => {
      this.held.push({
        buf, offset,
        finish: () => {
          if (this.failHeld) return reject(new Error('injected: the held write failed'));
          buf.copy(this.bytes, offset); // the device reads the buffer only now
          resolve();
        },
      });
    });
  }
}

async function twoMembers() {
  const devs = [new HoldingBackend('hold0', RAW), new HoldingBackend('hold1', RAW)];
  const byLoc = new Map(devs.map((d) => [d.location, d]));
  const { set } = await startShadowSet({
    members: devs.map((d) => ({ location: d.location })),
    overwrite: false, memberTimeoutMs: 150, log, clock: systemClock,
    open: async (loc) => byLoc.get(loc)!,
  });
  return { set, devs };
}

const pattern = (buf: Buffer, seed: number) => {
  for (let i = 0; i < buf.length; i += 4) buf.writeUInt32LE((seed * 2654435761 + i) >>> 0, i);
  return buf;
};

for (const fails of [false, true]) {
  test(`a pooled payload a timed-out member still holds is not reused until the device returns${fails ? ' (it returns an error: never reused)' : ''}`, async () => {
    const { set, devs } = await twoMembers();
    const before = { ...payloadPool.stats };
    devs[1]!.holding = true;
    devs[1]!.failHeld = fails;
    const a = pattern(payloadPool.take(MiB), 1);
    const expected = Buffer.from(a);
    const t0 = Date.now();
    await set.write(0, a, false); // acknowledged once the watchdog removes the held member
    assert.ok(Date.now() - t0 >= 100, 'the write waited for the member timeout');
    assert.equal(set.members[1]!.state, 'Faulted');
    assert.equal(devs[1]!.held.length, 1, 'the removed member\'s device still has the request');
    payloadPool.release(a); // the connection answered the request
    // Later large writes, each released at once: none may be given the held buffer.
    for (let i = 0; i < 8; i++) {
      const b = pattern(payloadPool.take(MiB), 100 + i);
      assert.notEqual(b.buffer, a.buffer, `write ${i} was given a buffer a device still holds`);
      await set.write((1 + i) * MiB, b, false);
      payloadPool.release(b);
    }
    assert.deepEqual(a, expected, 'the held buffer was not written to');
    devs[1]!.held[0]!.finish();
    await new Promise((r) => setImmediate(r));
    if (!fails) {
      assert.deepEqual(devs[1]!.bytes.subarray(HEADER_BYTES, HEADER_BYTES + MiB), expected, 'the late device write carried the original bytes');
      const reusedBefore = payloadPool.stats.reused;
      let back = false;
      for (let i = 0; i < 16 && !back; i++) {
        const c = payloadPool.take(MiB);
        back = c.buffer === a.buffer;
        payloadPool.release(c);
      }
      assert.ok(back, 'the buffer returned to the pool once the device was done with it');
      assert.ok(payloadPool.stats.reused > reusedBefore);
    } else {
      for (let i = 0; i < 16; i++) {
        const c = payloadPool.take(MiB);
        assert.notEqual(c.buffer, a.buffer, 'a buffer whose device request failed is never reused');
        payloadPool.release(c);
      }
      assert.equal(payloadPool.stats.poisoned, before.poisoned + 1);
    }
    // Every acknowledged write is on the member that stayed.
    assert.deepEqual(devs[0]!.bytes.subarray(HEADER_BYTES, HEADER_BYTES + MiB), expected);
    for (let i = 0; i < 8; i++) {
      assert.deepEqual(devs[0]!.bytes.subarray(HEADER_BYTES + (1 + i) * MiB, HEADER_BYTES + (2 + i) * MiB), pattern(Buffer.alloc(MiB), 100 + i));
    }
    await set.stop();
  });
}
