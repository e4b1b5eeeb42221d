/**
 * Bringing a shadow set up from the devices given: open, probe, assemble (pure), then record the new
 * generation on every member before serving anything.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { assemble, type AssemblyPlan, type MemberProbe } from '../core/assemble.js';
import { EngineError, errorMessage, isEngineError } from '../core/errors.js';
import type { BlockBackend } from '../ports/block-backend.js';
import type { Clock } from '../ports/clock.js';
import { Member } from './member.js';
import type { ResyncSettings } from './resync-job.js';
import { probeMember } from './metadata.js';
import { ShadowSet } from './shadow-set.js';
import { Control } from './control.js';
import { planRecovery } from './recovery-plan.js';
import { readWitness } from './witness.js';
import { settledWithin } from './settle-within.js';

export interface MemberSpec {
  location: string;
  readCost?: number;
  site?: string;
  /** This member may be overwritten although it holds foreign data or another set's metadata. */
  overwrite?: boolean;
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
  /** Most bytes of chunks the write-intent log marks at once (0 or unset: no cap). */
  intentLogCapBytes?: number;
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
  /** The virtual unit's site: reads prefer full members with the same site. */
  site?: string;
  /** Members the newest record lists as Removed stay out even when given (see AssembleOptions). */
  keepRemoved?: boolean;
  /** The size of a set made by this start (see AssembleOptions.newSetSize); a set the members hold keeps its own. */
  newSetSize?: number;
  /**
   * The newest generation known to have been recorded (the state file's, or one the operator saw). A
   * start whose newest record among the members it can open is older refuses: the newest data is on a
   * member it cannot open, and starting without it would go back in time.
   */
  minGeneration?: number;
  /** Where the engine keeps the last generation it recorded (a witness across restarts of its container). */
  stateFile?: string;
}

export interface StartedSet {
  set: ShadowSet;
  plan: AssemblyPlan;
  control: Control;
}

/** How long start waits for the members' I/O threads; requests work without them, only slower. */
const READY_WAIT_MS = 2000;

