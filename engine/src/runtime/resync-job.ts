/** A resync job (full copy, minicopy or merge) and what the scheduler needs of its host. */
import type { Logger } from 'pino';
import type { Clock } from '../ports/clock.js';
import type { ChunkList } from './chunk-lists.js';
import type { Member } from './member.js';
import type { RangeLocks } from './range-locks.js';
import type { SourceHoles } from './source-holes.js';
import { Throttle } from './throttle.js';

export type ResyncMode = 'FullCopy' | 'Minicopy' | 'Merge';

export interface ResyncHost {
  readonly size: number;
  readonly chunkSize: number;
  readonly locks: RangeLocks;
  readonly members: Member[];
  log: Logger;
  /** Durations (throttles, checkpoints, job times) run on its monotonic clock. */
  readonly clock: Clock;
  /** Application requests in flight; resync yields while there are any. */
  appInFlight(): number;
  removeMember(m: Member, state: 'Faulted', why: string): Promise<void>;
  /** Persist membership, checkpoints and bitmap descriptors. */
  checkpoint(): Promise<void>;
  /** A job finished: the host updates states, bitmaps and metadata. */
  finished(job: ResyncJob, ok: boolean, why: string): Promise<void>;
}

export interface ResyncSettings {
  copyBytesPerSecond: number;
  mergeBytesPerSecond: number;
  maxCopies: number;
  /** `null`: alternate between full members; else a member id (or the master, the first full member). */
  copySource: string | null;
}

export class ResyncJob {
  bytesDone = 0;
  readonly bytesTotal: number;
  /** When the job began to run (its Started event), on the monotonic clock: its Completed event's `seconds`. */
  startedAt = 0;
  running = false;
  cancelled = false;
  lastSource: string | null = null;
  /** First chunks of the runs in flight, and of runs dropped by a cancel: a checkpoint must not pass them. */
  readonly inflightStarts = new Set<number>();
  readonly unfinished = new Set<number>();
  readonly throttle: Throttle;
  /** A restart point whose copied data is on the target's stable storage: what a checkpoint records. */
  durableCursor: number;
  /** Bytes written to the target since its last flush began. */
  unflushed = 0;
  /** The target flush in progress, if any. */
  flushing: Promise<void> | null = null;
  /** A full copy's map of its sources' holes (see SourceHoles), or null: every run is read. */
  holes: SourceHoles | null = null;
  /** Source bytes a full copy did not read because every source chunk of the run was a hole. */
  bytesUnread = 0;
  constructor(
    readonly mode: ResyncMode,
    readonly target: Member | null,
    readonly chunks: ChunkList,
    host: ResyncHost,
    rate: number,
    readonly bitmapId: string | null = null,
  ) {
    this.bytesTotal = Math.min(chunks.total * host.chunkSize, host.size);
    this.throttle = new Throttle(rate, () => host.clock.monotonic());
    this.durableCursor = chunks.cursor;
  }

  /** Where a restart may resume: before every run still in flight. */
  safeCursor(): number {
    return Math.min(this.chunks.cursor, ...this.inflightStarts, ...this.unfinished);
  }
}
