#!/usr/bin/env node
// Builds the local control plane (kube-apiserver and etcd) from Go modules and caches the binaries under
// .cache/cluster/<name>-<version>/ at the repo root. A no-op when the cache is current.
//
// Why not `go install k8s.io/kubernetes/cmd/kube-apiserver@vX`: k8s.io/kubernetes requires its staging modules
// (k8s.io/api, apimachinery, client-go, ...) at v0.0.0 and replaces them with ./staging paths, which only work
// inside its own repo. So we generate a small wrapper module that requires k8s.io/kubernetes vX.Y.Z and replaces
// every staging module with its published v0.Y.Z. The staging list is read from the real go.mod.
// etcd is built the same way from go.etcd.io/etcd/server/v3 (its etcdmain package) in its own wrapper module.
//
// Usage: node e2e/scripts/build-cluster.mjs [--json]
//   --json   print {"kubeApiserver": path, "etcd": path, ...} on stdout when done (progress goes to stderr)
// Environment: SHADOWSET_K8S_VERSION, SHADOWSET_ETCD_VERSION override the pinned versions.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync, openSync, closeSync, unlinkSync, renameSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setPriority } from 'node:os';

// 1.34 is what users' kubectl talks to; v1.34.12 is the newest 1.34 patch the module proxy serves.
const K8S_VERSION = process.env.SHADOWSET_K8S_VERSION ?? 'v1.34.12';
// Kubernetes 1.34 is tested against etcd 3.6; Debian's 3.4 is too old for it.
const ETCD_VERSION = process.env.SHADOWSET_ETCD_VERSION ?? 'v3.6.16';
// Only what the tests need: the node simulator stands in for kubelet and binds pods itself (see e2e/README.md).
const K8S_COMMANDS = ['kube-apiserver'];
// Bumped when the way we build changes, so old caches are rebuilt.
const RECIPE = 2;

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const cacheRoot = join(repoRoot, '.cache', 'cluster');
const jsonOut = process.argv.includes('--json');
const t0 = Date.now();

