// Simulators of different processes share the host's loopback: each takes a block of addresses nothing uses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { freeAddressBlock } from './node-simulator.js';

const listen = (host: string) => new Promise<Server>((resolve, reject) => {
  const s = createServer();
  s.once('error', reject);
  s.listen(0, host, () => resolve(s));
});

test('a simulator\'s address block is one no TCP socket on the host uses', async (t) => {
  // Occupy every block but one (a listener on one address of each block is enough to make it used).
  const keep = 4 * 37;
  const servers: Server[] = [];
  t.after(() => Promise.all(servers.map((s) => new Promise((r) => s.close(r)))));
  for (let b = 0; b < 252; b += 4) if (b !== keep) servers.push(await listen(`127.11.${b + (b % 3)}.9`));
  for (let i = 0; i < 20; i++) assert.equal(await freeAddressBlock(1), keep);
  // With nothing free it says so instead of sharing.
  servers.push(await listen(`127.11.${keep + 2}.9`));
  await assert.rejects(freeAddressBlock(1), /no free block of loopback addresses/);
});
