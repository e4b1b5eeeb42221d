/**
 * The part of an engine pod that only a new pod can change: the image, the export (port, TLS) and where and
 * with what resources the engine runs. Its hash is an annotation on the pod; when the spec asks for another
 * one the operator restarts the engine cleanly instead of leaving the change unapplied. Settings the engine
 * takes through its API (throttles, member timeout, copy source, minicopy policy) and the Service type are
 * not in it: they change without a restart. The spec's NBD member URIs are: the engine's API may add only
 * the ones it was started with.
 */
import { createHash } from 'node:crypto';
import type { ShadowSetSpec } from '../api/shadowset.js';

export const CONFIG_HASH_ANNOTATION = 'shadowset.dev/config-hash';
export const CONFIG_ANNOTATION = 'shadowset.dev/config';

/** The spec's own NBD URIs: the only plain nbd:// locations the engine's API may name. */
export const allowedNbd = (spec: ShadowSetSpec): string[] => [...new Set(spec.members.flatMap((m) => (m.nbd ? [m.nbd] : [])))].sort();

export interface EngineConfig {
  image: string;
  'export.port': number;
  'export.tlsSecretName': string | null;
  'engine.nodeName': string | null;
  'engine.nodeSelector': Record<string, string> | null;
  'engine.resources': Record<string, unknown> | null;
  /** Only when set: engines made before the field existed keep their configuration's hash. */
  'engine.intentLogCapMiB'?: number;
  /** The spec's NBD URIs: the engine's API may add only these (plain nbd://), so a new one needs a new pod. */
  'members.nbd': string[];
  /**
   * The host directory where the engine serves the virtual unit for the CSI node plugin (a hostPath).
   * Only when set: engines without one keep their configuration's hash.
   */
  'unit.socketDir'?: string;
}

export function engineConfig(spec: ShadowSetSpec, image: string, unitSocketDir: string | null = null): EngineConfig {
  return {
    image,
    'export.port': spec.export.port,
    'export.tlsSecretName': spec.export.tlsSecretName ?? null,
    'engine.nodeName': spec.engine.nodeName ?? null,
    'engine.nodeSelector': spec.engine.nodeSelector ?? null,
    'engine.resources': spec.engine.resources ?? null,
    ...(spec.engine.intentLogCapMiB !== undefined ? { 'engine.intentLogCapMiB': spec.engine.intentLogCapMiB } : {}),
    'members.nbd': allowedNbd(spec),
    ...(unitSocketDir ? { 'unit.socketDir': unitSocketDir } : {}),
  };
}

/** JSON with object keys sorted, so equal configurations always serialize (and hash) alike. */
export function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(v ?? null);
}

export const configText = (c: EngineConfig): string => canonical(c);
/** The unit socket directory recorded in a pod's configuration annotation, or null. */
export function recordedUnitSocketDir(config: string | undefined): string | null {
  try {
    const v = config ? (JSON.parse(config) as Record<string, unknown>)['unit.socketDir'] : undefined;
    return typeof v === 'string' ? v : null;
  } catch {
    return null;
  }
}

export const configHash = (c: EngineConfig): string => createHash('sha256').update(canonical(c)).digest('hex').slice(0, 16);

/** Which settings differ between a running pod's configuration (its annotation) and the wanted one. */
export function configChanges(running: string | undefined, wanted: EngineConfig): string {
  let old: Record<string, unknown>;
  try {
    old = running ? (JSON.parse(running) as Record<string, unknown>) : {};
  } catch {
    old = {};
  }
  if (!running || Object.keys(old).length === 0) return 'the engine pod predates this operator\'s configuration record';
  const show = (v: unknown) => (v === null || v === undefined ? 'unset' : typeof v === 'string' || typeof v === 'number' ? String(v) : canonical(v));
  const changed = (Object.keys(wanted) as (keyof EngineConfig)[])
    .filter((k) => canonical(old[k] ?? null) !== canonical(wanted[k]))
    .map((k) => `${k} ${show(old[k])} → ${show(wanted[k])}`);
  return changed.length > 0 ? changed.join(', ') : 'its configuration record differs';
}
