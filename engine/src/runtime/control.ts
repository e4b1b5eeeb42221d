/**
 * Membership operations of the control API: add, remove (with a write bitmap per the minicopy
 * policy), return, delete a bitmap, demand a merge, settings. One operation at a time; repeating a
 * satisfied request is a no-op. Each validates before it writes anything.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { AddMemberRequest, BitmapStatus, RemoveMemberRequest, ReturnMemberRequest, SettingsRequest } from '../api/control.js';
import { ChunkBitmap } from '../core/chunk-bitmap.js';
import { EngineError, errorMessage } from '../core/errors.js';
import { MAX_MEMBERS, usableBytes } from '../core/geometry.js';
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
    set.onJobFinished = (job, ok, why) => this.jobFinished(job, ok, why);
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

  addMember(req: AddMemberRequest): Promise<{ id: string; state: string }> {
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
        const probe = await probeMember(backend);
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
    if (job?.mode === 'Minicopy') s.resync.add(job);
    await s.tracker.writeAllTo([m]);
    await s.persistMembership();
    if (job && job.mode !== 'Minicopy') s.resync.add(job);
    return entered;
  }

  // ---------------- remove ----------------

  removeMember(req: RemoveMemberRequest): Promise<{ id: string; bitmap: string | null; state: string }> {
    return this.serial(async () => {
      const s = this.set;
      const m = this.find(req.member);
      if (!m) throw new EngineError('ENG_NOT_FOUND', `no member ${req.member}`);
      if (!m.isWritable) return { id: m.id, bitmap: s.tracker.descriptors().find((d) => d.member === m.id)?.id ?? null, state: m.state };
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
        const leftAt = s.generation;
        if (wantBitmap) {
          bitmapId = randomUUID();
          const map = new ChunkBitmap(s.tracker.chunks);
          map.touchAll();
          s.tracker.bitmaps.set(bitmapId, {
            desc: {
              id: bitmapId, member: m.id, slot: slot!, chunkSize: s.chunkSize, coveredBytes: s.size,
              createdAt: new Date().toISOString(), generation: leftAt, masterNode: process.env.NODE_NAME ?? hostname(),
            },
            map,
          });
        }
        // The leaving member keeps a record that its data is complete as of this generation — if its
        // flush worked. If not, what it holds may never have reached its disk: it leaves as Faulted, its
        // record says its data is not complete, and no bitmap is kept (its return is a full copy).
        let failure = '';
        await m.io(() => m.backend.flush()).catch((e: unknown) => (failure = `flush failed while leaving: ${errorMessage(e)}`));
        const own: Scb = { ...s.scbFor(m, true), generation: leftAt, dataValid: m.isFull && !failure };
        own.members = own.members.map((x) => (x.id === m.id ? { ...x, state: 'Removed' as const } : x));
        await m.io(() => writeScb(m.backend, own, ++m.scbSeq)).catch((e: unknown) => {
          s.log.warn({ event: 'MetadataWriteFailed', member: m.id, err: errorMessage(e) }, 'could not record the removal on the leaving member');
          // Its old record still says it is current at this generation: a bitmap would match it on return.
          failure ||= `its own record could not be written while leaving: ${errorMessage(e)}`;
        });
        if (failure && bitmapId) {
          s.tracker.bitmaps.delete(bitmapId);
          refusal = failure;
          bitmapId = null;
        }
        await s.removeMember(m, failure ? 'Faulted' : 'Removed', failure || (req.reason ?? (wantBitmap ? `removed with write bitmap ${bitmapId}` : 'removed')));
        if (m.isWritable) {
          // Another member faulted meanwhile and this one is now the last full member: it stays.
          if (bitmapId) s.tracker.bitmaps.delete(bitmapId);
          throw new EngineError('ENG_LAST_FULL_MEMBER', `${m.location} is now the last full member; it stays in the set`);
        }
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

  returnMember(req: ReturnMemberRequest): Promise<{ id: string; state: string }> {
    return this.serial(() => this.returnLocked(req));
  }

  private async returnLocked(req: ReturnMemberRequest): Promise<{ id: string; state: string }> {
    const s = this.set;
    const attached = this.find(req.member);
    const former = attached ? undefined : s.formerMember(req.member);
    if (!attached && !former) throw new EngineError('ENG_NOT_FOUND', `no former member ${req.member}`);
    if (attached?.isWritable) return { id: attached.id, state: attached.state };
    const old = attached ?? { id: former!.id, location: former!.path, readCost: 1, site: '' };
    const location = req.location ?? old.location;
    const bm = [...s.tracker.bitmaps.values()].find((b) => b.desc.member === old.id);
    const backend = await this.open(location);
    try {
      const probe = await probeMember(backend);
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
      // Usable only if the member is as it left: its own record has the bitmap's generation and says its
      // data was complete then (a member whose flush failed while leaving says it was not).
      const usable = bm && d.kind === 'ok' && d.scb.generation === bm.desc.generation && d.scb.dataValid && bm.desc.chunkSize === s.chunkSize;
      if (!usable && req.minicopy === 'Required') {
        throw new EngineError('ENG_BITMAP_REQUIRED', bm ? `write bitmap ${bm.desc.id} does not match ${location} (it changed after it left)` : `no write bitmap exists for ${old.id}; a full copy would be needed`);
      }
      const m = new Member(old.id, backend, usable ? 'Minicopy' : 'FullCopy', old.readCost, old.site);
      m.scbSeq = probe.seq;
      let makeJob: () => ResyncJob;
      if (usable) {
        for (let c = bm.map.chunks; c < s.tracker.chunks; c++) bm.map.set(c); // the set grew past the bitmap
        m.reason = `returning with write bitmap ${bm.desc.id}`;
        // The chunk list is taken when the member is admitted (see join), not now.
        makeJob = () => new ResyncJob('Minicopy', m, bitmapList(bm.map), s.resync.hostRef, s.resync.settings.copyBytesPerSecond, bm.desc.id);
      } else {
        if (bm) s.tracker.bitmaps.delete(bm.desc.id);
        m.reason = bm ? 'bitmap unusable: full copy' : 'no write bitmap: full copy';
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

  deleteBitmap(id: string): Promise<{ deleted: boolean }> {
    return this.serial(async () => {
      const s = this.set;
      const b = s.tracker.bitmaps.get(id);
      if (!b) return { deleted: false };
      if (s.resync.jobs.some((j) => j.bitmapId === id)) {
        throw new EngineError('ENG_CONFLICT', `write bitmap ${id} is in use by a running minicopy`);
      }
      s.tracker.bitmaps.delete(id);
      await s.persistMembership();
      s.log.info({ event: 'BitmapDeleted', bitmap: id, member: b.desc.member }, 'write bitmap deleted: the member will need a full copy');
      return { deleted: true };
    });
  }

  demandMerge(full: boolean): Promise<{ started: boolean; chunks: number }> {
    return this.serial(async () => {
      const s = this.set;
      if (s.resync.merging) return { started: false, chunks: s.resync.mergePending?.count ?? 0 };
      if (full) {
        s.tracker.wil.setAll();
        await s.tracker.persist();
      }
      for (const m of s.members) if (m.state === 'InSync') m.state = 'Merging';
      // With `full`, every chunk was just marked: the log's list is the whole unit.
      s.startMerge(s.tracker.wil.list());
      await s.persistMembership();
      s.log.info({ event: 'MergeDemanded', full, chunks: s.resync.mergePending?.count ?? 0 }, 'merge demanded');
      return { started: true, chunks: s.resync.mergePending?.count ?? 0 };
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

  // ---------------- resync completions ----------------

  private async jobFinished(job: ResyncJob, ok: boolean, why: string): Promise<void> {
    const s = this.set;
    if (job.mode === 'Merge') {
      if (!ok) return;
      for (const m of s.members) if (m.state === 'Merging') m.state = 'InSync';
      s.tracker.pinned = null;
      await s.persistMembership().catch(() => undefined);
      return;
    }
    const t = job.target!;
    if (ok && t.isWritable) {
      t.state = 'InSync';
      t.reason = job.mode === 'Minicopy' ? 'minicopy complete' : 'full copy complete';
      if (job.bitmapId) s.tracker.bitmaps.delete(job.bitmapId);
      s.generation++;
      await s.persistMembership().catch(() => undefined);
      return;
    }
    if (job.cancelled || !t.isWritable) return;
    // A minicopy that fails midway becomes a full copy; a full copy resumes where it stopped.
    if (job.mode === 'Minicopy' && job.bitmapId) s.tracker.bitmaps.delete(job.bitmapId);
    const from = job.mode === 'FullCopy' ? job.safeCursor() : 0;
    t.state = 'FullCopy';
    t.reason = `${job.mode} failed (${why}); full copy`;
    s.log.warn({ event: 'CopyRetry', member: t.id, mode: job.mode, reason: why }, `${job.mode} failed; a full copy follows`);
    await new Promise((r) => setTimeout(r, 500));
    if (t.isWritable) s.resync.add(new ResyncJob('FullCopy', t, rangeList(Math.min(from, s.tracker.chunks), s.tracker.chunks), s.resync.hostRef, s.resync.settings.copyBytesPerSecond));
  }
}
