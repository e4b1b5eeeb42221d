/**
 * Assembly: decide, from what is found on the devices handed to the engine, which shadow set they form,
 * which members hold current data, and what each remaining member needs. Pure: probes in, plan out.
 * This is the manual's mount with /INCLUDE semantics: the generation number decides which former
 * member is newest; a stale member (older generation) is never a source.
 */
import { EngineError } from './errors.js';
import type { DecodedSlot, MemberState, Scb, ScbMember } from './scb.js';
import { chunkSizeFor, MAX_MEMBERS, usableBytes } from './geometry.js';
import { isWritable } from './member-state.js';

export interface MemberProbe {
  path: string;
  rawBytes: number;
  /** The current SCB slot as picked from both copies. */
  scb: DecodedSlot;
  /** True when the probed region holds only zeros (header area and the start of the data area). */
  blank: boolean;
  /** This member may be overwritten although it holds foreign data or another set's metadata. */
  overwrite?: boolean;
}

export interface AssembleOptions {
  /** Allow every member holding another set's metadata or foreign data to be overwritten (else per probe). */
  overwrite: boolean;
  /**
   * Members the newest record lists as Removed (they left by request: a split for backup, say) stay out
   * even when given, recorded as former members, until they are returned by request. Without it they
   * join as copy targets (reconstruct from former members).
   */
  keepRemoved?: boolean;
  /**
   * The size of a set this start makes (members holding no set); a smaller member makes it smaller (the
   * operator then grows it by resize once the members are big enough, reporting why it waits). Unset: the
   * smallest member's usable bytes. Members that hold a set keep its recorded size.
   */
  newSetSize?: number;
  newId: () => string;
  now: string;
}

export type PlannedRole = 'source' | 'target' | 'away';

export interface PlannedMember {
  path: string;
  id: string;
  /** `source` members hold the newest data; `target` members need a full copy; `away` ones stay out (keepRemoved). */
  role: PlannedRole;
  state: MemberState;
  /** Why it is a target (for logs and status). */
  reason: string;
}

export interface AssemblyPlan {
  created: boolean;
  setId: string;
  size: number;
  chunkSize: number;
  /** Generation written to every present member when the set starts. */
  generation: number;
  /** The members to attach, in the order given (`away` ones left out). */
  members: PlannedMember[];
  /** Given members that stay out (keepRemoved): their backends are closed, their record kept. */
  away: PlannedMember[];
  /** Members the newest record knew that are not present now; recorded as Removed. */
  missing: ScbMember[];
  /** The newest record says the set was not stopped cleanly. */
  unclean: boolean;
  /** The record the plan was derived from (newest generation), null for a new set. */
  reference: Scb | null;
}

