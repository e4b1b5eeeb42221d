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
  intentIdlePasses?: number;
  /** Write bitmap for members that fail (default Optional). */
  faultPolicy?: 'Required' | 'Optional' | 'Never';
  /** Reconstruct (the manual's /INCLUDE): also attach the members the newest record lists. */
  include?: boolean;
  /** false: writes do not mark the write-intent log (benchmarks only); a crash then needs a full merge. */
  intentLog?: boolean;
  /**
   * true: copies and merges wait for `set.startRecovery()`. The daemon starts them once it serves, so
   * its own start-up (listeners, routes) does not compete with a restart's merge for the CPU.
   */
  holdRecovery?: boolean;
}

export interface StartedSet {
  set: ShadowSet;
  plan: AssemblyPlan;
  control: Control;
}

/** How long start waits for the members' I/O threads; requests work without them, only slower. */
const READY_WAIT_MS = 2000;

async function settledWithin(ps: (Promise<void> | undefined)[], ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<void>((r) => (timer = setTimeout(r, ms)));
  try {
    await Promise.race([Promise.allSettled(ps), limit]);
  } finally {
    clearTimeout(timer);
  }
}

export async function startShadowSet(o: StartOptions): Promise<StartedSet> {
  const backends: BlockBackend[] = [];
  try {
    const specs = [...o.members];
    for (const m of specs) backends.push(await o.open(m.location));
    const probes: (MemberProbe & { seq: number })[] = [];
    for (const b of backends) {
      const p = await probeMember(b);
      probes.push({ path: b.location, rawBytes: b.size, scb: p.decoded, blank: p.blank, seq: p.seq });
    }
    if (o.include) await includeFormerMembers(o, specs, backends, probes);
    // Pure decision; throws (and nothing has been written) if any member must not be touched.
    const plan = assemble(probes, { overwrite: o.overwrite, newId: randomUUID, now: o.clock.iso() });
    const members = plan.members.map((pm, i) => {
      const spec = specs[i]!;
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
      ...(o.intentIdlePasses !== undefined ? { intentIdlePasses: o.intentIdlePasses } : {}),
      ...(o.faultPolicy ? { faultPolicy: o.faultPolicy } : {}),
    });
    if (o.intentLog === false) set.tracker.intentEnabled = false;
    const control = new Control(set, o.open);
    await planRecovery(set, plan, members.map((m, i) => ({ member: m, scb: probes[i]!.scb.kind === 'ok' ? probes[i]!.scb.scb : null })));
    await set.persistMembership(false);
    const joining = members.filter((m) => m.isWritable && !m.isFull);
    if (joining.length > 0) await set.tracker.writeAllTo(joining);
    // The members' I/O threads start while the set is assembled (tens of milliseconds each). A merge or
    // copy starting before they run would compete with their start-up for the CPU and queue its reads
    // on the thread pool: a restart's minimerge took several times longer. Its buffers are made ready
    // meanwhile. With nothing to recover, start does not wait (requests only run slower meanwhile).
    if (set.resync.jobs.length > 0) {
      set.resync.warmUp();
      await settledWithin(backends.map((b) => b.ready?.()), READY_WAIT_MS);
    }
    set.start({ recovery: !o.holdRecovery });
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

/** Find the other members of the set from the newest record among the given ones, and attach them. */
async function includeFormerMembers(
  o: StartOptions, specs: MemberSpec[], backends: BlockBackend[], probes: (MemberProbe & { seq: number })[],
): Promise<void> {
  const ours = probes.map((p) => (p.scb.kind === 'ok' ? p.scb.scb : null)).filter((x) => x !== null);
  if (ours.length === 0) return;
  const newest = ours.reduce((a, b) => (b.generation > a.generation ? b : a));
  const given = new Set(probes.map((p) => p.path));
  const ids = new Set(ours.map((x) => x.memberId));
  for (const rec of newest.members) {
    if (rec.state === 'Removed' || rec.state === 'Faulted' || ids.has(rec.id) || given.has(rec.path)) continue;
    let b: BlockBackend;
    try {
      b = await o.open(rec.path);
    } catch (e) {
      o.log.warn({ event: 'IncludeMemberMissing', member: rec.id, path: rec.path, err: errorMessage(e) }, `former member ${rec.path} could not be opened`);
      continue;
    }
    const p = await probeMember(b);
    if (p.decoded.kind !== 'ok' || p.decoded.scb.setId !== newest.setId || p.decoded.scb.memberId !== rec.id) {
      o.log.warn({ event: 'IncludeMemberMismatch', member: rec.id, path: rec.path }, `${rec.path} no longer holds member ${rec.id}; not included`);
      await b.close();
      continue;
    }
    specs.push({ location: rec.path });
    backends.push(b);
    probes.push({ path: b.location, rawBytes: b.size, scb: p.decoded, blank: p.blank, seq: p.seq });
    o.log.info({ event: 'IncludeMemberFound', member: rec.id, path: rec.path }, `former member ${rec.path} included`);
  }
}
