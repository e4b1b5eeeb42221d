#!/usr/bin/env node
/**
 * The floor: the least an NBD server written in Node must do to mirror writes onto two files — parse
 * requests, write each one to both files (read from one), reply. No range locks, no write-intent log,
 * no member accounting or timeouts, no memory budget, no validation beyond the request magic. It is a
 * yardstick for bench/floor/floor-bench.mjs, not a server to use: it trusts its client completely.
 *
 * The I/O goes through the engine's own file backends (engine/dist, so build first), so what separates
 * the engine from this floor is the engine's request path above the backends, not the way bytes reach
 * the files:
 *   --io ring  RingBackend: one I/O thread per file, shared-memory ring (what the engine uses)
 *   --io pool  FileBackend: libuv thread pool (what the engine uses for large requests)
 *   --io shared  shared-ring.mjs: one I/O thread for both files, a write is one slot written to both
 *              (not the engine's code: what issue 16's shared I/O thread could give); --spin-us N lets
 *              that thread poll N µs before it sleeps
 *
 * Usage: floor-server.mjs --socket PATH --offset BYTES --size BYTES [--io ring|pool|shared] [--spin-us N] [--reads first|spread] FILE FILE
 * Options refused except EXPORT_NAME, INFO and GO (so clients fall back to simple replies).
 */
import { open as fspOpen } from 'node:fs/promises';
import net from 'node:net';
import { parseArgs } from 'node:util';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const dist = (rel) => import(path.join(ROOT, 'engine', 'dist', 'adapters', 'backend-file', rel));

const { values: o, positionals: files } = parseArgs({
  allowPositionals: true,
  options: {
    socket: { type: 'string' }, offset: { type: 'string' }, size: { type: 'string' },
    io: { type: 'string', default: 'ring' }, reads: { type: 'string', default: 'spread' }, 'spin-us': { type: 'string', default: '0' },
  },
});
if (!o.socket || !o.offset || !o.size || files.length !== 2 || !['ring', 'pool', 'shared'].includes(o.io)) {
  process.stderr.write('usage: floor-server.mjs --socket PATH --offset BYTES --size BYTES [--io ring|pool|shared] [--spin-us N] [--reads first|spread] FILE FILE\n');
  process.exit(2);
}
const BASE = Number(o.offset);
const SIZE = BigInt(o.size);

/** Both files behind one interface: read from one (index), write both, flush both, close. */
async function openFiles() {
  if (o.io === 'shared') {
    const { SharedRing } = await import('./shared-ring.mjs');
    const ring = new SharedRing(files, Number(o['spin-us']));
    const handles = await Promise.all(files.map((f) => fspOpen(f, 'r+')));
    // Flushes (and FUA, as a flush after the write) take the thread pool, as RingBackend's do.
    const flush = () => Promise.all(handles.map((h) => h.datasync()));
    return {
      read: (buf, off, i) => ring.read(buf, off, i),
      writeBoth: (buf, off, fua) => (fua ? ring.writeBoth(buf, off).then(flush) : ring.writeBoth(buf, off)),
      flush,
      close: () => Promise.all([ring.close(), ...handles.map((h) => h.close())]),
    };
  }
  const open = o.io === 'ring'
    ? (await dist('ring-backend.js')).RingBackend.open
    : (await dist('file-backend.js')).FileBackend.open;
  const members = await Promise.all(files.map((f) => open(f)));
  await Promise.all(members.map((m) => m.ready?.()));
  return {
    read: (buf, off, i) => members[i].read(buf, off),
    writeBoth: (buf, off, fua) => Promise.all(members.map((m) => m.write(buf, off, fua))),
    flush: () => Promise.all(members.map((m) => m.flush())),
    close: () => Promise.all(members.map((m) => m.close())),
  };
}
const io = await openFiles();

const IHAVEOPT = Buffer.from('IHAVEOPT');
const OPT_REPLY_MAGIC = 0x3e889045565a9n;
const TFLAGS = 1 | 4 | 8; // HAS_FLAGS, SEND_FLUSH, SEND_FUA