function log(msg) {
  process.stderr.write(`cluster:build [${secs(Date.now() - t0)}] ${msg}\n`);
}
function secs(ms) {
  const s = Math.round(ms / 1000);
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

function goEnv() {
  return {
    ...process.env,
    CGO_ENABLED: '0',
    // never download a different toolchain behind our back; fail clearly instead
    GOTOOLCHAIN: 'local',
    // stay within ~2 cores: the machine is shared
    GOMAXPROCS: process.env.GOMAXPROCS ?? '2',
  };
}

function goVersion() {
  const r = spawnSync('go', ['env', 'GOVERSION'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    throw new Error('the Go toolchain is required to build the local control plane (`go` not found or failing)');
  }
  return r.stdout.trim();
}

// Runs go with progress: counts lines matching `count` and reports every 20 s.
function runGo(args, { cwd, what, count }) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn('go', args, { cwd, env: goEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      setPriority(child.pid, 10);
    } catch {
      // lowering priority is a courtesy, not a requirement
    }
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
    const timer = setInterval(() => log(`${what}: ${n} done so far, ${secs(Date.now() - started)}`), 20_000);
    child.on('error', (err) => {
      clearInterval(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearInterval(timer);
      if (tail) out.push(tail);
      if (code === 0) {
        log(`${what}: finished (${n}) in ${secs(Date.now() - started)}`);
        resolvePromise(out.join('\n'));
      } else {
        reject(new Error(`${what} failed (go ${args.join(' ')}, exit ${code}):\n${out.slice(-60).join('\n')}`));
      }
    });
  });
}

async function downloadModule(path, version, cwd) {
  const out = await runGo(['mod', 'download', '-json', `${path}@${version}`], { cwd, what: `download ${path}@${version}` });
  const info = JSON.parse(out.slice(out.indexOf('{')));
  if (info.Error) throw new Error(`go mod download ${path}@${version}: ${info.Error}`);
  return info;
}

function goModDirectives(goModText) {
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
function isCurrent(dir, want, binaries) {
  const have = stampOf(dir);
  return (
    have !== undefined &&
    JSON.stringify(have.key) === JSON.stringify(want) &&
    binaries.every((b) => existsSync(join(dir, 'bin', b)))
  );
}
function writeStamp(dir, key, extra) {
  writeFileSync(join(dir, 'build.json'), JSON.stringify({ key, ...extra, builtAt: new Date().toISOString() }, null, 2));
}

async function buildKubernetes(gover) {
  const dir = join(cacheRoot, `kubernetes-${K8S_VERSION}`);
  const key = { recipe: RECIPE, version: K8S_VERSION, commands: K8S_COMMANDS, go: gover };
  if (isCurrent(dir, key, K8S_COMMANDS)) {
    log(`kubernetes ${K8S_VERSION}: cached (${K8S_COMMANDS.join(', ')})`);
    return dir;
  }
  const mod = join(dir, 'module');
  mkdirSync(mod, { recursive: true });
  mkdirSync(join(dir, 'bin'), { recursive: true });
  log(`kubernetes ${K8S_VERSION}: reading k8s.io/kubernetes go.mod`);
  writeFileSync(join(mod, 'go.mod'), 'module shadowset.local/kubernetes-build\n');
  const info = await downloadModule('k8s.io/kubernetes', K8S_VERSION, mod);
  const upstream = readFileSync(info.GoMod, 'utf8');
  const staging = [...upstream.matchAll(/^\s*(k8s\.io\/[\w.-]+)\s+=>\s+\.\/staging\/src\/\S+\s*$/gm)].map((m) => m[1]);
  if (staging.length === 0) throw new Error(`no staging replacements found in k8s.io/kubernetes@${K8S_VERSION} go.mod`);
  const stagingVersion = K8S_VERSION.replace(/^v1\./, 'v0.');
  log(`kubernetes ${K8S_VERSION}: ${staging.length} staging modules, replaced with ${stagingVersion}`);
  const { go, godebug } = goModDirectives(upstream);
  writeFileSync(
    join(mod, 'go.mod'),
    [
      '// Generated by e2e/scripts/build-cluster.mjs; not part of the project.',
      'module shadowset.local/kubernetes-build',
      '',
      `go ${go}`,
      ...godebug,
      '',
      `require k8s.io/kubernetes ${K8S_VERSION}`,
      '',
      'replace (',
      ...staging.map((m) => `\t${m} => ${m} ${stagingVersion}`),
      ')',
      '',
    ].join('\n'),
  );
  // The tools-file idiom: makes `go mod tidy` resolve everything the commands import.
  writeFileSync(
    join(mod, 'tools.go'),
    [
      '//go:build tools',
      '',
      'package tools',
      '',
      'import (',
      ...K8S_COMMANDS.map((c) => `\t_ "k8s.io/kubernetes/cmd/${c}"`),
      ')',
      '',
    ].join('\n'),
  );
  log(`kubernetes ${K8S_VERSION}: resolving dependencies (go mod tidy; downloads on a cold module cache)`);
  await runGo(['mod', 'tidy'], { cwd: mod, what: 'go mod tidy', count: /^go: downloading / });
  const [, major, minor] = /^v(\d+)\.(\d+)\./.exec(K8S_VERSION) ?? [];
  // the release's commit time, from the proxy's .info file: reproducible, unlike the time of our build
  const buildDate = JSON.parse(readFileSync(info.Info, 'utf8')).Time ?? '1970-01-01T00:00:00Z';
  const x = [];
  // Without these /version says v0.0.0-master, and clients warn about skew.
  for (const pkg of ['k8s.io/component-base/version', 'k8s.io/client-go/pkg/version']) {
    x.push(
      `-X ${pkg}.gitVersion=${K8S_VERSION}`,
      `-X ${pkg}.gitMajor=${major}`,
      `-X ${pkg}.gitMinor=${minor}`,
      `-X ${pkg}.gitTreeState=clean`,
      `-X ${pkg}.buildDate=${buildDate}`,
    );
  }
  const ldflags = ['-s', '-w', ...x].join(' ');
  // -buildvcs=false: the wrapper module sits inside this repo's work tree; its git state is not the binary's
  for (const cmd of K8S_COMMANDS) {
    log(`kubernetes ${K8S_VERSION}: building ${cmd}`);
    const tmp = join(dir, 'bin', `${cmd}.tmp`);
    await runGo(['build', '-v', '-p', '2', '-trimpath', '-buildvcs=false', `-ldflags=${ldflags}`, '-o', tmp, `k8s.io/kubernetes/cmd/${cmd}`], {
      cwd: mod,
      what: `go build ${cmd} (packages compiled)`,
      count: /^[\w.~-]+(\/[\w.~+-]+)*$/,
    });
    renameSync(tmp, join(dir, 'bin', cmd));
  }
  writeStamp(dir, key, { staging });
  return dir;
}

async function buildEtcd(gover) {
  const dir = join(cacheRoot, `etcd-${ETCD_VERSION}`);
  const key = { recipe: RECIPE, version: ETCD_VERSION, go: gover };
  if (isCurrent(dir, key, ['etcd'])) {
    log(`etcd ${ETCD_VERSION}: cached`);
    return dir;
  }
  const mod = join(dir, 'module');
  mkdirSync(mod, { recursive: true });
  mkdirSync(join(dir, 'bin'), { recursive: true });
  writeFileSync(join(mod, 'go.mod'), 'module shadowset.local/etcd-build\n');
  log(`etcd ${ETCD_VERSION}: reading go.etcd.io/etcd/server/v3 go.mod`);
  const info = await downloadModule('go.etcd.io/etcd/server/v3', ETCD_VERSION, mod);
  const { go } = goModDirectives(readFileSync(info.GoMod, 'utf8'));
  writeFileSync(
    join(mod, 'go.mod'),
    [
      '// Generated by e2e/scripts/build-cluster.mjs; not part of the project.',
      'module shadowset.local/etcd-build',
      '',
      `go ${go}`,
      '',
      `require go.etcd.io/etcd/server/v3 ${ETCD_VERSION}`,
      '',
    ].join('\n'),
  );
  // The same entry point as etcd's own main package.
  writeFileSync(
    join(mod, 'main.go'),
    [
      'package main',
      '',
      'import (',
      '\t"os"',
      '',
      '\t"go.etcd.io/etcd/server/v3/etcdmain"',
      ')',
      '',
      'func main() { etcdmain.Main(os.Args) }',
      '',
    ].join('\n'),
  );
  log(`etcd ${ETCD_VERSION}: resolving dependencies`);
  await runGo(['mod', 'tidy'], { cwd: mod, what: 'go mod tidy (etcd)', count: /^go: downloading / });
  log(`etcd ${ETCD_VERSION}: building etcd`);
  const tmp = join(dir, 'bin', 'etcd.tmp');
  await runGo(['build', '-v', '-p', '2', '-trimpath', '-buildvcs=false', '-ldflags=-s -w', '-o', tmp, '.'], {
    cwd: mod,
    what: 'go build etcd (packages compiled)',
    count: /^[\w.~-]+(\/[\w.~+-]+)*$/,
  });
  renameSync(tmp, join(dir, 'bin', 'etcd'));
  writeStamp(dir, key, {});
  return dir;
}

// One build at a time across processes (test files may ask concurrently).
async function withLock(fn) {
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

async function main() {
  const gover = goVersion();
  const [k8sDir, etcdDir] = await withLock(async () => {
    log(`using ${gover}; cache ${cacheRoot}`);
    const k = await buildKubernetes(gover);
    const e = await buildEtcd(gover);
    return [k, e];
  });
  log(`done in ${secs(Date.now() - t0)}`);
  if (jsonOut) {
    process.stdout.write(
      JSON.stringify({
        kubernetesVersion: K8S_VERSION,
        etcdVersion: ETCD_VERSION,
        kubeApiserver: join(k8sDir, 'bin', 'kube-apiserver'),
        etcd: join(etcdDir, 'bin', 'etcd'),
      }) + '\n',
    );
  }
}

main().catch((err) => {
  log(`FAILED: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
