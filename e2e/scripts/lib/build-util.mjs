// Shared pieces of the cluster build scripts: progress logging, running go and other long commands at
// lowered priority, cache stamps, and the build lock. See e2e/README.md for what is built and why.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync, openSync, closeSync, unlinkSync, statSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setPriority } from 'node:os';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const cacheRoot = join(repoRoot, '.cache', 'cluster');
const t0 = Date.now();

export function log(msg) {
  process.stderr.write(`cluster:build [${secs(Date.now() - t0)}] ${msg}\n`);
}
export function secs(ms) {
  const s = Math.round(ms / 1000);
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}
export function elapsed() {
  return Date.now() - t0;
}

export function goEnv(extra = {}) {
  return {
    ...process.env,
    CGO_ENABLED: '0',
    // never download a different toolchain behind our back; fail clearly instead
    GOTOOLCHAIN: 'local',
    // stay within ~2 cores: the machine is shared
    GOMAXPROCS: process.env.GOMAXPROCS ?? '2',
    ...extra,
  };
}

export function goVersion() {
  const r = spawnSync('go', ['env', 'GOVERSION'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    throw new Error('the Go toolchain is required to build the local control plane (`go` not found or failing)');
  }
  return r.stdout.trim();
}

/**
 * Runs a command at lowered priority, keeping the last 200 lines of its output for the error message.
 * Lines matching `count` are counted and reported every 20 s; `timeoutMs` bounds it.
 */
export function runTool(cmd, args, { cwd, env, what, count, input, timeoutMs = 60 * 60_000 } = {}) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { cwd, env: env ?? process.env, stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    try {
      setPriority(child.pid, 10);
    } catch {
      // lowering priority is a courtesy, not a requirement
    }
    if (input !== undefined) child.stdin.end(input);
    let n = 0;
    let tail = '';
    const out = [];
    const onData = (chunk) => {
      const text = tail + chunk.toString('utf8');
      const lines = text.split('\n');
      tail = lines.pop() ?? '';
      for (const line of lines) {
        out.push(line);
        if (out.length > 200) out.shift();
        if (count && count.test(line)) n++;
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    const started = Date.now();
    const timer = setInterval(() => log(`${what}: ${count ? `${n} done so far, ` : ''}${secs(Date.now() - started)}`), 20_000);
    const killer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearInterval(timer);
      clearTimeout(killer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearInterval(timer);
      clearTimeout(killer);
      if (tail) out.push(tail);
      if (code === 0) {
        log(`${what}: finished${count ? ` (${n})` : ''} in ${secs(Date.now() - started)}`);
        resolvePromise(out.join('\n'));
      } else {
        const why = signal ? `signal ${signal}${signal === 'SIGKILL' ? ' (time limit?)' : ''}` : `exit ${code}`;
        reject(new Error(`${what} failed (${cmd} ${args.join(' ')}, ${why}):\n${out.slice(-60).join('\n')}`));
      }
    });
  });
}

export function runGo(args, opts) {
  return runTool('go', args, { ...opts, env: goEnv(opts.env) });
}

export async function downloadModule(path, version, cwd) {
  const out = await runGo(['mod', 'download', '-json', `${path}@${version}`], { cwd, what: `download ${path}@${version}` });
  const info = JSON.parse(out.slice(out.indexOf('{')));
  if (info.Error) throw new Error(`go mod download ${path}@${version}: ${info.Error}`);
  return info;
}

export function goModDirectives(goModText) {
  const go = /^go\s+(\S+)/m.exec(goModText)?.[1];
  const godebug = goModText.split('\n').filter((l) => /^godebug\s/.test(l));
  return { go, godebug };
}

function stampOf(dir) {
  try {
    return JSON.parse(readFileSync(join(dir, 'build.json'), 'utf8'));
  } catch {
    return undefined;
  }
}
export function isCurrent(dir, want, binaries) {
  const have = stampOf(dir);
  return (
    have !== undefined &&
    JSON.stringify(have.key) === JSON.stringify(want) &&
    binaries.every((b) => existsSync(join(dir, 'bin', b)))
  );
}
export function writeStamp(dir, key, extra) {
  writeFileSync(join(dir, 'build.json'), JSON.stringify({ key, ...extra, builtAt: new Date().toISOString() }, null, 2));
}

/** sha256 over strings and the contents of files and directories (sorted), for cache keys. */
export function hashInputs(parts) {
  const h = createHash('sha256');
  const addPath = (p) => {
    const st = statSync(p);
    if (st.isDirectory()) {
      for (const e of readdirSync(p).sort()) addPath(join(p, e));
    } else {
      h.update(`${p.slice(p.lastIndexOf('/') + 1)}:${st.mode & 0o111 ? 'x' : '-'}:`);
      h.update(readFileSync(p));
    }
  };
  for (const part of parts) {
    if (typeof part === 'string') h.update(`s:${part}\n`);
    else addPath(part.path);
  }
  return h.digest('hex').slice(0, 16);
}

// One build at a time across processes (test files may ask concurrently).
export async function withLock(fn) {
  mkdirSync(cacheRoot, { recursive: true });
  const lock = join(cacheRoot, '.build.lock');
  let waited = false;
  for (;;) {
    try {
      const fd = openSync(lock, 'wx');
      writeFileSync(fd, String(process.pid));
      closeSync(fd);
      break;
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
      let owner = 0;
      let ageMs = 0;
      try {
        owner = Number(readFileSync(lock, 'utf8') || '0');
        ageMs = Date.now() - statSync(lock).mtimeMs;
      } catch {
        continue; // removed meanwhile: try again
      }
      // an empty lock is being written by its owner right now, unless it is old
      let alive = !(owner > 0) && ageMs < 10_000;
      try {
        if (owner > 0) {
          process.kill(owner, 0);
          alive = true;
        }
      } catch {
        alive = false;
      }
      if (!alive) {
        try {
          unlinkSync(lock);
        } catch {
          // someone else removed it first
        }
        continue;
      }
      if (!waited) log(`another build (pid ${owner}) holds the lock; waiting for it`);
      waited = true;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  try {
    return await fn();
  } finally {
    try {
      unlinkSync(lock);
    } catch {
      // already gone
    }
  }
}
