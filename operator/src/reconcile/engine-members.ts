/**
 * Which of the engine's members is which member of the spec. The planner (what to ask of the engine) and
 * the status (what to report of each member) both need it; here, neither has to import the other.
 */
import type { EngineStatus } from '@shadowset/engine/api';
import type { MemberSpec } from '../api/shadowset.js';
import { DEVICE_DIR, memberServerUri } from './pods.js';
import type { Observed } from './types.js';

export type EngineMember = EngineStatus['members'][number];

/** Find the engine's record of a spec member: by the id status remembers, else by where it is attached. */
export function engineMemberFor(m: MemberSpec, o: Observed, eng: EngineStatus): EngineMember | undefined {
  const id = o.previous.members?.find((x) => x.name === m.name)?.id;
  if (id) {
    const byId = eng.members.find((e) => e.id === id);
    if (byId) return byId;
  }
  if (m.nbd) return eng.members.find((e) => e.path === m.nbd);
  const ms = o.memberServers[m.name];
  return eng.members.find((e) => e.path.endsWith(`${DEVICE_DIR}/${m.name}`) || (ms?.podIP !== undefined && e.path === memberServerUri(ms.podIP)));
}
