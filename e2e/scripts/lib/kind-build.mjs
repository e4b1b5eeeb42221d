// The kind toolchain (`npm run cluster:build -- --kind`): kind and crictl from their Go modules, the
// Kubernetes node binaries, etcd and CoreDNS at the versions kubeadm names, this repo's pause and pod-network
// agent, the CSI driver's sidecars (csi-sidecars.mjs), then the images (see kind-images.mjs). Writes
// .cache/cluster/kind/build.json with what it made.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { cacheRoot, downloadModule, log } from './build-util.mjs';
import { buildSidecarBinaries, buildSidecarImages } from './csi-sidecars.mjs';
import { buildEtcd, buildKindTools, buildKubernetes, goInstall } from './go-builds.mjs';
import { ensureDebianPackages, ensureDockerd, DOCKER } from './dockerd.mjs';
import { postgresImage } from './pg-image.mjs';
import { buildImage, componentImages, containerdConfig, netBaseImage, nodeBaseImage, nodeImage, pruneStale } from './kind-images.mjs';

const KIND_VERSION = process.env.SHADOWSET_KIND_VERSION ?? 'v0.30.0';
// crictl follows the Kubernetes minor it is made for.
const CRICTL_VERSION = process.env.SHADOWSET_CRICTL_VERSION ?? 'v1.34.0';
const NODE_COMMANDS = ['kubelet', 'kubeadm', 'kubectl', 'kube-controller-manager', 'kube-scheduler', 'kube-proxy'];

const stampKey = (dir) => JSON.stringify(JSON.parse(readFileSync(join(dir, 'build.json'), 'utf8')).key);

export async function buildKind(gover, { k8sVersion, kubeApiserver }) {
  const work = join(cacheRoot, 'kind');
  mkdirSync(work, { recursive: true });
  ensureDebianPackages(['docker.io', 'mmdebstrap']);

  const nodeDir = await buildKubernetes(gover, { version: k8sVersion, commands: NODE_COMMANDS, dirName: 'kubernetes-node' });
  const nodeBin = (c) => join(nodeDir, 'bin', c);
  const kindBin = await goInstall(gover, { name: 'kind', pkg: 'sigs.k8s.io/kind', version: KIND_VERSION, binary: 'kind' });
  const crictl = await goInstall(gover, {
    name: 'crictl',
    pkg: 'sigs.k8s.io/cri-tools/cmd/crictl',
    version: CRICTL_VERSION,
    binary: 'crictl',
    ldflags: `-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${CRICTL_VERSION}`,
  });
  // kind's base-image files (entrypoint, systemd units, containerd config) come from the module itself.
  const kindMod = await downloadModule('sigs.k8s.io/kind', KIND_VERSION, dirname(dirname(kindBin)));
  const kindFiles = join(kindMod.Dir, 'images', 'base', 'files');

  // The images kubeadm will ask for, in its own words; etcd and CoreDNS are built at exactly those versions.
  const list = spawnSync(nodeBin('kubeadm'), ['config', 'images', 'list', `--kubernetes-version=${k8sVersion}`], { encoding: 'utf8', timeout: 60_000 });
  if (list.status !== 0) throw new Error(`kubeadm config images list failed: ${list.stderr}`);
  const required = list.stdout.split('\n').map((l) => l.trim()).filter(Boolean);
  const tagOf = (name) => {
    const ref = required.find((r) => r.includes(`/${name}:`));
    if (!ref) throw new Error(`kubeadm lists no ${name} image: ${required.join(', ')}`);
    return ref.slice(ref.lastIndexOf(':') + 1);
  };
  const etcdVersion = `v${tagOf('etcd').replace(/-\d+$/, '')}`;
  const etcdDir = await buildEtcd(gover, etcdVersion);
  const corednsVersion = tagOf('coredns');
  const coredns = await goInstall(gover, { name: 'coredns', pkg: 'github.com/coredns/coredns', version: corednsVersion, binary: 'coredns' });
  const tools = await buildKindTools(gover);
  const sidecars = await buildSidecarBinaries(gover);

  const bins = {
    'kube-apiserver': { path: kubeApiserver, key: stampKey(dirname(dirname(kubeApiserver))) },
    etcd: { path: join(etcdDir, 'bin', 'etcd'), key: stampKey(etcdDir) },
    coredns: { path: coredns, key: stampKey(dirname(dirname(coredns))) },
    pause: { path: join(tools.dir, 'bin', 'pause'), key: tools.key },
  };
  for (const c of ['kube-controller-manager', 'kube-scheduler', 'kube-proxy']) bins[c] = { path: nodeBin(c), key: stampKey(nodeDir) };

  const runcCaps = join(tools.dir, 'bin', 'runc-caps');
  const dockerd = await ensureDockerd(work, { runcCaps });
  let summary;
  try {
    log(`Docker engine ${dockerd.version}${dockerd.started ? ' (started for this build)' : ''}`);
    const netBase = await netBaseImage(work);
    const nodeBase = await nodeBaseImage(work, kindFiles);
    const components = await componentImages(work, { required, bins, netBase });
    const shadownetRef = `shadowset.local/shadownet:${tools.key}`;
    const shadownet = await buildImage(work, {
      name: 'kind-shadownet',
      dockerfile: `FROM ${netBase.tag}\nCOPY shadownet /usr/local/bin/shadownet\n`,
      files: { shadownet: join(tools.dir, 'bin', 'shadownet') },
      inputs: [netBase.key, tools.key],
      tags: [shadownetRef],
    });
    // Not preloaded into the node image: `kind load`ed with the project's image when the chart's CSI path is on.
    const csiSidecars = await buildSidecarImages(work, buildImage, sidecars);
    // Not preloaded either: the database consumer's image (pg-image.mjs), `kind load`ed by its scenario.
    const postgres = await postgresImage(work);
    const pauseRef = required.find((r) => r.includes('/pause:'));
    const images = [...required, shadownetRef];
    const nodeImageRef = await nodeImage(work, {
      k8sVersion,
      base: nodeBase,
      nodeBins: { paths: { kubelet: nodeBin('kubelet'), kubeadm: nodeBin('kubeadm'), kubectl: nodeBin('kubectl') }, key: stampKey(nodeDir) },
      crictl: { path: crictl, key: stampKey(dirname(dirname(crictl))) },
      containerdConfig: containerdConfig(work, kindFiles, pauseRef),
      images,
      imageKeys: [...components.map((c) => c.key), shadownet.key],
    });
    // A stable name for the newest node image of this Kubernetes version.
    const nodeImageAlias = `shadowset.local/kind-node:${k8sVersion}`;
    spawnSync(DOCKER, ['tag', nodeImageRef, nodeImageAlias]);
    summary = {
      kubernetesVersion: k8sVersion,
      kindVersion: KIND_VERSION,
      kind: kindBin,
      kubectl: nodeBin('kubectl'),
      docker: DOCKER,
      runcCaps,
      nodeImage: nodeImageRef,
      nodeImageAlias,
      netImage: shadownetRef,
      baseImage: netBase.tag,
      preloaded: images,
      csiSidecars,
      postgres,
      etcdVersion,
      corednsVersion,
    };
    writeFileSync(join(work, 'build.json'), JSON.stringify(summary, null, 2) + '\n');
    log(`kind node image ${nodeImageRef} (also ${nodeImageAlias}); kind ${kindBin}`);
    pruneStale();
  } finally {
    await dockerd.stop();
  }
  return summary;
}
