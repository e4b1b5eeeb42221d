/** Reading and writing SCBs on members: two slots, written alternately, each write forced to media. */
import { decodeScb, encodeScb, pickScb, type DecodedSlot, type Scb } from '../core/scb.js';
import { HEADER_BYTES, SCB_SLOT_BYTES, SCB_SLOT_OFFSETS } from '../core/geometry.js';
import type { BlockBackend } from '../ports/block-backend.js';

export interface ProbedScb {
  decoded: DecodedSlot;
  seq: number;
  blank: boolean;
  /** The backend said the device holds no data at all (asked only when there is no record). */
  heldNoData: boolean;
}

/** How much of the data area is checked for foreign content besides the header. */
const DATA_PROBE_BYTES = 1024 * 1024;

/**
 * The member's record, if any, and whether the device is blank. Only where the record slots hold
 * nothing is the backend asked whether the device holds no data at all (`o.holdsNoData`, see
 * BlockBackend.holdsNoData: for a file member that has blocks, a process to spawn): a device with a
 * record holds data, a device that holds no data is blank without reading the 9 MiB checked otherwise.
 */
export async function probeMember(backend: BlockBackend, o: { holdsNoData?: () => Promise<boolean> } = {}): Promise<ProbedScb> {
  const a = Buffer.alloc(SCB_SLOT_BYTES);
  const b = Buffer.alloc(SCB_SLOT_BYTES);
  if (backend.size >= SCB_SLOT_OFFSETS[1] + SCB_SLOT_BYTES) {
    await backend.read(a, SCB_SLOT_OFFSETS[0]);
    await backend.read(b, SCB_SLOT_OFFSETS[1]);
  }
  const picked = pickScb(decodeScb(a), decodeScb(b));
  let blank = false;
  let heldNoData = false;
  if (picked.kind === 'empty') {
    heldNoData = (await o.holdsNoData?.()) === true;
    // Blank means: nothing in the metadata header we would write, nor at the start of the data area
    // (where partition tables and filesystem superblocks live).
    blank = heldNoData || (await isZero(backend, 0, Math.min(backend.size, HEADER_BYTES + DATA_PROBE_BYTES)));
  }
  return { decoded: picked, seq: picked.kind === 'ok' ? picked.seq : 0, blank, heldNoData };
}

async function isZero(backend: BlockBackend, offset: number, length: number): Promise<boolean> {
  const step = 1024 * 1024;
  const buf = Buffer.alloc(step);
  const zero = Buffer.alloc(step);
  for (let done = 0; done < length; done += step) {
    const n = Math.min(step, length - done);
    const view = buf.subarray(0, n);
    await backend.read(view, offset + done);
    if (!view.equals(zero.subarray(0, n))) return false; // a native compare, not a loop over 9 MiB
  }
  return true;
}

/** Write an SCB into the slot not holding the current one, forced to media. */
export async function writeScb(backend: BlockBackend, scb: Scb, seq: number): Promise<void> {
  const slot = SCB_SLOT_OFFSETS[seq % 2]!;
  await backend.write(Buffer.from(encodeScb(scb, seq)), slot, true);
}