export async function startShadowSet(o: StartOptions): Promise<StartedSet> {
  const backends: BlockBackend[] = [];
  try {
    const specs: MemberSpec[] = [];
    const probes: (MemberProbe & { seq: number })[] = [];
    // Open and probe what can be; a member that cannot be (its server's node is down, its address
    // changed) is left out below if the set's record knows it, and refused otherwise.
    const unopened: { spec: MemberSpec; err: unknown; included?: true }[] = [];
    for (const spec of o.members) {
      let b: BlockBackend | null = null;
      try {
        b = await o.open(spec.location);
        const p = await probeMember(b);
        backends.push(b);
        specs.push(spec);
        probes.push({ path: b.location, rawBytes: b.size, scb: p.decoded, blank: p.blank, seq: p.seq, ...(spec.overwrite ? { overwrite: true } : {}) });
      } catch (e) {
        await b?.close().catch(() => undefined);
        // Only a member that cannot be reached is left out; a bad argument (a location the engine may
        // not use, an nbds:// member without a key) fails the start.
        if (!isEngineError(e, 'ENG_IO') && !isEngineError(e, 'ENG_TIMEOUT')) throw e;
        unopened.push({ spec, err: e });
      }
    }
    if (probes.length === 0 && unopened.length > 0) throw unopened[0]!.err;
    // A former member the record lists that cannot be opened is away like a given one: left out with a
    // write bitmap (an engine started on another node after an unclean end does not find the old node's
    // member, and its return should be a minicopy, not a full copy).
    if (o.include) unopened.push(...await includeFormerMembers(o, specs, backends, probes));
    // Pure decision; throws (and nothing has been written) if any member must not be touched.
    const plan = assemble(probes, { overwrite: o.overwrite, keepRemoved: o.keepRemoved ?? false, ...(o.newSetSize !== undefined ? { newSetSize: o.newSetSize } : {}), newId: randomUUID, now: o.clock.iso() });
    const newest = plan.reference?.generation ?? 0;
    for (const u of unopened) {
      // A new set needs every member; a location no record knows is a bad argument, not a member away.
      // (One --include found in a record is never an argument: at worst it is simply not recorded away.)
      if (u.included) continue;
      if (!plan.reference || !plan.missing.some((m) => m.path === u.spec.location)) throw u.err;
    }
    const witness = Math.max(o.minGeneration ?? 0, plan.reference ? await readWitness(o.stateFile, plan.setId) : 0);
    if (plan.reference && newest < witness) {
      throw new EngineError('ENG_STALE_RECORD',
        `the newest record among the members that could be opened is generation ${newest}, but generation ${witness} was recorded before: ` +
        `the set's newest data is on a member that is missing${unopened.length ? ` (${unopened.map((u) => `${u.spec.location}: ${errorMessage(u.err)}`).join('; ')})` : ''}; refusing to start from older data`);
    }
    const indexOf = (path: string) => probes.findIndex((p) => p.path === path);
    for (const a of plan.away) {
      const i = indexOf(a.path);
      await backends[i]!.close().catch(() => undefined);
      o.log.info({ event: 'MemberKeptOut', member: a.id, path: a.path, reason: a.reason }, `member ${a.path} left the set by request: it stays out until returned`);
    }
    const members = plan.members.map((pm) => {
      const i = indexOf(pm.path);
      const spec = specs[i]!;
      const m = new Member(pm.id, backends[i]!, pm.state, spec.readCost ?? 1, spec.site ?? '', o.clock);
      m.scbSeq = probes[i]!.seq;
      m.reason = pm.reason;
      return m;
    });
    const away = new Map(unopened.map((u) => [u.spec.location, `could not be opened at start: ${errorMessage(u.err)}`]));
    for (const a of plan.away) away.set(a.path, a.reason);
    for (const u of unopened) {
      o.log.warn({ event: 'MemberMissing', path: u.spec.location, err: errorMessage(u.err) }, `member ${u.spec.location} could not be opened; the set starts without it`);
    }
    const set = new ShadowSet({
      setId: plan.setId,
      size: plan.size,
      chunkSize: plan.chunkSize,
      generation: plan.generation,
      members,
      absent: plan.missing.map((m) => ({
        ...(m.state === 'Removed' || m.state === 'Faulted' ? m : { ...m, state: 'Removed' as const, since: plan.generation }),
        ...(away.has(m.path) ? { reason: away.get(m.path)! } : {}),
      })),
      memberTimeoutMs: o.memberTimeoutMs,
      log: o.log,
      clock: o.clock,
      resync: o.resync,
      intentClearMs: o.intentClearMs,
      ...(o.intentIdlePasses !== undefined ? { intentIdlePasses: o.intentIdlePasses } : {}),
      ...(o.intentLogCapBytes !== undefined ? { intentLogCapBytes: o.intentLogCapBytes } : {}),
      ...(o.faultPolicy ? { faultPolicy: o.faultPolicy } : {}),
      ...(o.site ? { site: o.site } : {}),
      ...(o.stateFile ? { stateFile: o.stateFile } : {}),
    });
    if (o.intentLog === false) set.tracker.intentEnabled = false;
    const control = new Control(set, o.open);
    const scbOf = (m: Member) => {
      const d = probes[indexOf(m.location)]!.scb;
      return d.kind === 'ok' ? d.scb : null;
    };
    await planRecovery(set, plan, members.map((m) => ({ member: m, scb: scbOf(m) })), unopened.map((u) => u.spec.location));
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
): Promise<{ spec: MemberSpec; err: unknown; included: true }[]> {
  const unopened: { spec: MemberSpec; err: unknown; included: true }[] = [];
  const ours = probes.map((p) => (p.scb.kind === 'ok' ? p.scb.scb : null)).filter((x) => x !== null);
  if (ours.length === 0) return unopened;
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
      unopened.push({ spec: { location: rec.path }, err: e, included: true });
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
  return unopened;
}
