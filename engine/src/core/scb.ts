/**
 * The Storage Control Block: our per-member metadata, after the manual's SCB.
 * Encoded as a fixed 32-byte header (magic, format, body length, CRC-32, sequence) followed by a JSON body.
 */
// zod's v3 API (shipped in the zod 4 package as 'zod/v3'): the engine loads it at every start, before
// it can merge or serve, and it loads in ~10 ms and 0.6 MB where zod 4's own API took ~45 ms and 3.6 MB
// (which also brought V8's first major GC into a restart's merge). See the engine README, "Start-up".
import { z } from 'zod/v3';
import { crc32 } from './crc32.js';
import { SCB_SLOT_BYTES } from './geometry.js';
import { EngineError } from './errors.js';

export const SCB_MAGIC = 'SHDWSCB1';
export const SCB_FORMAT = 1;
const HEADER = 32;

export const memberStates = ['InSync', 'FullCopy', 'Minicopy', 'Merging', 'Removed', 'Faulted'] as const;
export type MemberState = (typeof memberStates)[number];

export const scbMemberSchema = z.object({
  id: z.string().min(1),
  /** Where this member was last seen (path or NBD URI); informational. */
  path: z.string(),
  state: z.enum(memberStates),
  /** Generation at which the member was last changed in this record. */
  since: z.number().int().nonnegative(),
});
export type ScbMember = z.infer<typeof scbMemberSchema>;

export const copyCheckpointSchema = z.object({
  mode: z.enum(['FullCopy', 'Minicopy']),
  target: z.string(),
  /** Chunks below this index are copied. */
  nextChunk: z.number().int().nonnegative(),
});

export const bitmapDescriptorSchema = z.object({
  id: z.string().min(1),
  member: z.string().min(1),
  slot: z.number().int().nonnegative(),
  chunkSize: z.number().int().positive(),
  coveredBytes: z.number().int().nonnegative(),
  createdAt: z.string(),
  /** Generation at which the member left; its data is current up to then. */
  generation: z.number().int().nonnegative(),
  masterNode: z.string().default(''),
});
export type BitmapDescriptor = z.infer<typeof bitmapDescriptorSchema>;

export const scbSchema = z.object({
  format: z.literal(SCB_FORMAT),
  setId: z.string().min(1),
  memberId: z.string().min(1),
  generation: z.number().int().nonnegative(),
  /** True only after a clean stop with nothing outstanding. */
  clean: z.boolean(),
  size: z.number().int().positive(),
  chunkSize: z.number().int().positive(),
  members: z.array(scbMemberSchema).min(1).max(6),
  /** Whether this member's own data is complete (false while it is a copy target). */
  dataValid: z.boolean(),
  /** The write-intent log on this member can be trusted (set when it was written with this SCB). */
  intentLogValid: z.boolean().default(true),
  /** Copies in progress, so a restart resumes them. */
  copies: z.array(copyCheckpointSchema).default([]),
  bitmaps: z.array(bitmapDescriptorSchema).default([]),
  updatedAt: z.string(),
});
export type Scb = z.infer<typeof scbSchema>;

export function encodeScb(scb: Scb, seq: number): Uint8Array {
  const body = new TextEncoder().encode(JSON.stringify(scbSchema.parse(scb)));
  if (HEADER + body.length > SCB_SLOT_BYTES) {
    throw new EngineError('ENG_METADATA_CORRUPT', `metadata too large (${body.length} bytes)`);
  }
  const out = new Uint8Array(SCB_SLOT_BYTES);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < 8; i++) out[i] = SCB_MAGIC.charCodeAt(i);
  dv.setUint32(8, SCB_FORMAT);
  dv.setUint32(12, body.length);
  dv.setUint32(16, crc32(body));
  dv.setUint32(20, 0);
  dv.setBigUint64(24, BigInt(seq));
  out.set(body, HEADER);
  return out;
}

export type DecodedSlot =
  | { kind: 'empty' } // all zeros where the header would be
  | { kind: 'foreign' } // bytes that are not ours
  | { kind: 'corrupt'; reason: string } // our magic, but unreadable
  | { kind: 'ok'; scb: Scb; seq: number };

export function decodeScb(slot: Uint8Array): DecodedSlot {
  if (slot.length < HEADER) return { kind: 'corrupt', reason: 'short slot' };
  let magicOk = true;
  for (let i = 0; i < 8; i++) if (slot[i] !== SCB_MAGIC.charCodeAt(i)) magicOk = false;
  if (!magicOk) {
    return slot.subarray(0, Math.min(slot.length, 4096)).every((b) => b === 0) ? { kind: 'empty' } : { kind: 'foreign' };
  }
  const dv = new DataView(slot.buffer, slot.byteOffset, slot.byteLength);
  const format = dv.getUint32(8);
  if (format !== SCB_FORMAT) return { kind: 'corrupt', reason: `unknown metadata format ${format}` };
  const len = dv.getUint32(12);
  if (HEADER + len > slot.length) return { kind: 'corrupt', reason: 'body length out of range' };
  const body = slot.subarray(HEADER, HEADER + len);
  if (crc32(body) !== dv.getUint32(16)) return { kind: 'corrupt', reason: 'checksum mismatch' };
  const seq = Number(dv.getBigUint64(24));
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(body));
  } catch {
    return { kind: 'corrupt', reason: 'body is not JSON' };
  }
  const parsed = scbSchema.safeParse(json);
  if (!parsed.success) return { kind: 'corrupt', reason: `body invalid: ${parsed.error.issues[0]?.message ?? ''}` };
  return { kind: 'ok', scb: parsed.data, seq };
}

/** Pick the current SCB from the two slots: the valid one with the highest sequence. */
export function pickScb(a: DecodedSlot, b: DecodedSlot): DecodedSlot & { slot?: 0 | 1 } {
  const oks = [a, b].map((d, i) => ({ d, i: i as 0 | 1 })).filter((x) => x.d.kind === 'ok');
  if (oks.length > 0) {
    oks.sort((x, y) => (y.d as { seq: number }).seq - (x.d as { seq: number }).seq);
    return { ...oks[0]!.d, slot: oks[0]!.i };
  }
  if (a.kind === 'corrupt') return a;
  if (b.kind === 'corrupt') return b;
  if (a.kind === 'foreign' || b.kind === 'foreign') return { kind: 'foreign' };
  return { kind: 'empty' };
}
