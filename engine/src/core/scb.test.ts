import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeScb, encodeScb, pickScb, type Scb } from './scb.js';
import { crc32 } from './crc32.js';

const base: Scb = {
  format: 1, setId: 'set-1', memberId: 'm-1', generation: 7, clean: true, size: 1 << 30, chunkSize: 65536,
  members: [{ id: 'm-1', path: '/dev/a', state: 'InSync', since: 7 }], dataValid: true, intentLogValid: true,
  copies: [], bitmaps: [], updatedAt: '2026-01-01T00:00:00.000Z',
};

test('crc32 matches the IEEE check value', () => {
  assert.equal(crc32(new TextEncoder().encode('123456789')), 0xcbf43926);
});

test('an SCB survives encode and decode', () => {
  const d = decodeScb(encodeScb(base, 42));
  assert.equal(d.kind, 'ok');
  if (d.kind === 'ok') {
    assert.deepEqual(d.scb, base);
    assert.equal(d.seq, 42);
  }
});

test('a flipped byte in the body is detected as corrupt', () => {
  const raw = encodeScb(base, 1);
  raw[40] = raw[40]! ^ 0xff;
  const d = decodeScb(raw);
  assert.equal(d.kind, 'corrupt');
});

test('zeros are empty, other bytes are foreign', () => {
  assert.equal(decodeScb(new Uint8Array(65536)).kind, 'empty');
  const ext = new Uint8Array(65536);
  ext[1080] = 0x53;
  ext[1081] = 0xef; // ext4 magic lives past the first KiB
  assert.equal(decodeScb(ext).kind, 'foreign');
});

test('the slot with the highest valid sequence wins; a torn newer slot falls back', () => {
  const older = decodeScb(encodeScb({ ...base, generation: 1 }, 1));
  const newer = decodeScb(encodeScb({ ...base, generation: 2 }, 2));
  const p = pickScb(older, newer);
  assert.equal(p.kind, 'ok');
  assert.equal(p.kind === 'ok' && p.scb.generation, 2);
  const torn = encodeScb({ ...base, generation: 3 }, 3);
  torn[100] = torn[100]! ^ 1;
  const q = pickScb(decodeScb(torn), older);
  assert.equal(q.kind === 'ok' && q.scb.generation, 1);
});
