/**
 * Members that lose what they had not made durable when they die: each member file is served by nbdkit
 * with its cache filter in write-back mode, on a unix socket. A write stays in the filter's cache (an
 * unlinked temp file in the test's dir) until a FLUSH writes the cache back; a FUA write goes through to
 * the file at once (with the rest of its cache block); nothing is evicted early, since no cache-max-size
 * is set. SIGKILL throws the cache away, so the member file then holds only what was flushed or written
 * with FUA: a power loss of that member. The file's own page cache survives (the machine does not
 * crash), which stands for the disk's stable storage.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { NbdClientBackend } from '@shadowset/engine/nbd-client';
import { exists, exitOf, HEADER_BYTES, MiB, terminate, until, type Scope } from '@shadowset/testkit/engine/support';

/** The filter's block: a 4 KiB write-back granule, so a loss takes back single workload blocks. */
const CACHE_BLOCK = 4096;

interface Server {
  proc: ChildProcess;
  output: () => string;
}

export class VolatileMembers {
  private servers: Server[] = [];

  /** `files` are the member files; sockets and the filter's cache live in `dir`. */
  constructor(scope: Scope, private readonly dir: string, readonly files: string[]) {
    scope.defer('stop the member servers', () => Promise.all(this.servers.map((s) => terminate(s.proc, 3000))));
  }

  private socket(i: number): string {
    return join(this.dir, `m${i}.sock`);
  }

  /** The members as the engine takes them (the same URIs every time, so the set knows them again). */
  get uris(): string[] {
    return this.files.map((_, i) => `nbd+unix:///?socket=${this.socket(i)}`);
  }

  get running(): boolean {
    return this.servers.some((s) => s.proc.exitCode === null && s.proc.signalCode === null);
  }

  /** Start one server per member file (none may be running) and wait until all of them listen. */
  async start(): Promise<void> {
    if (this.running) throw new Error('member servers are already running');
    this.servers = []; // startOne adds each server as it spawns, so a failed start still stops the others
    const started = await Promise.all(this.files.map((f, i) => this.startOne(f, i)));
    this.servers = started;
  }

  private async startOne(file: string, i: number): Promise<Server> {
    const sock = this.socket(i);
    const pid = join(this.dir, `m${i}.pid`);
    // A killed nbdkit leaves its socket and pid file behind; it would refuse to bind the old socket.
    await Promise.all([rm(sock, { force: true }), rm(pid, { force: true })]);
    const args = [
      '--foreground', '--exit-with-parent', '--unix', sock, '--pidfile', pid, '--filter=cache',
      'file', `file=${file}`, 'cache=writeback', `cache-min-block-size=${CACHE_BLOCK}`,
    ];
    const proc = spawn('nbdkit', args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TMPDIR: this.dir } });
    let out = '';
    proc.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
    proc.stderr!.setEncoding('utf8').on('data', (s: string) => (out += s));
    const server = { proc, output: () => out };
    this.servers.push(server);
    await until(`nbdkit for ${file} to listen`, async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`nbdkit exited early (${proc.exitCode ?? proc.signalCode}): ${out}`);
      return (await exists(pid)) ? true : undefined;
    }, 10_000, 5);
    return server;
  }

  /**
   * SIGKILL every server, synchronously, and resolve when all exited. Called right after the engine's
   * own SIGKILL, in the same turn, so the engine never sees a member go away before it dies.
   */
  killAll(): Promise<unknown> {
    for (const s of this.servers) s.proc.kill('SIGKILL');
    return Promise.all(this.servers.map((s) => exitOf(s.proc)));
  }

  /** SIGTERM every server (after a clean stop of the engine, which flushed them). */
  async stopAll(): Promise<void> {
    await Promise.all(this.servers.map((s) => terminate(s.proc, 3000)));
  }

  /** The servers' output, for failure messages. */
  output(): string {
    return this.servers.map((s, i) => `m${i}: ${s.output()}`).join('\n');
  }

  /**
   * The first 4 KiB block (unit offset) where the members' data areas differ as their servers answer
   * them — cache included, so nothing is flushed for the comparison — or null.
   */
  async firstDivergence(unitBytes: number): Promise<number | null> {
    const clients = await Promise.all(this.uris.map((u) => NbdClientBackend.open(u, 10_000)));
    try {
      const step = 16 * MiB;
      const bufs = clients.map(() => Buffer.allocUnsafe(step));
      // 1 MiB requests, many at once: the filter handles each on its own thread, block by block.
      const readAll = (c: NbdClientBackend, buf: Buffer, off: number) =>
        Promise.all(Array.from({ length: buf.length / MiB }, (_, k) => c.read(buf.subarray(k * MiB, (k + 1) * MiB), HEADER_BYTES + off + k * MiB)));
      for (let off = 0; off < unitBytes; off += step) {
        const len = Math.min(step, unitBytes - off);
        await Promise.all(clients.map((c, i) => readAll(c, bufs[i]!.subarray(0, len), off)));
        for (const b of bufs.slice(1)) {
          if (b.compare(bufs[0]!, 0, len, 0, len) === 0) continue;
          for (let i = 0; i < len; i += CACHE_BLOCK) if (b.compare(bufs[0]!, i, i + CACHE_BLOCK, i, i + CACHE_BLOCK) !== 0) return off + i;
        }
      }
      return null;
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
  }
}
