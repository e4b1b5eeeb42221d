/**
 * The operator's view of the API server: plain JSON objects, one request helper, and list+watch
 * informers. The only module that imports @kubernetes/client-node (besides raw.ts).
 */
import { KubeConfig, Watch } from '@kubernetes/client-node';
import { isOperatorError } from './errors.js';
import { rawRequest, serverSideApply } from './raw.js';

export type Obj = {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    generation?: number;
    creationTimestamp?: string;
    deletionTimestamp?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    finalizers?: string[];
    ownerReferences?: { apiVersion: string; kind: string; name: string; uid: string; controller?: boolean }[];
  };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
  [k: string]: unknown;
};

export interface Resource {
  group: string; // '' for core
  version: string;
  plural: string;
  namespaced: boolean;
}

export const R = {
  pods: { group: '', version: 'v1', plural: 'pods', namespaced: true },
  pvcs: { group: '', version: 'v1', plural: 'persistentvolumeclaims', namespaced: true },
  pvs: { group: '', version: 'v1', plural: 'persistentvolumes', namespaced: false },
  services: { group: '', version: 'v1', plural: 'services', namespaced: true },
  secrets: { group: '', version: 'v1', plural: 'secrets', namespaced: true },
  networkpolicies: { group: 'networking.k8s.io', version: 'v1', plural: 'networkpolicies', namespaced: true },
  events: { group: '', version: 'v1', plural: 'events', namespaced: true },
  nodes: { group: '', version: 'v1', plural: 'nodes', namespaced: false },
  volumeattachments: { group: 'storage.k8s.io', version: 'v1', plural: 'volumeattachments', namespaced: false },
  leases: { group: 'coordination.k8s.io', version: 'v1', plural: 'leases', namespaced: true },
  shadowsets: { group: 'shadowset.dev', version: 'v1alpha1', plural: 'shadowsets', namespaced: true },
  writebitmaps: { group: 'shadowset.dev', version: 'v1alpha1', plural: 'writebitmaps', namespaced: true },
} satisfies Record<string, Resource>;

export function pathOf(r: Resource, namespace?: string, name?: string): string {
  const base = r.group === '' ? `/api/${r.version}` : `/apis/${r.group}/${r.version}`;
  const ns = r.namespaced && namespace ? `/namespaces/${encodeURIComponent(namespace)}` : '';
  return `${base}${ns}/${r.plural}${name ? `/${encodeURIComponent(name)}` : ''}`;
}

export class Kube {
  constructor(readonly kc: KubeConfig) {}

  async get<T extends Obj = Obj>(r: Resource, namespace: string | undefined, name: string): Promise<T | null> {
    try {
      return await rawRequest<T>(this.kc, { method: 'GET', path: pathOf(r, namespace, name) });
    } catch (e) {
      if (isOperatorError(e, 'OP_NOT_FOUND')) return null;
      throw e;
    }
  }

  async list<T extends Obj = Obj>(r: Resource, namespace?: string, labelSelector?: string): Promise<{ items: T[]; resourceVersion: string }> {
    const res = await rawRequest<{ items: T[]; metadata: { resourceVersion: string } }>(this.kc, {
      method: 'GET', path: pathOf(r, namespace), query: labelSelector ? { labelSelector } : {},
    });
    return { items: res.items ?? [], resourceVersion: res.metadata.resourceVersion };
  }

  create<T extends Obj = Obj>(r: Resource, namespace: string | undefined, body: unknown): Promise<T> {
    return rawRequest<T>(this.kc, { method: 'POST', path: pathOf(r, namespace), body });
  }

  async delete(r: Resource, namespace: string | undefined, name: string, body?: unknown): Promise<boolean> {
    try {
      await rawRequest(this.kc, { method: 'DELETE', path: pathOf(r, namespace, name), body });
      return true;
    } catch (e) {
      if (isOperatorError(e, 'OP_NOT_FOUND')) return false;
      throw e;
    }
  }

  mergePatch<T extends Obj = Obj>(r: Resource, namespace: string | undefined, name: string, patch: unknown, subresource = ''): Promise<T> {
    return rawRequest<T>(this.kc, {
      method: 'PATCH', path: pathOf(r, namespace, name) + (subresource ? `/${subresource}` : ''), body: patch,
      contentType: 'application/merge-patch+json',
    });
  }

  apply<T extends Obj = Obj>(r: Resource, namespace: string | undefined, name: string, object: unknown, fieldManager: string, subresource = ''): Promise<T> {
    return serverSideApply<T>(this.kc, pathOf(r, namespace, name), object, fieldManager, subresource);
  }

  /** List then watch; calls `on` for every object seen (also the initial list) until `stop()`. */
  inform<T extends Obj = Obj>(r: Resource, namespace: string | undefined, on: (type: 'ADDED' | 'MODIFIED' | 'DELETED', obj: T) => void, onError: (e: unknown) => void): { stop: () => void } {
    let stopped = false;
    let abort: AbortController | null = null;
    const watch = new Watch(this.kc);
    const loop = async (): Promise<void> => {
      while (!stopped) {
        try {
          const { items, resourceVersion } = await this.list<T>(r, namespace);
          for (const o of items) on('ADDED', o);
          await new Promise<void>((resolve) => {
            void watch
              .watch(pathOf(r, namespace), { resourceVersion, allowWatchBookmarks: true }, (type, obj: T) => {
                if (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED') on(type, obj);
              }, () => resolve())
              .then((a) => {
                abort = a;
                if (stopped) a.abort();
              }, (e: unknown) => {
                onError(e);
                resolve();
              });
          });
        } catch (e) {
          onError(e);
        }
        if (!stopped) await new Promise((res) => setTimeout(res, 1000));
      }
    };
    void loop();
    return {
      stop: () => {
        stopped = true;
        abort?.abort();
      },
    };
  }
}

export { KubeConfig };
