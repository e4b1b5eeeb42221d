/** An in-memory API server for the controller's unit tests. */
import { OperatorError, pathOf, type Obj, type Resource } from '@shadowset/operator/kube';
import type { KubePort } from '../controller/kube-port.js';

/** RFC 7386: objects merge key by key, null deletes, anything else replaces. */
function mergeInto(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return structuredClone(patch);
  const out: Record<string, unknown> = target !== null && typeof target === 'object' && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [k, v] of Object.entries(patch as Record<string, unknown>)) {
    if (v === null) delete out[k];
    else out[k] = mergeInto(out[k], v);
  }
  return out;
}

/** The API server as a map: creates conflict, deletes of objects with finalizers only mark them. */
export class FakeKube implements KubePort {
  readonly objects = new Map<string, Obj>();
  private uid = 0;
  key = (r: Resource, ns: string | undefined, name: string) => pathOf(r, ns, name);
  async get<T extends Obj = Obj>(r: Resource, ns: string | undefined, name: string): Promise<T | null> {
    const o = this.objects.get(this.key(r, ns, name));
    return o ? (structuredClone(o) as T) : null;
  }
  async list<T extends Obj = Obj>(r: Resource, ns?: string, selector?: string): Promise<{ items: T[] }> {
    const want = (selector ?? '').split(',').filter(Boolean).map((kv) => kv.split('=') as [string, string]);
    const prefix = pathOf(r, ns) + '/';
    const items = [...this.objects.entries()].filter(([k, o]) => k.startsWith(prefix) && want.every(([k2, v]) => o.metadata.labels?.[k2] === v));
    return { items: items.map(([, o]) => structuredClone(o) as T) };
  }
  async create<T extends Obj = Obj>(r: Resource, ns: string | undefined, body: unknown): Promise<T> {
    const o = structuredClone(body) as Obj;
    const k = this.key(r, ns, o.metadata.name);
    if (this.objects.has(k)) throw new OperatorError('OP_CONFLICT', `${k} exists`, 409);
    o.metadata.uid = `uid-${++this.uid}`;
    this.objects.set(k, o);
    return structuredClone(o) as T;
  }
  async delete(r: Resource, ns: string | undefined, name: string): Promise<boolean> {
    const k = this.key(r, ns, name);
    const o = this.objects.get(k);
    if (!o) return false;
    if (o.metadata.finalizers?.length) o.metadata.deletionTimestamp = 'now';
    else this.objects.delete(k);
    return true;
  }
  async mergePatch<T extends Obj = Obj>(r: Resource, ns: string | undefined, name: string, patch: unknown): Promise<T> {
    const k = this.key(r, ns, name);
    const o = this.objects.get(k);
    if (!o) throw new OperatorError('OP_NOT_FOUND', `${k} not found`, 404);
    const merged = mergeInto(o, patch) as Obj;
    this.objects.set(k, merged);
    this.patches.push({ key: k, patch: structuredClone(patch) });
    return structuredClone(merged) as T;
  }
  /** Every merge patch made, in order. */
  readonly patches: { key: string; patch: unknown }[] = [];
  put(r: Resource, ns: string | undefined, o: Obj): void {
    this.objects.set(this.key(r, ns, o.metadata.name), o);
  }
  count(r: Resource): number {
    return [...this.objects.keys()].filter((k) => k.includes(`/${r.plural}/`)).length;
  }
}

