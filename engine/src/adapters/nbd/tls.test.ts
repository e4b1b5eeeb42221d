/**
 * TLS-PSK between the engine's own NBD server and client on loopback: the right key serves data, a wrong
 * key, an unknown identity or a plain client get nothing, and an nbds:// client never falls back to plain.
 * (Interoperability with nbdkit, libnbd and qemu is in the integration tier.)
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { pino } from 'pino';
import { NbdClientBackend } from '../backend-nbd/nbd-client.js';
import { isEngineError } from '../../core/errors.js';
import * as P from './protocol.js';
import { NbdServer, type NbdHandler } from './server.js';
import { parsePskFile, pskServerTls, type PskKey } from './tls.js';

const SIZE = 1 << 20;
const disk = Buffer.alloc(SIZE);
let calls = 0;
const handler: NbdHandler = {
  size: () => SIZE,
  read: async (off, len) => (calls++, Buffer.from(disk.subarray(off, off + len))),
  write: async (off, data) => (calls++, void data.copy(disk, off)),
  flush: async () => undefined,
  trim: async () => undefined,
  writeZeroes: async (off, len) => void disk.fill(0, off, off + len),
};
const log = pino({ level: 'silent' });
const setKey: PskKey = { identity: 'set-a', key: randomBytes(32) };

async function serve(o: { tls?: ReturnType<typeof pskServerTls> }): Promise<{ port: number; server: NbdServer }> {
  const server = new NbdServer({ exportName: 'member', description: 'test', handler, log, multiConn: true, ...o });
  const a = await server.listenTcp('127.0.0.1', 0);
  after(() => server.close());
  return { port: a.port, server };
}

const secured = await serve({ tls: pskServerTls([{ identity: 'other', key: randomBytes(16) }, setKey], true) });
const plainServer = await serve({});
const uri = (port: number, scheme = 'nbds') => `${scheme}://127.0.0.1:${port}/member`;

test('PSK file: identity:hexkey lines, keys of at least 16 bytes, errors name the line but never the key', () => {
  const keys = parsePskFile(`alice:${'ab'.repeat(16)}\n\n  bob:${'CD'.repeat(32)}  \n`, 'f');
  assert.deepEqual(keys.map((k) => [k.identity, k.key.length]), [['alice', 16], ['bob', 32]]);
  const refused = (text: string, why: RegExp) => assert.throws(() => parsePskFile(text, 'keys.psk'), (e) => isEngineError(e, 'ENG_INVALID_ARGUMENT') && why.test(e.message) && !e.message.includes('ab'.repeat(8)));
  refused(`alice:${'ab'.repeat(15)}`, /line 1: the key has 15 bytes/);
  refused(`x:${'ab'.repeat(16)}\nalice:${'ab'.repeat(16)}g`, /line 2: .*hex/);
  refused(`:${'ab'.repeat(16)}`, /identity:hexkey/);
  refused(`${'ab'.repeat(16)}`, /identity:hexkey/);
  refused(`a:${'ab'.repeat(16)}\na:${'ab'.repeat(16)}`, /appears twice/);
  refused('\n\n', /no identity:hexkey/);
});

test('TLS-PSK: a client with the set key reads and writes', async () => {
  const c = await NbdClientBackend.open(uri(secured.port), 5000, { psk: setKey });
  const data = randomBytes(8192);
  await c.write(data, 4096, true);
  const back = Buffer.alloc(8192);
  await c.read(back, 4096);
  assert.deepEqual(back, data);
  await c.close();
});

test('TLS-PSK: a wrong key, an unknown identity or no key at all gets no data', async () => {
  const before = calls;
  for (const psk of [{ identity: 'set-a', key: randomBytes(32) }, { identity: 'intruder', key: setKey.key }]) {
    // ENG_IO: the member cannot be reached with this key (a start goes on without it, status says why).
    await assert.rejects(NbdClientBackend.open(uri(secured.port), 5000, { psk }), (e) => isEngineError(e, 'ENG_IO') && /TLS handshake failed/.test((e as Error).message));
  }
  // nbds:// without a key is refused before connecting; plain nbd:// is told TLS comes first.
  await assert.rejects(NbdClientBackend.open(uri(secured.port), 5000), /needs a pre-shared key/);
  await assert.rejects(NbdClientBackend.open(uri(secured.port, 'nbd'), 5000), /requires TLS/);
  assert.equal(calls, before, 'the handler never ran for a refused client');
});

test('TLS-PSK: raw requests before STARTTLS are refused and the connection closed', async () => {
  const before = calls;
  const got = await new Promise<Buffer>((resolve) => {
    const c = net.connect(secured.port, '127.0.0.1');
    const chunks: Buffer[] = [];
    c.on('data', (b) => chunks.push(b));
    c.on('close', () => resolve(Buffer.concat(chunks)));
    c.on('error', () => undefined);
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(P.CLIENT_FLAG_FIXED_NEWSTYLE | P.CLIENT_FLAG_NO_ZEROES);
    const name = Buffer.from('member');
    const exportName = Buffer.alloc(16);
    exportName.writeBigUInt64BE(P.IHAVEOPT, 0);
    exportName.writeUInt32BE(P.OPT_EXPORT_NAME, 8);
    exportName.writeUInt32BE(name.length, 12);
    const read = Buffer.alloc(28);
    read.writeUInt32BE(P.REQUEST_MAGIC, 0);
    read.writeUInt16BE(P.CMD_READ, 6);
    read.writeUInt32BE(4096, 24);
    c.end(Buffer.concat([flags, exportName, name, read]));
  });
  assert.equal(got.length, 18, 'only the greeting came back: no export size, no data');
  assert.equal(calls, before);
});

test('an nbds:// client refuses a server that does not do TLS, instead of going on in plain', async () => {
  const before = calls;
  await assert.rejects(NbdClientBackend.open(uri(plainServer.port), 5000, { psk: setKey }), /refused STARTTLS.*never used without TLS/);
  assert.equal(calls, before);
});
