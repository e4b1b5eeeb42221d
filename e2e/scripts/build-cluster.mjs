#!/usr/bin/env node
// Builds the clusters the tests run on, from Go modules and Debian packages, caching under .cache/cluster/
// at the repo root. A no-op when the cache is current. See e2e/README.md for what is built and why.
//
// Usage: node e2e/scripts/build-cluster.mjs [--kind] [--json]
//   (default) kube-apiserver and etcd for the local control plane (the simulator tier)
//   --kind    also the kind toolchain: kind, kubectl, the component images and the kind node image
//   --json    print the results' paths and names on stdout when done (progress goes to stderr)
// Environment: SHADOWSET_K8S_VERSION, SHADOWSET_ETCD_VERSION override the pinned versions.
import { join } from 'node:path';
import { cacheRoot, elapsed, goVersion, log, secs, withLock } from './lib/build-util.mjs';
import { buildEtcd, buildKubernetes } from './lib/go-builds.mjs';
import { buildKind } from './lib/kind-build.mjs';

// 1.34 is what users' kubectl talks to; v1.34.12 is the newest 1.34 patch the module proxy serves.
const K8S_VERSION = process.env.SHADOWSET_K8S_VERSION ?? 'v1.34.12';
// Kubernetes 1.34 is tested against etcd 3.6; Debian's 3.4 is too old for it.
const ETCD_VERSION = process.env.SHADOWSET_ETCD_VERSION ?? 'v3.6.16';

const jsonOut = process.argv.includes('--json');
const kind = process.argv.includes('--kind');

async function main() {
  const gover = goVersion();
  const result = await withLock(async () => {
    log(`using ${gover}; cache ${cacheRoot}`);
    // Only what the simulator tier needs: the node simulator stands in for kubelet and binds pods itself.
    const k8sDir = await buildKubernetes(gover, { version: K8S_VERSION, commands: ['kube-apiserver'], dirName: 'kubernetes' });
    const etcdDir = await buildEtcd(gover, ETCD_VERSION);
    const out = {
      kubernetesVersion: K8S_VERSION,
      etcdVersion: ETCD_VERSION,
      kubeApiserver: join(k8sDir, 'bin', 'kube-apiserver'),
      etcd: join(etcdDir, 'bin', 'etcd'),
    };
    if (kind) out.kind = await buildKind(gover, { k8sVersion: K8S_VERSION, kubeApiserver: out.kubeApiserver });
    return out;
  });
  log(`done in ${secs(elapsed())}`);
  if (jsonOut) process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((err) => {
  log(`FAILED: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
