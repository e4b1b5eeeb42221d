/**
 * The block workload's model for a power loss: members lose what they had not made durable.
 *
 * A write is durable once it was acknowledged with FUA, or acknowledged before a FLUSH was issued that
 * was then acknowledged (NBD's FLUSH covers the writes completed before it). After a power loss a block
 * may hold its last durable version or any version issued after it (acknowledged or not: a member may
 * have written it back early, and a merge may pick any member as its source), never an older one, never
 * a torn or foreign block. While the unit runs, the base model's rules hold unchanged: an acknowledged
 * write reads back exactly, and once a read answered, later reads give the same answer.
 *
 * A durable version does not move when a read after the crash shows a newer one: the merge that made the
 * members agree on it may itself still sit in their caches, so the next power loss can go back to the
 * durable version (but never behind it).
 */
import { BLOCK, BlockWorkload, blockVersion } from '@shadowset/testkit/engine/block-workload';

export interface PowerLossCounts {
  /** Power losses modelled. */
  losses: number;
  /** Writes that became durable: acknowledged with FUA, or covered by an acknowledged FLUSH. */
  durableWrites: number;
  /** After a power loss, blocks read back that had a durable version (one count per block and loss). */
  durableChecked: number;
  /** Of those, blocks that read back older than their durable version, torn or foreign: must stay 0. */
  durableLost: number;
  /**
   * Blocks that read back older than the version the unit last acknowledged or answered for them: what
   * the losses took that was never made durable (allowed; shows the losses bite).
   */
  unflushedRolledBack: number;
}

export class PowerLossWorkload extends BlockWorkload {
  /** Per block: the last durable version (0: none, the block may be zeros again). */
  private readonly durable: Uint32Array;
  /** Per block: the version the unit last acknowledged or answered. */
  private readonly answered: Uint32Array;
  /** Per block: versions issued after the durable one, ascending. */
  private readonly since: (number[] | undefined)[];
  /**
   * Writes acknowledged without FUA, in acknowledgement order (block, version, block, version…). Entries
   * are numbered from the start of the run; `acks` holds those from `acksBase` on.
   */
  private acks: number[] = [];
  private acksBase = 0;
  /** Entries before this one were made durable by an acknowledged FLUSH. */
  private acksApplied = 0;
  /** 1 from a power loss until the block is first read back. */
  private readonly unchecked: Uint8Array;
  readonly counts: PowerLossCounts = { losses: 0, durableWrites: 0, durableChecked: 0, durableLost: 0, unflushedRolledBack: 0 };

  constructor(blocks: number, rand: () => number, baseOffset = 0) {
    super(blocks, rand, baseOffset);
    this.durable = new Uint32Array(blocks);
    this.answered = new Uint32Array(blocks);
    this.since = new Array<number[] | undefined>(blocks);
    this.unchecked = new Uint8Array(blocks);
  }

  protected override writeIssued(block: number, seq: number): void {
    (this.since[block] ??= []).push(seq);
  }

  protected override writeAcked(block: number, seq: number, fua: boolean): void {
    this.answered[block] = seq;
    if (fua) this.makeDurable(block, seq);
    else this.acks.push(block, seq);
  }

  protected override flushIssued(): number {
    return this.acksBase + this.acks.length;
  }

  protected override flushAcked(mark: number): void {
    // FLUSHes overlap: one issued later may be acknowledged first, and covers all an earlier one did.
    for (let i = this.acksApplied; i < mark; i += 2) this.makeDurable(this.acks[i - this.acksBase]!, this.acks[i + 1 - this.acksBase]!);
    this.acksApplied = Math.max(this.acksApplied, mark);
    if (this.acksApplied - this.acksBase > 1 << 16) {
      this.acks = this.acks.slice(this.acksApplied - this.acksBase);
      this.acksBase = this.acksApplied;
    }
  }

  private makeDurable(block: number, seq: number): void {
    if (seq <= this.durable[block]!) return;
    this.durable[block] = seq;
    this.counts.durableWrites++;
    const s = this.since[block];
    if (s) this.since[block] = s.filter((v) => v > seq);
  }

  /** The last durable version of a block (0: none). */
  durableVersion(block: number): number {
    return this.durable[block]!;
  }

  /**
   * The members lost power (together with the engine): every block falls back to what may have been on
   * stable storage. Call after the workload run that the loss ended has returned.
   */
  powerLoss(): void {
    this.counts.losses++;
    for (let b = 0; b < this.blocks; b++) {
      if (this.allowed[b] === undefined) continue;
      this.allowed[b] = [this.durable[b]!, ...(this.since[b] ?? [])];
      this.unchecked[b] = 1;
    }
    // Acknowledged writes no FLUSH covered are not durable; later FLUSHes do not reach back to them.
    this.acks = [];
    this.acksBase = 0;
    this.acksApplied = 0;
  }

  override check(block: number, buf: Buffer, where: string): void {
    if (this.unchecked[block]) {
      this.unchecked[block] = 0;
      const v = blockVersion(buf, block);
      const d = this.durable[block]!;
      if (d > 0) {
        this.counts.durableChecked++;
        if (typeof v === 'string' || v < d) {
          this.counts.durableLost++;
          this.problems.push(
            `${where}: block ${block} (offset ${this.baseOffset + block * BLOCK}) lost its durable version ${d}: ` +
            `${typeof v === 'string' ? v : `holds version ${v}`}; the unit last acknowledged or answered ${this.answered[block]}`,
          );
        }
      }
      if (typeof v === 'number' && v < this.answered[block]!) this.counts.unflushedRolledBack++;
    }
    const before = this.problems.length;
    super.check(block, buf, where);
    const v = blockVersion(buf, block);
    if (this.problems.length === before && typeof v === 'number') this.answered[block] = v;
  }
}
