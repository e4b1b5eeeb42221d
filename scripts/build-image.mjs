#!/usr/bin/env node
// Builds the project image (engine and operator) without pulling anything and without network access
// inside the build. See docs/image.md.
//
//   1. the base: Debian 13 (trixie, whose nodejs is 20.x) made by mmdebstrap from Debian's packages and
//      `docker import`ed as localhost/shadowset/node-base:<recipe hash>; made once per recipe;
//   2. the tree: the TypeScript is compiled here (tsc -b) and what ships is staged under .cache/image/rootfs:
//      the production dependencies copied from this checkout's node_modules as package-lock.json lists
//      them (no registry is asked), and engine/ and operator/ without tests and source maps;
//   3. `docker build --network none` of the Dockerfile, which only copies that tree onto the base.
//
// Usage: node scripts/build-image.mjs [--tag ghcr.io/shadowset/shadowset:dev] [--label k=v] [--json]
//   --json   print {"image", "id", "base", ...} on stdout when done (progress goes to stderr)
// Environment: DOCKER_HOST as docker itself reads it.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const cacheDir = join(repoRoot, '.cache', 'image');
const rootfs = join(cacheDir, 'rootfs');
const PREFIX = '/opt/shadowset';

// The base image's recipe: its hash names the image, so a change here makes a new base.
export const BASE_RECIPE = {
  suite: 'trixie',
  mirror: 'http://deb.debian.org/debian',
  variant: 'minbase',
  // Debian 13's nodejs is 20.19: the engines field asks for >= 20.11 (TLS is node's own; the operator
  // trusts the service account's CA file, not the system store). The rest is the CSI node plugin's tools:
  // qemu-storage-daemon (NBD client to FUSE export; Debian 13 ships it in qemu-utils, 12 in
  // qemu-system-common), fusermount3, losetup, mount, umount, findmnt, blockdev, blkid, mkfs.ext4 and mkfs.xfs.
  include: ['nodejs', 'qemu-utils', 'fuse3', 'util-linux', 'mount', 'e2fsprogs', 'xfsprogs'],
  // Only what is named and what it depends on.
  aptopt: ['APT::Install-Recommends "false"'],
  dpkgopt: ['path-exclude=/usr/share/doc/*', 'path-exclude=/usr/share/man/*', 'path-exclude=/usr/share/locale/*', 'path-exclude=/usr/share/info/*'],
  env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' },
  recipe: 2,
};
export const baseImageName = () =>
  `localhost/shadowset/node-base:${BASE_RECIPE.suite}-${createHash('sha256').update(JSON.stringify(BASE_RECIPE)).digest('hex').slice(0, 12)}`;

