/**
 * A member that faults and returns, again and again, on real file members: each fault releases the old
 * backend (its descriptors, I/O thread and ring) once its requests settle, so the process's descriptors
 * on that file do not grow with the cycles.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { RingBackend } from '../adapters/backend-file/ring-backend.js';
import { FaultyBackend } from '../adapters/faulty/faulty-backend.js';
import { HEADER_BYTES, MiB } from '../core/geometry.js';
import { systemClock } from '../ports/clock.js';
import { startShadowSet } from './engine.js';

const log = pino({ level: 'silent' });

function fdsOn(path: string): number {
  return fs.readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`) === path;
    } catch {
      return false;
    }
  }).length;
}

test('fault and return cycles release the old backend: descriptors on the member do not grow', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fault-cycles-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const files = await Promise.all(['a', 'b'].map(async (n) => {
    const p = join(dir, `${n}.img`);
    await writeFile(p, '');
    await truncate(p, HEADER_BYTES + 8 * MiB);
    return p;
  }));
  const faulty = new Map<string, FaultyBackend>();
  const { set, control } = await startShadowSet({
    members: files.map((location) => ({ location })), overwrite: false, memberTimeoutMs: 60_000, log, clock: systemClock,
    open: async (loc) => {
      const f = new FaultyBackend(await RingBackend.open(loc));
      faulty.set(loc, f);
      return f;
    },
  });
  try {
    const b = files[1]!;
    const counts: number[] = [];
    for (let cycle = 0; cycle < 12; cycle++) {
      faulty.get(b)!.plan = { writeErrors: true };
      await set.write(cycle * 4096, Buffer.alloc(4096, cycle + 1), false);
      const mb = set.members.find((m) => m.location === b)!;
      assert.equal(mb.state, 'Faulted');
      await control.returnMember({ member: mb.id, minicopy: 'Optional' });
      while (set.resync.jobs.length > 0) await new Promise((r) => setTimeout(r, 5));
      // The faulted backend closes once its requests have settled.
      for (let i = 0; i < 200 && fdsOn(b) > 2; i++) await new Promise((r) => setTimeout(r, 5));
      counts.push(fdsOn(b));
    }
    // Each open member holds two descriptors on its file (plain and O_DSYNC); nothing more may remain.
    assert.deepEqual(counts, counts.map(() => 2), `descriptors on the returning member after each cycle: ${counts.join(', ')}`);
    for (let cycle = 0; cycle < 12; cycle++) assert.equal((await set.read(cycle * 4096, 4096))[0], cycle + 1);
  } finally {
    await set.stop();
  }
  assert.equal(fdsOn(files[0]!) + fdsOn(files[1]!), 0, 'stop closed every member');
});
