/**
 * Membership operations of the control API: add, remove (with a write bitmap per the minicopy
 * policy), return, delete a bitmap, demand a merge, settings. One operation at a time; repeating a
 * satisfied request is a no-op. Each validates before it writes anything.
 */
import { randomUUID } from 'node:crypto';
import type { DeleteBitmapAnswer, MemberAnswer, MergeAnswer, RemoveAnswer, ResizeAnswer } from '../api/answers.js';
import type { AddMemberRequest, BitmapStatus, RemoveMemberRequest, ResizeRequest, ReturnMemberRequest, SettingsRequest } from '../api/control.js';
import { EngineError, errorMessage } from '../core/errors.js';
import { chooseReturn } from '../core/member-state.js';
import { MAX_CHUNKS, MAX_MEMBERS, SECTOR, usableBytes } from '../core/geometry.js';
import type { MemberState, Scb } from '../core/scb.js';
import type { BlockBackend } from '../ports/block-backend.js';
import { Member } from './member.js';
import { probeMember, writeScb } from './metadata.js';
import { bitmapList, rangeList } from './chunk-lists.js';
import { ResyncJob } from './resync-job.js';
import type { ShadowSet } from './shadow-set.js';

export class Control {
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly set: ShadowSet, private readonly open: (location: string) => Promise<BlockBackend>) {
  }

  private serial<T>(f: () => Promise<T>): Promise<T> {
    const p = this.chain.then(f, f);
    this.chain = p.catch(() => undefined);
    return p;
  }

  private find(ref: string): Member | undefined {
    return this.set.members.find((m) => m.id === ref) ?? this.set.members.find((m) => m.location === ref);
  }

  // ---------------- add ----------------

  addMember(req: AddMemberRequest): Promise<MemberAnswer> {
    return this.serial(async () => {
      const s = this.set;
      const existing = this.find(req.location);
      if (existing?.isWritable) return { id: existing.id, state: existing.state }; // already a member
      if (existing) return this.returnLocked({ member: existing.id, minicopy: 'Optional' });
      if (s.members.filter((m) => m.isWritable).length >= MAX_MEMBERS) {
        throw new EngineError('ENG_CONFLICT', `the shadow set already has ${MAX_MEMBERS} members`);
      }
      const backend = await this.open(req.location);
      try {
        // Whether it holds no data is asked before anything is written to it (Member.heldNoDataAtAdmission).
        const probe = await probeMember(backend, { holdsNoData: () => heldNoData(backend) });
        const empty = probe.heldNoData;
        const d = probe.decoded;
        const ownSet = d.kind === 'ok' && d.scb.setId === s.setId;
        if (ownSet) {
          const known = s.members.find((m) => m.id === d.scb.memberId);
          if (known?.isWritable) throw new EngineError('ENG_CONFLICT', `${req.location} is member ${known.id}, already in the set at ${known.location}`);
          if (known || s.formerMember(d.scb.memberId)) {
            await backend.close();
            return this.returnLocked({ member: d.scb.memberId, location: req.location, minicopy: 'Optional' });
          }
        }
        // A device of this very set that the record no longer knows is stale data of ours: a full copy, no confirmation needed.
        if (!req.confirmOverwrite && !ownSet) {
          if (d.kind === 'ok') {
            throw new EngineError('ENG_OTHER_SET', `${req.location} belongs to shadow set ${d.scb.setId}; refusing to overwrite it without confirmOverwrite`);
          }
          if (!probe.blank) {
            const what = d.kind === 'corrupt' ? `damaged shadow metadata (${d.reason})` : 'data without shadow metadata';
            throw new EngineError('ENG_FOREIGN_DATA', `${req.location} holds ${what}; refusing to overwrite it without confirmOverwrite`);
          }
        }
        if (usableBytes(backend.size) < s.size) {
          throw new EngineError('ENG_MEMBER_TOO_SMALL', `${req.location} has ${usableBytes(backend.size)} usable bytes, the set needs ${s.size}`);
        }
        const m = new Member(randomUUID(), backend, req.noCopy ? 'InSync' : 'FullCopy', req.readCost ?? 1, req.site ?? '');
        m.scbSeq = probe.seq;
        m.heldNoDataAtAdmission = empty;
        m.reason = req.noCopy ? 'added without copy (noCopy)' : 'new member';
        const entered = await this.join(m, req.noCopy ? null : () => new ResyncJob('FullCopy', m, rangeList(0, s.tracker.chunks), s.resync.hostRef, s.resync.settings.copyBytesPerSecond), { ownRecordFirst: true });
        s.log.info({ event: 'MemberAdded', member: m.id, path: m.location, noCopy: req.noCopy, generation: s.generation }, `member ${m.location} added`);
        return { id: m.id, state: entered };
      } catch (e) {
        // A member admitted before the failure keeps its backend (its departure closes it).
        if (!s.members.some((x) => x.backend === backend)) await backend.close().catch(() => undefined);
        throw e;
      }
    });
  }

  /**
   * Put a member into the set. From the moment it is admitted every write reaches it, and the copy's
   * chunks are taken at that same moment: a write made before it went only to the members that stay,
   * but already marked its chunk in the bitmap a minicopy copies (or is covered by the full copy); a
   * write made after reaches the member itself. Then its intent log and bitmaps, and the membership on
   * every member. A minicopy starts at once: until the record lands a crash finds the member as it left
   * (still matching its bitmap, so it gets its minicopy again), and the job's own metadata updates queue
   * behind this one. A full copy starts once the membership is recorded.
   *
   * A device without this set's metadata (a new member) first gets a record of its own that names it a
   * member of this set whose data is not complete: writes reach its data area before the membership is
   * recorded elsewhere, and after a crash it must read as a copy target of this set, not as a device
   * with foreign data.
   *
   * Returns the state the member entered in: a small minicopy can be over before the record lands.
   */
  private async join(m: Member, makeJob: (() => ResyncJob) | null, o: { replace?: Member; ownRecordFirst?: boolean } = {}): Promise<MemberState> {
    const s = this.set;
    const entered = m.state;
    if (o.ownRecordFirst) {
      const own = s.scbFor(m, false);
      const writable = new Set(s.members.filter((x) => x.isWritable).map((x) => x.id));
      const entry = { id: m.id, path: m.location, state: m.state, since: s.generation };
      // After the writable members (the record holds six entries at most: former ones are dropped first).
      own.members = [...own.members.filter((x) => writable.has(x.id)), entry, ...own.members.filter((x) => !writable.has(x.id) && x.id !== m.id)].slice(0, 6);
      own.dataValid = m.isFull;
      await m.io(() => writeScb(m.backend, own, ++m.scbSeq));
    }
    s.admit(m, o.replace);
    const job = makeJob?.() ?? null;
    if (job?.mode === 'Minicopy') s.beginCopy(job);
    await s.tracker.writeAllTo([m]);
    await s.persistMembership();
    if (job && job.mode !== 'Minicopy') s.beginCopy(job);
    return entered;
  }

  // ---------------- remove ----------------

  removeMember(req: RemoveMemberRequest): Promise<RemoveAnswer> {
    return this.serial(async () => {
      const s = this.set;
      const m = this.find(req.member);
      if (!m) throw new EngineError('ENG_NOT_FOUND', `no member ${req.member}`);
      if (!m.isWritable) return { id: m.id, bitmap: s.bitmapOf(m.id)?.desc.id ?? null, state: m.state };
      if (m.isFull && s.members.filter((x) => x.isFull).length === 1) {
        throw new EngineError('ENG_LAST_FULL_MEMBER', `${m.location} is the last full member; removing it would lose the data`);
      }
      const merging = s.resync.merging;
      if (merging && !req.force) {
        throw new EngineError('ENG_MERGE_ACTIVE', 'a merge is running; wait for it or remove with force (no write bitmap can be created during a merge)');
      }
      let slot: number | null = null;
      let refusal = '';
      if (req.minicopy !== 'Never') {
        if (merging) refusal = 'a merge is running';
        else if (!m.isFull) refusal = `${m.location} is a copy target, not a full member`;
        else if ((slot = s.tracker.freeSlot()) === null) refusal = 'all write-bitmap slots are in use';
        if (refusal && req.minicopy === 'Required') {
          throw new EngineError('ENG_BITMAP_REQUIRED', `cannot create a write bitmap (${refusal}); the member stays in the set`);
        }
      }
      const wantBitmap = req.minicopy !== 'Never' && !refusal && slot !== null;
      s.resync.cancel(m);
      // Stop every write while the member leaves, so each write either reached it or is in the bitmap.
      const release = await s.locks.acquire(0, s.size);
      let bitmapId: string | null = null;
      try {
        // Everything before this removal is recorded on the members that stay first: the leaving member's
        // own record below must never be newer than theirs (a crash would then find only a Removed member
        // at the newest generation, and the set would refuse to start).
        await s.persistMembership();
        // Its own record could not be written: it has left already, as Faulted.
        if (!m.isWritable) return { id: m.id, bitmap: s.bitmapOf(m.id)?.desc.id ?? null, state: m.state };
        const leftAt = s.generation;
        // The leaving member keeps a record that its data is complete as of this generation — if its
        // flush worked. If not, what it holds may never have reached its disk: it leaves as Faulted, its
        // record says its data is not complete, and no bitmap is kept (its return is a full copy).
        let failure = '';
        await m.io(() => m.backend.flush()).catch((e: unknown) => (failure = `flush failed while leaving: ${errorMessage(e)}`));
        // The empty bitmap is made only now that the member's data is on its disk. Made before, a
        // concurrent flush of the set that failed on this member would have found it and not seeded a
        // fault bitmap from the intent log, a record round could have named it, and the set could then
        // clear intent bits of writes this member never made durable: a return by that empty bitmap after
        // a power loss would miss them.
        if (wantBitmap && !failure && m.isWritable) {
          const free = s.tracker.freeSlot();
          if (free === null) {
            refusal = 'all write-bitmap slots are in use';
            if (req.minicopy === 'Required') throw new EngineError('ENG_BITMAP_REQUIRED', `cannot create a write bitmap (${refusal}); the member stays in the set`);
          } else bitmapId = s.newBitmap(m.id, free, leftAt);
        }
        const own: Scb = { ...s.scbFor(m, true), generation: leftAt, dataValid: m.isFull && !failure };
        own.members = own.members.map((x) => (x.id === m.id ? { ...x, state: 'Removed' as const } : x));
        await m.io(() => writeScb(m.backend, own, ++m.scbSeq)).catch((e: unknown) => {
          s.log.warn({ event: 'MetadataWriteFailed', member: m.id, err: errorMessage(e) }, 'could not record the removal on the leaving member');
          // Its old record still says it is current at this generation: a bitmap would match it on return.
          failure ||= `its own record could not be written while leaving: ${errorMessage(e)}`;
        });
        let dropped = false;
        if (failure && bitmapId) {
          dropped = s.dropBitmap(bitmapId);
          refusal = failure;
          bitmapId = null;
        }
        await s.removeMember(m, failure ? 'Faulted' : 'Removed', failure || (req.reason ?? (bitmapId ? `removed with write bitmap ${bitmapId}` : 'removed')));
        if (m.isWritable) {
          // Another member faulted meanwhile and this one is now the last full member: it stays.
          if (bitmapId) dropped = s.dropBitmap(bitmapId);
          // A record round of another change may have named the bitmap: record that it is gone.
          if (dropped) await s.persistMembership();
          throw new EngineError('ENG_LAST_FULL_MEMBER', `${m.location} is now the last full member; it stays in the set`);
        }
        // The same if the member had already left (its departure's record may name the dropped bitmap).
        if (dropped) await s.persistMembership();
        if (bitmapId) await s.tracker.persist();
      } finally {
        release();
      }
      // Its backend is closed by its departure (once its requests settle: not awaited, a hung device never does).
      s.log.info({ event: 'BitmapCreated', bitmap: bitmapId, member: m.id, policy: req.minicopy, reason: refusal || undefined }, bitmapId ? 'write bitmap created' : `no write bitmap${refusal ? `: ${refusal}` : ''}`);
      return { id: m.id, bitmap: bitmapId, state: m.state };
    });
  }

  // ---------------- return ----------------

  returnMember(req: ReturnMemberRequest): Promise<MemberAnswer> {
    return this.serial(() => this.returnLocked(req));
  }

  private async returnLocked(req: ReturnMemberRequest): Promise<MemberAnswer> {
    const s = this.set;
    const attached = this.find(req.member);
    const former = attached ? undefined : s.formerMember(req.member);
    if (!attached && !former) throw new EngineError('ENG_NOT_FOUND', `no former member ${req.member}`);
    if (attached?.isWritable) return { id: attached.id, state: attached.state };
    const old = attached ?? { id: former!.id, location: former!.path, readCost: 1, site: '' };
    const location = req.location ?? old.location;
    const bm = s.bitmapOf(old.id);
    const backend = await this.open(location);
    try {
      const probe = await probeMember(backend, { holdsNoData: () => heldNoData(backend) });
      const empty = probe.heldNoData;
      const d = probe.decoded;
      if (d.kind === 'ok' && d.scb.setId === s.setId && d.scb.memberId !== old.id) {
        throw new EngineError('ENG_CONFLICT', `${location} is member ${d.scb.memberId} of this set, not ${old.id}`);
      }
      if (d.kind === 'ok' && d.scb.setId !== s.setId) {
        throw new EngineError('ENG_OTHER_SET', `${location} now belongs to shadow set ${d.scb.setId}; add it with confirmOverwrite instead`);
      }
      if (d.kind !== 'ok' && !probe.blank) {
        throw new EngineError('ENG_FOREIGN_DATA', `${location} no longer holds this set's metadata; add it with confirmOverwrite instead`);
      }
      if (usableBytes(backend.size) < s.size) throw new EngineError('ENG_MEMBER_TOO_SMALL', `${location} is too small for the set`);
      // A minicopy only if the member is as it left (core/member-state.ts: chooseReturn).
      const choice = chooseReturn({
        setId: s.setId, memberId: old.id, chunkSize: s.chunkSize,
        record: d.kind === 'ok' ? d.scb : null, bitmap: bm ? bm.desc : null,
      });
      const usable = choice.mode === 'Minicopy' && bm !== undefined;
      if (!usable && req.minicopy === 'Required') {
        throw new EngineError('ENG_BITMAP_REQUIRED', bm ? `write bitmap ${bm.desc.id} does not match ${location}: ${choice.why}` : `no write bitmap exists for ${old.id}; a full copy would be needed`);
      }
      const m = new Member(old.id, backend, usable ? 'Minicopy' : 'FullCopy', old.readCost, old.site);
      m.scbSeq = probe.seq;
      m.heldNoDataAtAdmission = empty;
      let makeJob: () => ResyncJob;
      if (usable) {
        s.coverWholeUnit(bm); // the set may have grown past what the bitmap covers
        m.reason = `returning with write bitmap ${bm.desc.id}`;
        // The chunk list is taken when the member is admitted (see join), not now.
        makeJob = () => new ResyncJob('Minicopy', m, bitmapList(bm.map), s.resync.hostRef, s.resync.settings.copyBytesPerSecond, bm.desc.id);
      } else {
        if (bm) s.dropBitmap(bm.desc.id);
        m.reason = bm ? `bitmap unusable (${choice.why}): full copy` : 'no write bitmap: full copy';
        makeJob = () => new ResyncJob('FullCopy', m, rangeList(0, s.tracker.chunks), s.resync.hostRef, s.resync.settings.copyBytesPerSecond);
      }
      let job: ResyncJob | null = null;
      // The answer names the state the member came back in (status shows the state now).
      const entered = await this.join(m, () => (job = makeJob()), { ...(attached ? { replace: attached } : {}), ownRecordFirst: d.kind !== 'ok' });
      s.forgetFormer(m.id);
      const mode = usable ? 'Minicopy' : 'FullCopy';
      s.log.info({ event: 'MemberReturned', member: m.id, path: location, mode, bytes: (job as ResyncJob | null)?.bytesTotal ?? 0, generation: s.generation }, `member ${location} returned: ${mode}`);
      return { id: m.id, state: entered };
    } catch (e) {
      // A member admitted before the failure keeps its backend (its departure closes it).
      if (!s.members.some((x) => x.backend === backend)) await backend.close().catch(() => undefined);
      throw e;
    }
  }

  // ---------------- resize ----------------

  /**
   * Grow the virtual unit (the manual has no such thing; a PVC expansion needs it). Checked before
   * anything changes: not smaller than now, a multiple of 4096, within what the chunk size allows (the
   * log and each bitmap hold one bit per chunk in 1 MiB: chunk size x 8 Mi bytes, 512 GiB at 64 KiB),
   * no copy, minicopy or merge running (a copy's chunk list is fixed when it starts), and every member
   * that holds the set's data large enough — each device is asked its size again; the error names every
   * one that is too small. A member away with a write bitmap is not reachable to ask: its bitmap is
   * extended over the grown region, and its return is refused while it is too small, as any return is.
   */
  resize(req: ResizeRequest): Promise<ResizeAnswer> {
    return this.serial(async () => {
      const s = this.set;
      const from = s.size;
      if (req.size === from) return { from, size: from, grown: false };
      if (req.size < from) throw new EngineError('ENG_INVALID_ARGUMENT', `shrinking is refused: the virtual unit has ${from} bytes, ${req.size} were asked`);
      if (req.size % SECTOR !== 0) throw new EngineError('ENG_INVALID_ARGUMENT', `size ${req.size} is not a multiple of ${SECTOR}`);
      const limit = s.chunkSize * MAX_CHUNKS;
      if (req.size > limit) {
        throw new EngineError('ENG_INVALID_ARGUMENT', `size ${req.size} is more than this set can hold: its chunk size (${s.chunkSize} bytes) is fixed, and the write-intent log and each write bitmap have room for ${MAX_CHUNKS} chunks (${limit} bytes)`);
      }
      if (s.resync.jobs.length > 0) {
        const what = s.resync.jobs.map((j) => (j.target ? `${j.mode} of ${j.target.location}` : j.mode)).join(', ');
        throw new EngineError('ENG_CONFLICT', `cannot grow while resync runs (${what}); the set can grow once it completes`);
      }
      const writable = s.members.filter((m) => m.isWritable);
      const notFull = writable.filter((m) => !m.isFull);
      if (notFull.length > 0) throw new EngineError('ENG_CONFLICT', `cannot grow while ${notFull.map((m) => `${m.location} is ${m.state}`).join(', ')}`);
      const small: string[] = [];
      for (const m of writable) {
        const raw = m.backend.refreshSize ? await m.io(() => m.backend.refreshSize!()) : m.backend.size;
        if (usableBytes(raw) < req.size) small.push(`${m.location} (${usableBytes(raw)} usable bytes${m.backend.refreshSize ? '' : ', and this kind of member cannot grow'})`);
      }
      if (small.length > 0) {
        throw new EngineError('ENG_MEMBER_TOO_SMALL', `cannot grow the virtual unit to ${req.size} bytes: ${small.length === 1 ? 'this member is' : 'these members are'} too small: ${small.join(', ')}`);
      }
      await s.grow(req.size);
      return { from, size: s.size, grown: true };
    });
  }

  // ---------------- bitmaps, merge, settings ----------------

  bitmaps(): BitmapStatus[] {
    return [...this.set.tracker.bitmaps.values()].map((b) => {
      const dirty = Math.min(b.map.count * b.desc.chunkSize, b.desc.coveredBytes);
      return {
        id: b.desc.id, member: b.desc.member, chunkSize: b.desc.chunkSize, coveredBytes: b.desc.coveredBytes,
        dirtyBytes: dirty, percentPopulated: b.map.chunks ? Math.round((10000 * b.map.count) / b.map.chunks) / 100 : 0,
        createdAt: b.desc.createdAt, masterNode: b.desc.masterNode, generation: b.desc.generation,
      };
    });
  }

  deleteBitmap(id: string): Promise<DeleteBitmapAnswer> {
    return this.serial(async () => ({ deleted: await this.set.deleteBitmap(id) }));
  }

  demandMerge(full: boolean): Promise<MergeAnswer> {
    return this.serial(async () => {
      const s = this.set;
      const chunks = await s.demandMerge(full);
      if (chunks === null) return { started: false, chunks: s.resync.mergePending?.count ?? 0 };
      s.log.info({ event: 'MergeDemanded', full, chunks }, 'merge demanded');
      return { started: true, chunks };
    });
  }

  settings(req: SettingsRequest): void {
    const st = this.set.resync.settings;
    if (req.copySource !== undefined) {
      if (req.copySource !== null && req.copySource !== 'master' && !this.set.members.some((m) => m.id === req.copySource && m.isFull)) {
        throw new EngineError('ENG_INVALID_ARGUMENT', `copy source ${req.copySource} is not a full member (use a member id, "master" or null)`);
      }
      st.copySource = req.copySource;
    }
    if (req.copyBytesPerSecond !== undefined) st.copyBytesPerSecond = req.copyBytesPerSecond;
    if (req.mergeBytesPerSecond !== undefined) st.mergeBytesPerSecond = req.mergeBytesPerSecond;
    if (req.maxCopies !== undefined) st.maxCopies = req.maxCopies;
    for (const j of this.set.resync.jobs) j.throttle.bytesPerSecond = j.mode === 'Merge' ? st.mergeBytesPerSecond : st.copyBytesPerSecond;
    if (req.memberTimeoutSeconds !== undefined) this.set.setMemberTimeout(Math.round(req.memberTimeoutSeconds * 1000));
    if (req.minicopyPolicy !== undefined) this.set.faultPolicy = req.minicopyPolicy;
  }
}

/** BlockBackend.holdsNoData, false where the backend cannot tell or the question fails. */
async function heldNoData(b: BlockBackend): Promise<boolean> {
  try {
    return (await b.holdsNoData?.()) === true;
  } catch {
    return false;
  }
}