export function assemble(probes: MemberProbe[], opts: AssembleOptions): AssemblyPlan {
  if (probes.length === 0) throw new EngineError('ENG_INVALID_ARGUMENT', 'at least one member is required');
  if (probes.length > MAX_MEMBERS) {
    throw new EngineError('ENG_INVALID_ARGUMENT', `a shadow set has at most ${MAX_MEMBERS} members, got ${probes.length}`);
  }
  const paths = new Set<string>();
  for (const p of probes) {
    if (paths.has(p.path)) throw new EngineError('ENG_INVALID_ARGUMENT', `member ${p.path} is given twice`);
    paths.add(p.path);
  }

  const mayOverwrite = (p: MemberProbe) => opts.overwrite || p.overwrite === true;
  // Refuse foreign data first: nothing may be written before this check.
  for (const p of probes) {
    if (p.scb.kind === 'ok' || p.blank || mayOverwrite(p)) continue;
    const what = p.scb.kind === 'corrupt' ? `damaged shadow metadata (${p.scb.reason})` : 'data without shadow metadata';
    throw new EngineError(
      'ENG_FOREIGN_DATA',
      `member ${p.path} holds ${what}; refusing to overwrite it (pass the overwrite flag to use it anyway)`,
    );
  }

  const ours = probes.filter((p): p is MemberProbe & { scb: { kind: 'ok'; scb: Scb } } => p.scb.kind === 'ok');
  // The set is the one of the members that may not be overwritten; a member confirmed for overwriting
  // that holds another set's metadata becomes a copy target of it. Only if every member may be
  // overwritten does the first one's set count.
  const kept = ours.filter((p) => !mayOverwrite(p));
  const setIds = [...new Set(kept.map((p) => p.scb.scb.setId))];
  if (setIds.length > 1) {
    const list = kept.map((p) => `${p.path}: set ${p.scb.scb.setId} generation ${p.scb.scb.generation}`).join('; ');
    throw new EngineError('ENG_SET_MISMATCH', `members belong to different shadow sets (${list}); refusing to mix them`);
  }
  const setId = setIds[0] ?? ours[0]?.scb.scb.setId ?? null;

  if (setId === null) return newSet(probes, opts);

  const family = ours.filter((p) => p.scb.scb.setId === setId);
  const maxGen = Math.max(...family.map((p) => p.scb.scb.generation));
  const newest = family.filter((p) => p.scb.scb.generation === maxGen);
  // Records of one generation may differ: a member that was leaving wrote its own departure (it lists
  // itself Removed, and clean) before the others recorded it. The set's record is one written by a member
  // that was in the set at that generation; and the stop was clean only if every such record says so.
  const inSet = (s: Scb) => s.members.some((x) => x.id === s.memberId && isWritable(x.state));
  const ref = (newest.find((p) => inSet(p.scb.scb)) ?? newest[0]!).scb.scb;
  const unclean = newest.some((p) => !p.scb.scb.clean);
  const size = ref.size;
  const chunkSize = ref.chunkSize;
  // The first entry per id counts: records written before a fix could list a returned member twice,
  // as attached and again as a former (Removed) member.
  const byId = new Map<string, (typeof ref.members)[number]>();
  for (const m of ref.members) if (!byId.has(m.id)) byId.set(m.id, m);
  const usedIds = new Set<string>();

  const members: PlannedMember[] = probes.map((p) => {
    if (usableBytes(p.rawBytes) < size) {
      throw new EngineError(
        'ENG_MEMBER_TOO_SMALL',
        `member ${p.path} has ${usableBytes(p.rawBytes)} usable bytes, the set needs ${size}`,
      );
    }
    if (p.scb.kind !== 'ok' || p.scb.scb.setId !== setId) {
      const why = p.scb.kind === 'ok' ? `belonged to set ${p.scb.scb.setId}` : p.blank ? 'new member' : 'foreign data';
      return { path: p.path, id: opts.newId(), role: 'target', state: 'FullCopy', reason: why };
    }
    const scb = p.scb.scb;
    if (usedIds.has(scb.memberId)) {
      throw new EngineError('ENG_INVALID_ARGUMENT', `member ${p.path} has the same member id as another given member`);
    }
    usedIds.add(scb.memberId);
    const rec = byId.get(scb.memberId);
    if (!rec) return { path: p.path, id: scb.memberId, role: 'target', state: 'FullCopy', reason: 'not in the newest membership' };
    if (rec.state === 'Removed' && opts.keepRemoved) {
      return { path: p.path, id: scb.memberId, role: 'away', state: 'Removed', reason: 'removed by request; stays out until returned' };
    }
    if (scb.generation < maxGen) {
      return {
        path: p.path, id: scb.memberId, role: 'target', state: 'FullCopy',
        reason: `stale: generation ${scb.generation} < ${maxGen}`,
      };
    }
    if (rec.state !== 'InSync' || !scb.dataValid) {
      return { path: p.path, id: scb.memberId, role: 'target', state: 'FullCopy', reason: `was ${rec.state}` };
    }
    return { path: p.path, id: scb.memberId, role: 'source', state: 'InSync', reason: 'current' };
  });

  if (!members.some((m) => m.role === 'source')) {
    throw new EngineError(
      'ENG_NO_FULL_MEMBER',
      `none of the given members holds current data of set ${setId} (newest generation ${maxGen}: ` +
        `${members.map((m) => `${m.path} ${m.reason}`).join('; ')}); add a full member`,
    );
  }
  const attached = members.filter((m) => m.role !== 'away');
  const present = new Set(attached.map((m) => m.id));
  const missing = ref.members.filter((m) => !present.has(m.id));
  return {
    created: false, setId, size, chunkSize, generation: maxGen + 1, members: attached, away: members.filter((m) => m.role === 'away'), missing,
    unclean, reference: ref,
  };
}

function newSet(probes: MemberProbe[], opts: AssembleOptions): AssemblyPlan {
  const room = Math.min(...probes.map((p) => usableBytes(p.rawBytes)));
  if (room <= 0) {
    const small = probes.find((p) => usableBytes(p.rawBytes) <= 0)!;
    throw new EngineError('ENG_MEMBER_TOO_SMALL', `member ${small.path} is too small to hold shadow metadata`);
  }
  const size = Math.min(opts.newSetSize ?? room, room);
  // The first member defines the content; another member is identical to it only if both are blank.
  const firstBlank = probes[0]!.blank;
  const members: PlannedMember[] = probes.map((p, i) =>
    i === 0 || (p.blank && firstBlank)
      ? { path: p.path, id: opts.newId(), role: 'source', state: 'InSync', reason: 'new set' }
      : { path: p.path, id: opts.newId(), role: 'target', state: 'FullCopy', reason: 'not blank' },
  );
  return {
    created: true, setId: opts.newId(), size, chunkSize: chunkSizeFor(size), generation: 1, members, away: [],
    missing: [], unclean: false, reference: null,
  };
}
