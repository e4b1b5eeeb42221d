/**
 * A long-running child of a bench (a server, the engine, a load generator): started in the
 * repository, stopped by cleanup() if still running, the tail of its output kept for error messages
 * and its exit recorded, so a bench can tell "the server died" from "the server is slow".
 */
import { spawn } from 'node:child_process';

import { KiB, ROOT, track } from './run.mjs';

export class LoggedChild {
  /**
   * `name` starts the error messages; `keepBytes` of output (stdout and stderr) are kept;
   * `tailLines` of them are shown when the child died (all that is kept when not given).
   */
  constructor(name, { keepBytes = 16 * KiB, tailLines = Infinity } = {}) {
    this.name = name;
    this.keepBytes = keepBytes;
    this.tailLines = tailLines;
    this.output = '';
    this.exit = null;
    this.child = null;
  }

  /** Starts `cmd args` (in `env`, else ours); a subclass sees its stdout through onStdout() and its end through onExit(). */
  spawn(cmd, args, env = process.env) {
    const child = track(spawn(cmd, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] }));
    this.child = child;
    child.stdout.setEncoding('utf8').on('data', (s) => {
      this.keep(s);
      this.onStdout(s);
    });
    child.stderr.setEncoding('utf8').on('data', (s) => this.keep(s));
    child.once('close', (code, signal) => {
      this.exit = { code, signal };
      this.onExit();
    });
    child.once('error', (e) => {
      this.exit = { code: null, signal: null, error: e.message };
      this.onExit();
    });
    return this;
  }

  /** For subclasses: stdout text as it arrives. */
  onStdout() {}

  /** For subclasses: the child ended (this.exit says how). */
  onExit() {}

  keep(s) {
    this.output = (this.output + s).slice(-this.keepBytes);
  }

  get pid() { return this.child?.pid; }

  /** The last `tailLines` lines of output. */
  tail() {
    const text = this.output.trim();
    return this.tailLines === Infinity ? text : text.split('\n').slice(-this.tailLines).join('\n');
  }

  assertAlive() {
    if (this.exit) throw new Error(`${this.name} exited (${JSON.stringify(this.exit)}); last output:\n${this.tail()}`);
  }
}
