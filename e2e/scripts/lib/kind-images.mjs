// Container images for the kind toolchain, all made on this machine (nothing is ever pulled):
//   - Debian root filesystems from mmdebstrap, turned into images with `docker import`;
//   - one small image per component kubeadm and kind need, under the exact names kubeadm expects;
//   - the node image: kind's base-image files, Debian's containerd/runc/CNI plugins, the Kubernetes
//     binaries, and every component image preloaded into the node's containerd.
// Each image also carries a tag made from a hash of its inputs; an image whose tag exists is not rebuilt
// (Docker's image store outlives .cache/).
import { mkdirSync, rmSync, writeFileSync, linkSync, copyFileSync, readFileSync, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { log, runTool, hashInputs, repoRoot } from './build-util.mjs';
import { DOCKER, docker, imageExists } from './dockerd.mjs';

export const RECIPE = 1;
// Bumped when the way images are preloaded into the node changes (only the node image is rebuilt).
const PRELOAD = 2;
const SUITE = 'bookworm';
const MIRRORS = [
  `deb http://deb.debian.org/debian ${SUITE} main`,
  `deb http://deb.debian.org/debian ${SUITE}-updates main`,
  `deb http://deb.debian.org/debian-security ${SUITE}-security main`,
];
// What kind's images/base Dockerfile installs, minus NFS/iSCSI clients and fuse-overlayfs (rootless only),
// plus containerd, runc and the CNI plugins from Debian (kind builds those from source) and e2fsprogs
// for the storage tests.
const NODE_PACKAGES = [
  'systemd', 'systemd-sysv', 'dbus', 'conntrack', 'iptables', 'nftables', 'iproute2', 'ethtool', 'util-linux', 'mount',
  'kmod', 'libseccomp2', 'pigz', 'bash', 'ca-certificates', 'curl', 'jq', 'procps', 'containerd', 'runc',
  'containernetworking-plugins', 'e2fsprogs',
];
// For kube-proxy (iptables, conntrack) and the pod-network agent (ip).
const NET_PACKAGES = ['iptables', 'iproute2', 'conntrack'];
const DPKG_EXCLUDES = ['/usr/share/doc/*', '/usr/share/man/*', '/usr/share/locale/*', '/usr/share/info/*'];

const kindDir = join(repoRoot, 'e2e', 'kind');
// every shadowset.local tag this run made or found current; the others are stale (see pruneStale)
const current = new Set();

function place(src, dst) {
  rmSync(dst, { force: true });
  try {
    linkSync(src, dst);
  } catch {
    copyFileSync(src, dst);
  }
}

/** A Debian root filesystem made by mmdebstrap and imported as an image; `hook` customizes the tree. */
export async function debianImage(work, { name, variant, packages, hook, changes }) {
  const key = hashInputs([`recipe ${RECIPE}`, SUITE, variant, ...MIRRORS, ...packages, ...DPKG_EXCLUDES, ...changes, ...(hook?.essential ? [hook.essential] : []), ...(hook?.inputs ?? [])]);
  const tag = `shadowset.local/${name}:${key}`;
  current.add(tag);
  if (imageExists(tag)) {
    log(`image ${tag}: present`);
    return { tag, key };
  }
  mkdirSync(work, { recursive: true });
  const tar = join(work, `${name}.tar`);
  const args = [`--variant=${variant}`, '--mode=root', '--format=tar', `--include=${packages.join(',')}`];
  for (const x of DPKG_EXCLUDES) args.push(`--dpkgopt=path-exclude=${x}`);
  if (hook?.essential) args.push(`--essential-hook=${hook.essential}`);
  if (hook) args.push(`--customize-hook=${hook.command}`);
  args.push(SUITE, tar, ...MIRRORS);
  log(`image ${tag}: mmdebstrap ${SUITE} (${packages.length} packages; downloads from Debian's mirror)`);
  await runTool('mmdebstrap', args, { what: `mmdebstrap ${name}`, timeoutMs: 30 * 60_000 });
  await runTool(DOCKER, ['import', ...changes.flatMap((c) => ['--change', c]), tar, tag], { what: `docker import ${name}` });
  rmSync(tar, { force: true });
  return { tag, key };
}

export function nodeBaseImage(work, kindFiles) {
  const script = join(kindDir, 'node-rootfs.sh');
  return debianImage(work, {
    name: 'kind-node-base',
    variant: 'minbase',
    packages: NODE_PACKAGES,
    hook: { command: `'${script}' "$1" '${kindFiles}'`, inputs: [{ path: script }, { path: kindFiles }] },
    // (docker import takes no STOPSIGNAL: the node image's Dockerfile sets it)
    changes: ['ENV container=docker', 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]'],
  });
}

export function netBaseImage(work) {
  return debianImage(work, {
    name: 'debian-net',
    variant: 'minbase',
    packages: NET_PACKAGES,
    hook: {
      command: `rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*`,
      inputs: [],
    },
    changes: ['ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
  });
}

/**
 * Builds one image from a generated Dockerfile and files: `files` maps context names to host paths.
 * `tags` are the names it must carry (e.g. registry.k8s.io/kube-apiserver:v1.34.12).
 */
export async function buildImage(work, { name, dockerfile, files, tags, inputs }) {
  const key = hashInputs([`recipe ${RECIPE}`, dockerfile, ...Object.keys(files), ...inputs]);
  const keyed = `shadowset.local/${name}:${key}`;
  current.add(keyed);
  for (const t of tags) if (t.startsWith('shadowset.local/')) current.add(t);
  if (!imageExists(keyed)) {
    const ctx = join(work, `ctx-${name}`);
    rmSync(ctx, { recursive: true, force: true });
    mkdirSync(ctx, { recursive: true });
    for (const [dst, src] of Object.entries(files)) {
      mkdirSync(join(ctx, dst, '..'), { recursive: true });
      place(src, join(ctx, dst));
    }
    writeFileSync(join(ctx, 'Dockerfile'), dockerfile);
    // --network none: nothing in an image build may reach out
    await runTool(DOCKER, ['build', '--network', 'none', '-q', '-t', keyed, ctx], { what: `docker build ${name}`, env: { ...process.env, DOCKER_BUILDKIT: '0' } });
    rmSync(ctx, { recursive: true, force: true });
  } else {
    log(`image ${keyed}: present`);
  }
  for (const t of tags) docker(['tag', keyed, t]);
  return { tag: keyed, key };
}

const scratchImage = (binary, entry) =>
  [
    'FROM scratch',
    `COPY ${binary} /usr/local/bin/${binary}`,
    'ENV PATH=/usr/local/bin',
    ...(entry ? [`ENTRYPOINT ["/usr/local/bin/${binary}"]`] : []),
    '',
  ].join('\n');

/**
 * The component images kubeadm lists, each from the binary built here. `bins` maps a component to
 * { path, key } (key: its build stamp, so a rebuilt binary makes a new image).
 */
export async function componentImages(work, { required, bins, netBase }) {
  const built = [];
  for (const ref of required) {
    const m = /^registry\.k8s\.io\/(?:coredns\/)?([\w-]+):(\S+)$/.exec(ref);
    const component = m?.[1];
    const bin = component && bins[component];
    if (!bin) throw new Error(`kubeadm wants ${ref}, which this build does not know how to make`);
    let spec;
    if (component === 'kube-proxy') {
      spec = {
        dockerfile: [
          `FROM ${netBase.tag}`,
          'COPY kube-proxy /usr/local/bin/kube-proxy.bin',
          'COPY kube-proxy-wrapper.sh /usr/local/bin/kube-proxy',
          '',
        ].join('\n'),
        files: { 'kube-proxy': bin.path, 'kube-proxy-wrapper.sh': join(kindDir, 'kube-proxy-wrapper.sh') },
        inputs: [netBase.key, { path: join(kindDir, 'kube-proxy-wrapper.sh') }],
      };
    } else {
      // coredns and pause are run by their image's entrypoint; the rest by the command kubeadm writes
      const entry = component === 'coredns' || component === 'pause';
      spec = { dockerfile: scratchImage(component, entry), files: { [component]: bin.path }, inputs: [] };
    }
    const img = await buildImage(work, { name: `kind-${component}`, ...spec, inputs: [...spec.inputs, bin.key], tags: [ref] });
    built.push({ ref, key: img.key });
  }
  return built;
}

/**
 * The node image: the base plus the Kubernetes node binaries, then every image preloaded into its containerd
 * (`ctr import --no-unpack`, as kind's own node-image build does, so no snapshotter is needed at build time).
 */
export async function nodeImage(work, { k8sVersion, base, nodeBins, crictl, containerdConfig, images, imageKeys }) {
  const dockerfile = [
    `FROM ${base.tag}`,
    // systemd stops cleanly on this signal (`docker stop` of a node)
    'STOPSIGNAL SIGRTMIN+3',
    'COPY bin/ /usr/bin/',
    'COPY crictl /usr/local/bin/crictl',
    'COPY kind/ /kind/',
    'COPY config.toml /etc/containerd/config.toml',
    '',
  ].join('\n');
  const files = { crictl: crictl.path, 'config.toml': containerdConfig.path };
  for (const [n, p] of Object.entries(nodeBins.paths)) files[`bin/${n}`] = p;
  const ctx = join(work, 'node-files');
  mkdirSync(join(ctx, 'manifests'), { recursive: true });
  writeFileSync(join(ctx, 'version'), `${k8sVersion}\n`);
  files['kind/version'] = join(ctx, 'version');
  files['kind/manifests/default-storage.yaml'] = join(kindDir, 'default-storage.yaml');
  const key = hashInputs([
    `recipe ${RECIPE}`, `preload ${PRELOAD}`, k8sVersion, base.key, nodeBins.key, crictl.key, dockerfile, ...imageKeys,
    { path: containerdConfig.path }, { path: join(kindDir, 'default-storage.yaml') },
  ]);
  const final = `shadowset.local/kind-node:${k8sVersion}-${key}`;
  current.add(final);
  current.add(`shadowset.local/kind-node:${k8sVersion}`);
  if (imageExists(final)) {
    log(`image ${final}: present`);
    return final;
  }
  const stage = await buildImage(work, { name: 'kind-node-stage', dockerfile, files, inputs: [key], tags: [] });
  const tar = join(work, 'images.tar');
  log(`saving ${images.length} component images for preloading`);
  await runTool(DOCKER, ['save', '-o', tar, ...images], { what: 'docker save' });
  const name = `shadowset-kind-build-${process.pid}`;
  docker(['rm', '-f', name], { allowFail: true });
  // --network none: the build container has no way out; containerd only needs to write its own state
  docker(['run', '-d', '--name', name, '--network', 'none', '--entrypoint', '/bin/sleep',
    '-v', `${tar}:/tmp/images.tar:ro`, stage.tag, '3600']);
  try {
    const script = [
      'set -e',
      'containerd >/tmp/containerd.log 2>&1 &',
      'pid=$!',
      'for i in $(seq 1 100); do [ -S /run/containerd/containerd.sock ] && ctr version >/dev/null 2>&1 && break; sleep 0.2; done',
      'ctr -n k8s.io images import --no-unpack --all-platforms /tmp/images.tar >/dev/null',
      // pinned: the kubelet's image garbage collection leaves them alone (ctr 1.6 cannot label at import)
      'for ref in $(ctr -n k8s.io images ls -q); do ctr -n k8s.io images label "$ref" io.cri-containerd.pinned=pinned >/dev/null; done',
      'ctr -n k8s.io images ls -q',
      'kill $pid; wait $pid || true',
      'rm -rf /run/containerd /tmp/containerd.log',
    ].join('\n');
    const r = docker(['exec', name, 'bash', '-c', script], { timeoutMs: 15 * 60_000 });
    const have = new Set(r.stdout.split('\n').map((l) => l.trim()));
    const missing = images.filter((i) => !have.has(i) && !have.has(`docker.io/${i}`));
    if (missing.length) throw new Error(`preloading left out ${missing.join(', ')}`);
    docker(['stop', '-t', '1', name]);
    docker(['commit', '--change', 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]', '--change', 'CMD []', name, final]);
  } finally {
    docker(['rm', '-f', '-v', name], { allowFail: true });
    rmSync(tar, { force: true });
  }
  log(`image ${final}: built (${Math.round(Number(docker(['image', 'inspect', '--format', '{{.Size}}', final]).stdout) / 1e6)} MB)`);
  return final;
}

/**
 * kind's containerd config, with two changes: the sandbox (pause) image kubeadm names instead of kind's
 * pinned one; and restrict_oom_score_adj on, because nothing on these machines holds CAP_SYS_RESOURCE, so
 * runc cannot give a container a lower OOM score than containerd's own (kind turns it on for rootless
 * nodes for the same reason). Pods keep their OOM scores relative to each other above that floor.
 */
export function containerdConfig(work, kindFiles, pauseRef) {
  const text = readFileSync(join(kindFiles, 'etc', 'containerd', 'config.toml'), 'utf8');
  for (const key of ['sandbox_image', 'restrict_oom_score_adj']) {
    if (!new RegExp(`^\\s*${key}\\s*=`, 'm').test(text)) throw new Error(`kind's containerd config has no ${key} line to set`);
  }
  const out = text
    .replace(/^(\s*sandbox_image\s*=\s*).*$/m, `$1"${pauseRef}"`)
    .replace(/^(\s*restrict_oom_score_adj\s*=\s*).*$/m, '$1true');
  mkdirSync(work, { recursive: true });
  const path = join(work, 'containerd-config.toml');
  if (!existsSync(path) || readFileSync(path, 'utf8') !== out) writeFileSync(path, out);
  return { path, size: statSync(path).size };
}

/**
 * Removes shadowset.local images left by earlier builds whose inputs have changed since. An image a
 * container still uses (a running cluster's node image) is kept: `docker rmi` without -f refuses it.
 */
export function pruneStale() {
  const all = docker(['images', '--format', '{{.Repository}}:{{.Tag}}', '--filter', 'reference=shadowset.local/*']).stdout.split('\n').filter(Boolean);
  const stale = all.filter((t) => !current.has(t) && !t.endsWith(':<none>'));
  for (const t of stale) docker(['rmi', t], { allowFail: true });
  if (stale.length) log(`removed ${stale.length} stale image tag(s) of earlier builds`);
}
