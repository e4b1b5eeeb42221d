// Helpers for the CSI stories on kind: claims and consumer pods of a shadowset class, what a pod printed, a
// set's member volumes (the harness's local PVs) and where its engine runs. Kept apart from the scenarios so
// each story file reads as the story.
import { waitFor } from '@shadowset/e2e';
import type { BlockVolume } from '../env/cluster-env.js';
import type { KindEnv } from '../env/kind-env.js';
import { MiB } from './shadowset.js';

export interface Obj { metadata: { name: string; namespace?: string; uid?: string; labels?: Record<string, string>; creationTimestamp?: string }; spec?: Record<string, unknown>; status?: Record<string, unknown> }
export type Mode = 'Block' | 'Filesystem';

export class CsiKind {
  constructor(private readonly env: KindEnv, readonly ns: string, readonly image: string) {}

  async json<T = Obj>(args: string[]): Promise<T> {
    return JSON.parse((await this.env.kubectl([...args, '-o', 'json'])).stdout) as T;
  }

  async items(args: string[]): Promise<Obj[]> {
    return (await this.json<{ items: Obj[] }>(args)).items;
  }

  /** A member class of static local PVs: `perNode[i]` PVs of `mib` MiB on worker i, offered now. */
  async memberClass(name: string, perNode: number[], mib: number): Promise<void> {
    await this.env.apply(`${name}.yaml`, JSON.stringify({
      apiVersion: 'storage.k8s.io/v1', kind: 'StorageClass', metadata: { name, labels: { 'shadowset.dev/e2e-stories': 'true' } },
      provisioner: 'kubernetes.io/no-provisioner', volumeBindingMode: 'Immediate', reclaimPolicy: 'Retain',
    }));
    for (const [i, node] of this.env.nodes.entries()) {
      for (let k = 0; k < (perNode[i] ?? 0); k++) await this.env.offerBlockVolume(node, `${name}-${i + 1}-${k + 1}`, mib, name);
    }
  }

  async shadowClass(name: string, binding: 'Immediate' | 'WaitForFirstConsumer', parameters: Record<string, string>, expandable = false): Promise<void> {
    await this.env.apply(`${name}.yaml`, JSON.stringify({
      apiVersion: 'storage.k8s.io/v1', kind: 'StorageClass', metadata: { name, labels: { 'shadowset.dev/e2e-stories': 'true' } }, provisioner: 'csi.shadowset.dev',
      volumeBindingMode: binding, reclaimPolicy: 'Delete', parameters, ...(expandable ? { allowVolumeExpansion: true } : {}),
    }));
  }

  async claim(name: string, sc: string, mode: Mode, mib: number): Promise<void> {
    await this.env.apply(`pvc-${name}.yaml`, JSON.stringify({
      apiVersion: 'v1', kind: 'PersistentVolumeClaim', metadata: { name, namespace: this.ns },
      spec: { accessModes: ['ReadWriteOnce'], volumeMode: mode, storageClassName: sc, resources: { requests: { storage: `${mib}Mi` } } },
    }));
  }

  async bound(claim: string, timeoutMs = 180_000): Promise<{ pv: string; set: string }> {
    const c = await waitFor(`claim ${claim} to bind`, async () => {
      const o = await this.json(['get', 'pvc', claim, '-n', this.ns]);
      return (o.status as { phase?: string }).phase === 'Bound' ? o : undefined;
    }, { timeoutMs, intervalMs: 1000 });
    const pv = (c.spec as { volumeName: string }).volumeName;
    const handle = (await this.json<{ spec: { csi: { volumeHandle: string } } }>(['get', 'pv', pv])).spec.csi.volumeHandle;
    return { pv, set: handle.split('/')[1]! };
  }

