/** Observed worlds for the planner's unit tests (plain data; no cluster). */
import type { EngineStatus, MemberState } from '@shadowset/engine/api';
import { shadowSetSpecSchema, type ShadowSetSpec } from '../api/shadowset.js';
import { deriveSetKeys } from '../security/keys.js';
import { configHash, engineConfig } from './engine-config.js';
import { networkPolicy, policyFingerprint } from './set-objects.js';
import type { Action, Observed, PodInfo } from './types.js';

export const spec = (members: object[], extra: object = {}) => shadowSetSpecSchema.parse({ members, ...extra });
export const claim = (name: string, node: string | null = 'n1', extra = {}) => ({ name, exists: true, volumeMode: 'Block', bound: true, pvName: `pv-${name}`, node, ...extra });
export const pod = (name: string, attached: string[], ip = '127.11.0.2', extra: Partial<PodInfo> = {}): PodInfo => ({
  name, phase: 'Running', ready: true, podIP: ip, node: 'n1', deleting: false, attached, restarts: 0, createdMs: 0,
  memberLocations: attached.map((m) => `/dev/shadow/${m}`), claims: Object.fromEntries(attached.map((m) => [m, `c${m}`])), ...extra,
});

export function engine(members: { id: string; path: string; state: MemberState; reason?: string }[], extra: Partial<EngineStatus> = {}): EngineStatus {
  return {
    setId: 's', size: 1 << 30, chunkSize: 65536, generation: 3, state: 'Steady', memberTimeoutSeconds: 120,
    members: members.map((m) => ({ readCost: 1, site: '', queueDepth: 0, reason: '', progress: null,
      counters: { reads: 0, writes: 0, readBytes: 0, writeBytes: 0, flushes: 0, errors: 0, repairs: 0, timeouts: 0 }, ...m })),
    recovery: { mode: null, source: null, targets: [], bytesTotal: 0, bytesDone: 0, bytesPerSecond: 0, etaSeconds: null },
    bitmaps: [], intentLog: { dirtyChunks: 0, enabled: true, persists: 0, pages: 0, persistMs: 0, cleared: 0, capChunks: 16384, evictions: 0, evicted: 0 },
    settings: { copySource: null, copyBytesPerSecond: 0, mergeBytesPerSecond: 0, maxCopies: 4, minicopyPolicy: 'Optional' },
    export: { name: 'shadow', socket: null, tcp: null }, nbd: { connections: 0, connectionsTotal: 0, requests: {}, errors: 0, rejected: 0 },
    ...extra,
  };
}

/**
 * A world with defaults filled in. An engine pod given without a configuration hash gets the one the spec
 * asks for, and the Service is as the spec wants it, so only what a test sets differs.
 */
export function observed(o: Partial<Observed>): Observed {
  const base: Observed = {
    name: 'vol', namespace: 'ns', uid: 'u1', generation: 1, deleting: false,
    spec: spec([{ name: 'a', claimName: 'ca' }, { name: 'b', claimName: 'cb' }]),
    claims: { ca: claim('ca'), cb: claim('cb') }, enginePod: null, memberServers: {}, engine: { kind: 'none' },
    bitmapCrs: [], previous: {}, engineImage: 'img:1', defaults: { memberTimeoutSeconds: 120, maxCopies: 4 }, now: '2026-01-01T00:00:00Z', nowMs: 1_000_000, lastReturnAttempt: {},
    hookPods: {}, nodeZones: {}, nodesDown: {}, service: null, engineDownSinceMs: null, refusals: {}, networkPolicyFingerprint: null,
    attachments: [], unitSocketDir: null, madeByDriver: false,
    keys: deriveSetKeys(Buffer.alloc(32, 7), { namespace: 'ns', name: 'vol', uid: 'u1' }), operatorPods: { namespace: 'shadowset-system', labels: { app: 'op' } },
    ...o,
  };
  const s = 'invalid' in base.spec ? null : (base.spec as ShadowSetSpec);
  if (s && base.enginePod && base.enginePod.configHash === undefined) base.enginePod = { ...base.enginePod, configHash: configHash(engineConfig(s, base.engineImage)) };
  if (s && !('service' in o)) base.service = { type: s.export.serviceType, port: s.export.port };
  // With an engine pod, the NetworkPolicy is there as the spec wants it, unless the test says otherwise.
  if (s && base.enginePod && !('networkPolicyFingerprint' in o)) base.networkPolicyFingerprint = policyFingerprint(networkPolicy(base, s, base.operatorPods) as never);
  return base;
}

export const kinds = (a: Action[]) => a.filter((x) => x.kind !== 'event').map((x) => x.kind);
export const events = (a: Action[]) => a.filter((x): x is Extract<Action, { kind: 'event' }> => x.kind === 'event');
export const argsOf = (a: Action[]): string[] =>
  ((a.find((x) => x.kind === 'createEnginePod') as Extract<Action, { kind: 'createEnginePod' }>).pod as { spec: { containers: { args: string[] }[] } }).spec.containers[0]!.args;
