/**
 * Bringing a shadow set up from the devices given: open, probe, assemble (pure), then record the new
 * generation on every member before serving anything.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { assemble, type AssemblyPlan, type MemberProbe } from '../core/assemble.js';
import { errorMessage } from '../core/errors.js';
import type { BlockBackend } from '../ports/block-backend.js';
import type { Clock } from '../ports/clock.js';
import { Member } from './member.js';
import type { ResyncSettings } from './resync.js';
import { probeMember } from './metadata.js';
import { ShadowSet } from './shadow-set.js';
import { Control } from './control.js';
import { planRecovery } from './recovery-plan.js';

export interface MemberSpec {
  location: string;
  readCost?: number;
  site?: string;
}

export interface StartOptions {
  members: MemberSpec[];
  overwrite: boolean;
  memberTimeoutMs: number;
  log: Logger;
  clock: Clock;
  open: (location: string) => Promise<BlockBackend>;
  resync?: Partial<ResyncSettings>;
  intentClearMs?: number;
  /** false: writes do not mark the write-intent log (benchmarks only); a crash then needs a full merge. */
  intentLog?: boolean;
}

export interface StartedSet {
  set: ShadowSet;
  plan: AssemblyPlan;
  control: Control;
}

export async function startShadowSet(o: StartOptions): Promise<StartedSet> {
  const backends: BlockBackend[] = [];
  try {
    for (const m of o.members) backends.push(await o.open(m.location));
    const probes: (MemberProbe & { seq: number })[] = [];
    for (const b of backends) {
      const p = await probeMember(b);
      probes.push({ path: b.location, rawBytes: b.size, scb: p.decoded, blank: p.blank, seq: p.seq });
    }
    // Pure decision; throws (and nothing has been written) if any member must not be touched.
    const plan = assemble(probes, { overwrite: o.overwrite, newId: randomUUID, now: o.clock.iso() });
    const members = plan.members.map((pm, i) => {
      const spec = o.members[i]!;
      const m = new Member(pm.id, backends[i]!, pm.state, spec.readCost ?? 1, spec.site ?? '');
      m.scbSeq = probes[i]!.seq;
      m.reason = pm.reason;
      return m;
    });
    const set = new ShadowSet({
      setId: plan.setId,
      size: plan.size,
      chunkSize: plan.chunkSize,
      generation: plan.generation,
      members,
      absent: plan.missing.map((m) => (m.state === 'Removed' || m.state === 'Faulted' ? m : { ...m, state: 'Removed' as const, since: plan.generation })),
      memberTimeoutMs: o.memberTimeoutMs,
      log: o.log,
      clock: o.clock,
      resync: o.resync,
      intentClearMs: o.intentClearMs,
    });
    if (o.intentLog === false) set.tracker.intentEnabled = false;
    const control = new Control(set, o.open);
    await planRecovery(set, plan, members.map((m, i) => ({ member: m, scb: probes[i]!.scb.kind === 'ok' ? probes[i]!.scb.scb : null })));
    await set.persistMembership(false);
    const joining = members.filter((m) => m.isWritable && !m.isFull);
    if (joining.length > 0) await set.tracker.writeAllTo(joining);
    set.start();
    o.log.info(
      {
        event: plan.created ? 'ShadowSetCreated' : 'ShadowSetMounted',
        setId: plan.setId,
        generation: plan.generation,
        size: plan.size,
        unclean: plan.unclean,
        members: plan.members.map((m) => ({ id: m.id, path: m.path, state: m.state, reason: m.reason })),
        missing: plan.missing.map((m) => m.id),
      },
      plan.created ? 'new shadow set created' : 'shadow set mounted',
    );
    return { set, plan, control };
  } catch (e) {
    await Promise.allSettled(backends.map((b) => b.close()));
    o.log.debug({ err: errorMessage(e) }, 'start failed');
    throw e;
  }
}
