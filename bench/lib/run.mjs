/**
 * A bench script's life: the repository's paths, the children it starts and the temporary directory
 * it makes (both removed at the end, on errors and on signals), and the entry point that parses the
 * command line, runs main() and sets the exit status.
 *
 * Importing this module installs the last-resort cleanup on exit; installSignalCleanup() adds the
 * signals.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const ENGINE_BIN = path.join(ROOT, 'engine', 'bin', 'shadow-engine.js');
export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

/** A bad command line: reported without the `error:` prefix. */
export class UsageError extends Error {}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Every child we started and have not seen exit. */
const live = new Set();
let tmpDir = null;
let cleaning = null;

/** Remember a child so cleanup() stops it if it is still running. */
export function track(child) {
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}

/** Runs a command to completion (in ROOT); never rejects: `ok` says whether it succeeded. */
export function exec(cmd, args, { timeoutMs = 30_000 } = {}) {
  return new Promise((resolve) => {
    track(execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 64 * MiB, cwd: ROOT }, (err, stdout, stderr) => {
      resolve({ ok: !err, code: err ? (err.code ?? 1) : 0, stdout: String(stdout), stderr: String(stderr), err });
    }));
  });
}

/** Sends `signal`, then SIGKILL if the child is still there after graceMs; resolves once it exited. */
export async function killChild(child, graceMs = 5000, signal = 'SIGTERM') {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(t);
}

/** A fresh directory `parent/prefix*` that cleanup() removes. */
export async function makeTempDir(parent, prefix) {
  tmpDir = await mkdtemp(path.join(parent, prefix));
  return tmpDir;
}

/** Stops every tracked child and removes the temporary directory; once, however often called. */
export function cleanup() {
  cleaning ??= (async () => {
    await Promise.allSettled([...live].map((c) => killChild(c)));
    if (tmpDir) await rm(tmpDir, { recursive: true, force: true }).catch(() => {});
    tmpDir = null;
  })();
  return cleaning;
}

// Last resort (an exit we did not plan for): nothing async is possible any more.
process.on('exit', () => {
  for (const c of live) {
    try { c.kill('SIGKILL'); } catch { /* already gone */ }
  }
  if (tmpDir) {
    try { fs.rmSync(tmpDir, { recursive: true, force: true }); } catch { /* best effort */ }
  }
});

/** On SIGINT/SIGTERM/SIGHUP: say `doing` on stderr, clean up, exit 130/143/129. */
export function installSignalCleanup(doing) {
  for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]]) {
    process.on(sig, () => {
      if (cleaning) return;
      process.stderr.write(`\n${sig}: ${doing}...\n`);
      cleanup().finally(() => process.exit(code));
    });
  }
}

/**
 * The script's entry point: parses the command line (usage error: exit 2, --help: exit 0), runs
 * main(cfg), cleans up and sets the exit status (1 on errors; a signal sets its own).
 */
export function runBench(name, help, parseConfig, main) {
  const run = async () => {
    let cfg;
    try {
      cfg = parseConfig(process.argv.slice(2));
    } catch (e) {
      process.stderr.write(`${name}: ${e.message}\n${help}\n`);
      return 2;
    }
    if (!cfg) {
      process.stdout.write(help + '\n');
      return 0;
    }
    return main(cfg);
  };
  run().then(
    async (code) => {
      await cleanup();
      process.exitCode = code;
    },
    async (err) => {
      if (cleaning) return; // interrupted: the signal handler cleans up and sets the exit status
      process.stderr.write(`${name}: ${err instanceof UsageError ? '' : 'error: '}${err?.message ?? err}\n`);
      await cleanup();
      process.exitCode = 1;
    },
  );
}
