/**
 * The virtual unit's size from a CreateVolume capacity range. The engine's unit is a multiple of SECTOR,
 * so sizes are rounded up: to whole MiB when the limit allows, else to SECTOR.
 */
import { SECTOR } from '@shadowset/engine/api';
import { CsiError, invalid } from '../errors.js';

export const DEFAULT_CAPACITY = 1024 ** 3;
const MiB = 1024 ** 2;

export function bytesOf(value: string | number | undefined, name: string): number {
  const s = String(value ?? '0');
  if (!/^[0-9]{1,19}$/.test(s)) throw invalid(`${name} must be a non-negative byte count`);
  const n = Number(s);
  if (!Number.isSafeInteger(n)) throw new CsiError('OutOfRange', `${name} ${s} is too large`);
  return n;
}

const roundUp = (n: number, to: number) => Math.ceil(n / to) * to;

export function capacityFor(range: { required_bytes?: string; limit_bytes?: string } | null | undefined): number {
  const required = bytesOf(range?.required_bytes, 'required_bytes');
  const limit = bytesOf(range?.limit_bytes, 'limit_bytes');
  if (limit > 0 && required > limit) throw new CsiError('OutOfRange', `required_bytes ${required} exceeds limit_bytes ${limit}`);
  const want = required > 0 ? required : limit > 0 ? Math.min(DEFAULT_CAPACITY, limit) : DEFAULT_CAPACITY;
  for (const to of [MiB, SECTOR]) {
    const size = Math.max(roundUp(want, to), to);
    if (limit === 0 || size <= limit) return size;
  }
  throw new CsiError('OutOfRange', `no size that is a multiple of ${SECTOR} bytes lies between ${required} and ${limit}`);
}

/** Whether a volume of `have` bytes satisfies the range (for an idempotent repeat of CreateVolume). */
export function satisfies(have: number, range: { required_bytes?: string; limit_bytes?: string } | null | undefined): boolean {
  const required = bytesOf(range?.required_bytes, 'required_bytes');
  const limit = bytesOf(range?.limit_bytes, 'limit_bytes');
  return have >= required && (limit === 0 || have <= limit);
}