// Debian's docker CLI matches Debian's engine; another `docker` earlier in PATH may be a newer client.
const DOCKER = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';
const t0 = Date.now();
const log = (msg) => process.stderr.write(`image [${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}\n`);

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: repoRoot, encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0 && !opts.allowFail) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}:\n${(r.stdout ?? '') + (r.stderr ?? '')}`.slice(0, 4000));
  return r;
}

const imageExists = (name) => run(DOCKER, ['image', 'inspect', '--format', '{{.Id}}', name], { allowFail: true }).status === 0;

/** mmdebstrap writes the root filesystem as a tar on stdout; docker import reads it from stdin. */
function importBase(name) {
  return new Promise((resolvePromise, reject) => {
    const b = BASE_RECIPE;
    const mm = spawn('mmdebstrap', [
      '--quiet', `--variant=${b.variant}`, `--include=${b.include.join(',')}`, '--aptopt=Acquire::Languages "none"',
      ...b.aptopt.map((o) => `--aptopt=${o}`),
      ...b.dpkgopt.map((o) => `--dpkgopt=${o}`), b.suite, '-', b.mirror,
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    const imp = spawn(DOCKER, ['import', ...Object.entries(b.env).map(([k, v]) => `--change=ENV ${k}=${v}`), '-', name], { stdio: ['pipe', 'pipe', 'pipe'] });
    mm.stdout.pipe(imp.stdin);
    let err = '';
    mm.stderr.on('data', (d) => (err += d));
    imp.stderr.on('data', (d) => (err += d));
    let mmCode;
    mm.on('error', (e) => reject(new Error(`mmdebstrap: ${e.message} (Debian package mmdebstrap)`)));
    mm.on('close', (code) => (mmCode = code));
    imp.on('close', (code) => {
      if (code === 0 && mmCode === 0) resolvePromise();
      else reject(new Error(`base image: mmdebstrap exited ${mmCode}, docker import ${code}:\n${err.slice(-3000)}`));
    });
  });
}

// The workspaces that ship (package.json, bin/, dist/), and those that hold tests and their tooling only,
// whose own dependencies never ship.
const SHIPPED_WORKSPACES = ['engine', 'operator', 'csi'];
const TEST_WORKSPACES = ['e2e', 'testkit'];

/** Every package-lock entry a production install has: not dev-only, not a workspace link. */
function productionPackages() {
  const lock = JSON.parse(readFileSync(join(repoRoot, 'package-lock.json'), 'utf8'));
  if (lock.lockfileVersion < 2) throw new Error('package-lock.json: lockfileVersion 2 or 3 expected');
  return Object.entries(lock.packages)
    .filter(([path, p]) => path.includes('node_modules/') && !p.dev && !p.link && !TEST_WORKSPACES.some((w) => path.startsWith(`${w}/`)))
    .map(([path]) => path);
}

const isShippedFile = (name) => !/\.(test|itest|ctest|torture|e2e)\.(js|d\.ts)$/.test(name) && !name.endsWith('.map');

/** The tree that ships, as it will sit in the image (rootfs/opt/shadowset, rootfs/usr/local/bin). */
function stage() {
  rmSync(rootfs, { recursive: true, force: true });
  const dest = join(rootfs, PREFIX.slice(1));
  mkdirSync(dest, { recursive: true });
  cpSync(join(repoRoot, 'package.json'), join(dest, 'package.json'));
  let count = 0;
  for (const path of productionPackages()) {
    const src = join(repoRoot, path);
    if (!existsSync(src)) throw new Error(`${path} is in package-lock.json but not installed: run npm ci`);
    // A package's own nested node_modules are entries of their own (and may be dev-only).
    const nested = join(src, 'node_modules');
    cpSync(src, join(dest, path), { recursive: true, filter: (s) => s !== nested && !s.startsWith(`${nested}/`) });
    count++;
  }
  // The workspaces, linked as npm links them.
  mkdirSync(join(dest, 'node_modules', '@shadowset'), { recursive: true });
  for (const ws of SHIPPED_WORKSPACES) {
    const wsDest = join(dest, ws);
    mkdirSync(wsDest, { recursive: true });
    cpSync(join(repoRoot, ws, 'package.json'), join(wsDest, 'package.json'));
    for (const dir of ['bin', 'dist']) {
      const src = join(repoRoot, ws, dir);
      if (!existsSync(src)) throw new Error(`${ws}/${dir} is missing: the build did not run`);
      // The CSI driver's compiled integration-test helpers (dist/itest) are not part of it.
      const itest = join(src, 'itest');
      cpSync(src, join(wsDest, dir), { recursive: true, filter: (s) => s !== itest && !s.startsWith(`${itest}/`) && (statSync(s).isDirectory() || isShippedFile(s)) });
    }
    for (const f of readdirSync(join(wsDest, 'bin'))) chmodSync(join(wsDest, 'bin', f), 0o755);
    symlinkSync(`../../${ws}`, join(dest, 'node_modules', '@shadowset', ws));
  }
  const bin = join(rootfs, 'usr', 'local', 'bin');
  mkdirSync(bin, { recursive: true });
  symlinkSync(`${PREFIX}/engine/bin/shadow-engine.js`, join(bin, 'shadow-engine'));
  symlinkSync(`${PREFIX}/operator/bin/shadow-operator.js`, join(bin, 'shadow-operator'));
  // The driver loads the CSI spec's csi.proto at run time; its licence and version travel with it.
  cpSync(join(repoRoot, 'csi', 'proto'), join(dest, 'csi', 'proto'), { recursive: true });
  symlinkSync(`${PREFIX}/csi/bin/shadowset-csi.js`, join(bin, 'shadowset-csi'));
  return count;
}

export async function buildImage({ tag = 'ghcr.io/shadowset/shadowset:dev', labels = [] } = {}) {
  log('compiling (the CSI spec, then tsc -b, as npm run build does)…');
  // csi/proto/: the spec's csi.proto of the version csi-spec.mjs names, from its Go module (cached in .cache/).
  run(process.execPath, [join(repoRoot, 'csi', 'scripts', 'csi-spec.mjs')], { stdio: ['ignore', 'inherit', 'inherit'] });
  run(process.execPath, [join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc'), '-b'], { stdio: ['ignore', 'inherit', 'inherit'] });
  // The Docker engine that answers, or one started for this build and stopped after it (e2e/src/kind/docker.ts).
  const { ensureDockerd } = await import(pathToFileURL(join(repoRoot, 'e2e', 'dist', 'kind', 'docker.js')).href);
  const engine = await ensureDockerd(join(repoRoot, '.cache', 'cluster', 'kind'));
  try {
    return await buildOn(engine, { tag, labels });
  } finally {
    await engine.stop();
  }
}

async function buildOn(engine, { tag, labels }) {
  const base = baseImageName();
  let baseMs = 0;
  if (!imageExists(base)) {
    log(`making the base ${base} (mmdebstrap ${BASE_RECIPE.suite} + ${BASE_RECIPE.include.join(', ')}, then docker import)…`);
    const tb = Date.now();
    await importBase(base);
    baseMs = Date.now() - tb;
    log(`base made in ${(baseMs / 1000).toFixed(1)} s`);
    // Bases of earlier recipes are not used again: their tags go (images built on them keep their layers).
    const repo = base.slice(0, base.lastIndexOf(':'));
    const older = run(DOCKER, ['images', '--format', '{{.Repository}}:{{.Tag}}', repo]).stdout.split('\n').filter((t) => t && t !== base);
    for (const t of older) run(DOCKER, ['rmi', t], { allowFail: true });
  }
  const packages = stage();
  log(`staged ${relative(repoRoot, rootfs)} (${packages} production packages)`);
  // The legacy builder: BuildKit in this Docker would want its frontend image. No network: the build only copies.
  const previous = run(DOCKER, ['image', 'inspect', '--format', '{{.Id}}', tag], { allowFail: true }).stdout.trim();
  const args = ['build', '--network', 'none', '--build-arg', `BASE_IMAGE=${base}`, '-t', tag];
  for (const l of labels) args.push('--label', l);
  run(DOCKER, [...args, '-f', join(repoRoot, 'Dockerfile'), repoRoot], { env: { ...process.env, DOCKER_BUILDKIT: '0' } });
  const id = run(DOCKER, ['image', 'inspect', '--format', '{{.Id}}', tag]).stdout.trim();
  // The image this tag named before, now nameless: removed, so rebuilds do not fill the image store. Docker
  // refuses while another tag or a container still uses it, and that refusal is fine.
  if (previous && previous !== id) run(DOCKER, ['rmi', previous], { allowFail: true });
  // The image must start both programs: the engine's usage, the operator's refusal of an unknown flag.
  const engineRun = run(DOCKER, ['run', '--rm', '--network', 'none', tag, '--help'], { allowFail: true });
  if (!/usage: shadow-engine/.test(engineRun.stdout + engineRun.stderr)) throw new Error(`shadow-engine does not start in ${tag}:\n${engineRun.stdout}${engineRun.stderr}`);
  const op = run(DOCKER, ['run', '--rm', '--network', 'none', '--user', '65532:65532', '--read-only', '--entrypoint', 'shadow-operator', tag, '--no-such-flag'], { allowFail: true });
  if (!/shadow-operator: Unknown option/.test(op.stderr)) throw new Error(`shadow-operator does not start in ${tag}:\n${op.stdout}${op.stderr}`);
  // The CSI driver: its CLI, the spec it loads at run time, and the node plugin's tools.
  const csi = run(DOCKER, ['run', '--rm', '--network', 'none', '--read-only', '--entrypoint', 'sh', tag, '-c', [
    'shadowset-csi --no-such-flag 2>&1; true',
    `node --input-type=module -e "(await import('${PREFIX}/csi/dist/spec.js')).loadCsi(); console.log('csi spec loaded')"`,
    'for t in qemu-storage-daemon fusermount3 losetup mount umount findmnt blockdev blkid mkfs.ext4 mkfs.xfs; do command -v $t >/dev/null || echo "missing $t"; done',
  ].join('; ')], { allowFail: true });
  const csiOut = csi.stdout + csi.stderr;
  if (!/shadowset-csi: Unknown option/.test(csiOut) || !/csi spec loaded/.test(csiOut) || /missing /.test(csiOut)) {
    throw new Error(`the CSI driver or its tools are not usable in ${tag}:\n${csiOut}`);
  }
  log(`docker engine ${engine.version}${engine.started ? ' (started for this build)' : ''}`);
  log(`built ${tag} (${id.slice(7, 19)}) on ${base}`);
  return { image: tag, id, base, baseMs, totalMs: Date.now() - t0 };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { tag: { type: 'string' }, label: { type: 'string', multiple: true }, json: { type: 'boolean' } } });
  mkdirSync(cacheDir, { recursive: true });
  buildImage({ tag: values.tag, labels: values.label ?? [] }).then(
    (r) => {
      if (values.json) process.stdout.write(`${JSON.stringify(r)}\n`);
    },
    (e) => {
      process.stderr.write(`image: ${e.message}\n`);
      process.exit(1);
    },
  );
}
