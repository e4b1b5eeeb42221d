// The kind cluster a KindEnv works on. Either one that outlives the test process (the kind tier's runner,
// cli/kind-run.ts, makes one for every scenario file and names it in E2E_KIND_CLUSTER and
// E2E_KIND_KUBECONFIG), or one made here from the node image built on this machine and deleted again by
// close(). Either way close() undoes only what was made here. The cluster itself (internal Docker network,
// pod network, dockerd) is e2e/src/kind/cluster.ts.
import { spawnSync } from 'node:child_process';
import { dirname } from 'node:path';
import { createKindCluster, ensureKindToolchain, DOCKER, type KindCluster } from '@shadowset/e2e';
import { run } from '../support/exec.js';
import { detachSame, ensureLoopNodes, kubeletLoops } from './kind-loops.js';

export interface KindSession {
  readonly name: string;
  readonly kubeconfigPath: string;
  /** the kind CLI built here */
  readonly kind: string;
  /** the environment to run kind in (Debian's docker CLI first in PATH) */
  readonly kindEnv: NodeJS.ProcessEnv;
  loadImage(ref: string): Promise<void>;
  close(): Promise<void>;
}

/** Where a cluster keeps the backing files of the loop devices the harness makes inside its nodes. */
export const deviceDir = (cluster: string) => `/var/lib/shadowset-e2e/${cluster}`;

function kindEnv(): NodeJS.ProcessEnv {
  return { ...process.env, PATH: DOCKER.includes('/') ? `${dirname(DOCKER)}:${process.env.PATH ?? ''}` : process.env.PATH };
}

/**
 * Loop devices whose backing file is one of `cluster`'s (made inside its nodes, so still attached in this
 * machine's kernel when a node container went away without releasing them) are detached. Returns them.
 */
export function detachLeftLoops(cluster: string): string[] {
  const r = spawnSync('losetup', ['--list', '--json', '--output', 'NAME,BACK-FILE'], { encoding: 'utf8' });
  if (r.status !== 0 || !r.stdout.trim()) return [];
  // The path as this process sees it: a file of a node's /var (a volume of its own) that is gone reads
  // as /lib/…, so the cluster's part of the path is what is matched.
  const dir = `${deviceDir(cluster).replace(/^\/var/, '')}/`;
  const left = (JSON.parse(r.stdout) as { loopdevices: { name: string; 'back-file': string | null }[] }).loopdevices
    .filter((d) => (d['back-file'] ?? '').includes(dir))
    .map((d) => d.name);
  for (const dev of left) spawnSync('losetup', ['-d', dev], { stdio: 'ignore' });
  return left;
}

export async function openKindSession(o: { name: string; log?: (line: string) => void }): Promise<KindSession> {
  const env = kindEnv();
  const shared = process.env.E2E_KIND_KUBECONFIG;
  if (shared) {
    const tc = await ensureKindToolchain(o.log);
    const name = process.env.E2E_KIND_CLUSTER ?? o.name;
    return {
      name, kubeconfigPath: shared, kind: tc.kind, kindEnv: env,
      loadImage: async (ref) => void (await run(tc.kind, ['load', 'docker-image', '--name', name, ref], { env, timeoutMs: 600_000 })),
      close: async () => undefined,
    };
  }
  // A cluster of this name left by a run that was killed (kind delete is a no-op when there is none).
  const tc = await ensureKindToolchain(o.log);
  await run(tc.kind, ['delete', 'cluster', '--name', o.name], { env, allowFail: true, timeoutMs: 300_000 });
  detachLeftLoops(o.name);
  const c: KindCluster = await createKindCluster({ name: o.name, workers: 2, ...(o.log ? { log: o.log } : {}) });
  try {
    for (const node of c.nodes) ensureLoopNodes(node);
  } catch (e) {
    await c.delete();
    throw e;
  }
  return {
    name: c.name, kubeconfigPath: c.kubeconfigPath, kind: tc.kind, kindEnv: env,
    loadImage: (ref) => c.loadImage(ref),
    close: async () => {
      // The kubelets' loop devices, recorded while their nodes run: deleting a node does not detach them.
      const kubelets = c.nodes.flatMap((n) => kubeletLoops(n));
      try {
        await c.delete();
      } finally {
        detachSame(kubelets);
        detachLeftLoops(o.name);
      }
    },
  };
}
