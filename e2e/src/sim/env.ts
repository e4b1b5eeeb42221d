// A container's environment, resolved the way kubelet does for the fields tests need: literal values,
// $(VAR) references to earlier variables, downward-API fieldRefs, and configMap/secret keys.
import type { CoreV1Api, V1Container, V1Pod } from '@kubernetes/client-node';
import { ContainerConfigError } from './volumes.js';

/** Expands $(NAME) from vars; $$ escapes a dollar; unknown references stay as written (as in Kubernetes). */
export function expandVars(s: string, vars: Readonly<Record<string, string>>): string {
  return s.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (all, name: string | undefined) => {
    if (all === '$$') return '$';
    return name !== undefined && Object.prototype.hasOwnProperty.call(vars, name) ? (vars[name] ?? '') : all;
  });
}

function fieldRef(pod: V1Pod, path: string): string {
  const meta = pod.metadata ?? {};
  const sub = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(path);
  if (sub) {
    const map = sub[1] === 'labels' ? meta.labels : meta.annotations;
    return map?.[sub[2] ?? ''] ?? '';
  }
  switch (path) {
    case 'metadata.name':
      return meta.name ?? '';
    case 'metadata.namespace':
      return meta.namespace ?? '';
    case 'metadata.uid':
      return meta.uid ?? '';
    case 'spec.nodeName':
      return pod.spec?.nodeName ?? '';
    case 'spec.serviceAccountName':
      return pod.spec?.serviceAccountName ?? '';
    case 'status.podIP':
    case 'status.podIPs':
      return pod.status?.podIP ?? '';
    case 'status.hostIP':
    case 'status.hostIPs':
      return pod.status?.hostIP ?? '';
    default:
      throw new ContainerConfigError('CreateContainerConfigError', `unsupported fieldRef ${path}`);
  }
}

async function keyOf(core: CoreV1Api, kind: 'configMap' | 'secret', namespace: string, name: string,
  key: string | undefined, optional: boolean): Promise<Record<string, string> | string | undefined> {
  let data: Record<string, string> = {};
  try {
    if (kind === 'configMap') {
      data = (await core.readNamespacedConfigMap({ name, namespace })).data ?? {};
    } else {
      const raw = (await core.readNamespacedSecret({ name, namespace })).data ?? {};
      data = Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));
    }
  } catch {
    if (optional) return undefined;
    throw new ContainerConfigError('CreateContainerConfigError', `${kind} "${name}" not found`);
  }
  if (key === undefined) return data;
  if (!(key in data)) {
    if (optional) return undefined;
    throw new ContainerConfigError('CreateContainerConfigError', `couldn't find key ${key} in ${kind} ${namespace}/${name}`);
  }
  return data[key];
}

/** The container's env as a plain object, pod's status fields taken from `pod` (podIP must be set). */
export async function containerEnv(core: CoreV1Api, pod: V1Pod, c: V1Container): Promise<Record<string, string>> {
  const namespace = pod.metadata?.namespace ?? 'default';
  const env: Record<string, string> = {};
  for (const from of c.envFrom ?? []) {
    const ref = from.configMapRef ?? from.secretRef;
    if (!ref?.name) continue;
    const kind = from.configMapRef ? 'configMap' : 'secret';
    const data = await keyOf(core, kind, namespace, ref.name, undefined, ref.optional ?? false);
    if (data && typeof data === 'object') for (const [k, v] of Object.entries(data)) env[`${from.prefix ?? ''}${k}`] = v;
  }
  for (const e of c.env ?? []) {
    if (e.valueFrom?.fieldRef) {
      env[e.name] = fieldRef(pod, e.valueFrom.fieldRef.fieldPath);
    } else if (e.valueFrom?.configMapKeyRef || e.valueFrom?.secretKeyRef) {
      const cm = e.valueFrom.configMapKeyRef;
      const ref = cm ?? e.valueFrom.secretKeyRef;
      if (!ref?.name) continue;
      const v = await keyOf(core, cm ? 'configMap' : 'secret', namespace, ref.name, ref.key, ref.optional ?? false);
      if (typeof v === 'string') env[e.name] = v;
    } else if (e.valueFrom) {
      throw new ContainerConfigError('CreateContainerConfigError', `env ${e.name}: unsupported valueFrom`);
    } else {
      env[e.name] = expandVars(e.value ?? '', env);
    }
  }
  return env;
}
