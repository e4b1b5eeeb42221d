/**
 * When the engine pod itself must be replaced: its configuration (image, export, engine placement and
 * resources) is not what the spec asks for, or the engine does not serve and the member arguments it was
 * started with no longer match the world (a member server moved, a claim is no longer the member's).
 * Deleting the pod stops the engine with SIGTERM, a clean stop: members keep clean metadata, copies resume
 * from their checkpoints in the new pod.
 */
import type { MemberSpec, ShadowSetSpec } from '../api/shadowset.js';
import { configChanges, configHash, type EngineConfig } from './engine-config.js';
import { DEVICE_DIR, memberServerIp } from './pods.js';
import type { Observed } from './types.js';

/** How long an engine may not serve before stale arguments are taken as the reason. */
export const STALE_AFTER_MS = 30_000;

export function replaceReason(o: Observed, spec: ShadowSetSpec, wanted: EngineConfig, claimNode: (m: MemberSpec) => string | null): string | null {
  const pod = o.enginePod;
  if (!pod || pod.deleting) return null;
  if (pod.configHash !== configHash(wanted)) return `configuration changed: ${configChanges(pod.config, wanted)}`;
  if (o.engine.kind === 'ok') return null;
  // A refusal is final for these arguments; anything else (starting, crash loop, no answer) gets a while.
  const down = (o.engine.kind === 'refused' && o.engine.code !== 'ENG_UNAUTHORIZED') || (o.engineDownSinceMs !== null && o.nowMs - o.engineDownSinceMs >= STALE_AFTER_MS);
  if (!down) return null;
  const stale = staleArguments(o, spec, claimNode);
  return stale ? `engine not serving and its member arguments are stale: ${stale}` : null;
}

/** The first member argument of the engine pod that no longer matches the world, or null. */
export function staleArguments(o: Observed, spec: ShadowSetSpec, claimNode: (m: MemberSpec) => string | null): string | null {
  const pod = o.enginePod;
  if (!pod) return null;
  const active = new Map(spec.members.filter((m) => m.state === 'Active').map((m) => [m.name, m]));
  for (const [name, claim] of Object.entries(pod.claims)) {
    const m = active.get(name);
    if (!m || m.claimName !== claim) return `claim ${claim} is attached as member ${name}, which is not an active member with that claim now`;
    const node = claimNode(m);
    if (node && pod.node && node !== pod.node) return `member ${name}: the volume of claim ${claim} is on node ${node}, the engine pod on ${pod.node}`;
  }
  const serverIps = new Set(Object.entries(o.memberServers).filter(([name]) => active.has(name)).map(([, p]) => p.podIP));
  const uris = new Set([...active.values()].map((m) => m.nbd));
  for (const loc of pod.memberLocations) {
    if (loc.startsWith(`${DEVICE_DIR}/`) || uris.has(loc)) continue;
    const ip = memberServerIp(loc);
    if (ip && serverIps.has(ip)) continue;
    return `member location ${loc} is no member server or NBD member of the spec now`;
  }
  return null;
}
