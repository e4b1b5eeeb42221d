/**
 * The engine as resync-bench drives it: a child process whose JSON log lines are collected with the
 * time they arrived (the bench times copies and merges by them), and its HTTP control API.
 */
import path from 'node:path';
import { performance } from 'node:perf_hooks';

import { LoggedChild } from '../lib/child.mjs';
import { engineEnv } from '../lib/host.mjs';
import { ENGINE_BIN, killChild, sleep } from '../lib/run.mjs';

export class Engine extends LoggedChild {
  /**
   * An engine serving `files` on `socket`; `intentLog: false` starts it with the hidden --no-intent-log,
   * `intentCapMiB` sets --intent-log-cap-mib (0: no cap; unset: the engine's default).
   */
  constructor(files, socket, { intentLog = true, intentCapMiB } = {}) {
    super('engine', { tailLines: 12 });
    this.files = files;
    this.socket = socket;
    this.intentLog = intentLog;
    this.intentCapMiB = intentCapMiB;
    this.uri = `nbd+unix:///?socket=${socket}`;
    this.lines = [];
    this.partial = '';
    this.waiters = new Set();
    this.http = null;
  }

  /** Starts the engine and resolves once it logged EngineReady (its HTTP address is then known). */
  async start() {
    // The full-copy phase adds a member by API: the engine may open only members under this prefix.
    // RESYNC_BENCH_ENGINE_NODE_ARGS: node flags for the engine only (e.g. --cpu-prof --cpu-prof-dir=DIR; node refuses them in NODE_OPTIONS).
    const nodeArgs = (process.env.RESYNC_BENCH_ENGINE_NODE_ARGS ?? '').split(' ').filter(Boolean);
    this.spawn(process.execPath, [...nodeArgs, ENGINE_BIN, 'serve', ...this.files.flatMap((f) => ['--member', f]), '--socket', this.socket,
      '--http', '127.0.0.1:0', '--allow-location', `${path.dirname(this.socket)}/`, '--log-level', 'info',
      ...(this.intentLog ? [] : ['--no-intent-log']),
      ...(this.intentCapMiB === undefined ? [] : ['--intent-log-cap-mib', String(this.intentCapMiB)])], await engineEnv());
    const ready = await this.waitFor((l) => l.event === 'EngineReady' || l.event === 'StartFailed', { what: 'EngineReady', timeoutMs: 120_000 });
    if (ready.event !== 'EngineReady') throw new Error(`engine did not start: ${ready.msg}\n${this.tail()}`);
    this.http = ready.http;
    return this;
  }

  onStdout(s) {
    const at = performance.now();
    this.partial += s;
    const parts = this.partial.split('\n');
    this.partial = parts.pop();
    for (const l of parts) {
      if (!l.trim()) continue;
      try { this.lines.push({ ...JSON.parse(l), at }); } catch { this.lines.push({ msg: l, at }); }
    }
    this.wake();
  }

  onExit() {
    this.wake();
  }

  wake() {
    for (const w of [...this.waiters]) w();
  }

  /** Index of the next log line: wait for events logged after this point with waitFor({ from }). */
  mark() { return this.lines.length; }

  /** The first log line from index `from` on that satisfies `pred`; rejects if the engine exits first or after timeoutMs. */
  waitFor(pred, { from = 0, timeoutMs = 900_000, what = 'a log line' } = {}) {
    return new Promise((resolve, reject) => {
      let i = from;
      const finish = (f) => { clearTimeout(timer); this.waiters.delete(check); f(); };
      const check = () => {
        for (; i < this.lines.length; i++) {
          const l = this.lines[i];
          if (pred(l)) return finish(() => resolve(l));
        }
        if (this.exit) finish(() => reject(new Error(`engine exited (${JSON.stringify(this.exit)}) while waiting for ${what}\n${this.tail()}`)));
      };
      const timer = setTimeout(() => finish(() => reject(new Error(`no ${what} within ${timeoutMs / 1000} s\n${this.tail()}`))), timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  /** Wait for `done` (for `target` if given); a `failed` event instead is an error. */
  async waitJob(done, failed, { from, target = undefined } = {}) {
    const l = await this.waitFor((x) => (x.event === done || x.event === failed) && (target === undefined || x.target === target),
      { from, what: done });
    if (l.event !== done) throw new Error(`engine: ${failed} (${l.reason ?? l.msg})\n${this.tail()}`);
    return l;
  }

  /**
   * One recovery job from its `<kind>Started` line to `<kind>Completed` (a `<kind>Stopped` is an
   * error), for `target` if given, logged from index `from` on: the two log lines.
   */
  async waitRun(kind, { from, target = undefined } = {}) {
    const began = await this.waitFor((l) => l.event === `${kind}Started` && (target === undefined || l.target === target),
      { from, what: `${kind}Started` });
    const done = await this.waitJob(`${kind}Completed`, `${kind}Stopped`, { from, target });
    return { began, done };
  }

  async api(method, route, body) {
    const res = await fetch(`http://${this.http}${route}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let doc;
    try { doc = JSON.parse(text); } catch { doc = text; }
    if (!res.ok) throw new Error(`${method} ${route} ${body ? JSON.stringify(body) : ''} -> ${res.status} ${typeof doc === 'object' ? `${doc.code}: ${doc.message}` : doc}`);
    return doc;
  }

  status() { return this.api('GET', '/v1/status'); }

  async memberId(file) {
    const m = (await this.status()).members.find((x) => x.path === file);
    if (!m) throw new Error(`no member at ${file}`);
    return m.id;
  }

  async waitState(id, state, timeoutMs = 30_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.status();
      const m = s.members.find((x) => x.id === id);
      if (m?.state === state) return s;
      if (Date.now() > deadline) throw new Error(`member ${id} is ${m?.state ?? 'absent'}, not ${state}, after ${timeoutMs / 1000} s`);
      await sleep(20);
    }
  }

  /** Until the lazily cleared write-intent log is empty (nothing written for a second or two). */
  async waitIntentIdle(timeoutMs = 60_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.status();
      if (s.intentLog.dirtyChunks === 0 && s.recovery.mode === null) return 0;
      if (Date.now() > deadline) return s.intentLog.dirtyChunks;
      await sleep(100);
    }
  }

  async kill9() {
    await killChild(this.child, 5000, 'SIGKILL');
  }

  async stop() {
    await killChild(this.child, 30_000, 'SIGTERM');
  }
}
