/**
 * Where things live on a member. The first HEADER_BYTES of every member hold our metadata
 * (the manual's Storage Control Block and friends); the virtual unit's byte 0 is member byte HEADER_BYTES.
 *
 *   0        SCB slot A      (64 KiB)   two slots written alternately, highest valid sequence wins
 *   64 KiB   SCB slot B      (64 KiB)
 *   1 MiB    write-intent log (1 MiB)   one bit per chunk
 *   2 MiB    write bitmaps   (6 x 1 MiB) one slot per bitmap
 *   8 MiB    data
 */
export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

export const SCB_SLOT_BYTES = 64 * KiB;
export const SCB_SLOT_OFFSETS = [0, SCB_SLOT_BYTES] as const;
export const INTENT_LOG_OFFSET = 1 * MiB;
export const BITMAP_AREA_BYTES = 1 * MiB;
export const BITMAP_SLOT_OFFSET = 2 * MiB;
export const BITMAP_SLOTS = 6;
export const HEADER_BYTES = 8 * MiB;
/** The most chunks one bitmap area can describe. */
export const MAX_CHUNKS = BITMAP_AREA_BYTES * 8;
export const MIN_CHUNK_BYTES = 64 * KiB;
/** Sizes of the virtual unit are multiples of this. */
export const SECTOR = 4096;
export const MAX_MEMBERS = 6;

export function bitmapSlotOffset(slot: number): number {
  if (!Number.isInteger(slot) || slot < 0 || slot >= BITMAP_SLOTS) throw new RangeError(`bitmap slot ${slot}`);
  return BITMAP_SLOT_OFFSET + slot * BITMAP_AREA_BYTES;
}

/** The chunk size used for a virtual unit of `size` bytes: 64 KiB, doubled until the bitmap fits. */
export function chunkSizeFor(size: number): number {
  let c = MIN_CHUNK_BYTES;
  while (Math.ceil(size / c) > MAX_CHUNKS) c *= 2;
  return c;
}

/** Usable virtual-unit bytes on a member of `memberBytes` raw bytes (0 if too small). */
export function usableBytes(memberBytes: number): number {
  const usable = memberBytes - HEADER_BYTES;
  return usable <= 0 ? 0 : usable - (usable % SECTOR);
}

export function chunkCount(size: number, chunkSize: number): number {
  return Math.ceil(size / chunkSize);
}

/** Inclusive range of chunk indexes touched by [offset, offset+length). */
export function chunksOf(offset: number, length: number, chunkSize: number): [number, number] {
  const first = Math.floor(offset / chunkSize);
  const last = Math.floor((offset + Math.max(length, 1) - 1) / chunkSize);
  return [first, last];
}
