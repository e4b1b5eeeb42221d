/**
 * The real engine as a child process: `shadow-engine serve` from the compiled bin, on a unix socket in the
 * test's temp dir and an HTTP port the kernel picks. Its pino JSON log lines are collected and can be
 * awaited by event name.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { statusSchema, type EngineStatus } from '@shadowset/engine/api';
import type { Scope } from './support.js';

/** The engine's command, found through its package (engine/dist/index.js → engine/bin/shadow-engine.js). */
export const ENGINE_BIN = fileURLToPath(new URL('../bin/shadow-engine.js', import.meta.resolve('@shadowset/engine')));

export interface LogLine {
  level: number;
  event?: string;
  msg?: string;
  [k: string]: unknown;
}

export interface EngineOptions {
  members: string[];
  /** Directory for the NBD socket. */
  dir: string;
  /** Distinguishes the sockets of several engines started in one test. */
  name?: string;
  memberTimeoutSeconds?: number;
  overwrite?: boolean;
  /** --allow-location prefixes: where the test's API calls and --include may find members. */
  allowLocations?: string[];
  /** A control token: written to a file for --control-token-file, and sent by get() and post(). */
  token?: string;
  extraArgs?: string[];
}

type Exit = { code: number | null; signal: NodeJS.Signals | null };

export class EngineProcess {
  readonly logs: LogLine[] = [];
  stderr = '';
  httpAddress = '';
  /** Headers every API call of the test sends (the bearer token, when the engine has one). */
  authHeaders: Record<string, string> = {};
  readonly exited: Promise<Exit>;
  private readonly waiters = new Set<() => void>();
  private closed = false;

  constructor(readonly proc: ChildProcess, readonly socket: string) {
    let partial = '';
    proc.stdout!.setEncoding('utf8').on('data', (s: string) => {
      partial += s;
      const lines = partial.split('\n');
      partial = lines.pop()!;
      for (const l of lines) {
        if (l.trim() === '') continue;
        try {
          this.logs.push(JSON.parse(l) as LogLine);
        } catch {
          this.logs.push({ level: 0, msg: l });
        }
      }
      this.wake();
    });
    proc.stderr!.setEncoding('utf8').on('data', (s: string) => (this.stderr += s));
    // 'close' rather than 'exit': every log line has been read by then.
    this.exited = new Promise((resolve) => proc.once('close', (code, signal) => {
      if (partial.trim() !== '') this.logs.push({ level: 0, msg: partial });
      resolve({ code, signal });
    }));
    void this.exited.then(() => {
      this.closed = true;
      this.wake();
    });
  }

  /** NBD URI of the virtual unit (export name `shadow`). */
  get uri(): string {
    return `nbd+unix:///shadow?socket=${this.socket}`;
  }

