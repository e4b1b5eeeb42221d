// The Docker engine for kind clusters: Debian's docker.io. An engine that already answers is used as it is;
// otherwise dockerd is started here, and `stop()` ends only the one started here.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from '../wait.js';

/** Debian's CLI, which matches Debian's engine (another `docker` earlier in PATH may be a newer client). */
export const DOCKER = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';

export interface DockerEngine {
  version: string;
  /** true when dockerd was started by this process */
  started: boolean;
  stop(): Promise<void>;
}

export function dockerVersion(): string | undefined {
  const r = spawnSync(DOCKER, ['version', '--format', '{{.Server.Version}}'], { encoding: 'utf8', timeout: 15_000 });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/**
 * true when this process lacks a capability in its bounding set: then Docker 20.10 cannot start a
 * --privileged container (kind's nodes) without the runc-caps runtime (e2e/kind/cmd/runc-caps).
 */
export function boundingSetIsShort(): boolean {
  const m = /^CapBnd:\s*([0-9a-f]+)/m.exec(readFileSync('/proc/self/status', 'utf8'));
  const last = Number(readFileSync('/proc/sys/kernel/cap_last_cap', 'utf8'));
  return m?.[1] !== undefined && BigInt(`0x${m[1]}`) !== (1n << BigInt(last + 1)) - 1n;
}

/**
 * Uses the Docker engine that answers, or starts dockerd (with `runcCaps` as its default runtime when the
 * bounding set is short). An engine already running without that runtime is refused in that case, since
 * no kind node could start on it.
 */
export async function ensureDockerd(workDir: string, { runcCaps }: { runcCaps?: string } = {}): Promise<DockerEngine> {
  const have = dockerVersion();
  if (have) {
    if (boundingSetIsShort() && !docker(['info', '--format', '{{json .Runtimes}}']).stdout.includes('runc-caps')) {
      throw new Error(
        'the running Docker engine cannot start privileged containers here (no CAP_SYS_RESOURCE) and has no runc-caps runtime: stop it and let the harness start its own, see e2e/README.md',
      );
    }
    return { version: have, started: false, stop: async () => {} };
  }
  if (!existsSync('/usr/sbin/dockerd')) {
    throw new Error('no Docker engine answers and /usr/sbin/dockerd is missing: run `npm run cluster:build -- --kind` (installs docker.io)');
  }
  mkdirSync(workDir, { recursive: true });
  const logPath = join(workDir, 'dockerd.log');
  const fd = openSync(logPath, 'a');
  // No default bridge: kind's nodes get a network of their own.
  const args = ['--host=unix:///var/run/docker.sock', '--bridge=none'];
  if (runcCaps && boundingSetIsShort()) args.push(`--add-runtime=runc-caps=${runcCaps}`, '--default-runtime=runc-caps');
  const child = spawn('/usr/sbin/dockerd', args, {
    detached: true,
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  child.unref();
  let exit: string | undefined;
  const exited = new Promise<void>((resolve) =>
    child.once('exit', (code, sig) => {
      exit = `exit ${code ?? sig}`;
      resolve();
    }),
  );
  let raced = false;
  const version = await waitFor(
    'dockerd to answer',
    () => {
      const v = dockerVersion();
      if (exit) {
        // another process started one at the same moment (the pid file is taken): use that one
        if (v) raced = true;
        else throw new Error(`dockerd ended at start (${exit}); see ${logPath}`);
      }
      return v;
    },
    { timeoutMs: 60_000, intervalMs: 250 },
  ).catch((err: unknown) => {
    child.kill('SIGKILL');
    throw err;
  });
  if (raced) return { version, started: false, stop: async () => {} };
  return {
    version,
    started: true,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** Runs the docker CLI; throws with its stderr unless `allowFail`. */
export function docker(args: string[], opts: { allowFail?: boolean; input?: string; timeoutMs?: number } = {}): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(DOCKER, args, { encoding: 'utf8', input: opts.input, timeout: opts.timeoutMs ?? 120_000, maxBuffer: 64 << 20 });
  const status = r.status ?? -1;
  if (status !== 0 && !opts.allowFail) {
    throw new Error(`docker ${args.join(' ')} failed: ${(r.stderr || r.stdout || String(r.error)).trim().slice(-2000)}`);
  }
  return { status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}
