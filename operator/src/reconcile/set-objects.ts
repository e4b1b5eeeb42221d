/**
 * The objects a set has besides its pods (plain objects): the export Service, the NetworkPolicy that
 * admits only what each port is for, and the two Secrets holding the set's derived keys.
 */
import { API_VERSION, ROLE_LABEL, SET_LABEL } from '../api/group.js';
import { RESERVED_PORTS, type ShadowSetSpec } from '../api/shadowset.js';
import type { SetKeys } from '../security/keys.js';
import { canonical } from './engine-config.js';

export interface Owner {
  name: string;
  namespace: string;
  uid: string;
}

/** Where the operator's own pods are: the engine's HTTP API admits only them. */
export interface OperatorPods {
  namespace: string;
  labels: Record<string, string>;
}

export const internalSecretName = (set: string) => `${set}-shadowset-internal`;
export const exportSecretName = (set: string) => `${set}-shadowset-export`;
export const networkPolicyName = (set: string) => `${set}-shadowset`;
/** Keys of the internal Secret (mounted into the engine and, the PSK only, member servers). */
export const INTERNAL_KEYS = { token: 'control-token', memberPsk: 'member.psk' } as const;

export function ownerRef(o: Owner) {
  return [{ apiVersion: API_VERSION, kind: 'ShadowSet', name: o.name, uid: o.uid, controller: true, blockOwnerDeletion: true }];
}

const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');

/** The set's Secrets: created once (an existing one is left as is), never read back by the operator. */
export function setSecrets(o: Owner, keys: SetKeys): Record<string, unknown>[] {
  const secret = (name: string, data: Record<string, string>, purpose: string) => ({
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'Opaque',
    metadata: { name, namespace: o.namespace, labels: { [SET_LABEL]: o.name }, annotations: { 'shadowset.dev/purpose': purpose }, ownerReferences: ownerRef(o) },
    data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, b64(v)])),
  });
  return [
    secret(internalSecretName(o.name), { [INTERNAL_KEYS.token]: keys.controlToken, [INTERNAL_KEYS.memberPsk]: `${keys.memberPsk}\n` },
      'the engine\'s control token and the member servers\' PSK; for the set\'s own pods only'),
    secret(exportSecretName(o.name), { psk: `${keys.exportPsk}\n` }, 'the PSK (identity:hexkey) of the NBD export, for the set\'s consumers'),
  ];
}

export function exportService(o: Owner, spec: ShadowSetSpec): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: o.name, namespace: o.namespace, labels: { [SET_LABEL]: o.name }, ownerReferences: ownerRef(o) },
    spec: {
      type: spec.export.serviceType,
      selector: { [SET_LABEL]: o.name, [ROLE_LABEL]: 'engine' },
      ports: [{ name: 'nbd', port: spec.export.port, targetPort: spec.export.port, protocol: 'TCP' }],
    },
  };
}

/**
 * Ingress to the set's pods: the engine's HTTP API from the operator's pods only, the member servers' port
 * from the set's engine only, the export from anywhere (it is authenticated by TLS).
 */
export function networkPolicy(o: Owner, spec: ShadowSetSpec, op: OperatorPods): Record<string, unknown> {
  const operatorPeer = {
    namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': op.namespace } },
    ...(Object.keys(op.labels).length > 0 ? { podSelector: { matchLabels: op.labels } } : {}),
  };
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { name: networkPolicyName(o.name), namespace: o.namespace, labels: { [SET_LABEL]: o.name }, ownerReferences: ownerRef(o) },
    spec: {
      podSelector: { matchLabels: { [SET_LABEL]: o.name } },
      policyTypes: ['Ingress'],
      ingress: [
        { from: [operatorPeer], ports: [{ protocol: 'TCP', port: RESERVED_PORTS.http }] },
        { from: [{ podSelector: { matchLabels: { [SET_LABEL]: o.name, [ROLE_LABEL]: 'engine' } } }], ports: [{ protocol: 'TCP', port: RESERVED_PORTS.member }] },
        { ports: [{ protocol: 'TCP', port: spec.export.port }] },
      ],
    },
  };
}

/** What of a NetworkPolicy the planner compares: its whole spec, keys sorted (peers, labels and ports). */
export function policyFingerprint(policy: { spec?: unknown } | null): string {
  return canonical(policy?.spec ?? null);
}