  get running(): boolean {
    return !this.closed;
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  events(name: string): LogLine[] {
    return this.logs.filter((l) => l.event === name);
  }

  /** The first log line with this event (or one of these events) matching `pred`, waiting for it if need be. */
  waitForEvent(name: string | string[], pred: (l: LogLine) => boolean = () => true, timeoutMs = 15_000): Promise<LogLine> {
    const names = new Set(Array.isArray(name) ? name : [name]);
    return new Promise((resolve, reject) => {
      const check = () => {
        const hit = this.logs.find((l) => l.event !== undefined && names.has(l.event) && pred(l));
        if (hit) return finish(() => resolve(hit));
        if (!this.running) {
          finish(() => reject(new Error(`engine exited (${this.proc.exitCode ?? this.proc.signalCode}) before logging ${name}\n${this.tail()}`)));
        }
      };
      const timer = setTimeout(() => finish(() => reject(new Error(`no ${name} logged within ${timeoutMs} ms\n${this.tail()}`))), timeoutMs);
      const finish = (f: () => void) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        f();
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Members as assembly planned them at start (ShadowSetCreated / ShadowSetMounted). */
  assembled(): { id: string; path: string; state: string; reason: string }[] {
    const l = this.logs.find((x) => x.event === 'ShadowSetCreated' || x.event === 'ShadowSetMounted');
    if (!l) throw new Error(`no assembly logged\n${this.tail()}`);
    return l.members as { id: string; path: string; state: string; reason: string }[];
  }

  /** Wait until the full copy onto `memberId` completed; rejects if it stopped instead. */
  async copied(memberId: string, timeoutMs = 30_000): Promise<LogLine> {
    // A returning member may come back by a minicopy (a faulted member gets a write bitmap too).
    const l = await this.waitForEvent(['CopyCompleted', 'CopyStopped', 'MinicopyCompleted', 'MinicopyStopped'], (x) => x.target === memberId, timeoutMs);
    if (l.event !== 'CopyCompleted' && l.event !== 'MinicopyCompleted') throw new Error(`copy onto ${memberId} stopped: ${String(l.reason)}\n${this.tail()}`);
    return l;
  }

  /** The last log lines and stderr, for failure messages. */
  tail(n = 15): string {
    return [...this.logs.slice(-n).map((l) => JSON.stringify(l)), this.stderr].join('\n');
  }

  async get(path: string): Promise<{ status: number; contentType: string; body: string }> {
    const res = await fetch(`http://${this.httpAddress}${path}`, { headers: this.authHeaders });
    return { status: res.status, contentType: res.headers.get('content-type') ?? '', body: await res.text() };
  }

  /** GET /v1/status, validated against the API's own schema. */
  async status(): Promise<EngineStatus> {
    const r = await this.get('/v1/status');
    if (r.status !== 200) throw new Error(`/v1/status answered ${r.status}: ${r.body}`);
    return statusSchema.parse(JSON.parse(r.body));
  }

  /** SIGTERM and wait for the exit. */
  async stop(timeoutMs = 15_000): Promise<Exit> {
    if (!this.running) return this.exited;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), timeoutMs);
    const e = await this.exited;
    clearTimeout(timer);
    return e;
  }

  /** kill -9: no clean stop recorded. */
  async kill(): Promise<Exit> {
    if (this.running) this.proc.kill('SIGKILL');
    return this.exited;
  }
}

function serveArgs(o: EngineOptions, socket: string): string[] {
  const args = [ENGINE_BIN, 'serve', '--socket', socket, '--http', '127.0.0.1:0', '--log-level', 'info'];
  for (const m of o.members) args.push('--member', m);
  for (const p of o.allowLocations ?? []) args.push('--allow-location', p);
  if (o.token !== undefined) {
    const file = join(o.dir, `${o.name ?? 'engine'}.token`);
    writeFileSync(file, `${o.token}\n`, { mode: 0o600 });
    args.push('--control-token-file', file);
  }
  if (o.memberTimeoutSeconds !== undefined) args.push('--member-timeout', String(o.memberTimeoutSeconds));
  if (o.overwrite) args.push('--overwrite');
  args.push(...(o.extraArgs ?? []));
  return args;
}

/** Spawn the engine without waiting for anything (the caller registers its kill). */
export function spawnEngine(o: EngineOptions): EngineProcess {
  const socket = join(o.dir, `${o.name ?? 'engine'}.sock`);
  const proc = spawn(process.execPath, serveArgs(o, socket), { stdio: ['ignore', 'pipe', 'pipe'] });
  const e = new EngineProcess(proc, socket);
  if (o.token !== undefined) e.authHeaders = { authorization: `Bearer ${o.token}` };
  return e;
}

/** Start the engine and wait until it logged EngineReady and /healthz answers. Killed by the scope. */
export async function startEngine(scope: Scope, o: EngineOptions): Promise<EngineProcess> {
  const e = spawnEngine(o);
  scope.defer('kill engine', () => e.kill());
  const ready = await e.waitForEvent('EngineReady');
  e.httpAddress = String(ready.http);
  const h = await e.get('/healthz');
  if (h.status !== 200) throw new Error(`/healthz answered ${h.status}: ${h.body}`);
  return e;
}

/** Run the engine expecting it to refuse to start: resolves with its exit, logs and stderr. */
export async function startEngineExpectingFailure(scope: Scope, o: EngineOptions): Promise<EngineProcess & { exit: Exit }> {
  const e = spawnEngine(o);
  scope.defer('kill engine', () => e.kill());
  const started = await e.waitForEvent('EngineReady', () => true, 30_000).then(() => true, () => false);
  if (started) throw new Error(`engine started although it should have refused\n${e.tail()}`);
  if (e.running) throw new Error(`engine neither started nor exited\n${e.tail()}`);
  return Object.assign(e, { exit: await e.exited });
}
