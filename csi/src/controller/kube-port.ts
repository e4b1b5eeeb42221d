/**
 * The part of the API server the controller uses: the operator's own client (operator/src/kube) fits it
 * as it is, and the unit tests give it an in-memory fake.
 */
import type { Obj, Resource } from '@shadowset/operator/kube';

export interface KubePort {
  get<T extends Obj = Obj>(r: Resource, namespace: string | undefined, name: string): Promise<T | null>;
  list<T extends Obj = Obj>(r: Resource, namespace?: string, labelSelector?: string): Promise<{ items: T[] }>;
  create<T extends Obj = Obj>(r: Resource, namespace: string | undefined, body: unknown): Promise<T>;
  /** false when it was not there. */
  delete(r: Resource, namespace: string | undefined, name: string, body?: unknown): Promise<boolean>;
  /** A JSON merge patch (RFC 7386) of the object. */
  mergePatch<T extends Obj = Obj>(r: Resource, namespace: string | undefined, name: string, patch: unknown): Promise<T>;
}

export const RES = {
  shadowsets: { group: 'shadowset.dev', version: 'v1alpha1', plural: 'shadowsets', namespaced: true },
  pvcs: { group: '', version: 'v1', plural: 'persistentvolumeclaims', namespaced: true },
  nodes: { group: '', version: 'v1', plural: 'nodes', namespaced: false },
  pvs: { group: '', version: 'v1', plural: 'persistentvolumes', namespaced: false },
  volumeattachments: { group: 'storage.k8s.io', version: 'v1', plural: 'volumeattachments', namespaced: false },
  storageclasses: { group: 'storage.k8s.io', version: 'v1', plural: 'storageclasses', namespaced: false },
} satisfies Record<string, Resource>;