function optReply(opt, type, data = Buffer.alloc(0)) {
  const h = Buffer.alloc(20);
  h.writeBigUInt64BE(OPT_REPLY_MAGIC, 0);
  h.writeUInt32BE(opt, 8);
  h.writeUInt32BE(type, 12);
  h.writeUInt32BE(data.length, 16);
  return Buffer.concat([h, data]);
}

function exportInfo() {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(0, 0); // NBD_INFO_EXPORT
  b.writeBigUInt64BE(SIZE, 2);
  b.writeUInt16BE(TFLAGS, 10);
  return b;
}

function simpleReply(handle, err) {
  const h = Buffer.allocUnsafe(16);
  h.writeUInt32BE(0x67446698, 0);
  h.writeUInt32BE(err, 4);
  h.write(handle, 8, 'latin1');
  return h;
}

let rr = 0;

function serve(sock) {
  sock.setNoDelay?.(true);
  let buf = Buffer.alloc(0);
  let phase = 'flags'; // flags → options → transmission
  let corked = false;
  const reply = (a, b) => {
    if (!corked) {
      // As the engine does: replies completed in one loop turn leave in one writev.
      corked = true;
      sock.cork();
      setImmediate(() => { corked = false; sock.uncork(); });
    }
    sock.write(a);
    if (b) sock.write(b);
  };
  const start = (type, flags, handle, off, len, payload) => {
    let p;
    if (type === 0) {
      const data = Buffer.allocUnsafe(len);
      p = io.read(data, BASE + off, o.reads === 'first' ? 0 : rr++ & 1).then(() => data);
    } else if (type === 1) {
      const fua = (flags & 1) !== 0;
      p = io.writeBoth(payload, BASE + off, fua);
    } else if (type === 3) {
      p = io.flush();
    } else if (type === 2) {
      sock.end();
      return;
    } else {
      reply(simpleReply(handle, 95)); // ENOTSUP
      return;
    }
    p.then((data) => reply(simpleReply(handle, 0), type === 0 ? data : null), () => reply(simpleReply(handle, 5)));
  };
  sock.on('data', (chunk) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    for (;;) {
      if (phase === 'flags') {
        if (buf.length < 4) return;
        buf = buf.subarray(4);
        phase = 'options';
      } else if (phase === 'options') {
        if (buf.length < 16) return;
        const len = buf.readUInt32BE(12);
        if (buf.length < 16 + len) return;
        const opt = buf.readUInt32BE(8);
        buf = buf.subarray(16 + len);
        if (opt === 1) { // EXPORT_NAME (NO_ZEROES was offered)
          const b = Buffer.alloc(10);
          b.writeBigUInt64BE(SIZE, 0);
          b.writeUInt16BE(TFLAGS, 8);
          sock.write(b);
          phase = 'transmission';
        } else if (opt === 6 || opt === 7) { // INFO, GO
          sock.write(optReply(opt, 3, exportInfo()));
          sock.write(optReply(opt, 1));
          if (opt === 7) phase = 'transmission';
        } else if (opt === 2) { // ABORT
          sock.write(optReply(opt, 1));
          sock.end();
          return;
        } else sock.write(optReply(opt, 0x80000001)); // ERR_UNSUP
      } else {
        if (buf.length < 28) return;
        const type = buf.readUInt16BE(6);
        const len = buf.readUInt32BE(24);
        const need = type === 1 ? 28 + len : 28;
        if (buf.length < need) return;
        if (buf.readUInt32BE(0) !== 0x25609513) return void sock.destroy();
        const payload = type === 1 ? buf.subarray(28, need) : null;
        start(type, buf.readUInt16BE(4), buf.toString('latin1', 8, 16), Number(buf.readBigUInt64BE(16)), len, payload);
        buf = buf.subarray(need);
      }
    }
  });
  sock.on('error', () => {});
  const hello = Buffer.alloc(18);
  Buffer.from('NBDMAGIC').copy(hello, 0);
  IHAVEOPT.copy(hello, 8);
  hello.writeUInt16BE(1 | 2, 16); // FIXED_NEWSTYLE, NO_ZEROES
  sock.write(hello);
}

const server = net.createServer(serve);
server.listen(o.socket);
const stop = () => server.close(() => io.close().then(() => process.exit(0)));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
