// A Docker engine for the kind toolchain: Debian's docker.io. If one answers on the default socket it is
// used as it is; otherwise dockerd is started here and `stop()` stops only that one.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { log } from './build-util.mjs';

// Debian's CLI matches Debian's engine; another `docker` earlier in PATH may be a newer client.
export const DOCKER = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';

export function dockerAnswers() {
  const r = spawnSync(DOCKER, ['version', '--format', '{{.Server.Version}}'], { encoding: 'utf8', timeout: 15_000 });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/** Installs Debian packages that are missing (root only), e.g. docker.io and mmdebstrap. */
export function ensureDebianPackages(pkgs) {
  const missing = pkgs.filter((p) => spawnSync('dpkg', ['-s', p], { stdio: 'ignore' }).status !== 0);
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0) throw new Error(`the kind toolchain needs Debian packages ${missing.join(', ')} (apt-get install; root)`);
  log(`installing Debian packages ${missing.join(', ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  for (const args of [['update', '-qq'], ['install', '-y', '-qq', ...missing]]) {
    const r = spawnSync('apt-get', args, { env, encoding: 'utf8', timeout: 15 * 60_000 });
    if (r.status !== 0) throw new Error(`apt-get ${args.join(' ')} failed:\n${(r.stdout + r.stderr).slice(-3000)}`);
  }
}

/** true when this process lacks a capability in its bounding set (then --privileged fails in Docker 20.10). */
export function boundingSetIsShort() {
  const m = /^CapBnd:\s*([0-9a-f]+)/m.exec(readFileSync('/proc/self/status', 'utf8'));
  const last = Number(readFileSync('/proc/sys/kernel/cap_last_cap', 'utf8'));
  return m !== null && BigInt(`0x${m[1]}`) !== (1n << BigInt(last + 1)) - 1n;
}

/**
 * Makes sure a Docker engine answers. Returns { version, started, stop() }: stop() ends dockerd only if
 * it was started here (SIGTERM, then SIGKILL after 30 s). `runcCaps` is e2e/kind/cmd/runc-caps, made the
 * default runtime when this machine's bounding set is short of a capability (see that program).
 */
export async function ensureDockerd(workDir, { runcCaps } = {}) {
  const have = dockerAnswers();
  if (have) {
    if (boundingSetIsShort() && !docker(['info', '--format', '{{json .Runtimes}}']).stdout.includes('runc-caps')) {
      log('warning: the running Docker engine has no runc-caps runtime; privileged containers (kind nodes) may fail to start');
    }
    return { version: have, started: false, stop: async () => {} };
  }
  if (!existsSync('/usr/sbin/dockerd')) throw new Error('no Docker engine answers and /usr/sbin/dockerd is missing (Debian docker.io)');
  mkdirSync(workDir, { recursive: true });
  const logFd = openSync(join(workDir, 'dockerd.log'), 'a');
  // No default bridge: kind's nodes live on a network of their own and image builds run without network.
  const args = ['--host=unix:///var/run/docker.sock', '--bridge=none'];
  if (runcCaps && boundingSetIsShort()) args.push(`--add-runtime=runc-caps=${runcCaps}`, '--default-runtime=runc-caps');
  const child = spawn('/usr/sbin/dockerd', args, {
    detached: true,
    stdio: ['ignore', logFd, logFd],
  });
  closeSync(logFd);
  child.unref();
  const exited = new Promise((r) => child.once('exit', (code, sig) => r(`exit ${code ?? sig}`)));
  log(`started dockerd (pid ${child.pid}; log ${join(workDir, 'dockerd.log')})`);
  const deadline = Date.now() + 60_000;
  let version;
  while (!(version = dockerAnswers())) {
    const done = await Promise.race([exited, new Promise((r) => setTimeout(() => r(undefined), 500))]);
    if (done) {
      // another process started one at the same moment (the pid file is taken): use that one
      const other = dockerAnswers();
      if (other) return { version: other, started: false, stop: async () => {} };
      throw new Error(`dockerd ended at start (${done}); see ${join(workDir, 'dockerd.log')}`);
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`dockerd did not answer within 60 s; see ${join(workDir, 'dockerd.log')}`);
    }
  }
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 30_000);
    await exited;
    clearTimeout(t);
    log('stopped the dockerd started for this build');
  };
  return { version, started: true, stop };
}

export function docker(args, opts = {}) {
  const r = spawnSync(DOCKER, args, { encoding: 'utf8', maxBuffer: 64 << 20, timeout: opts.timeoutMs ?? 10 * 60_000, input: opts.input });
  if (r.status !== 0 && !opts.allowFail) {
    throw new Error(`docker ${args.join(' ')} failed: ${(r.stderr || r.stdout || String(r.error)).trim().slice(-2000)}`);
  }
  return r;
}

export function imageExists(ref) {
  return docker(['image', 'inspect', '--format', '{{.Id}}', ref], { allowFail: true }).status === 0;
}
