/**
 * nbd-bench's servers: the engine, qemu-nbd's quorum and nbdkit's file plugin, all on the same two
 * fallocated member files and the same byte range of them (the engine's data area), so the three
 * exports have the same size and map to the same bytes on disk.
 */
import path from 'node:path';

import { LoggedChild } from '../lib/child.mjs';
import { engineEnv, fallocateFile } from '../lib/host.mjs';
import { fmtNum } from '../lib/format.mjs';
import { ENGINE_BIN, MiB, exec, makeTempDir, sleep } from '../lib/run.mjs';
import { SERVERS } from './config.mjs';

/** One NBD server on a Unix socket. */
class Server extends LoggedChild {
  constructor(key, cmd, args, socket, env = process.env) {
    super(SERVERS[key].short);
    this.key = key;
    this.cmd = cmd;
    this.args = args;
    this.env = env;
    this.uri = `nbd+unix:///?socket=${socket}`;
  }

  start() {
    return this.spawn(this.cmd, this.args, this.env);
  }

  /** Polls the socket with nbdinfo until a client can complete the handshake; returns the export size. */
  async waitAccepting(timeoutMs = 30_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      this.assertAlive();
      const r = await exec('nbdinfo', ['--size', this.uri], { timeoutMs: 10_000 });
      if (r.ok) return Number(r.stdout.trim());
      if (Date.now() > deadline) throw new Error(`${this.name}: socket not accepting after ${timeoutMs} ms: ${r.stderr.trim()}`);
      await sleep(100);
    }
  }
}

/** Two fallocated member files of --file-mib each, in a fresh temporary directory. */
export async function makeMemberFiles(cfg) {
  const dir = await makeTempDir(cfg.dir, 'nbd-bench-');
  const fileBytes = cfg.fileMiB * MiB;
  const files = [path.join(dir, 'member-a.img'), path.join(dir, 'member-b.img')];
  for (const f of files) await fallocateFile(f, fileBytes);
  return { dir, files, fileBytes };
}

/** qemu --image-opts values escape ',' by doubling it. */
const qemuEsc = (s) => s.replaceAll(',', ',,');

/** qemu-nbd: a 2-child quorum over raw children restricted to the engine's data area. */
function qemuServer(dir, files, headerBytes, dataBytes) {
  const child = (i) => [
    `children.${i}.driver=raw`, `children.${i}.offset=${headerBytes}`, `children.${i}.size=${dataBytes}`,
    `children.${i}.file.driver=file`, `children.${i}.file.filename=${qemuEsc(files[i])}`,
  ];
  const opts = ['driver=quorum', 'vote-threshold=1', 'read-pattern=fifo', ...child(0), ...child(1)].join(',');
  const sock = path.join(dir, 'qemu.sock');
  return new Server('qemu', 'qemu-nbd',
    ['--persistent', '--shared=8', '--socket', sock, '--cache=writeback', '--aio=threads', '--image-opts', opts], sock);
}

/** nbdkit: the file plugin on the first member, the offset filter restricting it to the engine's data area. */
function nbdkitServer(dir, files, headerBytes, dataBytes) {
  const sock = path.join(dir, 'nbdkit.sock');
  return new Server('nbdkit', 'nbdkit',
    ['--foreground', '--exit-with-parent', '--unix', sock, '--filter=offset', 'file', `file=${files[0]}`,
      `offset=${headerBytes}`, `range=${dataBytes}`], sock);
}

/**
 * Starts the engine (always: it creates the set and writes its metadata header on the blank files),
 * then the other selected servers on exactly its data area; each is ready once a client completes
 * the NBD handshake. Returns the servers by key and the export size, and prints the `exports:` line.
 */
export async function startServers(cfg, { dir, files, fileBytes }, headerBytes) {
  const sock = path.join(dir, 'engine.sock');
  const engine = new Server('engine', process.execPath,
    [ENGINE_BIN, 'serve', '--member', files[0], '--member', files[1], '--socket', sock, '--log-level', 'warn'], sock, await engineEnv());
  engine.start();
  // At --log-level warn the engine prints nothing when ready (EngineReady is an info line), so
  // readiness is the same for every server: a client completes the NBD handshake.
  const dataBytes = await engine.waitAccepting(60_000);
  if (dataBytes + headerBytes > fileBytes) throw new Error(`engine export (${dataBytes}) does not fit behind its header in ${fileBytes}`);

  const servers = { engine };
  if (cfg.servers.includes('qemu')) servers.qemu = qemuServer(dir, files, headerBytes, dataBytes);
  if (cfg.servers.includes('nbdkit')) servers.nbdkit = nbdkitServer(dir, files, headerBytes, dataBytes);
  for (const key of ['qemu', 'nbdkit']) {
    if (!servers[key]) continue;
    servers[key].start();
    const size = await servers[key].waitAccepting();
    if (size !== dataBytes) throw new Error(`${SERVERS[key].short} exports ${size} bytes, the engine ${dataBytes}`);
  }
  console.log(`exports: ${cfg.servers.map((k) => SERVERS[k].short).join(', ')}, ${fmtNum(dataBytes / MiB)} MiB each (member bytes ${headerBytes / MiB} MiB..end)`);
  return { servers, dataBytes };
}