  /** A pod on `node` running `script` with the claim at /dev/xvda (Block) or /data (Filesystem). */
  async pod(name: string, claim: string, mode: Mode, node: string, script: string, env: Record<string, string> = {}): Promise<void> {
    await this.env.apply(`pod-${name}.yaml`, JSON.stringify({
      apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: this.ns },
      spec: {
        nodeSelector: { 'kubernetes.io/hostname': node }, restartPolicy: 'Never', terminationGracePeriodSeconds: 5,
        containers: [{
          name: 'app', image: this.image, imagePullPolicy: 'Never', command: ['sh', '-c', script],
          env: Object.entries(env).map(([k, value]) => ({ name: k, value })),
          ...(mode === 'Block' ? { volumeDevices: [{ name: 'data', devicePath: '/dev/xvda' }] } : { volumeMounts: [{ name: 'data', mountPath: '/data' }] }),
        }],
        volumes: [{ name: 'data', persistentVolumeClaim: { claimName: claim } }],
      },
    }));
  }

  async podLog(name: string): Promise<string> {
    return this.env.logs(this.ns, name, 'app');
  }

  /** Waits until the pod's log matches `what`; a Failed pod fails the wait with its log. */
  said(name: string, what: RegExp, timeoutMs = 240_000): Promise<string> {
    return waitFor(`pod ${name} to print ${what}`, async () => {
      const pod = await this.json(['get', 'pod', name, '-n', this.ns]);
      const out = await this.podLog(name);
      if ((pod.status as { phase?: string }).phase === 'Failed') throw new Error(`pod ${name} failed: ${out}`);
      return what.test(out) ? out : undefined;
    }, { timeoutMs, intervalMs: 1000 });
  }

  async deletePod(name: string): Promise<void> {
    await this.env.kubectl(['delete', 'pod', name, '-n', this.ns, '--wait=true', '--ignore-not-found']);
  }

  /** The set's member claims as the harness's block volumes (their local PVs), by member name. */
  async members(set: string, mib: number): Promise<Map<string, BlockVolume>> {
    const out = new Map<string, BlockVolume>();
    for (const m of await this.items(['get', 'pvc', '-n', this.ns, '-l', `csi.shadowset.dev/volume=${set}`])) {
      const pv = await this.json<{ spec: { local: { path: string }; nodeAffinity: { required: { nodeSelectorTerms: { matchExpressions: { values: string[] }[] }[] } } } }>(['get', 'pv', (m.spec as { volumeName: string }).volumeName]);
      const member = m.metadata.labels?.['csi.shadowset.dev/member'] ?? m.metadata.name.slice(set.length + 1);
      out.set(member, {
        namespace: this.ns, claim: m.metadata.name, node: pv.spec.nodeAffinity.required.nodeSelectorTerms[0]!.matchExpressions[0]!.values[0]!,
        sizeBytes: mib * MiB, devicePath: pv.spec.local.path,
      });
    }
    return out;
  }

  /** Waits for the set's engine pod on `node`, placed there by a VolumeAttachment. */
  placedOn(set: string, node: string, timeoutMs = 240_000): Promise<unknown> {
    return waitFor(`the engine of ${set} on ${node}`, async () => {
      const s = await this.json(['get', 'shadowset', set, '-n', this.ns]);
      const p = (s.status as { placement?: { node?: string; source?: string } } | undefined)?.placement;
      const engine = await this.env.get(this.ns, 'pods', `${set}-engine`) as { spec?: { nodeName?: string } } | null;
      return p?.node === node && p.source === 'VolumeAttachment' && engine?.spec?.nodeName === node ? p : undefined;
    }, { timeoutMs, intervalMs: 1000 });
  }

  async attachments(pv: string): Promise<Obj[]> {
    return (await this.items(['get', 'volumeattachments'])).filter((v) => (v.spec as { source?: { persistentVolumeName?: string } }).source?.persistentVolumeName === pv);
  }
}

export const sums = (out: string): string[] => [...out.matchAll(/^([0-9a-f]{64})\s/gm)].map((m) => m[1]!);
export const secs = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;
