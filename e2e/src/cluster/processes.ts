// Child processes that must never outlive the test run. Each one is started in its own process group
// (detached), so killing the group also kills whatever it forked. Three layers make sure they die:
//   1. stop() — the normal path: SIGTERM the group, SIGKILL after a grace period, await the exit;
//   2. the 'exit' hook and SIGINT/SIGTERM/SIGHUP handlers of this process — SIGKILL every live group;
//   3. the reaper (reaper-main.ts), which notices this process is gone however it died, even by SIGKILL.
import { spawn } from 'node:child_process';
import type { ChildProcess, SpawnOptions } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { once } from 'node:events';
import { openSync, closeSync } from 'node:fs';

const live = new Set<ManagedProcess>();
let reaper: ChildProcess | undefined;
let hooked = false;
/** The program tears its children down itself on SIGINT/SIGTERM (ownSignalHandling): no kill on the signal. */
let ownSignals = false;

function reaperChannel(): ChildProcess {
  if (reaper && reaper.exitCode === null && reaper.stdin && !reaper.stdin.destroyed) return reaper;
  const script = fileURLToPath(new URL('./reaper-main.js', import.meta.url));
  reaper = spawn(process.execPath, [script], { detached: true, stdio: ['pipe', 'ignore', 'inherit'] });
  reaper.unref();
  // The pipe must not keep this process alive either.
  (reaper.stdin as unknown as { unref?: () => void }).unref?.();
  reaper.stdin?.on('error', () => undefined);
  return reaper;
}

function tellReaper(line: string): void {
  reaperChannel().stdin?.write(`${line}\n`);
}

function killAllNow(): void {
  for (const p of live) p.killGroup('SIGKILL');
}

function installHooks(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', killAllNow);
  if (ownSignals) return;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = (): void => {
      killAllNow();
      process.off(sig, handler);
      process.kill(process.pid, sig);
    };
    process.on(sig, handler);
  }
}

/**
 * For a program that handles SIGINT/SIGTERM itself with an orderly teardown that still needs its children
 * (the demo deletes its pod and volume through the API server first): the signal handlers that SIGKILL every
 * child are not installed. The exit hook and the reaper stay, so nothing outlives the process. Call before the
 * first ManagedProcess.start.
 */
export function ownSignalHandling(): void {
  ownSignals = true;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface StartOptions {
  command: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Where stdout and stderr go: a function receiving chunks, a file (appended to), or 'ignore'. */
  output?: ((chunk: Buffer, stream: 'stdout' | 'stderr') => void) | { file: string } | 'ignore';
}

/** A child process running in its own process group, registered with the reaper until it exits. */
export class ManagedProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<ExitInfo>;
  private exitInfo: ExitInfo | undefined;

  private constructor(child: ChildProcess, pid: number) {
    this.child = child;
    this.pid = pid;
    this.exited = new Promise<ExitInfo>((resolve) => {
      // 'close', not 'exit': by then its output has been read to the end
      child.once('close', (code, signal) => {
        this.exitInfo = { code, signal };
        live.delete(this);
        tellReaper(`del ${pid}`);
        resolve(this.exitInfo);
      });
    });
  }

  static async start(opts: StartOptions): Promise<ManagedProcess> {
    installHooks();
    const out = opts.output;
    let fd: number | undefined;
    let sink: 'ignore' | 'pipe' | number = 'pipe';
    if (out === 'ignore') sink = 'ignore';
    else if (out !== undefined && typeof out === 'object') sink = fd = openSync(out.file, 'a');
    const options: SpawnOptions = { detached: true, env: opts.env ?? process.env, stdio: ['ignore', sink, sink] };
    if (opts.cwd !== undefined) options.cwd = opts.cwd;
    let child: ChildProcess;
    try {
      child = spawn(opts.command, opts.args, options);
    } finally {
      // the child has its own copy of the descriptor
      if (fd !== undefined) closeSync(fd);
    }
    if (typeof out === 'function') {
      child.stdout?.on('data', (c: Buffer) => out(c, 'stdout'));
      child.stderr?.on('data', (c: Buffer) => out(c, 'stderr'));
    }
    // A spawn failure (ENOENT, EACCES) is reported through 'error' before any 'spawn'.
    await Promise.race([
      once(child, 'spawn'),
      once(child, 'error').then(([err]) => {
        throw err;
      }),
    ]);
    const pid = child.pid;
    if (pid === undefined) throw new Error(`could not start ${opts.command}`);
    const p = new ManagedProcess(child, pid);
    live.add(p);
    tellReaper(`add ${pid}`);
    return p;
  }

  get running(): boolean {
    return this.exitInfo === undefined;
  }

  killGroup(signal: NodeJS.Signals): void {
    if (!this.running) return;
    try {
      process.kill(-this.pid, signal);
    } catch {
      // the group is already gone
    }
  }

  /** SIGTERM the group, SIGKILL it after graceMs, and wait for the exit. */
  async stop(graceMs = 5000): Promise<ExitInfo> {
    if (!this.running) return this.exited;
    this.killGroup('SIGTERM');
    const timer = setTimeout(() => this.killGroup('SIGKILL'), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
      // children that ignored SIGTERM while their leader exited
      this.killGroup('SIGKILL');
    }
  }
}

/** Has the reaper remove dir if this process dies without cleaning up (undo with forgetTempDir). */
export function registerTempDir(dir: string): void {
  tellReaper(`dir ${dir}`);
}
export function forgetTempDir(dir: string): void {
  tellReaper(`undir ${dir}`);
}

/** Processes still alive (for tests of teardown). */
export function liveProcessCount(): number {
  return live.size;
}
